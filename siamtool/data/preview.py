"""`siamtool prepare --show DIR`: a PNG grid of stored pairs with their boxes, to check shards by eye.

Each tile shows the template crop (left, at its stored size, so the target has the same pixel size in
both crops) and the stored search crop (right) with the stored boxes drawn: green for positives, red
for negatives (the box the crop is centred on: the distractor or the last known box), and a grey
square for the final `search_size` window at zero shift, i.e. what the margin leaves for jitter.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from siamtool.data.shards import KIND_NAMES, KIND_POSITIVE, Pair, ShardReader, load_shard_index
from siamtool.errors import DatasetError
from siamtool.fileio import atomic_path

PREVIEW_NAME = "preview.png"
_GREEN, _RED, _GREY, _WHITE = (60, 200, 60), (60, 60, 230), (170, 170, 170), (255, 255, 255)


def _decode(jpeg: np.ndarray, what: str) -> np.ndarray:
    img = cv2.imdecode(jpeg, cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{what}: stored JPEG does not decode; rerun `siamtool prepare --overwrite`")
    return img


def _rect(img: np.ndarray, box: np.ndarray, color: tuple[int, int, int], thickness: int = 2) -> None:
    x, y, w, h = (float(v) for v in box)
    # Shift by 4 bits for sub-pixel drawing: the box edges land where the stored floats say.
    s = 16
    cv2.rectangle(img, (round(x * s), round(y * s)), (round((x + w) * s), round((y + h) * s)), color, thickness,
                  cv2.LINE_AA, shift=4)


def render_pair(pair: Pair, search_size: int, label: str = "") -> np.ndarray:
    """One tile: template | search, boxes drawn, a caption line under them."""
    t = _decode(pair.template_jpeg, f"{pair.sequence} frame {pair.frames[0]}")
    s = _decode(pair.search_jpeg, f"{pair.search_sequence} frame {pair.frames[1]}")
    color = _GREEN if pair.kind == KIND_POSITIVE else _RED
    _rect(t, pair.template_box, _GREEN)
    side = s.shape[0]
    off = (side - search_size) / 2
    _rect(s, np.array([off, off, search_size, search_size]), _GREY, 1)
    _rect(s, pair.search_box, color)
    caption_h = 22
    tile = np.full((side + caption_h, t.shape[1] + 4 + side, 3), 30, np.uint8)
    tile[:t.shape[0], :t.shape[1]] = t
    tile[:side, t.shape[1] + 4:] = s
    text = label or (f"{KIND_NAMES[pair.kind]}  {pair.sequence}#{pair.frames[0]} -> "
                     f"{pair.search_sequence}#{pair.frames[1]}")
    cv2.putText(tile, text, (4, side + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, _WHITE, 1, cv2.LINE_AA)
    return tile


def _pick(kinds: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """`count` random rows, with a few of every kind present (negatives are rare but need checking too)."""
    per_kind = max(1, count // 8)
    chosen: list[int] = []
    for k in np.unique(kinds):
        rows = np.flatnonzero(kinds == k)
        chosen += rng.choice(rows, size=min(per_kind, rows.size), replace=False).tolist()
    chosen = chosen[:count]
    rest = np.setdiff1d(np.arange(kinds.size), chosen)
    chosen += rng.choice(rest, size=count - len(chosen), replace=False).tolist()
    return np.sort(np.asarray(chosen, dtype=np.int64))


def write_preview(directory: str | Path, out: str | Path | None = None, count: int = 16, columns: int = 4,
                  seed: int = 0) -> Path:
    """Draw `count` random pairs from the shards in `directory` into a PNG; return its path.

    Pairs are drawn over all shards with a fixed `seed` (the same shards give the same picture, so a
    second look after a fix shows the same pairs), with at least count/8 of every kind present.
    """
    index = load_shard_index(directory)
    if index.pairs == 0:
        raise DatasetError(f"{directory}: the shards hold no pairs")
    cfg_data = index.config.get("data", {})
    search_size = int(cfg_data.get("search_size", index.search_crop_size))
    rng = np.random.default_rng(seed)
    kinds = []
    for path, _ in index.shards:
        with ShardReader(path) as reader:
            kinds.append(reader.kinds())
    picks = _pick(np.concatenate(kinds), min(count, index.pairs), rng)
    starts = np.cumsum([0] + [n for _, n in index.shards])
    tiles = []
    for k in range(len(index.shards)):
        mine = picks[(picks >= starts[k]) & (picks < starts[k + 1])] - starts[k]
        if mine.size:
            with ShardReader(index.shards[k][0]) as reader:
                tiles += [render_pair(p, search_size) for p in reader.read_many(mine.tolist())]
    order = rng.permutation(len(tiles))  # mix kinds and shards across the grid
    tiles = [tiles[i] for i in order]
    h, w = tiles[0].shape[:2]
    cols = min(columns, len(tiles))
    rows = -(-len(tiles) // cols)
    gap = 6
    grid = np.full((rows * (h + gap) + gap, cols * (w + gap) + gap, 3), 12, np.uint8)
    for n, tile in enumerate(tiles):
        r, c = divmod(n, cols)
        grid[gap + r * (h + gap):gap + r * (h + gap) + h, gap + c * (w + gap):gap + c * (w + gap) + w] = tile
    path = Path(out) if out is not None else Path(directory) / PREVIEW_NAME
    with atomic_path(path) as tmp:
        ok, buf = cv2.imencode(".png", grid)
        if not ok:
            raise DatasetError(f"{path}: could not encode the preview PNG")
        tmp.write_bytes(buf.tobytes())
    return path

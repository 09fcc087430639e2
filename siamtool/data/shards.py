"""The on-disk pair format written by `siamtool prepare` and read by training, tests and `prepare --show`.

One folder holds HDF5 shards of a fixed number of pairs plus `index.json` (shards and counts) and
`config.yaml` (the resolved config). Images are JPEG bytes in variable-length uint8 datasets: a stored
pair is ~25 kB instead of 492 kB raw (~165 kB gzip-compressed uint8; measured, README "prepare"),
which is what lets the ~200k LaSOT-train pairs fit in ~5 GB and stream from disk fast.

Datasets, one row per pair (also in docs/contracts.md, "Shards"):
  template, search          vlen uint8  standard JPEG bytes (cv2.imdecode gives BGR, torchvision's
                                        decode_jpeg gives RGB)
  template_box, search_box  (N,4) f32   x,y,w,h in the stored crop's pixels (0-based continuous)
  kind                      (N,) u8     0 positive, 1 negative same class, 2 negative other class,
                                        3 negative target absent
  sequence, search_sequence vlen str    the template's sequence and the search frame's sequence
  frames                    (N,2) i32   template frame, search frame (0-based)

Readers open h5py handles lazily and re-open them after a fork, because an h5py handle inherited by a
DataLoader worker process is not safe to use.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from siamtool.config import DataConfig
from siamtool.errors import DatasetError
from siamtool.fileio import atomic_path
from siamtool.geometry import CropGeometry, CropWindow

FORMAT_VERSION = 1
INDEX_NAME = "index.json"
CONFIG_NAME = "config.yaml"

KIND_POSITIVE = 0
KIND_SAME_CLASS = 1
KIND_OTHER_CLASS = 2
KIND_ABSENT = 3
KIND_NAMES: dict[int, str] = {
    KIND_POSITIVE: "positive",
    KIND_SAME_CLASS: "negative_same_class",
    KIND_OTHER_CLASS: "negative_other_class",
    KIND_ABSENT: "negative_absent",
}

_VLEN_U8 = h5py.vlen_dtype(np.uint8)
_STR = h5py.string_dtype("utf-8")
DATASETS = ("template", "search", "template_box", "search_box", "kind", "sequence", "search_sequence", "frames")
TRAIN_COLUMNS = ("template", "search", "template_box", "search_box", "kind")
"""What training reads: the two string columns and the frame numbers are for people and tools (about 15 %
of a block's read time, benchmarks/data_pipeline.py), never for the loss."""


def search_crop_size(data: DataConfig) -> int:
    """Side in pixels of the stored (generous) search crop: round(search_size * search_margin)."""
    return round(data.search_size * data.search_margin)


def stored_template_window(box_xywh: np.ndarray, data: DataConfig) -> CropWindow:
    """The window of a stored template crop for a 0-based frame box (geometry.template_window)."""
    return CropGeometry.from_data(data).template(box_xywh)


def stored_search_window(box_xywh: np.ndarray, data: DataConfig) -> CropWindow:
    """The window of a stored search crop: geometry.search_window with its side x data.search_margin.

    The output size grows by the same factor (rounded), so the stored crop keeps the template's scale
    and the final `search_size` crop is a window inside it: train-time shift and scale jitter
    (`CropWindow.sub_window`) never have to invent pixels the stored crop does not have.
    """
    w = CropGeometry.from_data(data).search(box_xywh)
    size = search_crop_size(data)
    return CropWindow(w.cx, w.cy, w.side * size / data.search_size, size)


@dataclass
class Pair:
    """One stored template/search pair (crops as JPEG bytes, boxes in crop pixels)."""

    template_jpeg: np.ndarray
    search_jpeg: np.ndarray
    template_box: np.ndarray
    search_box: np.ndarray
    kind: int
    sequence: str
    search_sequence: str
    frames: np.ndarray

    @property
    def positive(self) -> bool:
        return self.kind == KIND_POSITIVE


@dataclass
class ShardIndex:
    """What `index.json` says: the shard files (absolute paths) with their pair counts, and the geometry."""

    root: Path
    shards: list[tuple[Path, int]]
    template_size: int
    search_crop_size: int
    config: dict[str, Any] = field(default_factory=dict)
    splits: list[str] | None = None
    """Per shard 'train' or 'val' when prepare split by sequence (`data.val_sequences`), else None."""

    @property
    def pairs(self) -> int:
        return sum(n for _, n in self.shards)


def load_shard_index(directory: str | Path) -> ShardIndex:
    """Read `<directory>/index.json`; one-line DatasetError when it is missing, foreign or incomplete."""
    root = Path(directory)
    path = root / INDEX_NAME
    if not path.is_file():
        hint = " (a prepare run that has not finished yet? run it again to resume)" if root.is_dir() else ""
        raise DatasetError(f"{path}: no shard index{hint}; create shards with `siamtool prepare --out {root}`")
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DatasetError(f"{path}: unreadable shard index ({e}); rerun `siamtool prepare --overwrite`") from None
    if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
        version = data.get("format_version") if isinstance(data, dict) else None
        raise DatasetError(f"{path}: shard format version {version!r}, this siamtool reads {FORMAT_VERSION}; "
                           "rerun `siamtool prepare --overwrite`")
    try:
        shards = [(root / s["file"], int(s["pairs"])) for s in data["shards"]]
        template_size = int(data["template_size"])
        search_crop_size = int(data["search_crop_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{path}: malformed shard index (missing {e}); rerun `siamtool prepare --overwrite`") \
            from None
    for p, _ in shards:
        if not p.is_file():
            raise DatasetError(f"{p}: listed in {path} but missing; rerun `siamtool prepare` on this folder")
    splits = [str(s.get("split", "train")) for s in data["shards"]]
    return ShardIndex(root, shards, template_size, search_crop_size, data.get("config") or {},
                      splits if "val" in splits else None)


class ShardReader:
    """Random access to the pairs of one shard file. Opens lazily; safe to create before forking."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._file: h5py.File | None = None
        self._pid: int | None = None
        self._len: int | None = None

    def _h5(self) -> h5py.File:
        if self._file is None or self._pid != os.getpid():
            # A handle inherited through fork is left alone (closing it would touch the parent's state).
            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise DatasetError(f"{self.path}: cannot open shard ({e}); rerun `siamtool prepare`") from None
            self._pid = os.getpid()
        return self._file

    def __len__(self) -> int:
        if self._len is None:
            self._len = int(self._h5()["kind"].shape[0])
        return self._len

    @property
    def attrs(self) -> dict[str, Any]:
        return dict(self._h5().attrs)

    def kinds(self) -> np.ndarray:
        """The `kind` column of every pair (cheap: no image bytes are read)."""
        return np.asarray(self._h5()["kind"][:], dtype=np.uint8)

    def read(self, i: int) -> Pair:
        return self.read_many([i])[0]

    def read_many(self, indices: Iterable[int]) -> list[Pair]:
        """Pairs at `indices`, in the order given (reads in sorted order, which h5py needs for speed)."""
        idx = [int(i) for i in indices]
        n = len(self)
        for i in idx:
            if not -n <= i < n:
                raise IndexError(f"pair {i} out of range for {self.path} ({n} pairs)")
        idx = [i % n for i in idx]
        if not idx:
            return []
        order = sorted(set(idx))
        cols = self.read_columns(order, DATASETS)
        where = {i: k for k, i in enumerate(order)}
        out = []
        for i in idx:
            k = where[i]
            out.append(Pair(
                template_jpeg=np.asarray(cols["template"][k], dtype=np.uint8),
                search_jpeg=np.asarray(cols["search"][k], dtype=np.uint8),
                template_box=np.asarray(cols["template_box"][k], dtype=np.float32),
                search_box=np.asarray(cols["search_box"][k], dtype=np.float32),
                kind=int(cols["kind"][k]),
                sequence=_text(cols["sequence"][k]),
                search_sequence=_text(cols["search_sequence"][k]),
                frames=np.asarray(cols["frames"][k], dtype=np.int32),
            ))
        return out

    def read_rows(self, lo: int, hi: int, columns: Sequence[str] = TRAIN_COLUMNS) -> dict[str, np.ndarray]:
        """Columns of the contiguous rows ``lo:hi``, one slice read per column (the training stream's read)."""
        n = len(self)
        if not 0 <= lo <= hi <= n:
            raise IndexError(f"rows {lo}:{hi} out of range for {self.path} ({n} pairs)")
        f = self._h5()
        return {name: f[name][lo:hi] for name in columns}

    def read_columns(self, rows: Sequence[int], columns: Sequence[str] = TRAIN_COLUMNS) -> dict[str, np.ndarray]:
        """Columns of the sorted, distinct, in-range `rows` (row k of each array is ``rows[k]``).

        h5py's list indexing costs 1.2-2.9x a slice of the same rows (benchmarks/data_pipeline.py), so
        rows are read as slices: one covering slice when the rows are dense in it (the extra rows cost
        less than more calls), else one slice per run of consecutive rows, else (many scattered rows) one
        list read.
        """
        if not rows:
            f = self._h5()
            return {name: f[name][0:0] for name in columns}
        lo, hi = rows[0], rows[-1] + 1
        if hi - lo <= 2 * len(rows) + 8:
            block = self.read_rows(lo, hi, columns)
            pick = np.asarray(rows, dtype=np.int64) - lo
            return {name: v[pick] for name, v in block.items()}
        runs = _runs(rows)
        f = self._h5()
        if len(runs) <= 8:
            return {name: np.concatenate([f[name][a:b] for a, b in runs]) for name in columns}
        return {name: f[name][list(rows)] for name in columns}

    def close(self) -> None:
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _runs(rows: Sequence[int]) -> list[tuple[int, int]]:
    """Sorted distinct rows -> [(lo, hi), ...] runs of consecutive rows."""
    out: list[tuple[int, int]] = []
    for r in rows:
        if out and out[-1][1] == r:
            out[-1] = (out[-1][0], r + 1)
        else:
            out.append((r, r + 1))
    return out


def verify_shards(index: ShardIndex) -> None:
    """Open every shard of `index` in this process and check it holds the pairs the index lists.

    Training reads shards in DataLoader worker processes, where a damaged file surfaces as a worker
    traceback after the run folder exists; checking first turns a truncated, emptied or foreign file into
    one line naming it. Cheap: metadata, the `kind` column and the first and last pair of each shard.
    """
    for path, listed in index.shards:
        try:
            with ShardReader(path) as reader:
                f = reader._h5()
                missing = [name for name in DATASETS if name not in f]
                if missing:
                    raise DatasetError(f"{path}: not a complete shard (no {', '.join(missing)})")
                lengths = {name: int(f[name].shape[0]) for name in DATASETS}
                if set(lengths.values()) != {listed}:
                    raise DatasetError(f"{path}: holds {max(lengths.values())} pairs, {index.root / INDEX_NAME} "
                                       f"lists {listed}")
                if listed:
                    reader.read_many([0, listed - 1])
        except DatasetError as e:
            if "siamtool prepare" in str(e):
                raise
            raise DatasetError(f"{e}; rerun the same `siamtool prepare` command (it rewrites damaged shards), "
                               "or prepare into a new folder") from None
        except Exception as e:  # noqa: BLE001 - HDF5 reports damage as OSError, KeyError, ValueError...
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise DatasetError(f"{path}: damaged shard ({first}); rerun the same `siamtool prepare` command (it "
                               "rewrites damaged shards), or prepare into a new folder") from None


def _text(v: Any) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def write_shard(path: str | Path, pairs: Sequence[Pair], attrs: dict[str, Any]) -> int:
    """Write `pairs` to `path` atomically (temp file beside it, renamed when complete); return its bytes.

    A shard is the unit of resume: it either exists complete under its final name or not at all, so an
    interrupted prepare never leaves a half shard that a later run would mistake for a finished one.
    """
    path = Path(path)
    n = len(pairs)
    # Built in memory, written with plain file I/O: HDF5 writing to a full disk fails inside its own flush
    # and close, and the half-closed file objects it leaves crashed the interpreter at exit (a segfault
    # after the one-line "disk full" error). A shard is ~13 MB; a write() that fails is a clean OSError.
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        for key, value in {"format_version": FORMAT_VERSION, **attrs}.items():
            f.attrs[key] = value
        f.create_dataset("template", (n,), dtype=_VLEN_U8, data=_vlen([p.template_jpeg for p in pairs]))
        f.create_dataset("search", (n,), dtype=_VLEN_U8, data=_vlen([p.search_jpeg for p in pairs]))
        f.create_dataset("template_box", data=_rows([p.template_box for p in pairs], (n, 4), np.float32))
        f.create_dataset("search_box", data=_rows([p.search_box for p in pairs], (n, 4), np.float32))
        f.create_dataset("kind", data=np.array([p.kind for p in pairs], dtype=np.uint8).reshape(n))
        f.create_dataset("sequence", data=[p.sequence for p in pairs], dtype=_STR, shape=(n,))
        f.create_dataset("search_sequence", data=[p.search_sequence for p in pairs], dtype=_STR, shape=(n,))
        f.create_dataset("frames", data=_rows([p.frames for p in pairs], (n, 2), np.int32))
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as out:
            out.write(buffer.getbuffer())
        size = tmp.stat().st_size
    return size


def _vlen(arrays: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = np.asarray(a, dtype=np.uint8).reshape(-1)
    return out


def _rows(values: list[Any], shape: tuple[int, int], dtype: type) -> np.ndarray:
    return np.asarray(values, dtype=dtype).reshape(shape)

"""VOT short-term (2018-2022 layouts): ``ROOT/list.txt``, ``ROOT/<seq>/color/00000001.jpg`` (older
copies keep the images in ``<seq>/`` itself) and ``ROOT/<seq>/groundtruth.txt``, one region per line:

* a rectangle ``x,y,w,h``;
* a polygon ``x1,y1,x2,y2,x3,y3,x4,y4`` (VOT2018/2019): its axis-aligned min/max box, as pytracking and
  PySOT convert it;
* (2020+) an RLE mask ``m<left>,<top>,<width>,<height>,<run>,<run>,...``: runs of 0s and 1s alternating
  (0s first) over the ``width x height`` patch in row-major order; its box is the tight box of the 1s.

An empty mask, a ``0`` line or a NaN region means the target is absent. Boxes are for training and the
box metrics (success, precision); VOT's own EAO protocol (re-initialisation) is not implemented.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamtool.data.datasets.common import check_count, custom_names, list_frames
from siamtool.data.lasot import Index, LasotSequence, build_index, read_names_file
from siamtool.errors import DatasetError

SPLITS = ("list", "all")
DEFAULT_SPLIT = "list"


def detect(root: Path) -> bool:
    if not (root / "list.txt").is_file():
        return False
    first = root / read_names_file(root / "list.txt")[0]
    return (first / "groundtruth.txt").is_file() and not (first / "meta_info.ini").is_file()


def mask_box(values: list[float]) -> list[float]:
    """The tight x,y,w,h box of a VOT RLE mask (`values` after the 'm'); NaN for an empty mask."""
    left, top, width, height = (int(v) for v in values[:4])
    runs = np.asarray(values[4:], dtype=np.int64)
    flat = np.zeros(width * height, dtype=bool)
    ends = np.cumsum(runs)
    for start, end in zip(ends[0::2], ends[1::2]):  # runs alternate 0s, 1s, 0s, ...
        flat[start:end] = True
    if not flat.any() or width * height == 0:
        return [np.nan] * 4
    ys, xs = np.divmod(np.flatnonzero(flat), width)
    return [left + xs.min(), top + ys.min(), xs.max() - xs.min() + 1.0, ys.max() - ys.min() + 1.0]


def region_box(line: str, path: Path, n: int) -> list[float]:
    """One groundtruth line as x,y,w,h (NaN for an absent target)."""
    text = line.strip()
    try:
        if text.startswith("m"):
            return mask_box([float(v) for v in text[1:].split(",")])
        values = [float(v) for v in text.replace("\t", ",").split(",") if v.strip()]
    except ValueError:
        raise DatasetError(f"{path}:{n}: cannot parse {text[:60]!r} as a VOT region") from None
    if len(values) == 4:
        return values
    if len(values) == 1:
        return [np.nan] * 4  # VOT writes a lone 0 where the target is absent
    if len(values) >= 6 and len(values) % 2 == 0:
        xs, ys = values[0::2], values[1::2]
        return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
    raise DatasetError(f"{path}:{n}: {len(values)} values: expected a rectangle (4), a polygon (8) or a mask (m...)")


def load_sequence(root: Path, name: str, require_images: bool) -> LasotSequence:
    folder = root / name
    gt_path = folder / "groundtruth.txt"
    if not gt_path.is_file():
        raise DatasetError(f"{gt_path}: missing (is {folder} a VOT sequence folder?)")
    lines = [line for line in gt_path.read_text().splitlines() if line.strip()]
    if not lines:
        raise DatasetError(f"{gt_path}: file is empty")
    gt = np.array([region_box(line, gt_path, i + 1) for i, line in enumerate(lines)], dtype=np.float64)
    image_dir = folder / "color" if (folder / "color").is_dir() else folder
    frames = list_frames(image_dir, require=require_images)
    if require_images:
        check_count(frames, len(gt), image_dir, gt_path)
    absent = np.isnan(gt).any(axis=1)
    return LasotSequence(name=name, class_name=name.rstrip("0123456789_-") or name, path=folder, gt=gt,
                         full_occlusion=absent, out_of_view=np.zeros(len(gt), bool),
                         n_images=len(frames) if frames else None, frames=frames or None, gt_path=gt_path,
                         dataset="vot")


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    list_file = root / "list.txt"
    available = [p.name for p in sorted(root.iterdir()) if (p / "groundtruth.txt").is_file()]
    names = custom_names(split, available, ("list",))
    if names is None:
        if not list_file.is_file():
            raise DatasetError(f"{list_file}: missing (a VOT folder lists its sequences in list.txt)")
        names = read_names_file(list_file)
    loaders = {n: (lambda n=n: load_sequence(root, n, require_images)) for n in available}
    return build_index("vot", split, root, names, loaders, strict)

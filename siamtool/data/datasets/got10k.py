"""GOT-10k: ``ROOT/{train,val,test}/list.txt`` and ``ROOT/<split>/GOT-10k_Val_000001/``.

A sequence folder holds ``00000001.jpg ...`` directly, ``groundtruth.txt`` (x,y,w,h, comma separated;
the test split has only the frame-1 box; a test folder with every box is read and scored like val), ``absence.label`` (0/1 per line: the target is absent),
``cover.label`` (0..8 per line: the visible fraction in eighths), ``cut_by_image.label`` and
``meta_info.ini`` (``object_class`` gives same-class negatives, ``resolution: (W, H)`` bounds the boxes in
the metric). `--root` may be the dataset folder or one split's folder (the one with ``list.txt``).
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from siamtool.data.datasets.common import frames_for, refuse_nan
from siamtool.data.lasot import Index, LasotSequence, build_index, parse_boxes, read_names_file
from siamtool.errors import DatasetError

SPLITS = ("train", "val", "test")
DEFAULT_SPLIT = "val"
TEST_SPLITS = ("test",)
"""Splits that publish only the frame-1 box: scored by the evaluation server."""


def _split_dir(root: Path, split: str) -> Path:
    if (root / "list.txt").is_file() and not (root / split / "list.txt").is_file():
        return root  # the split folder itself
    return root / split


def detect(root: Path) -> bool:
    for folder in (root, *(root / s for s in SPLITS)):
        if (folder / "list.txt").is_file():
            first = read_names_file(folder / "list.txt")[0]
            if first.startswith("GOT-10k_") or (folder / first / "meta_info.ini").is_file():
                return True
    return False


def read_meta(path: Path) -> dict[str, str]:
    """``key: value`` lines of ``meta_info.ini`` (the ``[METAINFO]`` header is skipped); {} when absent."""
    if not path.is_file():
        return {}
    meta = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith("["):
            meta[key.strip()] = value.strip()
    return meta


def _resolution(meta: dict[str, str], path: Path) -> tuple[int, int] | None:
    if "resolution" not in meta:
        return None
    try:
        w, h = ast.literal_eval(meta["resolution"])
        return int(w), int(h)
    except (ValueError, SyntaxError, TypeError):
        raise DatasetError(f"{path}: resolution {meta['resolution']!r} is not '(width, height)'") from None


def read_label(path: Path, n: int, gt_path: Path, required: bool = False) -> np.ndarray | None:
    """One integer per line (``absence.label``, ``cover.label``); None when the file is absent."""
    if not path.is_file():
        if required:
            raise DatasetError(f"{path}: missing (every GOT-10k train/val sequence has one)")
        return None
    try:
        values = np.loadtxt(path, dtype=np.float64, ndmin=1)
    except ValueError:
        raise DatasetError(f"{path}: expected one integer per line") from None
    if values.size != n:
        raise DatasetError(f"{path}: {values.size} lines but {gt_path} has {n} lines")
    return values.astype(np.int64)


def load_sequence(folder: Path, test: bool, require_images: bool) -> LasotSequence:
    gt_path = folder / "groundtruth.txt"
    if not gt_path.is_file():
        raise DatasetError(f"{gt_path}: missing (is {folder} a GOT-10k sequence folder?)")
    gt = parse_boxes(gt_path)
    gt, frames, first_only = frames_for(gt, folder, gt_path, test, require_images)
    n = len(gt)
    absent = read_label(folder / "absence.label", n, gt_path, required=not test)
    cover = read_label(folder / "cover.label", n, gt_path, required=not test)
    flags = None if absent is None else absent.astype(bool)
    refuse_nan(gt[:1] if first_only else gt, gt_path, None if flags is None else flags[:1] if first_only else flags)
    meta_path = folder / "meta_info.ini"
    meta = read_meta(meta_path)
    return LasotSequence(
        name=folder.name, class_name=meta.get("object_class", "unknown"), path=folder, gt=gt,
        full_occlusion=np.zeros(n, bool) if absent is None else absent.astype(bool),
        out_of_view=np.zeros(n, bool), n_images=len(frames) if frames else None,
        frames=frames or None, gt_path=gt_path, gt_frames=1 if first_only else None, cover=cover,
        resolution=_resolution(meta, meta_path), dataset="got10k")


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    if split not in SPLITS:
        raise DatasetError(f"unknown GOT-10k split {split!r}: use {', '.join(SPLITS)}")
    folder = _split_dir(root, split)
    list_file = folder / "list.txt"
    if not list_file.is_file():
        raise DatasetError(f"{list_file}: missing (expected ROOT/{split}/list.txt of the GOT-10k download)")
    names = read_names_file(list_file)
    test = split in TEST_SPLITS
    loaders = {n: (lambda p=folder / n: load_sequence(p, test, require_images))
               for n in names if (folder / n).is_dir()}
    return build_index("got10k", split, root, names, loaders, strict, on_disk=len(loaders))

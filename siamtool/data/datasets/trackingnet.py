"""TrackingNet: ``ROOT/TRAIN_0`` ... ``ROOT/TRAIN_11`` and ``ROOT/TEST``, each with ``anno/<seq>.txt``
(x,y,w,h, comma separated; TEST has only the frame-1 box, and a TEST folder with every box is scored) and ``frames/<seq>/0.jpg, 1.jpg, ...`` (0-based,
not zero-padded: natural order); a 0,0,0,0 row means the target is absent. Splits: ``TEST``, ``train`` (all twelve chunks), one chunk ``TRAIN_3``,
or several ``TRAIN_0,TRAIN_4``. TrackingNet's layout records no object class: each sequence is its own
class (the sampler then draws no same-class negatives from it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamtool.data.datasets.common import frames_for, refuse_nan, zero_rows
from siamtool.data.lasot import Index, LasotSequence, build_index, parse_boxes
from siamtool.errors import DatasetError

CHUNKS = tuple(f"TRAIN_{i}" for i in range(12)) + ("TEST",)
SPLITS = ("TEST", "train", *CHUNKS[:-1])
DEFAULT_SPLIT = "TEST"
TEST_SPLITS = ("TEST",)


def detect(root: Path) -> bool:
    return any((root / c / "anno").is_dir() for c in CHUNKS)


def chunks_of(split: str) -> list[str]:
    """The chunk folders a split names (case-insensitive 'test'/'train'; comma-separated chunks)."""
    if split.lower() == "test":
        return ["TEST"]
    if split.lower() == "train":
        return list(CHUNKS[:-1])
    parts = [p.strip().upper() for p in split.split(",") if p.strip()]
    bad = [p for p in parts if p not in CHUNKS]
    if not parts or bad:
        raise DatasetError(f"unknown TrackingNet split {split!r}: use TEST, train, TRAIN_0 ... TRAIN_11, or "
                           "comma-separated chunks like TRAIN_0,TRAIN_1")
    return parts


def load_sequence(chunk_dir: Path, name: str, test: bool, require_images: bool) -> LasotSequence:
    gt_path = chunk_dir / "anno" / f"{name}.txt"
    gt = parse_boxes(gt_path)
    refuse_nan(gt, gt_path)
    frame_dir = chunk_dir / "frames" / name
    gt, frames, first_only = frames_for(gt, frame_dir, gt_path, test, require_images)
    n = len(gt)
    return LasotSequence(name=name, class_name=name, path=frame_dir, gt=gt, full_occlusion=zero_rows(gt),
                         out_of_view=np.zeros(n, bool), n_images=len(frames) if frames else None,
                         frames=frames or None, gt_path=gt_path, gt_frames=1 if first_only else None,
                         dataset="trackingnet")


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    names: list[str] = []
    loaders = {}
    for chunk in chunks_of(split):
        anno = root / chunk / "anno"
        if not anno.is_dir():
            raise DatasetError(f"{anno}: missing (expected ROOT/{chunk}/anno/<seq>.txt of the TrackingNet download)")
        test = chunk in TEST_SPLITS
        for p in sorted(anno.glob("*.txt")):
            names.append(p.stem)
            loaders[p.stem] = (lambda c=root / chunk, n=p.stem, t=test: load_sequence(c, n, t, require_images))
    return build_index("trackingnet", split, root, names, loaders, strict)

"""LaSOT and LaSOT_ext: ``ROOT/<class>/<class>-<n>/img/00000001.jpg``, ``groundtruth.txt``,
``full_occlusion.txt``, ``out_of_view.txt`` (the reader lives in `siamtool.data.lasot`; the official
train/test/extension lists and the 14 attributes ship in `siamtool/data/splits/`)."""

from __future__ import annotations

from pathlib import Path

from siamtool.data.lasot import SPLITS, Index, index_lasot

DEFAULT_SPLIT = "test"
__all__ = ["DEFAULT_SPLIT", "SPLITS", "detect", "index"]


def detect(root: Path) -> bool:
    """``<class>/<seq>/groundtruth.txt`` (or a flat ``<seq>/groundtruth.txt``) with an ``img`` folder or
    LaSOT's flag files beside it."""
    for seq_file in list(root.glob("*/*/groundtruth.txt"))[:3] + list(root.glob("*/groundtruth.txt"))[:3]:
        folder = seq_file.parent
        if (folder / "img").is_dir() or (folder / "full_occlusion.txt").is_file():
            return True
    return False


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    return index_lasot(root, split, require_images=require_images, strict=strict)

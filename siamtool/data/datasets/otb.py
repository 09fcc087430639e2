"""otb reader (in progress)."""

from __future__ import annotations

from pathlib import Path

from siamtool.data.lasot import Index
from siamtool.errors import DatasetError

SPLITS: tuple[str, ...] = ("all",)
DEFAULT_SPLIT = "all"


def detect(root: Path) -> bool:
    return False


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    raise DatasetError(f"{root}: the otb reader is not available yet")

"""What every reader shares: natural sorting, frame listing, per-sequence error collection, the Index.

A reader turns one download layout into `LasotSequence` objects (the one sequence type; see
`siamtool.data.lasot`). The rules every reader follows, so that `prepare` and `eval` behave the same on
every benchmark: ground truth stays 1-based x,y,w,h as the benchmark's toolkit scores it; a malformed
sequence raises `DatasetError` naming the file (and line) in strict mode and is skipped with that line
otherwise; a listed sequence that is not on disk goes to `Index.missing`.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

from siamtool.data.lasot import user_split
from siamtool.errors import DatasetError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> list[object]:
    """Sort key that orders ``2.jpg`` before ``10.jpg`` (TrackingNet's frames are not zero-padded)."""
    return [int(p) if p.isdigit() else p.lower() for p in _DIGITS.split(name)]


def list_frames(folder: Path, require: bool = True) -> list[Path]:
    """Image files of `folder` in natural order; a one-line error when the folder is missing."""
    if not folder.is_dir():
        if not require:
            return []
        raise DatasetError(f"{folder}: image folder missing (annotations-only data works for eval --results)")
    names = [e.name for e in os.scandir(folder) if e.name.lower().endswith(IMAGE_SUFFIXES)]
    return [folder / n for n in sorted(names, key=natural_key)]


def check_count(frames: list[Path], n: int, folder: Path, gt_path: Path) -> None:
    if len(frames) != n:
        raise DatasetError(f"{folder}: {len(frames)} frames but {gt_path} has {n} lines")


def first_box_only(gt: np.ndarray, n_frames: int) -> np.ndarray:
    """A test split's one published box padded with NaN rows to `n_frames` (nothing to train or score)."""
    out = np.full((n_frames, 4), np.nan)
    out[: min(len(gt), n_frames)] = gt[:n_frames]
    return out


def frames_for(gt: np.ndarray, frame_dir: Path, gt_path: Path, test: bool,
               require_images: bool) -> tuple[np.ndarray, list[Path], bool]:
    """(gt, frames, first_only) of a sequence of a split that may publish only the first box (GOT-10k test,
    TrackingNet TEST): such a sequence's length is its frame count, so its frames are listed even for
    `eval --results`; a fully annotated test folder is read, and scored, like any other."""
    first_only = test and len(gt) == 1
    frames = list_frames(frame_dir, require=require_images or first_only)
    if first_only:
        if not frames:
            raise DatasetError(f"{frame_dir}: no frames (a test sequence's length is its frame count)")
        gt = first_box_only(gt, len(frames))
    elif require_images:
        check_count(frames, len(gt), frame_dir, gt_path)
    return gt, frames, first_only


def refuse_nan(gt: np.ndarray, gt_path: Path, absent: np.ndarray | None = None) -> None:
    """A NaN box where the layout has no way to say "absent" (or the frame is not flagged absent) is bad
    input: one line naming the file and line. UAV and VOT write NaN for absent and do not call this."""
    bad = np.isnan(gt).any(axis=1)
    if absent is not None:
        bad &= ~absent
    if bad.any():
        line = int(np.argmax(bad)) + 1
        raise DatasetError(f"{gt_path}:{line}: NaN in the box of a frame the dataset does not mark absent "
                           "(fix the annotation, or use --skip-missing / a split without this sequence)")


def zero_rows(gt: np.ndarray) -> np.ndarray:
    """Rows that are exactly 0,0,0,0: LaSOT's way to write "absent", which layouts without absence flags
    (TrackingNet, OTB) can only say so. Read as absent, they score as in LaSOT's layout (pytracking would
    let them pass normalized precision) and are never sampled."""
    return (gt == 0).all(axis=1)


@cache
def table(name: str) -> tuple[dict[str, str], ...]:
    """Rows of a shipped table `siamtool/data/datasets/tables/<name>` (CSV with a header)."""
    text = resources.files("siamtool.data.datasets").joinpath("tables", name).read_text()
    return tuple(csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#")))


def custom_names(split: str, available: Iterable[str], known: Iterable[str]) -> list[str] | None:
    """Names for a split that is 'all' or a file of names; None when `split` is one of `known`."""
    return None if split in known else user_split(split, available, known)

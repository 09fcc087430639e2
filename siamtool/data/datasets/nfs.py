"""NfS (Need for Speed), the 30 fps benchmark: ``ROOT/<seq>/30/<seq>/00001.jpg`` with the annotations
the download ships at 240 fps, ``ROOT/<seq>/240/<seq>.txt`` (or ``ROOT/<seq>/30/<seq>.txt`` where present;
in some sequences that file too holds 240 fps rows).

An annotation line is ``track_id x1 y1 x2 y2 frame lost occluded generated "class"`` (space separated):
the box is converted to x,y,w,h with w = x2 - x1 (as the got10k toolkit reads NfS), a 240 fps file keeps
every 8th row for the 30 fps frames, and a count that still differs by one frame is cut to the shorter
(the toolkits do the same; some NfS sequences have one image or one row more). The class is the label
column, and the ``lost`` column marks the target absent (never sampled; scored as absent, as LaSOT's flags).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamtool.data.datasets.common import custom_names, list_frames, refuse_nan
from siamtool.data.lasot import Index, LasotSequence, build_index
from siamtool.errors import DatasetError

SPLITS = ("all",)
DEFAULT_SPLIT = "all"
STRIDE = 8
"""240 fps rows per 30 fps frame."""


def detect(root: Path) -> bool:
    return any(True for _ in list(root.glob("*/30/*"))[:1]) and any(True for _ in list(root.glob("*/240/*.txt"))[:1]) \
        or any(True for _ in list(root.glob("*/30/*.txt"))[:1])


def _annotation(folder: Path, name: str) -> tuple[Path, bool]:
    for fps, dense in (("30", False), ("240", True)):
        p = folder / fps / f"{name}.txt"
        if p.is_file():
            return p, dense
    raise DatasetError(f"{folder / '240' / f'{name}.txt'}: missing (NfS annotations ship in <seq>/240/<seq>.txt)")


def parse_nfs(path: Path) -> tuple[np.ndarray, np.ndarray, str]:
    """(rows x1,y1,x2,y2, the lost flags, the class label) of an NfS annotation file; one-line error on a bad line."""
    boxes, lost, label = [], [], ""
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        try:
            boxes.append([float(v) for v in parts[1:5]])
        except ValueError:
            raise DatasetError(f"{path}:{n}: cannot parse {line.strip()!r} as 'id x1 y1 x2 y2 ...'") from None
        if len(boxes[-1]) != 4:
            raise DatasetError(f"{path}:{n}: expected 'id x1 y1 x2 y2 frame lost occluded generated label'")
        lost.append(len(parts) > 6 and parts[6] == "1")
        label = label or (parts[9].strip('"') if len(parts) > 9 else "")
    if not boxes:
        raise DatasetError(f"{path}: file is empty")
    return np.asarray(boxes, dtype=np.float64), np.asarray(lost, dtype=bool), label


def load_sequence(root: Path, name: str, require_images: bool) -> LasotSequence:
    folder = root / name
    gt_path, dense = _annotation(folder, name)
    corners, lost, label = parse_nfs(gt_path)
    frames = list_frames(folder / "30" / name, require=require_images)
    n_img = len(frames)
    # As the got10k toolkit: 240 fps rows (about 8 per frame, in either file) are thinned to every 8th.
    if (frames and abs(len(corners) / n_img - STRIDE) < 1) or (dense and not frames):
        corners, lost = corners[::STRIDE], lost[::STRIDE]
    if frames:
        if abs(len(corners) - n_img) > 1:
            raise DatasetError(f"{folder / '30' / name}: {n_img} frames but {gt_path} gives {len(corners)} boxes "
                               f"at 30 fps{' (every 8th of the 240 fps rows)' if dense else ''}")
        n = min(len(corners), n_img)
        corners, lost, frames = corners[:n], lost[:n], frames[:n]
    refuse_nan(corners, gt_path, lost)
    gt = np.concatenate([corners[:, :2], corners[:, 2:] - corners[:, :2]], axis=1)
    n = len(gt)
    return LasotSequence(name=name, class_name=label or name.rstrip("0123456789_"), path=folder, gt=gt,
                         full_occlusion=np.zeros(n, bool), out_of_view=lost,
                         n_images=n if frames else None, frames=frames or None, gt_path=gt_path, dataset="nfs")


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    available = sorted(p.name for p in root.iterdir() if (p / "30").is_dir() or (p / "240").is_dir())
    names = custom_names(split, available, ()) or available
    loaders = {n: (lambda n=n: load_sequence(root, n, require_images)) for n in available}
    return build_index("nfs", split, root, names, loaders, strict)

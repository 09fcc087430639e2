"""UAV123, UAV20L and UAV123@10fps: ``ROOT/data_seq/<SET>/<video>/000001.jpg`` and
``ROOT/anno/<SET>/<seq>.txt`` (x,y,w,h, comma separated; a NaN row means the target is fully occluded or
out of view, so it is absent), with ``<SET>`` = UAV123, UAV20L or UAV123_10fps (the split). UAV20L's
20 full videos have their own ``anno/UAV20L/`` but share UAV123's frames (``data_seq/UAV123/<video>``).

UAV123 cuts 23 long videos into 51 sequences (``bird1_2`` is images 775-1477 of ``bird1``); the shipped
table (`tables/uav.csv`) gives each piece's range at 30 and 10 fps. Every other sequence is its whole
video from image 1, as long as its annotation file. The 12 attributes are read from
``anno/<SET>/att/<seq>.txt`` (one line of 12 0/1 flags, the download's own files) where present.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from siamtool.data.datasets.common import table
from siamtool.data.lasot import Index, LasotSequence, build_index, parse_boxes
from siamtool.errors import DatasetError

ATTRIBUTES: dict[str, str] = {
    "SV": "Scale Variation", "ARC": "Aspect Ratio Change", "LR": "Low Resolution", "FM": "Fast Motion",
    "FOC": "Full Occlusion", "POC": "Partial Occlusion", "OV": "Out-of-View", "BC": "Background Clutter",
    "IV": "Illumination Variation", "VC": "Viewpoint Change", "CM": "Camera Motion", "SOB": "Similar Object",
}
SPLITS = ("UAV123", "UAV20L", "UAV123_10fps")
DEFAULT_SPLIT = "UAV123"
_CLASSES = {"bike": "bicycle", "bird": "bird", "boat": "boat", "building": "building", "car": "car",
            "group": "person", "person": "person", "truck": "truck", "uav": "drone", "wakeboard": "person"}


def detect(root: Path) -> bool:
    return (root / "data_seq").is_dir() and (root / "anno").is_dir()


def _split(split: str) -> str:
    for s in SPLITS:
        if split.lower() in (s.lower(), s.lower().replace("_", "@")):
            return s
    raise DatasetError(f"unknown UAV split {split!r}: use {', '.join(SPLITS)}")


def _attributes(path: Path) -> dict[str, bool]:
    if not path.is_file():
        return {}
    values = [v.strip() for v in path.read_text().replace("\n", ",").split(",") if v.strip()]
    if len(values) != len(ATTRIBUTES) or any(v not in ("0", "1") for v in values):
        raise DatasetError(f"{path}: expected {len(ATTRIBUTES)} comma-separated 0/1 attribute flags")
    return {a: v == "1" for a, v in zip(ATTRIBUTES, values)}


def load_sequence(root: Path, uav_set: str, name: str, require_images: bool) -> LasotSequence:
    gt_path = root / "anno" / uav_set / f"{name}.txt"
    gt = parse_boxes(gt_path)
    piece = {r["name"]: r for r in table("uav.csv")}.get(name) if uav_set != "UAV20L" else None
    video = piece["video"] if piece else name
    key = "_10fps" if uav_set == "UAV123_10fps" else ""
    start = int(piece["start" + key]) if piece else 1
    if piece and int(piece["end" + key]) - start + 1 != len(gt):
        raise DatasetError(f"{gt_path}: {len(gt)} lines but {uav_set} {name} is images {start}-{piece['end' + key]} "
                           f"of {video}")
    folder = root / "data_seq" / uav_set / video
    if uav_set == "UAV20L" and not folder.is_dir():
        folder = root / "data_seq" / "UAV123" / video  # the download keeps UAV20L's frames with UAV123's
    frames = [folder / f"{i:06d}.jpg" for i in range(start, start + len(gt))]
    if require_images:
        for p in (frames[0], frames[-1]):
            if not p.is_file():
                raise DatasetError(f"{p}: missing ({gt_path} has {len(gt)} lines from image {start})")
    absent = np.isnan(gt).all(axis=1)
    prefix = re.match(r"[A-Za-z]*", video).group(0)
    return LasotSequence(name=name, class_name=_CLASSES.get(prefix, prefix), path=folder, gt=gt,
                         full_occlusion=absent, out_of_view=np.zeros(len(gt), bool),
                         n_images=len(gt) if require_images else None,
                         attributes=_attributes(root / "anno" / uav_set / "att" / f"{name}.txt"), frames=frames,
                         gt_path=gt_path, dataset="uav")


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    uav_set = _split(split)
    anno = root / "anno" / uav_set
    if not anno.is_dir():
        raise DatasetError(f"{anno}: missing (expected ROOT/anno/{uav_set}/<seq>.txt of the UAV download)")
    names = sorted(p.stem for p in anno.glob("*.txt"))
    loaders = {n: (lambda n=n: load_sequence(root, uav_set, n, require_images)) for n in names}
    return build_index("uav", uav_set, root, names, loaders, strict, attribute_names=ATTRIBUTES)

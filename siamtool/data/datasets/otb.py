"""OTB-100 (OTB-2015), with OTB-2013 (51) and TB-50 as its subsets.

Layout: ``ROOT/<Seq>/img/0001.jpg`` and ``ROOT/<Seq>/groundtruth_rect.txt`` (comma, tab or space
separated, mixed within one file in BlurCar1). The shipped table (`tables/otb.csv`) carries the quirks:
frame ranges (David 300-770, BlurCar1 247-988, BlurCar3 3-359, BlurCar4 18-397, Football1 1-74,
Freeman3 1-460, Freeman4 1-283, Diving 1-215), Tiger1 scored from frame 6 (its first 5 rows are left
out), two targets in Jogging and Skating2 (``groundtruth_rect.1/.2.txt`` -> Jogging-1, Jogging-2, ...),
Human4 from ``groundtruth_rect.2.txt``, Board's 5-digit image names, the class and the 11 attributes.
A sequence folder that is not in the table (split 'all') is read as its whole ``img`` folder. A 0,0,0,0
row (none in OTB-100 itself) is read as absent, as LaSOT writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from siamtool.data.datasets.common import check_count, list_frames, refuse_nan, table, zero_rows
from siamtool.data.lasot import Index, LasotSequence, build_index, parse_boxes
from siamtool.errors import DatasetError

ATTRIBUTES: dict[str, str] = {
    "IV": "Illumination Variation", "SV": "Scale Variation", "OCC": "Occlusion", "DEF": "Deformation",
    "MB": "Motion Blur", "FM": "Fast Motion", "IPR": "In-Plane Rotation", "OPR": "Out-of-Plane Rotation",
    "OV": "Out-of-View", "BC": "Background Clutters", "LR": "Low Resolution",
}
SPLITS = ("otb100", "otb2013", "otb50", "all")
DEFAULT_SPLIT = "otb100"


def rows() -> dict[str, dict[str, str]]:
    return {r["name"]: r for r in table("otb.csv")}


def detect(root: Path) -> bool:
    return any(p.parent.joinpath("img").is_dir() for p in list(root.glob("*/groundtruth_rect*.txt"))[:3])


def _frames(folder: Path, row: dict[str, str], require: bool) -> list[Path]:
    """Image paths for the row's range; the extension is the one on disk (jpg, or png in some copies)."""
    start, end, digits, omit = (int(row[k]) for k in ("start", "end", "digits", "omit"))
    ext = "jpg"
    if require:
        first = folder / f"{start + omit:0{digits}d}.jpg"
        if not first.is_file():
            alt = [p for p in (first.with_suffix(".png"), first.with_suffix(".jpeg")) if p.is_file()]
            if not alt:
                raise DatasetError(f"{first}: missing (OTB sequence {row['name']} uses images {start}-{end})")
            ext = alt[0].suffix[1:]
    frames = [folder / f"{i:0{digits}d}.{ext}" for i in range(start + omit, end + 1)]
    if require and not frames[-1].is_file():
        raise DatasetError(f"{frames[-1]}: missing (OTB sequence {row['name']} uses images {start}-{end})")
    return frames


def load_sequence(root: Path, name: str, row: dict[str, str] | None, require_images: bool) -> LasotSequence:
    folder = root / (row["folder"] if row else name)
    gt_path = folder / (row["gt_file"] if row else "groundtruth_rect.txt")
    if not gt_path.is_file():
        raise DatasetError(f"{gt_path}: missing (is {folder} an OTB sequence folder?)")
    gt = parse_boxes(gt_path)
    refuse_nan(gt, gt_path)
    if row is not None:
        omit = int(row["omit"])
        expected = int(row["end"]) - int(row["start"]) + 1
        if len(gt) != expected:
            raise DatasetError(f"{gt_path}: {len(gt)} lines but OTB's {name} has {expected} annotated frames "
                               f"(images {row['start']}-{row['end']})")
        gt = gt[omit:]
        frames = _frames(folder / "img", row, require_images)
    else:
        frames = list_frames(folder / "img", require=require_images)
        if require_images:
            check_count(frames, len(gt), folder / "img", gt_path)
    n = len(gt)
    attributes = {a: row[a] == "1" for a in ATTRIBUTES} if row else {}
    return LasotSequence(name=name, class_name=row["class"] if row else name, path=folder, gt=gt,
                         full_occlusion=zero_rows(gt), out_of_view=np.zeros(n, bool),
                         n_images=n if require_images else None, attributes=attributes, frames=frames or None,
                         gt_path=gt_path, dataset="otb")


def index(root: Path, split: str, require_images: bool = True, strict: bool = False) -> Index:
    table_rows = rows()
    if split == "otb100":
        names = list(table_rows)
    elif split in ("otb2013", "otb50"):
        names = [n for n, r in table_rows.items() if r[split] == "1"]
    elif split == "all":
        names = [n for n, r in table_rows.items() if (root / r["folder"]).is_dir()]
        names += sorted(p.parent.name for p in root.glob("*/groundtruth_rect.txt")
                        if p.parent.name not in {r["folder"] for r in table_rows.values()})
    else:
        raise DatasetError(f"unknown OTB split {split!r}: use {', '.join(SPLITS)}")
    loaders = {}
    for n in names:
        row = table_rows.get(n)
        if (root / (row["folder"] if row else n)).is_dir():
            loaders[n] = (lambda n=n, row=row: load_sequence(root, n, row, require_images))
    return build_index("otb", split, root, names, loaders, strict, attribute_names=ATTRIBUTES)

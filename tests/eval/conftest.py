"""Helpers for the eval tests: tiny hand-written LaSOT annotation folders and result files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


def write_sequence(root: Path, name: str, gt, absent=None) -> Path:
    """ROOT/<class>/<name>/ with groundtruth.txt, full_occlusion.txt and an all-zero out_of_view.txt."""
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    absent = np.zeros(len(gt), dtype=int) if absent is None else np.asarray(absent, dtype=int)
    folder = root / name.rsplit("-", 1)[0] / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "groundtruth.txt").write_text("\n".join(",".join(f"{v:g}" for v in row) for row in gt) + "\n")
    (folder / "full_occlusion.txt").write_text(",".join(str(v) for v in absent) + "\n")
    (folder / "out_of_view.txt").write_text(",".join("0" for _ in absent) + "\n")
    return folder


def write_result(directory: Path, name: str, rows, sep: str = ",") -> Path:
    """DIR/<name>.txt with one x,y,w,h line per row (values written as given, so 'nan' works)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.txt"
    path.write_text("\n".join(sep.join(f"{v:g}" for v in row) for row in rows) + "\n")
    return path


@pytest.fixture
def tiny(tmp_path) -> dict:
    """Two sequences with hand-computable scores and a results folder 'good' for both.

    airplane-1: GT 10x10 at (1,1) for 4 frames, frame 4 absent; predictions: frames 1 and 2 exact,
    frame 3 moved right by 5 px (IoU 50/150 = 1/3, centre error 5 px, 0.5 of the width), frame 4 exact
    but the target is absent there, so it is a failure.
    basketball-1: GT 10x10 for 2 frames, both predictions exact.
    """
    root = tmp_path / "lasot"
    write_sequence(root, "airplane-1", [[1, 1, 10, 10]] * 4, absent=[0, 0, 0, 1])
    write_sequence(root, "basketball-1", [[1, 1, 10, 10]] * 2)
    split = tmp_path / "split.txt"
    split.write_text("airplane-1\nbasketball-1\n")
    good = tmp_path / "good"
    write_result(good, "airplane-1", [[1, 1, 10, 10], [1, 1, 10, 10], [6, 1, 10, 10], [1, 1, 10, 10]])
    write_result(good, "basketball-1", [[1, 1, 10, 10], [1, 1, 10, 10]], sep="\t")
    return {"root": root, "split": split, "good": good, "tmp": tmp_path}

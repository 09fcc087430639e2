"""Where a tracker's overlap goes: position or size. Reads a `peers.py --out` folder's raw results.

A success AUC gap at high IoU thresholds can come from centres or from box sizes; the fix differs (the
heatmap and the online model place the centre, the box head and the size smoothing make the size). On
the frames a tracker follows (IoU > 0.3 after the first), each box is scored three ways: as it is, moved to
the ground truth's centre (what its size alone loses), and resized to the ground truth's size (what its
centre alone loses). Mean IoU over those frames, pooled over the sequences:

    python benchmarks/peers.py --peers-python PY --lasot ROOT --out /tmp/peers
    python benchmarks/box_error.py --results /tmp/peers --lasot ROOT [--sequences face-3 ...]

docs/benchmarks.md, "Where the held-out gap is", has the table this printed for the shipped tracker.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siamtool.data.lasot import LasotSequence, index_lasot  # noqa: E402
from siamtool.eval.results import load_tracker_results  # noqa: E402
from siamtool.geometry import iou_xywh  # noqa: E402

TRACKED_IOU = 0.3
"""Frames below this overlap are failures, which success AUC already counts; the split is about the rest."""


def split(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(IoU, IoU at the ground truth's centre, IoU at the ground truth's size) of x,y,w,h boxes, per row."""
    pc, gc = pred[:, :2] + pred[:, 2:] / 2, gt[:, :2] + gt[:, 2:] / 2
    at_gt_centre = np.hstack([gc - pred[:, 2:] / 2, pred[:, 2:]])
    at_gt_size = np.hstack([pc - gt[:, 2:] / 2, gt[:, 2:]])
    return iou_xywh(pred, gt), iou_xywh(at_gt_centre, gt), iou_xywh(at_gt_size, gt)


def tracker_rows(results: Path, seqs: list[LasotSequence]) -> list[tuple[str, int, float, float, float]]:
    """(tracker, tracked frames, mean IoU, size-only IoU, centre-only IoU) of every tracker in results/raw."""
    rows = []
    for folder in sorted(p for p in (results / "raw").iterdir() if p.is_dir() and not p.name.startswith(".")):
        loaded = load_tracker_results(folder.name, folder, seqs).raw
        parts = []
        for s in seqs:
            if s.name not in loaded:
                continue
            ok = s.visible & np.all(s.gt[:, 2:] > 0, axis=1)
            ok[0] = False  # frame 1 is the given box
            full, size_only, centre_only = split(loaded[s.name][ok], s.gt[ok])
            tracked = full > TRACKED_IOU
            parts.append(np.stack([full[tracked], size_only[tracked], centre_only[tracked]]))
        if parts:
            pooled = np.concatenate(parts, axis=1)
            rows.append((folder.name, pooled.shape[1], *(float(v) for v in pooled.mean(axis=1))))
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, required=True, help="a peers.py --out folder (its raw/ is read)")
    ap.add_argument("--lasot", type=Path, required=True, help="the LaSOT-layout root the results were made on")
    ap.add_argument("--sequences", nargs="*", help="only these sequences (default: every one with results)")
    args = ap.parse_args(argv)
    if not (args.results / "raw").is_dir():
        raise SystemExit(f"--results {args.results}: no raw/ folder; give the --out of a peers.py run")
    seqs = [s for s in index_lasot(args.lasot, "all").sequences if not args.sequences or s.name in args.sequences]
    print(f"| tracker | frames tracked (IoU > {TRACKED_IOU}) | IoU | at GT centre (size error only) "
          "| at GT size (centre error only) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, n, full, size_only, centre_only in tracker_rows(args.results, seqs):
        print(f"| {name} | {n} | {full:.3f} | {size_only:.3f} | {centre_only:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

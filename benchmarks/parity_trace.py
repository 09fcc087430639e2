"""Where do two runtimes' free-running tracks part? Per-frame state of both, side by side.

    python benchmarks/parity_trace.py --lasot ../shared/data/real_lasot --sequence motorcycle-2
    python benchmarks/parity_trace.py --lasot ../shared/data/train_real --sequence car-112 --runtimes torch opencv

Tracks one sequence with the shipped checkpoint (or --checkpoint) on two runtimes in lockstep and prints,
for every frame where a discrete decision differs or the centres are more than --px apart: the centre
distance, and per runtime the chosen cell, the fused score at it, the lost flag, the search growth and
whether the online model took a sample. Stops once the centres are --stop px apart (the tracks parted).
`runtime_parity.py` says *whether* runtimes agree; this says at which frame and which decision flips.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from runtime_parity import RUNTIMES, backend  # noqa: E402
from trace_report import recorded_choices, report_parting  # noqa: E402
from tune_tracking import load_frames  # noqa: E402

import siamtool.tracking.tracker as tracker_module  # noqa: E402
from siamtool.geometry import from_lasot  # noqa: E402
from siamtool.weights import default_checkpoint  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, required=True, help="LaSOT-layout root")
    ap.add_argument("--sequence", required=True)
    ap.add_argument("--runtimes", nargs=2, choices=RUNTIMES, default=["torch", "onnxruntime"])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--px", type=float, default=0.5, help="print frames whose centres are this far apart")
    ap.add_argument("--stop", type=float, default=8.0, help="stop once the centres are this far apart")
    return ap.parse_args(argv)


def step(tracker: tracker_module.Tracker, frame: np.ndarray, chosen: list) -> dict:
    """Track one frame; the decisions it took."""
    before = tracker.online.frames_since_update if tracker.online is not None else -1
    r = tracker.track(frame)
    sampled = tracker.online is not None and tracker.online.frames_since_update == 0 and before != 0
    return {"cell": chosen[-1].index, "score": round(r.score, 4), "lost": r.lost, "growth": round(r.growth, 3),
            "sampled": sampled}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    _, frames, gt, _ = load_frames([args.lasot], [args.sequence])[0]
    ckpt = args.checkpoint or default_checkpoint()
    with recorded_choices() as chosen:
        trackers = []
        for runtime in args.runtimes:
            b, cfg = backend(runtime, ckpt)
            trackers.append(tracker_module.Tracker(b, cfg))
            trackers[-1].initialize(frames[0], from_lasot(gt[0]))
        return report_parting(lockstep(trackers, frames, chosen, args.runtimes), "centres", args.px, args.stop)


def lockstep(trackers: list, frames: list[np.ndarray], chosen: list, runtimes: list[str]):
    """(frame, centre distance, decisions differ, both rows) per frame, the trackers stepped together."""
    for k, frame in enumerate(frames[1:], 1):
        rows = [step(t, frame, chosen) for t in trackers]
        dist = float(np.hypot(*(trackers[0].center - trackers[1].center)))
        yield k, dist, rows[0] != rows[1], "  |  ".join(
            f"{rt}: " + " ".join(f"{key} {val}" for key, val in row.items()) for rt, row in zip(runtimes, rows))


if __name__ == "__main__":
    raise SystemExit(main())

"""Does the box head read the target's size, or repeat the size of the window it was given?

The tracker cuts each search window from its current size estimate. If that estimate is off by a factor
r, a box head that reads the target answers with the true size; one that leans on the size it saw most
in training answers with something closer to the window's. For frames of each sequence (every
`--stride`th), the window is cut around the true centre for a believed size of true x f (f from 0.7 to
1/0.7, log-spaced), and the raw head (no size calibration) at the best-scoring cell gives a size. The
least-squares slope of log(predicted / believed) on log(true / believed), pooled over frames and both
axes, is

- 1: the head corrects the whole error in one frame;
- 0: it repeats the window's size, and the tracker's size can only drift.

With slope k and a head that is biased by b (log) on a sequence, the tracker's size settles where
k x + b = 0: an error of -b / k. A slope of 0.4 turns a 10 % head bias into a 25 % size error, which is
why sizes drift on held-out footage (docs/benchmarks.md, "Where the held-out gap is"). A wider training
scale jitter (`train.augment.scale` 0.5 instead of 0.25) raised it from 0.33 to 0.62 in a small probe (two seeds)
and from 0.41 to 0.76 in the shipped recipe (recipe C, three seeds; MODEL_CARD.md).

    python benchmarks/head_size_slope.py --lasot $S/train_real --lasot $S/train_real2 --sequences $VAL14
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tune_tracking import backend_for, load_frames  # noqa: E402

from siamtool.config import config_from_dict  # noqa: E402
from siamtool.geometry import crop_antialiased, from_lasot, search_window  # noqa: E402
from siamtool.tracking.tracker import Tracker  # noqa: E402

FACTORS = np.exp(np.linspace(np.log(0.7), np.log(1 / 0.7), 5))
"""Believed size / true size: +-36 % in log, beyond recipe B's training jitter (`train.augment.scale` 0.25,
x0.78-1.28) and within recipe C's (0.5, x0.61-1.65)."""


def size_errors(backend, cfg, frames: list[np.ndarray], gt: np.ndarray, absent: np.ndarray,
                stride: int) -> tuple[np.ndarray, np.ndarray]:
    """(log true/believed, log predicted/believed) per frame, factor and axis, the template from frame 1."""
    d = cfg.data
    tracker = Tracker(backend, cfg)
    tracker.initialize(frames[0], from_lasot(gt[0]))
    x, y = [], []
    for i in range(1, len(frames), stride):
        if absent[i] or gt[i][2] <= 0 or gt[i][3] <= 0:
            continue
        box = from_lasot(gt[i])
        centre = box[:2] + box[2:] / 2
        for f in FACTORS:
            believed = box[2:] * f
            window = search_window(np.concatenate([centre - believed / 2, believed]), d.context,
                                   d.template_size, d.search_size, 1.0)
            crop = cv2.cvtColor(crop_antialiased(frames[i], window), cv2.COLOR_BGR2RGB)
            score, boxes = backend.search(crop, tracker.features)[:2]
            cell = np.unravel_index(int(np.argmax(score)), score.shape)
            x.append(np.log(box[2:] / believed))
            y.append(np.log(boxes[cell][2:] / window.scale / believed))
    return np.ravel(x), np.ravel(y)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, action="append", required=True, help="LaSOT-layout root (repeatable)")
    ap.add_argument("--sequences", nargs="+", required=True, help="sequence names")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped one)")
    ap.add_argument("--stride", type=int, default=3, help="every Nth frame (default 3)")
    args = ap.parse_args(argv)
    backend, trained = backend_for(argparse.Namespace(checkpoint=args.checkpoint, backend="onnx"))
    cfg = config_from_dict(trained.to_dict(), "checkpoint")
    xs, ys = [], []
    print("| sequence | slope | bias at the true size |")
    print("| --- | ---: | ---: |")
    for name, frames, gt, absent in load_frames(args.lasot, args.sequences):
        x, y = size_errors(backend, cfg, frames, gt, absent, args.stride)
        slope, bias = np.polyfit(x, y, 1)
        print(f"| {name} | {slope:.2f} | {bias:+.3f} |", flush=True)
        xs.append(x)
        ys.append(y)
    slope, bias = np.polyfit(np.concatenate(xs), np.concatenate(ys), 1)
    print(f"| **pooled** ({sum(len(x) for x in xs)} answers) | **{slope:.2f}** | {bias:+.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What distractor-aware scoring (`track.distractor_weight`) costs per tracked frame.

    python benchmarks/distractor_cost.py                      # dev-test: real_lasot face-3, motorcycle-2, person-1
    python benchmarks/distractor_cost.py --frames 100 --threads 1

The shipped tracker (onnxruntime) tracks the sequences with `track.distractor_weight=1`;
`DistractorMemory.multiplier` (per frame) and `DistractorMemory.observe` (confident frames and the first
frame) are timed by wrapping them, next to `TrackResult.time_s`, the whole tracking call. A share of the
frame time, measured in one process on the same frames, is what a busy shared CPU changes least; the
FPS of two separate runs under a changing load would not say it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from runtime_parity import DEV_TEST, SHARED  # noqa: E402
from tune_tracking import load_frames  # noqa: E402

from siamtool.config import config_from_dict  # noqa: E402
from siamtool.geometry import from_lasot  # noqa: E402
from siamtool.reporting import WarningsReporter  # noqa: E402
from siamtool.tracking import online  # noqa: E402
from siamtool.tracking.cache import cached_onnx_backend  # noqa: E402
from siamtool.tracking.tracker import Tracker  # noqa: E402
from siamtool.weights import default_checkpoint  # noqa: E402

SPENT = {"multiplier": 0.0, "observe": 0.0}


def timed(name: str, fn):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            SPENT[name] += time.perf_counter() - t0
    return wrapper


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, default=SHARED / "real_lasot")
    ap.add_argument("--sequences", nargs="+", default=list(DEV_TEST))
    ap.add_argument("--frames", type=int, default=0, help="frames per sequence (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    online.DistractorMemory.multiplier = timed("multiplier", online.DistractorMemory.multiplier)
    online.DistractorMemory.observe = timed("observe", online.DistractorMemory.observe)
    backend = cached_onnx_backend(default_checkpoint(), "cpu", WarningsReporter())
    cfg = config_from_dict(backend.cfg.to_dict(), "checkpoint")
    cfg.track.distractor_weight = 1.0
    tracker = Tracker(backend, cfg)
    frame_ms, spent = [], {"multiplier": 0.0, "observe": 0.0}
    for _, frames, gt, _ in load_frames([args.lasot], args.sequences):
        frames = frames[: args.frames] if args.frames else frames
        tracker.initialize(frames[0], from_lasot(gt[0]))
        SPENT.update(multiplier=0.0, observe=0.0)  # the first frame's observe is initialisation time
        for frame in frames[1:]:
            frame_ms.append(tracker.track(frame).time_s * 1e3)
        for k in spent:
            spent[k] += SPENT[k] * 1e3
    n, total = len(frame_ms), sum(frame_ms)
    extra = spent["multiplier"] + spent["observe"]
    print(f"{n} frames: tracking {statistics.median(frame_ms):.2f} ms median, {total / n:.2f} ms mean per frame; "
          f"distractor scoring {extra / n:.3f} ms per frame (multiplier {spent['multiplier'] / n:.3f}, observe "
          f"{spent['observe'] / n:.3f}) = {100 * extra / total:.2f} % of the tracking time; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""onnxruntime's worker threads: how they wait (`SPIN_MODES`) and how loops are split (`DYNAMIC_BLOCK_BASE`).

    OMP_NUM_THREADS=2 python benchmarks/ort_threads.py                  # dev-test, 2 threads, 3 rounds
    OMP_NUM_THREADS=2 python benchmarks/ort_threads.py --camera-fps 30  # also paced like a 30 FPS camera
    OMP_NUM_THREADS=2 python benchmarks/ort_threads.py --variants off off+blocks run --lasot ROOT --decode

The shipped tracker (onnxruntime on its cached export) tracks the real dev-test sequences (frames decoded
once) with one `OnnxBackend` per variant (`VARIANTS`): the workers sleep after each operator (``off``,
siamtool before 2026-12-07), the same with loops handed out in dynamic blocks (``off+blocks``, the
default), spin between the operators of a run and stop when it returns (``run``, ``run+blocks``), or keep
spinning after a run too (``always``, onnxruntime's own default). Each round runs every variant over every sequence,
in rotating order, one sequence at a time, so all see the same machine. Reported per variant: FPS of the
tracking calls (`TrackResult.time_s`, as `peers.py` counts it), the ratio to the first variant, and the
process's CPU time (all its threads) against wall time: 2.0 means both cores busy all the time. With
`--camera-fps`, each variant also tracks the first sequence with frames handed over at that rate (the
tracker idles until the next frame is due), where spinning between frames costs a core for nothing.
With `--busy N`, N processes that only burn CPU run beside it (a machine shared with other jobs).
With `--decode`, every frame is read from its JPEG just before it is tracked, as `siamtool eval` and
`peers.py` do (the decode is not timed, but it leaves the caches cold for the tracker). The boxes must
not depend on the variant (same arithmetic, different waiting): the largest difference is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from track_profile import SHARED, load, patched, sequences  # noqa: E402

from siamtool import onnx_format  # noqa: E402
from siamtool.geometry import from_lasot  # noqa: E402
from siamtool.reporting import WarningsReporter  # noqa: E402
from siamtool.tracking.cache import cached_onnx_backend  # noqa: E402
from siamtool.tracking.onnx_backend import OnnxBackend  # noqa: E402
from siamtool.tracking.tracker import Tracker  # noqa: E402
from siamtool.weights import default_checkpoint  # noqa: E402

BLOCKS = onnx_format.DYNAMIC_BLOCK_BASE
VARIANTS = {"off": ("off", 0), "off+blocks": ("off", BLOCKS), "run": ("run", 0), "run+blocks": ("run", BLOCKS),
            "always": ("always", 0)}
"""name -> (`SPIN_MODES` key, ``session.dynamic_block_base``)."""


def frame_paths(root: Path, names: list[str]) -> list[tuple[str, list[Path], np.ndarray, np.ndarray]]:
    """`track_profile.load`'s tuples with JPEG paths instead of decoded frames (for `--decode`)."""
    seqs = sequences(root, names)
    return [(n, [s.frame_path(i) for i in range(s.n_frames)], s.gt, s.absent) for n, s in zip(names, seqs)]


def track(tracker: Tracker, frames: list, box: np.ndarray,
          pace: float = 0.0) -> tuple[list[float], np.ndarray, float, float]:
    """(tracking-call seconds per frame, boxes, process CPU seconds, wall seconds) of one pass over
    `frames` (decoded, or JPEG paths to decode one by one); with `pace`, frame i is handed over no
    earlier than i x pace seconds after the first."""
    def read(frame):
        return cv2.imread(str(frame), cv2.IMREAD_COLOR) if isinstance(frame, Path) else frame

    tracker.initialize(read(frames[0]), box)
    times, boxes = [], [np.asarray(box, dtype=np.float64)]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i, frame in enumerate(frames[1:], start=1):
        if pace:
            delay = wall0 + i * pace - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        result = tracker.track(read(frame))
        times.append(result.time_s)
        boxes.append(result.box)
    return times, np.array(boxes), time.process_time() - cpu0, time.perf_counter() - wall0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, default=SHARED / "real_lasot", help="LaSOT-layout root")
    ap.add_argument("--sequences", nargs="+", default=["person-1", "motorcycle-2", "face-3"])
    ap.add_argument("--threads", type=int, default=2, help="intra-op threads (default 2)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over every variant and sequence (default 3)")
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS),
                    help="the variants to compare, the first is the baseline (default: all, off first)")
    ap.add_argument("--busy", type=int, default=0, help="CPU-burning processes to run beside it (default 0)")
    ap.add_argument("--decode", action="store_true", help="read each frame from its JPEG just before tracking it")
    ap.add_argument("--camera-fps", type=float, default=0.0, help="also track the first sequence paced at this rate")
    args = ap.parse_args()

    folder = cached_onnx_backend(default_checkpoint(), "cpu", reporter=WarningsReporter()).path
    names = args.variants
    trackers = {}
    for name in names:
        spin, block_base = VARIANTS[name]
        with patched(onnx_format, DYNAMIC_BLOCK_BASE=block_base):
            trackers[name] = Tracker(OnnxBackend(folder, ["CPUExecutionProvider"], args.threads, spin=spin))
    data = frame_paths(args.lasot, args.sequences) if args.decode else load(args.lasot, args.sequences, 0)
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(args.busy)]
    try:
        measure(args, names, trackers, data)
    finally:
        for p in burners:
            p.kill()


def measure(args: argparse.Namespace, names: list[str], trackers: dict[str, Tracker], data: list) -> None:
    """Track every sequence with every variant, `args.rounds` times, and print the table."""
    print(f"{platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, {args.busy} busy processes beside, load average "
          f"{os.getloadavg()[0]:.1f}; {sum(len(f) - 1 for _, f, _, _ in data)} frames of {', '.join(args.sequences)}")
    times: dict[str, list[float]] = {n: [] for n in names}
    cpu, wall = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    boxes: dict[str, dict[str, np.ndarray]] = {n: {} for n in names}
    for r in range(args.rounds):
        for seq, frames, gt, _ in data:
            for n in names[r % len(names):] + names[:r % len(names)]:
                t, b, c, w = track(trackers[n], frames, from_lasot(gt[0]))
                times[n] += t
                cpu[n] += c
                wall[n] += w
                boxes[n][seq] = b
    fps = {n: len(times[n]) / sum(times[n]) for n in names}
    base = names[0]
    camera = f" CPU / wall at {args.camera_fps:g} FPS |" if args.camera_fps else ""
    rows = [f"| variant | FPS | / {base} | CPU / wall, back to back |{camera}",
            "| --- | ---: | ---: | ---: |" + (" ---: |" if args.camera_fps else "")]
    for n in names:
        row = f"| {n} | {fps[n]:.1f} | {fps[n] / fps[base]:.2f}x | {cpu[n] / wall[n]:.2f} |"
        if args.camera_fps:
            _, frames, gt, _ = data[0]
            _, _, c, w = track(trackers[n], frames, from_lasot(gt[0]), pace=1.0 / args.camera_fps)
            row += f" {c / w:.2f} |"
        rows.append(row)
    print("\n".join(rows))
    diff = max(float(np.max(np.abs(boxes[n][s] - boxes[base][s]))) for n in names for s in boxes[n])
    print(f"largest box difference between variants: {diff:.3g} px; load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

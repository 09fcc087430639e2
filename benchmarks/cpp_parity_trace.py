"""Where do the C++ tracker and the Python Tracker part? Per-frame windows and decisions, side by side.

    cmake -S cpp -B cpp/build && cmake --build cpp/build
    siamtool export --out /tmp/export
    python benchmarks/cpp_parity_trace.py /tmp/export motorcycle-2
    python benchmarks/cpp_parity_trace.py /tmp/export face-3 --px 0.1
    PYTHONPATH=.:benchmarks /usr/bin/python3 benchmarks/cpp_parity_trace.py /tmp/export face-3 --px 1e-9 --stop 1e-9

The last runs the Python side under Debian's python3-opencv, the OpenCV the C++ program links: one
runtime, so the windows agree to the bit unless the host arithmetic differs (exit 1 at the first frame
more than --stop apart; tests/cpp uses it so).

`parity_trace.py` does this for two Python runtimes; here one side is `cpp/build/siamtool-track` (its
SIAMTOOL_DEBUG=1 lines: each frame's search window and chosen cell) and the other the Python Tracker on
OpenCV's DNN, both 1 thread, on the frames of a real_lasot sequence written as PNGs (so both read the same
pixels). Printed: every frame where the chosen cell or the lost flag differs or the search windows are more
than --px apart (centre or side, frame pixels), until they are --stop px apart. A port that is right shows
windows that drift slowly (the runtimes' 1e-6 differences, amplified by the tracker) and a first decision
that flips at a near tie; a porting error shows up as a jump with every earlier frame equal.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np
from trace_report import recorded_choices, report_parting

import siamtool.tracking.tracker as tracker_module
from siamtool.geometry import from_lasot
from siamtool.tracking.opencv_backend import OpenCVBackend

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real_lasot"


def cpp_trace(binary: Path, export: Path, source: str, init: np.ndarray, tmp: Path) -> list[dict]:
    """Per tracked frame: the C++ program's window (cx, cy, side), chosen cell and lost flag."""
    run = subprocess.run([str(binary), str(export), source, "--init", ",".join(repr(float(v)) for v in init),
                          "--save-boxes", str(tmp / "boxes.txt"), "--threads", "1"], capture_output=True, text=True,
                         check=True, env=dict(os.environ, SIAMTOOL_DEBUG="1"))
    lost = np.loadtxt(tmp / "boxes.txt", delimiter=",", ndmin=2)[1:, 5]
    rows = []
    for line, flag in zip((t.split() for t in run.stderr.splitlines() if t.startswith("win ")), lost):
        rows.append({"window": np.array([float(v) for v in line[1:4]]), "cell": (int(line[9]), int(line[10])),
                     "lost": bool(flag)})
    return rows


def python_trace(export: Path, frames: list[np.ndarray], init: np.ndarray) -> list[dict]:
    """The same per tracked frame from the Python Tracker on OpenCV's DNN."""
    with recorded_choices() as chosen:
        tracker = tracker_module.Tracker(OpenCVBackend(export, threads=1))
        tracker.initialize(frames[0], init)
        rows = []
        for frame in frames[1:]:
            w = tracker.next_window()
            result = tracker.track(frame)
            rows.append({"window": np.array([w.cx, w.cy, w.side]), "cell": chosen[-1].index, "lost": result.lost})
        return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("export", type=Path, help="a `siamtool export` folder")
    ap.add_argument("sequence", help="a real_lasot sequence name (motorcycle-2)")
    ap.add_argument("--binary", type=Path, default=REPO / "cpp" / "build" / "siamtool-track")
    ap.add_argument("--px", type=float, default=0.5, help="print frames whose windows are this far apart")
    ap.add_argument("--stop", type=float, default=8.0, help="stop once the windows are this far apart")
    ap.add_argument("--frames", type=int, default=None, help="the first this many frames (default: all)")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    seq = next(REAL.glob(f"*/{args.sequence}"))
    frames = [cv2.imread(str(f)) for f in sorted((seq / "img").glob("*.jpg"))[: args.frames]]
    init = from_lasot(np.loadtxt(seq / "groundtruth.txt", delimiter=",", max_rows=1))
    with tempfile.TemporaryDirectory() as tmp:
        for i, frame in enumerate(frames):
            cv2.imwrite(str(Path(tmp) / f"{i:05d}.png"), frame)
        cpp = cpp_trace(args.binary, args.export, str(Path(tmp) / "*.png"), init, Path(tmp))
    py = python_trace(args.export, frames, init)
    steps = ((k, float(np.abs(c["window"] - p["window"]).max()), c["cell"] != p["cell"] or c["lost"] != p["lost"],
              f"C++: cell {c['cell']} lost {c['lost']}  |  Python: cell {p['cell']} lost {p['lost']}")
             for k, (c, p) in enumerate(zip(cpp, py), 1))
    return report_parting(steps, "windows", args.px, args.stop, number="9.2e")


if __name__ == "__main__":
    raise SystemExit(main())

"""Frames per second of the reference C++ tracker (cpp/) and the Python Tracker on one export, same threads.

Both run the whole tracker (crops, the two graphs, the online filter, the host logic) on OpenCV's DNN
module: the C++ program on the OpenCV it was built against (Debian 12: 4.6.0, the `opencv4/` graphs), the
Python Tracker on the `opencv-python` of the environment (`track.backend=opencv`). Timed is tracking only:
from a decoded frame to the box (the C++ program prints it; in Python `TrackResult.time_s`), the first
frame (initialisation) excluded. The two alternate per sequence so both see the same machine load; the
1-minute load average is printed with the table. Also printed: the mean IoU between the two box
sequences (the parity `tests/cpp/test_cpp_tracker.py` checks), the same for the Python Tracker on
onnxruntime against the Python Tracker on OpenCV (how far two Python runtimes whose graphs agree to
~1e-6 already drift apart: the floor of any cross-runtime parity), and each track's success AUC against
the ground truth (21 IoU thresholds 0..1, visible frames after the first).

    cmake -S cpp -B cpp/build && cmake --build cpp/build
    siamtool export --out /tmp/export
    python benchmarks/cpp_vs_python.py /tmp/export --threads 1
    python benchmarks/cpp_vs_python.py /tmp/export --threads 2 --sequences person-1 bag-1
    python benchmarks/cpp_vs_python.py /tmp/export --threads 1 --python /usr/bin/python3

`--python`: the Python Tracker runs under that interpreter instead, on its OpenCV: Debian's python3 with
python3-opencv loads the very libopencv_dnn the C++ program links (the `opencv4/` graphs), so the two sides
share one runtime and only the host logic's arithmetic differs.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from siamtool.geometry import from_lasot, iou_xywh
from siamtool.tracking.opencv_backend import OpenCVBackend
from siamtool.tracking.tracker import Tracker

REPO = Path(__file__).resolve().parents[1]
REAL = REPO.parent / "shared" / "data" / "real_lasot"


def run_cpp(binary: Path, export: Path, seq: Path, init: np.ndarray, threads: int) -> tuple[float, np.ndarray]:
    """(tracking FPS the program reports, its boxes)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "boxes.txt"
        run = subprocess.run([str(binary), str(export), str(seq / "img" / "*.jpg"), "--init",
                              ",".join(repr(float(v)) for v in init), "--save-boxes", str(out), "--threads", str(threads)],
                             capture_output=True, text=True, check=True)
        fps = float(re.search(r"([0-9.]+) FPS", run.stderr).group(1))  # type: ignore[union-attr]
        return fps, np.loadtxt(out, delimiter=",")[:, :4]


def run_python(export: Path, seq: Path, init: np.ndarray, threads: int, runtime: str = "opencv"
               ) -> tuple[float, np.ndarray]:
    cv2.setNumThreads(threads)
    if runtime == "opencv":
        backend = OpenCVBackend(export, threads=threads)
    else:  # onnxruntime only here: Debian's python3 (`--python`) runs the OpenCV side without it
        from siamtool.tracking.onnx_backend import OnnxBackend

        backend = OnnxBackend(export, threads=threads)
    tracker = Tracker(backend)
    files = sorted((seq / "img").glob("*.jpg"))
    tracker.initialize(cv2.imread(str(files[0])), init)
    boxes, seconds = [init], 0.0
    for f in files[1:]:
        result = tracker.track(cv2.imread(str(f)))
        seconds += result.time_s
        boxes.append(result.box)
    return (len(files) - 1) / seconds, np.array(boxes)


EXTERNAL = """
import sys
from pathlib import Path
import cv2, numpy as np
from cpp_vs_python import run_python
fps, boxes = run_python(Path(sys.argv[1]), Path(sys.argv[3]), np.array(sys.argv[4].split(","), float), int(sys.argv[5]))
np.save(sys.argv[2], boxes)
print(fps, cv2.__version__)
"""


def run_external(python: str, export: Path, seq: Path, init: np.ndarray, threads: int) -> tuple[float, np.ndarray]:
    """`run_python` under another interpreter (its own OpenCV): the repository and this folder on its path."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "boxes.npy"
        run = subprocess.run([python, "-c", EXTERNAL, str(export), str(out), str(seq),
                              ",".join(repr(float(v)) for v in init), str(threads)], capture_output=True, text=True,
                             check=True, env=dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "benchmarks")])))
        return float(run.stdout.split()[0]), np.load(out)


def success_auc(boxes: np.ndarray, seq: Path) -> float:
    """Mean success rate over 21 IoU thresholds 0..1 on the visible frames after the first (percent)."""
    gt = from_lasot(np.loadtxt(seq / "groundtruth.txt", delimiter=","))
    visible = np.all(gt[:, 2:] > 0, axis=1)
    visible[0] = False
    iou = iou_xywh(boxes[visible], gt[visible])
    return 100.0 * float(np.mean([(iou > t).mean() for t in np.linspace(0, 1, 21)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="a `siamtool export` folder")
    parser.add_argument("--binary", type=Path, default=REPO / "cpp" / "build" / "siamtool-track")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--sequences", nargs="*", default=None, help="real_lasot names (default: all 5)")
    parser.add_argument("--python", default=None,
                        help="run the Python Tracker under this interpreter (its OpenCV; default: this one)")
    args = parser.parse_args()
    where = f"OpenCV {cv2.__version__} in Python"
    if args.python:
        probe = [args.python, "-c", "import cv2; print(cv2.__version__)"]
        where = f"OpenCV {subprocess.run(probe, capture_output=True, text=True, check=True).stdout.strip()} in {args.python}"
    seqs = sorted(p for p in REAL.glob("*/*") if p.is_dir() and (not args.sequences or p.name in args.sequences))
    print(f"| sequence | frames | C++ FPS | Python FPS | IoU C++ vs Python | IoU Python onnxruntime vs OpenCV | "
          f"AUC C++ | AUC Python | (threads {args.threads}, {where})\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- |")
    for seq in seqs:
        init = from_lasot(np.loadtxt(seq / "groundtruth.txt", delimiter=",", max_rows=1))
        start = time.perf_counter()
        cpp_fps, cpp = run_cpp(args.binary, args.export, seq, init, args.threads)
        py_fps, py = (run_external(args.python, args.export, seq, init, args.threads) if args.python
                      else run_python(args.export, seq, init, args.threads))
        _, ort = run_python(args.export, seq, init, args.threads, "onnx")
        iou, control = float(iou_xywh(cpp, py).mean()), float(iou_xywh(ort, py).mean())
        print(f"| {seq.name} | {len(py)} | {cpp_fps:.1f} | {py_fps:.1f} | {iou:.4f} | {control:.4f} | "
              f"{success_auc(cpp, seq):.1f} | {success_auc(py, seq):.1f} | "
              f"{time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

"""Run OpenCV's trackers over a list of sequences; launched by `benchmarks/peers.py` in ANOTHER interpreter.

Self-contained on purpose (imports only cv2, numpy and the standard library): it runs in the environment
that has opencv-contrib-python-headless, which cannot share an environment with siamtool's
opencv-python. The manifest (JSON, written by peers.py) lists the sequences: name, frame paths, and the
frame-1 ground truth (LaSOT, 1-based x,y,w,h). For each tracker and sequence it writes, in the format of
`siamtool.eval.runner` so that peers.py reads every tracker the same way:

* ``OUT/<tracker>/<seq>.txt``: one ``x,y,w,h`` line per frame, 1-based (frame 1 = the ground truth);
* ``OUT/<tracker>/frames/<seq>.csv``: ``frame,time_ms,score,lost``; ``time_ms`` times the
  ``tracker.init``/``tracker.update`` call only (reading and JPEG-decoding the frame excluded).

OpenCV trackers take and return integer pixel boxes (0-based): the initial box is rounded to the nearest
pixel. When ``update`` reports failure the previous box is kept and the frame is marked lost (what
siamtool's Tracker does while the target is lost). ``score`` is ``getTrackingScore()`` where the tracker
has one (NanoTrack, VitTrack), else 1 for success and 0 for failure.

    python peers_opencv.py MANIFEST OUT --models ../shared/data/peer_models --threads 2 --trackers csrt,kcf,nano,vit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

TRACKERS = ("csrt", "kcf", "nano", "vit")
NAMES = {"csrt": "OpenCV-CSRT", "kcf": "OpenCV-KCF", "nano": "NanoTrack-v2", "vit": "VitTrack"}


def make_tracker(kind: str, models: Path):
    """A fresh tracker of `kind` (one per sequence: OpenCV trackers cannot be re-initialised reliably)."""
    if kind == "csrt":
        return cv2.TrackerCSRT_create()
    if kind == "kcf":
        return cv2.TrackerKCF_create()
    if kind == "nano":
        params = cv2.TrackerNano_Params()
        params.backbone = str(models / "nanotrackv2" / "nanotrack_backbone_sim.onnx")
        params.neckhead = str(models / "nanotrackv2" / "nanotrack_head_sim.onnx")
        return cv2.TrackerNano_create(params)
    if kind == "vit":
        params = cv2.TrackerVit_Params()
        params.net = str(models / "vittrack" / "vitTracker.onnx")
        return cv2.TrackerVit_create(params)
    raise ValueError(f"unknown tracker {kind!r}; choose from {', '.join(TRACKERS)}")


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def track_sequence(kind: str, models: Path, seq: dict, out: Path) -> tuple[int, float]:
    """Track one sequence; returns (tracked frames, seconds spent in update)."""
    frames = seq["frames"]
    x, y, w, h = seq["init"]
    init = (int(round(x - 1)), int(round(y - 1)), max(1, int(round(w))), max(1, int(round(h))))
    first = cv2.imread(frames[0], cv2.IMREAD_COLOR)
    if first is None:
        raise SystemExit(f"{frames[0]}: first frame unreadable")
    tracker = make_tracker(kind, models)
    t0 = time.perf_counter()
    tracker.init(first, init)
    init_ms = (time.perf_counter() - t0) * 1e3
    has_score = hasattr(tracker, "getTrackingScore")
    boxes = [list(seq["init"])]
    rows = [f"1,{init_ms:.3f},1.0000,0"]
    last = np.array(init, dtype=np.float64)
    tracked, seconds = 0, 0.0
    for i, path in enumerate(frames[1:], start=2):
        frame = cv2.imread(path, cv2.IMREAD_COLOR)
        if frame is None:  # keep the previous box, counted lost (as siamtool's runner does)
            boxes.append([last[0] + 1, last[1] + 1, last[2], last[3]])
            rows.append(f"{i},0.000,0.0000,1")
            continue
        t0 = time.perf_counter()
        ok, box = tracker.update(frame)
        dt = time.perf_counter() - t0
        tracked += 1
        seconds += dt
        if ok and box[2] > 0 and box[3] > 0:
            last = np.asarray(box, dtype=np.float64)
        score = float(tracker.getTrackingScore()) if has_score else float(ok)
        boxes.append([last[0] + 1, last[1] + 1, last[2], last[3]])
        rows.append(f"{i},{dt * 1e3:.3f},{score:.4f},{int(not ok)}")
    directory = out / NAMES[kind]
    write_atomic(directory / "frames" / f"{seq['name']}.csv", "frame,time_ms,score,lost\n" + "\n".join(rows) + "\n")
    write_atomic(directory / f"{seq['name']}.txt", "".join(f"{a:.3f},{b:.3f},{c:.3f},{d:.3f}\n" for a, b, c, d in boxes))
    return tracked, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("manifest", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--models", type=Path, required=True, help="folder with nanotrackv2/ and vittrack/")
    ap.add_argument("--threads", type=int, default=2, help="cv2.setNumThreads (default 2)")
    ap.add_argument("--trackers", default=",".join(TRACKERS), help=f"comma-separated subset of {','.join(TRACKERS)}")
    args = ap.parse_args()
    cv2.setNumThreads(args.threads)
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is not None:  # the DNN trackers warn about targets of the new graph engine on every create
        log.setLogLevel(log.LOG_LEVEL_ERROR)
    kinds = [k.strip() for k in args.trackers.split(",") if k.strip()]
    for kind in kinds:
        if kind not in TRACKERS:
            raise SystemExit(f"--trackers: unknown tracker {kind!r}; choose from {', '.join(TRACKERS)}")
    sequences = json.loads(args.manifest.read_text())["sequences"]
    info = {"opencv": cv2.__version__, "threads": cv2.getNumThreads(), "trackers": {}}
    for kind in kinds:
        total_frames, total_s = 0, 0.0
        for seq in sequences:
            n, s = track_sequence(kind, args.models, seq, args.out)
            total_frames += n
            total_s += s
            print(f"{NAMES[kind]} {seq['name']}: {n} frames, {n / s if s else 0:.1f} FPS", file=sys.stderr, flush=True)
        info["trackers"][NAMES[kind]] = {"frames": total_frames, "seconds": round(total_s, 3)}
    write_atomic(args.out / "opencv_run.json", json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Per-frame tracking latency on this CPU: PyTorch vs onnxruntime vs OpenCV DNN backends, per backbone.

For every registered backbone, the FULL-SIZE architecture with RANDOM weights (`model.pretrained=false`:
latency does not depend on the weights, and the gated DINOv3 weights are not needed) is exported with
`siamtool.export.onnx.export_model` (which also checks parity), then one `Tracker` per backend (OpenCV
DNN only where OpenCV can load the graphs: not the DINOv3 ViTs) tracks the same real sequence (`../shared/data/real_lasot`, else a synthetic one). The two trackers
alternate frame by frame, so both see the same machine load (this CPU is shared), and each frame's
`TrackResult.time_s` (search crop + forward + decode + post-processing) is recorded. Reported: median
and best (minimum) ms per frame for each backend, their ratios torch / onnxruntime (> 1: onnxruntime is
faster) and the 1-minute load average after each row. Other processes on the machine slow both
backends, PyTorch's OpenMP threads far more than onnxruntime's pool: the median shows the machine as it
was, the best frame approximates an idle machine.

    python benchmarks/backend_latency.py                      # all backbones, 2 threads, 30 frames
    python benchmarks/backend_latency.py --backbones resnet18 efficientnet_lite0 --frames 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def frames_and_box(n: int) -> tuple[list[np.ndarray], np.ndarray, str]:
    """`n` + 1 frames of the first real sequence (BGR) and its first box (0-based), else synthetic ones."""
    from siamtool.data.lasot import find_sequences, load_sequence
    from siamtool.geometry import from_lasot

    root = REPO.parent / "shared" / "data" / "real_lasot"
    if root.is_dir():
        name, path = sorted(find_sequences(root).items())[0]
        seq = load_sequence(path)
        frames = [cv2.imread(str(seq.frame_path(i))) for i in range(n + 1)]
        return frames, from_lasot(seq.gt[0]), f"real_lasot/{name}"
    from siamtool.data.synthetic import render_sequence

    frames, boxes, _, _ = render_sequence(np.random.default_rng(0), n + 1, (480, 360))
    return frames, boxes[0], "synthetic"


def measure(backbone: str, frames: list[np.ndarray], box: np.ndarray, threads: int, warmup: int) -> dict:
    from siamtool.config import load_config
    from siamtool.errors import SiamtoolError
    from siamtool.export.onnx import export_model
    from siamtool.models import build_model
    from siamtool.tracking.backends import TorchBackend
    from siamtool.tracking.onnx_backend import OnnxBackend
    from siamtool.tracking.opencv_backend import OpenCVBackend
    from siamtool.tracking.tracker import Tracker

    cfg = load_config(None, [f"model.backbone={backbone}", "model.pretrained=false"])
    model = build_model(cfg)
    params = sum(p.numel() for p in model.parameters()) / 1e6
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = export_model(model, cfg, tmp)
        export_s = time.perf_counter() - t0
        trackers = {"torch": Tracker(TorchBackend(model, "cpu"), cfg),
                    "onnxruntime": Tracker(OnnxBackend(tmp, ["CPUExecutionProvider"], threads=threads), cfg)}
        with contextlib.suppress(SiamtoolError):  # OpenCV's importer refuses the DINOv3 ViT graphs: no column
            trackers["opencv"] = Tracker(OpenCVBackend(tmp, threads=threads), cfg)
        times: dict[str, list[float]] = {k: [] for k in trackers}
        init: dict[str, float] = {}
        for name, tracker in trackers.items():
            tracker.initialize(frames[0], box)
            init[name] = tracker.init_time_s
        for i, frame in enumerate(frames[1:]):
            order = list(trackers.items())[i % len(trackers):] + list(trackers.items())[:i % len(trackers)]
            for name, tracker in order:
                r = tracker.track(frame)
                if i >= warmup:
                    times[name].append(r.time_s)
    med = {k: statistics.median(v) * 1000 for k, v in times.items()}
    best = {k: min(v) * 1000 for k, v in times.items()}
    return {"backbone": backbone, "params_m": round(params, 1), "torch_ms": round(med["torch"], 1),
            "onnx_ms": round(med["onnxruntime"], 1), "ratio": round(med["torch"] / med["onnxruntime"], 2),
            "torch_best_ms": round(best["torch"], 1), "onnx_best_ms": round(best["onnxruntime"], 1),
            "ratio_best": round(best["torch"] / best["onnxruntime"], 2),
            "torch_init_ms": round(init["torch"] * 1000, 1), "onnx_init_ms": round(init["onnxruntime"] * 1000, 1),
            "opencv_ms": round(med["opencv"], 1) if "opencv" in med else None,
            "opencv_best_ms": round(best["opencv"], 1) if "opencv" in best else None,
            "export_s": round(export_s, 1), "parity_max_diff": result.pairs[0].max_diff,
            "frames": len(times["torch"]), "load_avg_1min": round(os.getloadavg()[0], 1)}


def main() -> None:
    from siamtool.models import list_backbones

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="*", default=None, help="default: every registered backbone")
    ap.add_argument("--frames", type=int, default=30, help="tracked frames per backbone (after warm-up)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime intra-op threads")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    frames, box, source = frames_and_box(args.frames + args.warmup)
    print(f"# {source}, {args.frames} frames after {args.warmup} warm-up, {args.threads} threads, "
          f"torch {torch.__version__}, full-size architectures with RANDOM weights", flush=True)
    print("| backbone | params (M) | torch ms/frame median (best) | onnxruntime ms/frame median (best) | "
          "torch / onnxruntime median (best) | OpenCV DNN ms/frame median (best) | onnxruntime / OpenCV median | "
          "export s | load avg |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    rows = []
    for name in args.backbones or list_backbones():
        row = measure(name, frames, box, args.threads, args.warmup)
        rows.append(row)
        print(f"| {name} | {row['params_m']} | {row['torch_ms']} ({row['torch_best_ms']}) | {row['onnx_ms']} "
              f"({row['onnx_best_ms']}) | {row['ratio']:.2f}x ({row['ratio_best']:.2f}x) | "
              + (f"{row['opencv_ms']} ({row['opencv_best_ms']}) | {row['onnx_ms'] / row['opencv_ms']:.2f}x | "
                 if row["opencv_ms"] else "- | - | ")
              + f"{row['export_s']} | {row['load_avg_1min']} |", flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

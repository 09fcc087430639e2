"""Tracking speed of the Tracker per backbone, against the seed's way of running the network.

    python benchmarks/track_speed.py                      # every registered backbone, 2 threads
    python benchmarks/track_speed.py --backbones dinov3_vits16 --frames 40
    python benchmarks/track_speed.py --backbones dinov3_vits16 --onnx --no-grad-baseline   # + onnxruntime columns

What is timed (per frame, wall clock, after 3 warm-up frames, frames already decoded in memory):
``Tracker.track(frame)`` = search crop (geometry, anti-aliased like prepare) + BGR->RGB + one forward
of the network + decode + post-processing (windows, penalties, box update). Video decoding, drawing
and I/O are excluded. "network" is the part of that spent inside the backend call.

Models are the real architectures with random weights (`tiny: false, pretrained: false`: no hub
access here), template 128 / search 256 (the default config); speed does not depend on the weights.

Baselines, measured in the same run on the same frames through the same Tracker post-processing,
interleaved frame by frame with siamtool's runs so that background load affects all columns alike:
* seed: the seed repository's inference, ``model(template, search)`` every frame, so the template
  crop goes through the backbone again on every frame, under ``torch.no_grad()``;
* seed, grad on: the same without any no_grad/inference_mode (autograd records every op).
siamtool caches the template features at initialisation and runs only the search branch under
``torch.inference_mode()``.

``--onnx`` adds the runtimes `siamtool track` uses on CPU, interleaved with the others: the model is
exported by `siamtool.export.onnx.export_model` (template graph run once per target, search graph per
frame, checked against PyTorch) and tracked by the onnxruntime backend, fp32 and int8 (the search graph
quantized by `siamtool.export.quantize`: dynamic int8 of its matrix products, compared with the fp32
graph on real crops first; the line under the table gives that difference). ``--dynamo`` also exports
the search graph with ``torch.onnx.export(dynamo=True, opset_version=23)``, which fuses attention into
ONNX ``Attention`` nodes (needs the `onnxscript` package), fp32 and int8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from siamtool.config import Config
from siamtool.models import build_model, list_backbones
from siamtool.models.decode import decode
from siamtool.tracking.backends import TorchBackend, crop_to_tensor
from siamtool.tracking.tracker import Tracker

VIDEO = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos" / "bag.avi"
INIT = (292, 125, 150, 140)


class SeedBackend:
    """The seed's way: the template crop is kept as pixels and re-encoded with every search."""

    def __init__(self, model: torch.nn.Module, grad: bool) -> None:
        self.model = model.eval()
        self.grad = grad

    def template(self, crop_rgb: np.ndarray) -> torch.Tensor:
        return crop_to_tensor(crop_rgb, torch.device("cpu"), torch.float32)

    def search(self, crop_rgb: np.ndarray, z: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        x = crop_to_tensor(crop_rgb, torch.device("cpu"), torch.float32)
        ctx = torch.enable_grad() if self.grad else torch.no_grad()
        with ctx:
            heat, box = self.model(z, x)
            score, boxes = decode(heat, box, self.model.stride, self.model.search_size)
        return score[0].detach().numpy(), boxes[0].detach().numpy()


class Timed:
    """Wraps a backend to time the network part of each frame."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.times: list[float] = []

    def template(self, crop):
        return self.inner.template(crop)

    def search(self, crop, features):
        t = time.perf_counter()
        out = self.inner.search(crop, features)
        self.times.append(time.perf_counter() - t)
        return out


def load_frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VIDEO))
    frames = []
    while len(frames) < n and (ok := cap.read())[0]:
        frames.append(ok[1])
    if not frames:  # no shared data: a textured synthetic frame of the same size
        rng = np.random.default_rng(0)
        frames = [cv2.resize(rng.integers(0, 256, (45, 60, 3), dtype=np.uint8), (480, 360))] * n
    return frames


def measure(backends: dict[str, object], cfg: Config, frames: list[np.ndarray], warmup: int = 3
            ) -> dict[str, dict[str, float]]:
    """Track the same frames with every backend, interleaved frame by frame (rotating the order), so
    that load from other processes on a shared machine hits all of them alike; medians per backend."""
    timed = {k: Timed(b) for k, b in backends.items()}
    trackers = {k: Tracker(t, cfg) for k, t in timed.items()}
    for tr in trackers.values():
        tr.initialize(frames[0], INIT)
    totals: dict[str, list[float]] = {k: [] for k in backends}
    keys = list(backends)
    for i, frame in enumerate(frames[1:]):
        order = keys[i % len(keys):] + keys[: i % len(keys)]
        for k in order:
            t = trackers[k].track(frame).time_s
            if i >= warmup:
                totals[k].append(t)
    out = {}
    for k in keys:
        ms = statistics.median(totals[k]) * 1e3
        out[k] = {"ms": ms, "fps": 1e3 / ms, "net_ms": statistics.median(timed[k].times[warmup:]) * 1e3}
    return out


def onnx_backends(model, cfg: Config, folder: Path, dynamo: bool) -> tuple[dict[str, object], str]:
    """onnxruntime backends of `model` (fp32, int8, and with `dynamo` the fused-attention graphs), and a
    line on how far int8 is from fp32."""
    from siamtool.export.onnx import export_model
    from siamtool.export.quantize import quantize_export
    from siamtool.tracking.onnx_backend import OnnxBackend

    threads = torch.get_num_threads()
    folders = {"onnx": folder / "ts"}
    result = export_model(model, cfg, folders["onnx"])
    if not result.passed:
        raise SystemExit(f"error: the export differs from PyTorch: {result.to_dict()}")
    if dynamo:
        folders["dynamo"] = folder / "dynamo"
        export_dynamo(model, folders["onnx"], folders["dynamo"])
    notes = []
    for name in list(folders):
        q = quantize_export(folders[name], tolerance=1.0)
        folders[f"{name} int8"] = q.folder
        notes.append(f"{name} int8 vs fp32 on real crops: score {q.diffs['score']:.2g}, boxes {q.diffs['boxes']:.2g} of "
                     f"the crop, search features {q.diffs['search_features']:.2g} of their scale")
    return {k: OnnxBackend(f, threads=threads) for k, f in folders.items()}, "; ".join(notes)


def export_dynamo(model, ts_folder: Path, out: Path) -> None:
    """A copy of the TorchScript export whose search graph comes from the dynamo exporter at opset 23
    (attention fused into `Attention` nodes), with the same metadata."""
    import shutil
    import warnings

    import onnx

    from siamtool.export.onnx import SEARCH_FILE, SearchGraph, to_nchw

    shutil.copytree(ts_folder, out)
    ts = onnx.load(str(ts_folder / SEARCH_FILE))
    x = torch.from_numpy(to_nchw(np.zeros((2, 256, 256, 3), np.uint8)))  # batch 2: 1 would be specialised
    z = torch.from_numpy(to_nchw(np.zeros((2, 128, 128, 3), np.uint8)))
    with torch.inference_mode():
        feat = model.template(z)
    raw = out / "dynamo_raw.onnx"
    batch = torch.export.Dim("batch", min=1, max=64)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(SearchGraph(model).eval(), (x, feat), str(raw), input_names=["search", "template_features"],
                          output_names=["score", "boxes", "search_features"], opset_version=23, dynamo=True,
                          optimize=True, verbose=False, dynamic_shapes=({0: batch}, {0: batch}))
    proto = onnx.load(str(raw))
    del proto.metadata_props[:]
    proto.metadata_props.extend(ts.metadata_props)
    onnx.save_model(proto, str(out / SEARCH_FILE))
    for p in out.glob("dynamo_raw.onnx*"):
        p.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbones", nargs="*", default=None, help="default: every registered backbone")
    ap.add_argument("--frames", type=int, default=20, help="timed frames per measurement (median reported)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--no-grad-baseline", action="store_true", help="skip the slow 'seed, grad on' column")
    ap.add_argument("--onnx", action="store_true", help="also onnxruntime fp32 and int8 (exports each model once)")
    ap.add_argument("--dynamo", action="store_true", help="with --onnx: also the dynamo export (fused attention)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    names = args.backbones or sorted(list_backbones(), key=lambda n: (n != "dinov3_vits16", n))
    frames = load_frames(args.frames + 4)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, load average {load:.1f}; "
          f"{len(frames) - 4} timed frames of {frames[0].shape[1]}x{frames[0].shape[0]}, template 128, search 256")
    header = f"{'backbone':22s} {'siamtool':>14s} {'network':>9s} {'seed':>14s} {'x':>6s}"
    if not args.no_grad_baseline:
        header += f" {'seed, grad on':>14s} {'x':>6s}"
    extra = (["onnx", "onnx int8"] + (["dynamo", "dynamo int8"] if args.dynamo else [])) if args.onnx else []
    for k in extra:
        header += f" {k:>14s} {'x':>6s}"
    print(header + ("   (x = eager siamtool time / this column's)" if extra else ""))
    for name in names:
        cfg = Config()
        cfg.model.backbone, cfg.model.tiny, cfg.model.pretrained = name, False, False
        t0 = time.perf_counter()
        model = build_model(cfg)
        build_s = time.perf_counter() - t0
        backends = {"ours": TorchBackend(model, "cpu"), "seed": SeedBackend(model, grad=False)}
        if not args.no_grad_baseline:
            backends["grad"] = SeedBackend(model, grad=True)
        note = ""
        with tempfile.TemporaryDirectory(prefix="track_speed-") as tmp:
            if extra:
                onnx, note = onnx_backends(model, cfg, Path(tmp), args.dynamo)
                backends.update(onnx)
            r = measure(backends, cfg, frames)
        ours, seed = r["ours"], r["seed"]
        line = (f"{name:22s} {ours['ms']:7.1f} ms {ours['fps']:4.1f}/s {ours['net_ms']:6.1f} ms "
                f"{seed['ms']:7.1f} ms {seed['fps']:4.1f}/s {seed['ms'] / ours['ms']:5.2f}x")
        if not args.no_grad_baseline:
            grad = r["grad"]
            line += f" {grad['ms']:7.1f} ms {grad['fps']:4.1f}/s {grad['ms'] / ours['ms']:5.2f}x"
        for k in extra:
            line += f" {r[k]['ms']:7.1f} ms {r[k]['fps']:4.1f}/s {ours['ms'] / r[k]['ms']:5.2f}x"
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
        print(line + f"   (built in {build_s:.1f} s; load average {load:.1f})", flush=True)
        if note:
            print(f"    {note}", flush=True)
        del model
    print("ms = median tracking time per frame (crop + forward + decode + post-processing); x = seed time / "
          "siamtool time")


if __name__ == "__main__":
    main()

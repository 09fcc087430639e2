"""Where one tracked frame's time goes: crop, search graph, online filter, post-processing.

    python benchmarks/track_profile.py                                  # shipped tracker, 3 real sequences
    python benchmarks/track_profile.py --sequences person-1 --threads 1

The shipped tracker (onnxruntime on the cached export, as `siamtool track` runs it on CPU) tracks real
LaSOT-format sequences one-pass from the frame-1 ground truth, frames decoded once into memory. Each
stage of `Tracker.track` is timed by wrapping the function the Tracker calls for it:

* crop: `geometry.crop_antialiased` of the search window (+ BGR->RGB in the Tracker);
* search graph: the backend's `search` (onnxruntime run, input conversion included);
* online respond: the correlation filter's response (`TranslationFilter.respond`);
* select: `select_candidate` (penalties, Hann window, argmax);
* scale (DSST): `ScaleFilter.estimate` + the grey frame it needs;
* online update: `OnlineTarget.maybe_update` (every `online_interval` frames it learns);
* rest: the remainder of `TrackResult.time_s` (state update, sub-cell peak, box conversions).

The "before" column is the same tracker with the pre-issue-14 per-frame path (the full-frame area
resize before the crop, the ``[..., ::-1]`` copy for BGR->RGB: `LEGACY` below) and search graph (timm's
runtime-padded convolutions: `legacy_export`), interleaved frame by frame with the current path
(alternating which goes first), on the same frames, in the same process: medians per stage and the
ratio before / now.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tune_tracking import locate_sequences  # noqa: E402

from siamtool.data.lasot import LasotSequence, load_sequence  # noqa: E402
from siamtool.eval.metrics import batch_curves  # noqa: E402
from siamtool.geometry import from_lasot, to_lasot  # noqa: E402
from siamtool.tracking import tracker as tracker_module  # noqa: E402
from siamtool.tracking.tracker import Tracker  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
SELECT = tracker_module.select_candidate
STAGES = ("crop", "search graph", "online respond", "select", "scale (DSST)", "online update", "rest")


def sequences(root: Path, names: list[str]) -> list[LasotSequence]:
    """The named LaSOT sequences under `root`; a missing root or name exits with one line."""
    return [load_sequence(path) for path in locate_sequences([root], names).values()]


def load(root: Path, names: list[str], limit: int) -> list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]]:
    """(name, decoded frames, ground truth, absent flags) of each sequence, the first `limit` frames."""
    out = []
    for name, seq in zip(names, sequences(root, names)):
        n = min(seq.n_frames, limit) if limit else seq.n_frames
        out.append((name, [cv2.imread(str(seq.frame_path(i)), cv2.IMREAD_COLOR) for i in range(n)], seq.gt[:n],
                    seq.absent[:n]))
    return out


class TimedBackend:
    """The backend with its `search` timed as the "search graph" stage."""

    def __init__(self, inner, clock: StageClock) -> None:
        self.inner, self.returns_features = inner, inner.returns_features
        self.template = inner.template
        self.search = clock.wrap("search graph", inner.search)


class StageClock:
    """Accumulates the time of wrapped calls per stage for the frame being tracked."""

    def __init__(self) -> None:
        self.now: dict[str, float] = {}

    def wrap(self, stage: str, fn: Callable) -> Callable:
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.now[stage] = self.now.get(stage, 0.0) + time.perf_counter() - t
        return timed


@contextlib.contextmanager
def patched(module, **names: Callable) -> Iterator[None]:
    old = {k: getattr(module, k) for k in names}
    for k, v in names.items():
        setattr(module, k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(module, k, v)


def instrument(tr: Tracker, clock: StageClock) -> None:
    """Wrap the online models of an initialised tracker (they are created by `initialize`)."""
    if tr.online is None:
        return
    tr.online.translation.respond = clock.wrap("online respond", tr.online.translation.respond)
    tr.online.maybe_update = clock.wrap("online update", tr.online.maybe_update)
    if tr.online.scale is not None:
        tr.online.scale.estimate = clock.wrap("scale (DSST)", tr.online.scale.estimate)


def variant_functions(variant: str, clock: StageClock) -> dict[str, Callable]:
    """The tracker module's per-frame functions for a variant, wrapped by the clock."""
    fns = LEGACY if variant == "before" else {k: getattr(tracker_module, k) for k in LEGACY}
    return {"crop_antialiased": clock.wrap("crop", fns["crop_antialiased"]), "cv2": fns["cv2"],
            "select_candidate": clock.wrap("select", SELECT)}


def legacy_crop_antialiased(frame: np.ndarray, window) -> np.ndarray:
    """Before issue 14: the whole frame is area-resized by k, then the window is warped out of it."""
    from siamtool.geometry import crop, reduced_decode_factor

    k = reduced_decode_factor(window.scale)
    if k == 1:
        return crop(frame, window)
    small = cv2.resize(frame, (0, 0), fx=1.0 / k, fy=1.0 / k, interpolation=cv2.INTER_AREA)
    return crop(small, window.scaled(1.0 / k))


class LegacyCv2:
    """cv2 as the Tracker sees it, except that BGR->RGB is the pre-issue-14 ``[..., ::-1]`` copy."""

    def __getattr__(self, name: str):
        return getattr(cv2, name)

    @staticmethod
    def cvtColor(image: np.ndarray, code: int) -> np.ndarray:  # noqa: N802 - cv2's name
        if code == cv2.COLOR_BGR2RGB:
            return np.ascontiguousarray(image[..., ::-1])
        return cv2.cvtColor(image, code)


LEGACY = {"crop_antialiased": legacy_crop_antialiased, "cv2": LegacyCv2()}


def legacy_export(checkpoint: Path, folder: Path) -> Path:
    """`checkpoint` exported as before issue 14 into `folder`: timm's `Conv2dSame` kept, so each stride-2
    "same" convolution of a `tf_` EfficientNet is a runtime-shaped `Pad` plus the convolution
    (`siamtool.models.fuse.StaticSameConv2d` says why that is slow). Same weights, same outputs."""
    from siamtool.export.onnx import export_checkpoint
    from siamtool.models import backbones

    with patched(backbones, static_same_padding=lambda root: 0):
        export_checkpoint(checkpoint, folder, fp16=False)
    return folder


def run(data, backends: dict[str, object], cfg, warmup: int = 3) -> dict[str, dict[str, list[float]]]:
    """Per variant (name -> backend; "before" also takes the `LEGACY` functions) and stage, the per-frame
    times (s) over all tracked frames after `warmup` per sequence; prints the success AUC per variant."""
    variants = list(backends)
    times: dict[str, dict[str, list[float]]] = {v: {s: [] for s in (*STAGES, "total")} for v in variants}
    boxes: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    preds: dict[str, list[np.ndarray]] = {v: [] for v in variants}
    for _, frames, gt, _ in data:
        clocks = {v: StageClock() for v in variants}
        trackers = {v: Tracker(TimedBackend(backends[v], clocks[v]), cfg) for v in variants}
        for v in variants:
            with patched(tracker_module, **variant_functions(v, clocks[v])):
                trackers[v].initialize(frames[0], from_lasot(gt[0]))
            instrument(trackers[v], clocks[v])
        seq_boxes: dict[str, list[np.ndarray]] = {v: [to_lasot(from_lasot(gt[0]))] for v in variants}
        for i, frame in enumerate(frames[1:]):
            order = variants[i % len(variants):] + variants[:i % len(variants)]  # rotate who goes first
            for v in order:
                clocks[v].now = {}
                with patched(tracker_module, **variant_functions(v, clocks[v])):
                    r = trackers[v].track(frame)
                boxes[v].append(r.box)
                seq_boxes[v].append(to_lasot(r.box))
                if i < warmup:
                    continue
                spent = sum(clocks[v].now.values())
                for s in STAGES[:-1]:
                    times[v][s].append(clocks[v].now.get(s, 0.0))
                times[v]["rest"].append(r.time_s - spent)
                times[v]["total"].append(r.time_s)
        for v in variants:
            preds[v].append(np.asarray(seq_boxes[v]))
    for v in variants:
        curves = batch_curves(preds[v], [d[2] for d in data], [d[3] for d in data])
        per_seq = curves.success.mean(axis=1) * 100
        print(f"{v}: success AUC {per_seq.mean():.2f} (" + ", ".join(
            f"{d[0]} {a:.1f}" for d, a in zip(data, per_seq)) + ")")
    for v in variants[1:]:
        diff = np.abs(np.asarray(boxes[variants[0]]) - np.asarray(boxes[v])).max()
        print(f"largest box difference between {variants[0]} and {v}: {diff:.3g} px")
    return times


def table(times: dict[str, dict[str, list[float]]]) -> str:
    """Mean ms and share per stage for each variant; for the others, the first variant's time / theirs."""
    variants = list(times)
    base = variants[0]
    ms = {v: {s: statistics.mean(t) * 1e3 for s, t in times[v].items()} for v in variants}
    med = {v: statistics.median(times[v]["total"]) * 1e3 for v in variants}
    head = "| stage | " + " | ".join(f"{v}: mean ms | share" for v in variants)
    head += "".join(f" | {base} / {v}" for v in variants[1:])
    rows = [head + " |", "| --- |" + " ---: | ---: |" * len(variants) + " ---: |" * (len(variants) - 1)]

    def ratio(a: float, b: float) -> str:
        return f" | {a / b:.2f}x" if b > 1e-3 else " | -"

    for s in (*STAGES, "total"):
        row = f"| {s} | " + " | ".join(f"{ms[v][s]:.2f} | {ms[v][s] / ms[v]['total']:.0%}" for v in variants)
        rows.append(row + "".join(ratio(ms[base][s], ms[v][s]) for v in variants[1:]) + " |")
    rows.append("| median frame | " + " | ".join(f"{med[v]:.2f} | " for v in variants)
                + "".join(ratio(med[base], med[v]) for v in variants[1:]) + " |")
    fps = {v: len(times[v]["total"]) / sum(times[v]["total"]) for v in variants}
    rows.append("| FPS | " + " | ".join(f"{fps[v]:.1f} | " for v in variants)
                + "".join(ratio(fps[v], fps[base]) for v in variants[1:]) + " |")
    return "\n".join(rows)


def crop_speed(data, cfg, sizes: list[tuple[int, int] | None], repeats: int = 3) -> list[str]:
    """Search crops of the ground-truth boxes' windows (growth 1 and 2.25), before vs now, alternating.

    `sizes`: None = the frames as they are; (w, h) = every frame resized to w x h first (720p footage),
    box scaled along. Returns table rows: per-crop median microseconds and the ratio."""
    from siamtool.geometry import crop_antialiased, reduced_decode_factor, search_window

    d = cfg.data
    rows = ["| frames | windows | k > 1 | before: median us | now: median us | before / now | max grey diff |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for size in sizes:
        t = {"before": [], "now": []}
        reduced, n, diff = 0, 0, 0
        for _, frames, gt, _ in data:
            for i, frame in enumerate(frames):
                box = from_lasot(gt[i])
                if size is not None:
                    sx, sy = size[0] / frame.shape[1], size[1] / frame.shape[0]
                    frame = cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)
                    box = box * np.array([sx, sy, sx, sy])
                for growth in (1.0, 2.25):
                    window = search_window(box, d.context, d.template_size, d.search_size, growth)
                    reduced += int(reduced_decode_factor(window.scale) > 1)
                    n += 1
                    crops = {}
                    for r in range(repeats):
                        for v in (("before", "now") if r % 2 == 0 else ("now", "before")):
                            fn = legacy_crop_antialiased if v == "before" else crop_antialiased
                            start = time.perf_counter()
                            crops[v] = fn(frame, window)
                            t[v].append(time.perf_counter() - start)
                    diff = max(diff, int(np.abs(crops["now"].astype(int) - crops["before"]).max()))
        b, w = statistics.median(t["before"]) * 1e6, statistics.median(t["now"]) * 1e6
        label = "as stored" if size is None else f"resized to {size[0]}x{size[1]}"
        rows.append(f"| {label} | {n} | {reduced} | {b:.0f} | {w:.0f} | {b / w:.2f}x | {diff} |")
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, default=SHARED / "real_lasot", help="LaSOT-layout root")
    ap.add_argument("--sequences", nargs="+", default=["person-1", "motorcycle-2", "face-3"])
    ap.add_argument("--frames", type=int, default=0, help="frames per sequence (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--checkpoint", type=Path, help="default: the shipped tracker")
    ap.add_argument("--now-only", action="store_true", help="profile the current path only (no 'before')")
    ap.add_argument("--int8", type=Path, help="also track with this int8 export folder (`siamtool export --int8` "
                    "writes OUT/int8), on the current path")
    ap.add_argument("--val", action="store_true", help="the checkpoint's validation sequences "
                    "(data.val_sequences) under --lasot instead of --sequences, e.g. --lasot ../shared/data/train_real")
    ap.add_argument("--crops", action="store_true", help="also time the search crop alone, before vs now, on "
                    "the frames as stored and resized to 1280x720 and 1920x1080")
    args = ap.parse_args(argv)
    from siamtool.reporting import WarningsReporter
    from siamtool.tracking.cache import cached_onnx_backend
    from siamtool.weights import default_checkpoint

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    checkpoint = args.checkpoint or default_checkpoint()
    backend = cached_onnx_backend(checkpoint, "cpu", reporter=WarningsReporter())  # the one-off export is said
    if backend is None:
        raise SystemExit(f"{checkpoint}: its ONNX export failed the check against PyTorch")
    from siamtool.tracking.onnx_backend import OnnxBackend

    names = list(backend.cfg.data.val_sequences) if args.val else args.sequences
    data = load(args.lasot, names, args.frames)
    n = sum(len(d[1]) - 1 for d in data)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {args.threads} threads, load "
          f"average {os.getloadavg()[0]:.1f}; {n} frames of {', '.join(names)}; {backend!r}")
    if args.crops:
        print("\n".join(crop_speed(data, backend.cfg, [None, (1280, 720), (1920, 1080)])))
    backends = {"now": backend}
    with tempfile.TemporaryDirectory() as tmp:
        if not args.now_only:
            backends = {"before": OnnxBackend.from_dir(legacy_export(checkpoint, Path(tmp) / "before"), "cpu")[0],
                        "now": backend}
        if args.int8 is not None:
            backends["int8"] = OnnxBackend.from_dir(args.int8, "cpu")[0]
        times = run(data, backends, backend.cfg)
    print(table(times))
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()

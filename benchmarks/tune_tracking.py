"""Grid search of `track:` settings on named sequences: how the shipped tracking settings were chosen.

Every setting tracks every sequence one-pass from its frame-1 ground truth with the real `Tracker`
(frames decoded once and kept in memory, so a grid of tens of settings takes minutes), and is scored by
the toolkit's own metrics (success AUC, pytracking convention). Choose settings on validation
sequences only (the ones the training config holds out with `data.val_sequences`); never on dev-test.

    python benchmarks/tune_tracking.py --lasot ../shared/data/train_real \\
        --sequences person-103 car-109 ... --grid track.online_weight=0,0.5,1 track.scale=dsst,head

`--init-jitter K` also tracks every sequence from K slightly moved initial boxes and scores the mean: a
sequence that a near tie between look-alikes decides then counts as its average outcome, not one flip.

Prints one line per setting, best last; `--json FILE` writes all of them. `--apply FILE` writes a copy of
the checkpoint whose config carries the best setting (`track:`), which `track`/`eval`/`export` then use.
`--curve RUN_DIR` instead scores every step checkpoint of a training run with one setting: validation
AUC against pairs seen (the learning curve of MODEL_CARD.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siamtool.config import config_from_dict, parse_override  # noqa: E402
from siamtool.data.lasot import find_sequences, load_sequence  # noqa: E402
from siamtool.errors import DatasetError  # noqa: E402
from siamtool.eval.metrics import batch_curves  # noqa: E402
from siamtool.geometry import from_lasot, to_lasot  # noqa: E402
from siamtool.tracking.backends import TorchBackend  # noqa: E402
from siamtool.tracking.tracker import Tracker  # noqa: E402
from siamtool.weights import default_checkpoint  # noqa: E402

INIT_JITTER = ((0.02, 0.02, 1.0), (-0.02, -0.02, 1.0), (0.02, -0.02, 1.0), (-0.02, 0.02, 1.0),
               (0.0, 0.0, 1.03), (0.0, 0.0, 0.97))
"""`--init-jitter`'s initial boxes: the centre moved by (dx, dy) x (w, h), the size scaled. Small enough not
to change the task (OTB's SRE moves it by 10 % to test robustness to a bad start; this only decorrelates),
large enough that a sequence a near tie between two look-alikes decides can come out either way (one
seed's validation-22 mean moved by up to 6.2 points across such starts: docs/benchmarks.md)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, action="append", required=True, help="LaSOT-layout root (repeatable)")
    ap.add_argument("--sequences", nargs="+", required=True, help="sequence names to track")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped one)")
    ap.add_argument("--backend", choices=("torch", "onnx"), default="onnx", help="runtime (default onnx)")
    ap.add_argument("--grid", nargs="*", default=[], help="KEY=V1,V2,... axes of the grid (track.* keys)")
    ap.add_argument("--threads", type=int, default=2, help="threads (default 2)")
    ap.add_argument("--json", type=Path, help="write every setting's scores here")
    ap.add_argument("--apply", type=Path, help="write the checkpoint with the best setting in its config here")
    ap.add_argument("--curve", type=Path, help="a training run folder: score each of its step checkpoints")
    ap.add_argument("--init-jitter", type=int, default=0, choices=range(len(INIT_JITTER) + 1), metavar="K",
                    help=f"also track from K initial boxes moved by 2-3 %% (at most {len(INIT_JITTER)}) and "
                         "score the mean: averages out sequences a near tie decides (default 0)")
    return ap.parse_args(argv)


def locate_sequences(roots: list[Path], names: list[str]) -> dict[str, Path]:
    """The folder of each named sequence under the LaSOT-layout `roots` (a later root wins a name); exits
    with one line naming the first that is missing."""
    found: dict[str, Path] = {}
    for root in roots:
        try:
            found.update(find_sequences(root))
        except DatasetError as e:
            raise SystemExit(f"error: {e}") from None
    for name in names:
        if name not in found:
            raise SystemExit(f"error: sequence {name!r} not found under {', '.join(map(str, roots))}")
    return {name: found[name] for name in names}


def load_frames(roots: list[Path], names: list[str]) -> list[tuple[str, list[np.ndarray], np.ndarray, np.ndarray]]:
    out = []
    for name, path in locate_sequences(roots, names).items():
        seq = load_sequence(path)
        frames = [cv2.imread(str(seq.frame_path(i)), cv2.IMREAD_COLOR) for i in range(seq.n_frames)]
        out.append((name, frames, seq.gt, seq.absent))
    return out


def jittered(box_xywh: np.ndarray, jitter: tuple[float, float, float]) -> np.ndarray:
    x, y, w, h = box_xywh
    dx, dy, scale = jitter
    cx, cy = x + w / 2 + dx * w, y + h / 2 + dy * h
    return np.array([cx - w * scale / 2, cy - h * scale / 2, w * scale, h * scale])


def track_all(tracker: Tracker, data, jitter: tuple[float, float, float] = (0.0, 0.0, 1.0),
              ) -> tuple[list[np.ndarray], float, float]:
    """Every sequence one-pass from its frame-1 box (moved by `jitter`); frame 1 is reported as the GT."""
    preds, elapsed, frames_done, lost = [], 0.0, 0, 0
    for _, frames, gt, _ in data:
        tracker.initialize(frames[0], jittered(from_lasot(gt[0]), jitter))
        boxes = [gt[0]]
        for frame in frames[1:]:
            r = tracker.track(frame)
            elapsed += r.time_s
            frames_done += 1
            lost += int(r.lost)
            boxes.append(to_lasot(r.box))
        preds.append(np.asarray(boxes))
    return preds, frames_done / max(elapsed, 1e-9), lost / max(frames_done, 1)


def backend_for(args: argparse.Namespace, ckpt: Path | None = None):
    ckpt = ckpt or args.checkpoint or default_checkpoint()
    if args.backend == "onnx":
        from siamtool.reporting import WarningsReporter
        from siamtool.tracking.cache import cached_onnx_backend

        backend = cached_onnx_backend(ckpt, "cpu", reporter=WarningsReporter())  # the one-off export is said
        if backend is None:
            raise SystemExit(f"{ckpt}: its ONNX export failed the check against PyTorch; use --backend torch")
        return backend, backend.cfg
    return TorchBackend.from_checkpoint(ckpt, "cpu")


def score(backend, trained, combo, data, jitter: int = 0, tracker_cls: type[Tracker] = Tracker) -> dict:
    """Track every sequence with the checkpoint's config plus the `combo` of (key, value) overrides, from
    the ground-truth box and from `jitter` moved ones (`INIT_JITTER`); scores are the mean over the runs.
    `tracker_cls`: a Tracker subclass a probe scores the same way (benchmarks/association_probe.py)."""
    cfg = config_from_dict(trained.to_dict(), "checkpoint")
    for key, value in combo:
        keys, parsed = parse_override(f"{key}={value}")
        setattr(getattr(cfg, keys[0]), keys[1], parsed)
    start = time.perf_counter()
    runs, fps, lost = [], [], []
    for moved in ((0.0, 0.0, 1.0), *INIT_JITTER[:jitter]):
        preds, run_fps, run_lost = track_all(tracker_cls(backend, cfg), data, moved)
        curves = batch_curves(preds, [d[2] for d in data], [d[3] for d in data])
        runs.append(curves.success.mean(axis=1) * 100)
        fps.append(run_fps)
        lost.append(run_lost)
    per_seq = np.mean(runs, axis=0)
    row = {"setting": dict(combo), "auc": float(per_seq.mean()),
           "per_sequence": {d[0]: round(float(a), 1) for d, a in zip(data, per_seq)},
           "fps": float(np.mean(fps)), "lost": float(np.mean(lost)), "seconds": time.perf_counter() - start,
           "config": cfg}
    if jitter:
        row["run_auc"] = [round(float(r.mean()), 2) for r in runs]
    return row


RELEASE_KEYS = ("format", "format_version", "siamtool_version", "backbone", "backbone_fingerprint", "config",
                "model", "step", "epoch", "val")
"""What a shipped checkpoint keeps of a training checkpoint: the weights and their provenance, not the
optimizer and RNG state that only resuming needs."""


def release_copy(checkpoint: Path, out: Path, edit_config: Callable[[dict], None]) -> Path:
    """A copy of `checkpoint` without resume state (`RELEASE_KEYS`) whose stored config dict
    `edit_config` changes in place (atomic write); returns `out`."""
    from siamtool.fileio import atomic_path
    from siamtool.models.checkpoint import load_checkpoint

    ckpt = {k: v for k, v in load_checkpoint(checkpoint).items() if k in RELEASE_KEYS}
    edit_config(ckpt["config"])
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    return out


def apply_setting(checkpoint: Path, cfg, out: Path) -> None:
    """A copy of `checkpoint` whose stored config has `cfg.track`, without resume state (atomic write)."""
    release_copy(checkpoint, out, lambda config: config.update(track=cfg.to_dict()["track"]))


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    data = load_frames(args.lasot, args.sequences)
    axes = []
    for item in args.grid:
        key, values = item.split("=", 1)
        axes.append([(key, v) for v in values.split(",")])
    if args.curve is not None:
        combo = [axis[0] for axis in axes]
        for ckpt in sorted((args.curve / "checkpoints").glob("step-*.pt")):
            backend, trained = backend_for(args, ckpt)
            step = int(ckpt.stem.split("-")[1])
            row = score(backend, trained, combo, data, args.init_jitter)
            print(f"step {step:6d}  pairs seen {step * trained.train.batch_size:8d}  AUC {row['auc']:5.1f}", flush=True)
        return
    backend, trained = backend_for(args)
    results = []
    for combo in itertools.product(*axes) if axes else [()]:
        row = score(backend, trained, combo, data, args.init_jitter)
        results.append(row)
        runs = f"  runs {row['run_auc']}" if "run_auc" in row else ""
        print(f"AUC {row['auc']:5.1f}  fps {row['fps']:6.1f}  lost {row['lost']:4.0%}  {row['setting']}{runs}  "
              f"{row['per_sequence']}", flush=True)
    best = max(results, key=lambda r: r["auc"])
    print(f"best: AUC {best['auc']:.1f} with {best['setting']}")
    if args.json:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "config"} for r in results], indent=1))
    if args.apply:
        apply_setting(args.checkpoint or default_checkpoint(), best["config"], args.apply)
        print(f"wrote {args.apply} with track settings {best['setting']}")


if __name__ == "__main__":
    main()

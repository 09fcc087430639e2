"""Runtime parity: the same checkpoint tracked by PyTorch, onnxruntime and OpenCV DNN must score the same.

The Tracker owns everything but the network, so the runtimes differ only in the network's float
arithmetic (~1e-5 on scores); a free-running tracker can still part on a near tie and never meet again,
which per-frame parity tests (`tests/tracking/test_onnx_backend.py`) do not see. Issue #20 asks for the
three runtimes within 1 AUC point of each other on validation and dev-test; this script measures it.

    python benchmarks/runtime_parity.py --set dev-test                 # real_lasot face-3, motorcycle-2, person-1
    python benchmarks/runtime_parity.py --set validation               # configs/lite0.yaml's val_sequences
    python benchmarks/runtime_parity.py --lasot ROOT --sequences a-1 b-2 --json out.json

Every runtime tracks every sequence one-pass from its frame-1 ground truth with the checkpoint's own
`track:` settings (the shipped checkpoint by default), frames decoded once; scored by the toolkit's
metrics (success AUC, pytracking convention); with `--init-jitter K` also from K moved initial boxes, the
mean of the runs compared. Prints one row per runtime (AUC, per-sequence AUC, FPS,
lost frames) and the largest AUC difference to the first runtime; exit status 1 if it exceeds
`--tolerance`. FPS is tracking time only, under whatever else the machine runs: say the load.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from tune_tracking import INIT_JITTER, load_frames, score  # noqa: E402

from siamtool.config import load_config  # noqa: E402
from siamtool.reporting import WarningsReporter  # noqa: E402
from siamtool.tracking.backends import TorchBackend  # noqa: E402
from siamtool.tracking.cache import cached_onnx_backend  # noqa: E402
from siamtool.weights import default_checkpoint  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
RUNTIMES = ("torch", "onnxruntime", "opencv")
DEV_TEST = ("face-3", "motorcycle-2", "person-1")
"""MODEL_CARD.md's dev-test sequences (real_lasot): never used to choose anything."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("dev-test", "validation"), help="a named sequence set (see above)")
    ap.add_argument("--lasot", type=Path, action="append", help="LaSOT-layout root (repeatable)")
    ap.add_argument("--sequences", nargs="+", help="sequence names (instead of --set)")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped one)")
    ap.add_argument("--runtimes", nargs="+", choices=RUNTIMES, default=list(RUNTIMES))
    ap.add_argument("--threads", type=int, default=2, help="threads per runtime (default 2)")
    ap.add_argument("--tolerance", type=float, default=1.0, help="largest accepted AUC difference (points)")
    ap.add_argument("--init-jitter", type=int, default=0, choices=range(len(INIT_JITTER) + 1), metavar="K",
                    help="also track from K initial boxes moved by 2-3 %% and compare the means: tells a "
                         "runtime difference from a near tie either runtime may flip (default 0)")
    ap.add_argument("--json", type=Path, help="write the table here")
    return ap.parse_args(argv)


def sequences(args: argparse.Namespace) -> tuple[list[Path], list[str]]:
    if args.sequences:
        if not args.lasot:
            raise SystemExit("--sequences needs --lasot")
        return args.lasot, args.sequences
    if args.set == "dev-test":
        return [SHARED / "real_lasot"], list(DEV_TEST)
    if args.set == "validation":
        return [SHARED / "train_real"], list(load_config(REPO / "configs" / "lite0.yaml").data.val_sequences)
    raise SystemExit("give --set or --lasot with --sequences")


def backend(runtime: str, ckpt: Path):
    """(backend, the checkpoint's config) for one runtime; the ONNX runtimes share the cached export and
    take torch's thread count (set from --threads in `main`)."""
    if runtime == "torch":
        return TorchBackend.from_checkpoint(ckpt, "cpu")
    b = cached_onnx_backend(ckpt, "cpu", WarningsReporter(), runtime="opencv" if runtime == "opencv" else "onnx")
    if b is None:
        raise SystemExit(f"{ckpt}: its ONNX export failed the check against PyTorch")
    return b, b.cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    roots, names = sequences(args)
    data = load_frames(roots, names)
    ckpt = args.checkpoint or default_checkpoint()
    rows = []
    for runtime in args.runtimes:
        b, trained = backend(runtime, ckpt)
        r = score(b, trained, [], data, args.init_jitter)
        rows.append({"runtime": runtime, "auc": round(r["auc"], 2), "per_sequence": r["per_sequence"],
                     "fps": round(r["fps"], 1), "lost": round(r["lost"], 3), **{k: r[k] for k in ("run_auc",) if k in r}})
        print(f"{runtime:12s} AUC {r['auc']:6.2f}  FPS {r['fps']:6.1f}  lost {r['lost']:.3f}  {r['per_sequence']}",
              flush=True)
    spread = max(abs(r["auc"] - rows[0]["auc"]) for r in rows)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"largest AUC difference to {rows[0]['runtime']}: {spread:.2f} points (tolerance {args.tolerance}); "
          f"{len(data)} sequences, {sum(len(d[1]) for d in data)} frames; load average {load:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"checkpoint": str(ckpt), "sequences": names, "rows": rows,
                                         "max_difference": spread, "load_average": load}, indent=1))
    return 0 if spread <= args.tolerance else 1


if __name__ == "__main__":
    raise SystemExit(main())

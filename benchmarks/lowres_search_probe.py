"""Would a lower-resolution search pay for small targets? The same search window cut at fewer pixels.

A 20 px target's search window is about 80 frame pixels, upsampled to a 256 px crop: most of the search
graph's work (three quarters of a frame) goes into interpolated pixels, and small targets are exactly
where CSRT is fastest and the speed ratio thinnest (docs/benchmarks.md, "Speed against target size and
frame size"). This cuts the *same* window (its extent as for the trained search size) at `--size` pixels
instead, with the shipped weights unchanged (the neck and heads are convolutions and attention without
positional embeddings, so a 12 x 12 map runs as a 16 x 16 one does):

* the checkpoint is copied with `data.search_size` = `--size` and exported to ONNX at that size (cached
  like any checkpoint), so the graph, the Hann window, the online filter and the cell stride follow it;
* box sizes are decoded as fractions of the trained search size, not of the smaller crop: the box head
  reads the target's size in pixels (`head_size_slope.py`), which the smaller crop shrinks by the same
  factor as the crop.

Scored like `tune_tracking.py` (same frames, starts and metric) against the tracker at its trained size,
in the same process. A probe: nothing in the tracker uses it.

    python benchmarks/lowres_search_probe.py --lasot $S/train_real --lasot $S/train_real2 --sequences $VAL14 \\
        --init-jitter 4 --threads 1 [--checkpoint CKPT] [--size 192]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tune_tracking as tt  # noqa: E402

from siamtool.geometry import CropWindow, search_window  # noqa: E402
from siamtool.tracking.tracker import Tracker  # noqa: E402


class SizesAsTrained:
    """A backend whose box sizes are rescaled from fractions of the smaller crop to fractions of the trained one."""

    def __init__(self, inner, trained_size: int) -> None:
        self.inner, self.cfg = inner, inner.cfg
        self.returns_features = getattr(inner, "returns_features", False)
        self.factor = trained_size / inner.cfg.data.search_size

    def template(self, crop_rgb):
        return self.inner.template(crop_rgb)

    def search(self, crop_rgb, features):
        score, boxes, *rest = self.inner.search(crop_rgb, features)
        boxes = boxes.copy()
        boxes[..., 2:] *= self.factor
        return (score, boxes, *rest)


def lowres_tracker(trained_size: int) -> type[Tracker]:
    """A Tracker whose search window has the extent of a `trained_size` crop, cut at the config's search size."""

    class LowResTracker(Tracker):
        def next_window(self) -> CropWindow:
            d = self.cfg.data
            window = search_window(self.state_box, d.context, d.template_size, trained_size, self.growth)
            return CropWindow(window.cx, window.cy, window.side, d.search_size)

    return LowResTracker


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, action="append", required=True, help="LaSOT-layout root (repeatable)")
    ap.add_argument("--sequences", nargs="+", required=True, help="sequence names to track")
    ap.add_argument("--checkpoint", type=Path, help="checkpoint (default: the shipped one)")
    ap.add_argument("--size", type=int, default=192, help="search crop side in pixels for the same window (default 192)")
    ap.add_argument("--init-jitter", type=int, default=0, help="also track from K moved initial boxes (default 0)")
    ap.add_argument("--threads", type=int, default=1, help="threads (default 1)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/siamtool_lowres"),
                    help="folder for the resized checkpoint copy (default /tmp/siamtool_lowres)")
    args = ap.parse_args(argv)
    if args.size < 32 or args.size % 16:
        raise SystemExit(f"--size {args.size}: must be a multiple of the backbone stride, 16, and at least 32")
    from siamtool.weights import default_checkpoint

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    ckpt = args.checkpoint or default_checkpoint()
    data = tt.load_frames(args.lasot, args.sequences)
    full, _ = tt.backend_for(argparse.Namespace(checkpoint=ckpt, backend="onnx"))
    trained = full.cfg.data.search_size
    args.work.mkdir(parents=True, exist_ok=True)
    small_ckpt = tt.release_copy(ckpt, args.work / f"{ckpt.stem}_search{args.size}.pt",
                                 lambda config: config["data"].update(search_size=args.size))
    small = SizesAsTrained(tt.backend_for(argparse.Namespace(checkpoint=small_ckpt, backend="onnx"))[0], trained)
    base = None
    for label, backend, cls in ((f"{trained} px (trained)", full, Tracker),
                                (f"{args.size} px, same window", small, lowres_tracker(trained))):
        row = tt.score(backend, backend.cfg, [], data, jitter=args.init_jitter, tracker_cls=cls)
        base = base or row
        print(f"{label}: AUC {row['auc']:.2f} ({row['auc'] - base['auc']:+.2f}), {row['fps']:.1f} FPS "
              f"({row['fps'] / base['fps']:.2f}x)  {row['per_sequence']}", flush=True)


if __name__ == "__main__":
    main()

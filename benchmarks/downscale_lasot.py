"""A LaSOT-layout copy of sequences rescaled in space or time: the small-target, frame-size and frame-rate checks.

Aerial footage (UAV123, DTB70, UAVDT) shows targets of 10-20 px, which the real sequences in ../shared
rarely do. Scaling a sequence down by F keeps its motion, clutter and look-alikes and makes every target F
times smaller, so `peers.py --lasot OUT` on the copy shows how each tracker holds up as targets shrink
(docs/benchmarks.md, "Small targets").

    python benchmarks/downscale_lasot.py --factor 2.5 --out /tmp/small_val \\
        --lasot ../shared/data/train_real --lasot ../shared/data/train_real2 --sequences person-103 car-109 ...

Frames are reduced with INTER_AREA and written as JPEG (quality 95); boxes are scaled about the image
origin (1-based LaSOT coordinates kept 1-based); absent frames keep their 0,0,0,0 and flags.

`--long-side N` instead scales each sequence so that its frames' long side is N, up or down: frame
and target grow together. `--canvas 1280x720` pads each frame with grey to that size: the frame grows,
the target keeps its pixels. `peers.py --lasot OUT` on such copies shows what a tracker's speed follows:
CSRT's cost grows with the target's size in pixels, siamtool's hardly (docs/benchmarks.md, "Speed
against target size and frame size"). Only speed is read from those copies: upscaled frames add no detail.

    python benchmarks/downscale_lasot.py --long-side 1280 --out /tmp/hd_val --lasot ... --sequences ...

`--stride K` keeps every K-th frame: the frame-rate check. Validation's real sequences are already
subsampled (every 2nd to 7th frame of their source); playing full-rate footage at their strides shows
how a tracker's standing depends on the motion between frames (docs/benchmarks.md, "How far targets
move between frames"). `--factor 1 --stride 3` copies every 3rd JPEG unchanged.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tune_tracking import locate_sequences  # noqa: E402

from siamtool.data.lasot import load_sequence  # noqa: E402


def rescale(src: Path, dst: Path, factor: float, stride: int = 1, canvas: tuple[int, int] | None = None) -> None:
    """Copy sequence `src` to `dst` with frames and boxes scaled by 1 / `factor`, keeping frames 1,
    1 + stride, 1 + 2 stride, ... (renumbered from 1). At factor 1 the JPEG files are copied unchanged.
    `canvas` (width, height): each frame then sits at the top-left of a grey canvas that size (boxes keep
    their coordinates), so the frame grows and the target does not."""
    (dst / "img").mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(sorted((src / "img").glob("*.jpg"))[::stride], 1):
        target = dst / "img" / f"{k:08d}.jpg"
        if factor == 1 and canvas is None:
            shutil.copyfile(frame, target)
            continue
        image = cv2.imread(str(frame), cv2.IMREAD_COLOR)
        size = (max(round(image.shape[1] / factor), 1), max(round(image.shape[0] / factor), 1))
        if size != (image.shape[1], image.shape[0]):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        if canvas is not None:
            if canvas[0] < size[0] or canvas[1] < size[1]:
                raise SystemExit(f"--canvas {canvas[0]}x{canvas[1]}: smaller than {src.name}'s {size[0]}x{size[1]} frames")
            image = cv2.copyMakeBorder(image, 0, canvas[1] - size[1], 0, canvas[0] - size[0], cv2.BORDER_CONSTANT,
                                       value=(128, 128, 128))
        cv2.imwrite(str(target), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    seq = load_sequence(src, require_images=False)
    gt = seq.gt[::stride]
    scaled = np.hstack([(gt[:, :2] - 1) / factor + 1, gt[:, 2:] / factor])
    np.savetxt(dst / "groundtruth.txt", np.where(gt[:, 2:3] > 0, scaled, gt), delimiter=",", fmt="%.3f")
    for name, flags in (("full_occlusion.txt", seq.full_occlusion), ("out_of_view.txt", seq.out_of_view)):
        if (src / name).exists():
            (dst / name).write_text(",".join(str(int(f)) for f in flags[::stride]) + "\n")
    if (src / "nlp.txt").exists():
        shutil.copy(src / "nlp.txt", dst / "nlp.txt")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, action="append", required=True, help="LaSOT-layout root (repeatable)")
    ap.add_argument("--sequences", nargs="+", required=True, help="sequence names to copy")
    ap.add_argument("--factor", type=float, default=2.5, help="scale frames and boxes down by this (default 2.5)")
    ap.add_argument("--long-side", type=int, help="instead of --factor: scale each sequence so that its frames' "
                    "long side is this many pixels, up or down (default: off)")
    ap.add_argument("--stride", type=int, default=1, help="keep every STRIDE-th frame from the first: the footage "
                    "at 1/STRIDE of its frame rate (default 1 = all; with --factor 1 frames are copied unchanged)")
    ap.add_argument("--canvas", help="WIDTHxHEIGHT: put each (rescaled) frame at the top-left of a grey canvas this "
                    "size; the target keeps its pixel size while the frame grows (default: off)")
    ap.add_argument("--out", type=Path, required=True, help="root of the copy (LaSOT layout: CLASS/NAME/)")
    args = ap.parse_args(argv)
    if args.factor < 1:
        raise SystemExit(f"--factor {args.factor}: must be >= 1 (use --long-side to enlarge)")
    canvas = None
    if args.canvas is not None:
        try:
            canvas = tuple(int(v) for v in args.canvas.lower().split("x"))
        except ValueError:
            canvas = ()
        if len(canvas) != 2 or min(canvas) < 16:
            raise SystemExit(f"--canvas {args.canvas}: expected WIDTHxHEIGHT, e.g. 1280x720")
    if args.stride < 1:
        raise SystemExit(f"--stride {args.stride}: must be at least 1")
    if args.long_side is not None and args.long_side < 16:
        raise SystemExit(f"--long-side {args.long_side}: must be at least 16 pixels")
    for name, path in locate_sequences(args.lasot, args.sequences).items():
        factor = args.factor
        if args.long_side is not None:
            first = cv2.imread(str(next(iter(sorted((path / "img").glob("*.jpg"))))), cv2.IMREAD_COLOR)
            factor = max(first.shape[:2]) / args.long_side
        rescale(path, args.out / path.parent.name / name, factor, args.stride, canvas)
        print(f"{name}: written to {args.out / path.parent.name / name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

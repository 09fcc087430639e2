"""How far targets move between two frames: the validation footage against full-rate footage.

Every tracking setting that weighs motion (the cosine window, the re-detection radius, the online
model's memory in frames, camera-motion compensation) is chosen on the validation sequences. Those keep
at most 48 (train_real) or 150 (train_real2) frames taken at a fixed stride of 1-7 from their source, and
half the sources are UAV123@10fps, itself every third frame of 30 fps footage: a target there moves
several times farther between two frames than in a benchmark played at its own frame rate. This counts
it from the ground truth alone (no tracker, no images needed):

* per-frame motion: the distance between the centres of two consecutive visible boxes, in target sizes
  (sqrt(w h) of the earlier box), over every pair of consecutive frames where both are visible;
* size change: |log| of the ratio of sqrt(w h) between them.

Each group is LaSOT-layout roots (images not needed) and optionally sequence names; `--lasot-test`
adds the 280 LaSOT test sequences' real 30 fps annotations, played at stride 1 and at the strides the
validation footage uses, so the table also shows what a stride alone does to the same trajectories.

    S=../shared/data
    python benchmarks/motion_stats.py \\
        --group validation-14 $S/train_real,$S/train_real2 person-103 person-109 ... \\
        --group dev-test $S/real_lasot face-3 motorcycle-2 person-1 \\
        --lasot-test $S/lasot_test_annos --strides 1 3 7 21
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siamtool.data.lasot import find_sequences, load_sequence  # noqa: E402


def frame_steps(gt: np.ndarray, absent: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(centre motion in target sizes, |log size change|) of each pair of consecutive visible frames
    when the sequence is played at `stride` (frames 0, stride, 2 stride, ...)."""
    gt, absent = gt[::stride], absent[::stride]
    visible = ~absent & (gt[:, 2] > 0) & (gt[:, 3] > 0)
    both = visible[1:] & visible[:-1]
    centre = gt[:, :2] + gt[:, 2:] / 2
    size = np.sqrt(np.clip(gt[:, 2] * gt[:, 3], 1e-12, None))
    motion = np.linalg.norm(centre[1:] - centre[:-1], axis=1) / size[:-1]
    change = np.abs(np.log(size[1:] / size[:-1]))
    return motion[both], change[both]


def load_group(roots: list[Path], names: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(ground truth, absent flags) of the named sequences under `roots` (all of them without names)."""
    found: dict[str, Path] = {}
    for root in roots:
        if not root.is_dir():
            raise SystemExit(f"error: {root}: not a folder")
        found.update(find_sequences(root))
    missing = [n for n in names if n not in found]
    if missing:
        raise SystemExit(f"error: sequence {missing[0]!r} not under {', '.join(map(str, roots))}")
    out = []
    for name in names or sorted(found):
        seq = load_sequence(found[name], require_images=False)
        out.append((seq.gt, seq.absent))
    return out


def row(label: str, sequences: list[tuple[np.ndarray, np.ndarray]], stride: int = 1) -> str:
    steps = [frame_steps(gt, absent, stride) for gt, absent in sequences]
    motion = np.concatenate([m for m, _ in steps])
    change = np.concatenate([c for _, c in steps])
    p50, p90, p99 = np.percentile(motion, [50, 90, 99])
    return (f"| {label} | {len(sequences)} | {len(motion):,} | {p50:.3f} | {p90:.3f} | {p99:.3f} | "
            f"{100 * np.mean(motion > 0.5):.1f} | {100 * np.median(change):.2f} | {100 * np.percentile(change, 90):.2f} |")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--group", nargs="+", action="append", default=[], metavar="ARG",
                    help="NAME ROOT[,ROOT...] [SEQUENCE ...]: one row (repeatable; no sequences = all under the roots)")
    ap.add_argument("--lasot-test", type=Path, help="the LaSOT test annotations (../shared/data/lasot_test_annos): "
                    "one row per --strides value")
    ap.add_argument("--strides", type=int, nargs="+", default=[1, 3, 7, 21],
                    help="strides the LaSOT test annotations are played at (default: 1 3 7 21)")
    args = ap.parse_args(argv)
    if not args.group and args.lasot_test is None:
        ap.error("give at least one --group or --lasot-test")
    print("| footage | sequences | frame pairs | motion: median | p90 | p99 | % pairs > 0.5 sizes | "
          "size change %: median | p90 |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for group in args.group:
        if len(group) < 2:
            ap.error(f"--group {' '.join(group)}: give NAME ROOT[,ROOT...] [SEQUENCE ...]")
        print(row(group[0], load_group([Path(r) for r in group[1].split(",")], group[2:])))
    if args.lasot_test is not None:
        sequences = load_group([args.lasot_test], [])
        for stride in args.strides:
            print(row(f"LaSOT test annotations, stride {stride}", sequences, stride))


if __name__ == "__main__":
    main()

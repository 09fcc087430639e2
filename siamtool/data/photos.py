"""Real photographs that PyPI packages ship, turned into LaSOT-layout training sequences.

Without network access the only real images a fresh machine can install are the sample photos bundled
with scikit-image, scikit-learn and matplotlib. `make_photo_lasot` cuts targets, distractors and
backgrounds from them (see `synthetic.render_sequence`), so the default model's heads learn to match
real image statistics while the ground truth stays exact.

    pip install scikit-image scikit-learn
    python -m siamtool.data.photos /tmp/photo_lasot --sequences 80
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import cv2
import numpy as np

from siamtool.data.synthetic import make_synthetic_lasot
from siamtool.errors import SiamtoolError

# Colour photographs only: grayscale scans, charts and microscopy teach nothing useful about objects.
_PHOTOS = {
    "skimage": ("data/astronaut.png", "data/chelsea.png", "data/coffee.png", "data/rocket.jpg",
                "data/motorcycle_left.png", "data/motorcycle_right.png", "data/hubble_deep_field.jpg",
                "data/retina.jpg", "data/grass.png", "data/gravel.png"),
    "sklearn": ("datasets/images/china.jpg", "datasets/images/flower.jpg"),
    "matplotlib": ("mpl-data/sample_data/grace_hopper.jpg", "mpl-data/sample_data/Minduka_Present_Blue_Pack.png"),
}
ALWAYS_INSTALLED = ("matplotlib",)
"""Packages siamtool depends on: their photos are on every install, so a clip made from them alone (the
demo's) is the same clip everywhere, whatever extras are installed."""


def bundled_photos(packages: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """name -> BGR image for every bundled photo found (of `packages`, default all); packages that are not
    installed are skipped."""
    found = {}
    for package, files in _PHOTOS.items():
        if packages is not None and package not in packages:
            continue
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        base = Path(next(iter(spec.submodule_search_locations)))
        for rel in files:
            img = cv2.imread(str(base / rel), cv2.IMREAD_COLOR)
            if img is not None:
                found[f"{package}:{Path(rel).stem}"] = img
    return found


def make_photo_lasot(root: str | Path, sequences: int = 80, n_frames: int = 120,
                     size: tuple[int, int] = (384, 288), seed: int = 1) -> list[str]:
    """Write `sequences` photo-textured sequences under root/photo/; returns the photo names used.

    Only the optional packages' photos (scikit-image, scikit-learn): matplotlib's pictures are the demo's
    (`siamtool demo`), and a model trained on them would make the demo a test on training material."""
    photos = bundled_photos(tuple(p for p in _PHOTOS if p not in ALWAYS_INSTALLED))
    if not photos:
        raise SiamtoolError("no bundled photos found: pip install scikit-image scikit-learn")
    make_synthetic_lasot(root, classes=("photo",), seqs_per_class=sequences, n_frames=n_frames, size=size,
                         seed=seed, textures=list(photos.values()))
    return sorted(photos)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", type=Path, help="output LaSOT root")
    ap.add_argument("--sequences", type=int, default=80, help="number of sequences (default 80)")
    ap.add_argument("--frames", type=int, default=120, help="frames per sequence (default 120)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    args = ap.parse_args()
    names = make_photo_lasot(args.out, args.sequences, args.frames, seed=args.seed)
    print(f"wrote {args.sequences} sequences to {args.out} from {len(names)} photos: {', '.join(names)}")


if __name__ == "__main__":
    main()

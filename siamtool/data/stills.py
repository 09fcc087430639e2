"""Still-image pairs from a COCO-like JSON (`stills` source): two augmentations of one image around one box.

DaSiamRPN and SiamRPN++ train on detection data (COCO) as well as video: an image with boxes gives a
positive pair by cutting template and search from the same image around the same box, the search crop
changed by an augmentation the training stream does not already apply (it shifts, rescales and jitters
colour per image, but never changes the target's shape), and *semantic negatives* by centring the search
crop on another box of the image (kind 1 when it has the template's class, kind 2 otherwise), or, for an
image with one usable box, on a box of another image (of the same class when there is one).

The file (`annotations.json` in `../shared/data/stills_coco/`)::

    {"images": [{"file": "images/<name>.jpg", "width": W, "height": H,
                 "boxes": [[x, y, w, h, "class"], ...]}, ...]}

x, y are the top-left corner in 0-based pixels, paths relative to the JSON's folder. Each usable box
(both sides >= `MIN_BOX_SIDE` px, inside the image) is a one-frame "sequence" named `<image>#<box>`
(box = its 0-based position in the image's list), so the shard's `sequence` fields say which box a pair
was cut around; `frames` is (0, 0).

The search augmentation (`StillAugment`, drawn per pair from the sampler's seeded generator, so the
pairs are a pure function of the config and the file): an anisotropic stretch about the target's centre
(each axis x exp(U(-0.15, 0.15)): a changed aspect ratio, which a box head must follow), per-channel
colour gains U(0.85, 1.15), a gamma U(0.8, 1.25), and with probability 0.3 a motion blur of 3-9 px at
a random angle. The template crop is never augmented: the tracker always cuts it plainly.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from siamtool.data.sampling import PairSpec, spread, stable_rng
from siamtool.data.shards import KIND_OTHER_CLASS, KIND_POSITIVE, KIND_SAME_CLASS
from siamtool.errors import DatasetError

ANNOTATIONS_NAME = "annotations.json"
MIN_BOX_SIDE = 8.0
"""Boxes with a side below this many pixels are never a target (COCO has many 2-5 px boxes): a 128 px
template of them is mostly context. They still exist in the image; they are just not sampled."""
STRETCH = 0.15
"""Log-range of the per-axis stretch."""


@dataclass(frozen=True)
class StillAugment:
    """How one stills search crop differs from a plain crop (applied by `augment_crop` / `augment_box`)."""

    stretch_x: float
    stretch_y: float
    gains: tuple[float, float, float]
    """Multipliers of the B, G, R channels."""
    gamma: float
    blur_length: int
    """Motion blur kernel length in crop pixels (0: none)."""
    blur_angle: float
    """Motion blur direction in degrees."""

    def matrix(self, out_size: int) -> np.ndarray:
        """3x3 map of crop pixel indices: the stretch about the crop's centre (where the box centre is)."""
        c = out_size / 2 - 0.5
        return np.array([[self.stretch_x, 0.0, (1 - self.stretch_x) * c],
                         [0.0, self.stretch_y, (1 - self.stretch_y) * c], [0.0, 0.0, 1.0]])


def draw_augment(rng: np.random.Generator) -> StillAugment:
    """One seeded augmentation (the ranges are in the module docstring)."""
    sx, sy = np.exp(rng.uniform(-STRETCH, STRETCH, 2))
    gains = tuple(float(g) for g in rng.uniform(0.85, 1.15, 3))
    gamma = float(np.exp(rng.uniform(math.log(0.8), math.log(1.25))))
    blur = int(rng.integers(3, 10)) if rng.random() < 0.3 else 0
    return StillAugment(float(sx), float(sy), gains, gamma, blur, float(rng.uniform(0, 180)))  # type: ignore[arg-type]


def augment_box(box: np.ndarray, aug: StillAugment, out_size: int) -> np.ndarray:
    """A box x,y,w,h in continuous crop pixels after the stretch about the crop centre."""
    c = out_size / 2
    x, y, w, h = (float(v) for v in box)
    cx, cy = c + (x + w / 2 - c) * aug.stretch_x, c + (y + h / 2 - c) * aug.stretch_y
    w, h = w * aug.stretch_x, h * aug.stretch_y
    return np.array([cx - w / 2, cy - h / 2, w, h])


def augment_crop(image: np.ndarray, affine: np.ndarray, out_size: int, aug: StillAugment) -> np.ndarray:
    """Cut the crop `affine` (2x3, frame to crop pixel indices) maps, stretched and recoloured by `aug`."""
    m = (aug.matrix(out_size) @ np.vstack([affine, [0.0, 0.0, 1.0]]))[:2]
    patch = cv2.warpAffine(image, m, (out_size, out_size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    lut = np.clip(255.0 * (np.arange(256) / 255.0) ** aug.gamma, 0, 255)
    channels = [cv2.LUT(patch[..., k], np.clip(lut * g, 0, 255).astype(np.uint8))
                for k, g in enumerate(aug.gains)]
    patch = np.dstack(channels + ([patch[..., 3]] if patch.shape[2] == 4 else []))
    if aug.blur_length:
        kernel = np.zeros((aug.blur_length, aug.blur_length), np.float32)
        kernel[aug.blur_length // 2, :] = 1.0
        rot = cv2.getRotationMatrix2D(((aug.blur_length - 1) / 2, (aug.blur_length - 1) / 2), aug.blur_angle, 1.0)
        kernel = cv2.warpAffine(kernel, rot, kernel.shape[::-1])
        patch = cv2.filter2D(patch, -1, kernel / max(float(kernel.sum()), 1e-6), borderType=cv2.BORDER_REPLICATE)
    return patch


# --------------------------------------------------------------------------------------------- index


@dataclass(frozen=True)
class StillBox:
    """One usable box: the one-frame "sequence" `name` (`<image>#<box>`)."""

    name: str
    image: str
    path: Path
    box: tuple[float, float, float, float]
    class_name: str


@dataclass
class StillsIndex:
    """The usable boxes of a stills JSON, and what was left out."""

    json_path: Path
    boxes: list[StillBox]
    images: int
    skipped: list[str]
    """One line per image left out (missing file), naming the file."""
    small: int = 0
    """Boxes too small (or outside the image) to be a target."""

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.boxes]


def _json_path(root: Path) -> Path:
    path = root if root.is_file() else root / ANNOTATIONS_NAME
    if not path.is_file():
        raise DatasetError(f"{path}: stills annotations not found; point the source at a folder holding "
                           f"{ANNOTATIONS_NAME} or at the JSON file (stills:DIR)")
    return path


def _read_images(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: unreadable ({e})") from None
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    images = data.get("images") if isinstance(data, dict) else None
    if not isinstance(images, list) or not images:
        raise DatasetError(f'{path}: expected {{"images": [{{"file", "width", "height", "boxes"}}, ...]}} '
                           "with at least one image")
    return images


def _image_boxes(path: Path, i: int, entry: object) -> tuple[str, int, int, list[tuple[float, float, float, float, str]]]:
    """(file, width, height, boxes) of `images[i]`, or a DatasetError naming the entry and field."""
    where = f"{path}: images[{i}]"
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise DatasetError(f'{where}: expected a mapping with "file", "width", "height", "boxes"')
    try:
        width, height = int(entry["width"]), int(entry["height"])
        boxes = []
        for j, b in enumerate(entry.get("boxes") or []):
            if not isinstance(b, (list, tuple)) or len(b) != 5:
                raise DatasetError(f'{where} ({entry["file"]}): boxes[{j}] must be [x, y, w, h, "class"], got {b!r}')
            boxes.append((float(b[0]), float(b[1]), float(b[2]), float(b[3]), str(b[4])))
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"{where} ({entry.get('file')}): bad width, height or box value ({e})") from None
    return entry["file"], width, height, boxes


def index_stills(root: str | Path, require_images: bool = True, strict: bool = False) -> StillsIndex:
    """Read the JSON under `root`; images missing on disk are skipped with their path unless `strict`."""
    path = _json_path(Path(root))
    usable, skipped, small = [], [], 0
    images = _read_images(path)
    for i, entry in enumerate(images):
        file, width, height, boxes = _image_boxes(path, i, entry)
        image_path = path.parent / file
        if require_images and not image_path.is_file():
            line = f"{image_path}: image missing (listed in {path} images[{i}])"
            if strict:
                raise DatasetError(line)
            skipped.append(line)
            continue
        stem = Path(file).stem
        for j, (x, y, w, h, cls) in enumerate(boxes):
            inside = x >= -1 and y >= -1 and x + w <= width + 1 and y + h <= height + 1
            if not (np.isfinite([x, y, w, h]).all() and w >= MIN_BOX_SIDE and h >= MIN_BOX_SIDE and inside):
                small += 1
                continue
            usable.append(StillBox(f"{stem}#{j}", stem, image_path, (x, y, w, h), cls))
    if not usable:
        raise DatasetError(f"{path}: no usable box (both sides >= {MIN_BOX_SIDE:g} px) in {len(images)} image(s)")
    return StillsIndex(path, usable, len(images), skipped, small)


# ------------------------------------------------------------------------------------------ sampling


def _negative(rng: np.random.Generator, box: StillBox, same_image: list[StillBox], by_class: dict[str, list[StillBox]],
              everything: list[StillBox]) -> StillBox | None:
    """Another box of the same image if there is one, else one of the same class, else any other box."""
    if same_image:
        return same_image[int(rng.integers(len(same_image)))]
    same = [b for b in by_class[box.class_name] if b.image != box.image]
    if same:
        return same[int(rng.integers(len(same)))]
    other = [b for b in everything if b.image != box.image]
    return other[int(rng.integers(len(other)))] if other else None


def sample_still_pairs(boxes: list[StillBox], seed: int, neg_prob: float, total: int) -> list[PairSpec]:
    """`total` pairs spread evenly over the boxes (sorted by name; `sampling.spread`), each drawn from a
    generator seeded by (seed, box name): positive with probability 1 - neg_prob, else a negative."""
    boxes = sorted(boxes, key=lambda b: b.name)
    by_image: dict[str, list[StillBox]] = {}
    by_class: dict[str, list[StillBox]] = {}
    for b in boxes:
        by_image.setdefault(b.image, []).append(b)
        by_class.setdefault(b.class_name, []).append(b)
    pairs = []
    for box, count in zip(boxes, spread(total, len(boxes), seed)):
        rng = stable_rng(seed, box.name, salt=0x571)
        others = [b for b in by_image[box.image] if b.name != box.name]
        for _ in range(count):
            search = _negative(rng, box, others, by_class, boxes) if rng.random() < neg_prob else None
            kind = KIND_POSITIVE if search is None else (
                KIND_SAME_CLASS if search.class_name == box.class_name else KIND_OTHER_CLASS)
            search = search or box
            pairs.append(PairSpec(kind, box.name, 0, box.path, box.box, search.name, 0, search.path, search.box,
                                  draw_augment(rng)))
    return pairs

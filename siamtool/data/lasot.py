"""The LaSOT index: sequences, official splits, visibility flags and attributes.

Reads the real layout (``ROOT/<class>/<class>-<n>/``) and a flat one (``ROOT/<seq>/``, LaSOT_ext and
custom data). Annotations load without images so `eval --results` needs only the annotation files.
Ground truth stays in the file's 1-based convention (the raw-results convention); use
`geometry.from_lasot` before cropping.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cache, partial
from importlib import resources
from pathlib import Path

import numpy as np

from siamtool.errors import DatasetError

ATTRIBUTES: dict[str, str] = {
    "IV": "Illumination Variation",
    "POC": "Partial Occlusion",
    "DEF": "Deformation",
    "MB": "Motion Blur",
    "CM": "Camera Motion",
    "ROT": "Rotation",
    "BC": "Background Clutter",
    "VC": "Viewpoint Change",
    "SV": "Scale Variation",
    "FOC": "Full Occlusion",
    "FM": "Fast Motion",
    "OV": "Out-of-View",
    "LR": "Low Resolution",
    "ARC": "Aspect Ratio Change",
}
SPLITS = ("train", "test", "extension", "all")
_SPLIT_FILES = {"train": "training_set.txt", "test": "testing_set.txt", "extension": "extension_set.txt"}


@dataclass
class LasotSequence:
    """One annotated sequence of any layout (`siamtool.data.datasets`). `gt` is (N, 4) float64 x,y,w,h
    in 1-based pixels (the raw-results convention every benchmark's toolkit scores in).

    One type for every reader, so the sampler, prepare, the runner and the metrics never ask which
    dataset a sequence came from. LaSOT fills only the first fields; other layouts add an explicit frame
    list (`frames`), the annotation file (`gt_path`), GOT-10k's `cover` and `resolution`, and for test
    splits that publish only the first box `gt_frames` = 1 (the other rows of `gt` are NaN).
    """

    name: str
    class_name: str
    path: Path
    gt: np.ndarray
    full_occlusion: np.ndarray
    out_of_view: np.ndarray
    n_images: int | None = None
    attributes: dict[str, bool] = field(default_factory=dict)
    frames: list[Path] | None = None
    """Explicit path of every frame (None: LaSOT's ``img/%08d.jpg``)."""
    gt_path: Path | None = None
    """The annotation file, for messages (None: ``path/groundtruth.txt``)."""
    gt_frames: int | None = None
    """Leading rows of `gt` that are annotations (None: all). GOT-10k test and TrackingNet TEST publish
    only the first box: 1, and the rows after it are NaN (nothing to train on or score)."""
    cover: np.ndarray | None = None
    """GOT-10k's per-frame visible fraction 0..8 (`cover.label`); its metric leaves out cover 0."""
    resolution: tuple[int, int] | None = None
    """(width, height) of the frames where the dataset records it (GOT-10k `meta_info.ini`): the GOT-10k
    metric clips both boxes to it."""
    dataset: str = "lasot"
    """The reader that made this sequence (a `siamtool.data.datasets.KINDS` name)."""

    @property
    def n_frames(self) -> int:
        return len(self.gt)

    @property
    def annotation_file(self) -> Path:
        return self.gt_path if self.gt_path is not None else self.path / "groundtruth.txt"

    @property
    def absent(self) -> np.ndarray:
        return self.full_occlusion | self.out_of_view

    @property
    def visible(self) -> np.ndarray:
        return ~self.absent

    @property
    def usable(self) -> np.ndarray:
        """Frames a training pair may use: visible with a finite, positive-size box."""
        return self.visible & ~self.boxless

    @property
    def boxless(self) -> np.ndarray:
        """Frames whose box is NaN or has no positive size (absent or not).

        One policy for every command: such a visible frame carries no box, so prepare never samples it
        and eval scores it as the toolkits do (a failure for success and precision); both count it. Real
        LaSOT has three (lion-5 #553, microphone-6 #1109, tiger-6 #118); NaN rows come from other datasets.
        """
        with np.errstate(invalid="ignore"):
            return ~(np.isfinite(self.gt).all(axis=1) & (self.gt[:, 2] > 0) & (self.gt[:, 3] > 0))

    def boxless_lines(self) -> list[str]:
        """`<annotation file>:LINE: x,y,w,h` for each annotated visible frame without a usable box."""
        bad = np.flatnonzero(self.visible & self.boxless)
        if self.gt_frames is not None:
            bad = bad[bad < self.gt_frames]
        return [f"{self.annotation_file}:{i + 1}: {','.join(f'{v:g}' for v in self.gt[i])}" for i in bad]

    def frame_path(self, i: int) -> Path:
        """Path of 0-based frame `i` (LaSOT names images from 00000001.jpg)."""
        if self.frames is not None:
            return self.frames[i]
        return self.path / "img" / f"{i + 1:08d}.jpg"

    @property
    def nlp(self) -> str:
        p = self.path / "nlp.txt"
        return p.read_text().strip() if p.is_file() else ""


Sequence = LasotSequence
"""The dataset-neutral name of the one sequence type."""


# ------------------------------------------------------------------------------------------ parsing


def parse_boxes(path: Path) -> np.ndarray:
    """x,y,w,h per line (comma, tab or space separated). Fast path in numpy, slow path finds the bad line."""
    text = path.read_text()
    lines = text.strip().splitlines()
    if not lines:
        raise DatasetError(f"{path}: file is empty")
    flat = text.replace("\t", ",").replace(" ", ",").replace("\r", "")
    try:
        values = np.array(flat.replace("\n", ",").strip(",").split(","), dtype=np.float64)
        if values.size == 4 * len(lines):
            return values.reshape(-1, 4)
    except ValueError:
        pass
    rows = []
    for n, line in enumerate(lines, 1):
        parts = [p for p in line.replace("\t", ",").replace(" ", ",").split(",") if p.strip()]
        try:
            row = [float(p) for p in parts]
        except ValueError:
            raise DatasetError(f"{path}:{n}: cannot parse {line.strip()!r} as x,y,w,h numbers") from None
        if len(row) != 4:
            raise DatasetError(f"{path}:{n}: expected 4 values x,y,w,h, got {len(row)}: {line.strip()!r}")
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def _parse_flags(path: Path, n: int) -> np.ndarray:
    """One comma-separated line of 0/1 flags; a missing file means all zeros."""
    if not path.is_file():
        return np.zeros(n, dtype=bool)
    text = path.read_text().strip()
    if not text:
        raise DatasetError(f"{path}: file is empty, expected {n} comma-separated 0/1 flags")
    try:
        flags = np.array(text.replace("\n", ",").replace("\t", ",").split(","), dtype=np.int64)
    except ValueError:
        raise DatasetError(f"{path}:1: flags must be comma-separated 0/1 values") from None
    if flags.size != n:
        raise DatasetError(f"{path}: {flags.size} flags but groundtruth.txt has {n} lines")
    return flags.astype(bool)


def load_sequence(path: str | Path, require_images: bool = True) -> LasotSequence:
    """Load and validate one sequence folder (raises DatasetError naming the file and line)."""
    path = Path(path)
    gt_path = path / "groundtruth.txt"
    if not gt_path.is_file():
        raise DatasetError(f"{gt_path}: missing (is {path} a LaSOT sequence folder?)")
    gt = parse_boxes(gt_path)
    n = len(gt)
    fo = _parse_flags(path / "full_occlusion.txt", n)
    oov = _parse_flags(path / "out_of_view.txt", n)
    n_images = None
    if require_images:
        img_dir = path / "img"
        if not img_dir.is_dir():
            raise DatasetError(f"{img_dir}: image folder missing (annotations-only data works for eval --results)")
        names = [e.name for e in os.scandir(img_dir)]
        n_images = sum(1 for name in names if name.endswith(".jpg"))
        if n_images == 0 and names:
            other = sorted({Path(name).suffix.lower() or name for name in names})
            raise DatasetError(f"{img_dir}: no .jpg frames (found {', '.join(other[:4])}); LaSOT-layout sequences "
                               "are 00000001.jpg, 00000002.jpg, ... (`siamtool track` plays other image folders)")
        if n_images != n:
            raise DatasetError(f"{img_dir}: {n_images} frames but {gt_path} has {n} lines")
    name = path.name
    class_name = name.rsplit("-", 1)[0] if "-" in name else path.parent.name
    # LaSOT's attributes describe LaSOT's footage: a user's own `person-2` gets none unless it also has
    # LaSOT person-2's frame count.
    attributes = load_attributes().get(name, {}) if lasot_frame_counts().get(name) == n else {}
    return LasotSequence(name, class_name, path, gt, fo, oov, n_images, attributes)


# ------------------------------------------------------------------------------------ splits, index


@cache
def official_split(split: str) -> tuple[str, ...]:
    """Sequence names of an official list (train 1120, test 280 in official order, extension 150)."""
    text = resources.files("siamtool.data").joinpath("splits", _SPLIT_FILES[split]).read_text()
    return tuple(line.strip() for line in text.splitlines() if line.strip())


@cache
def lasot_frame_counts() -> dict[str, int]:
    """Frames per LaSOT train and test sequence (`splits/frame_counts.csv`): tells LaSOT footage from a
    user's sequence that happens to share a LaSOT name."""
    text = resources.files("siamtool.data").joinpath("splits", "frame_counts.csv").read_text()
    return {r["sequence"]: int(r["n_frames"]) for r in csv.DictReader(text.splitlines())}


@cache
def load_attributes() -> dict[str, dict[str, bool]]:
    """The 14 LaSOT attributes per sequence (train, test and extension)."""
    text = resources.files("siamtool.data").joinpath("splits", "attributes.csv").read_text()
    rows = csv.DictReader(text.splitlines())
    return {r["sequence"]: {a: r[a] == "1" for a in ATTRIBUTES} for r in rows}


def find_sequences(root: str | Path) -> dict[str, Path]:
    """Sequence name -> folder, for the nested LaSOT layout and a flat one (both may mix)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if not entry.is_dir():
            continue
        p = Path(entry.path)
        if (p / "groundtruth.txt").is_file():
            found[p.name] = p
            continue
        for sub in sorted(os.scandir(p), key=lambda e: e.name):
            if sub.is_dir() and os.path.isfile(os.path.join(sub.path, "groundtruth.txt")):
                found[sub.name] = Path(sub.path)
    return found


def user_split(split: str, available: Iterable[str], known: Iterable[str]) -> list[str]:
    """Names for the splits every reader takes: 'all' (everything under the root) or a text file of names;
    `known` are the reader's own split names, for the error."""
    if split == "all":
        return list(available)
    p = Path(split)
    if p.is_file():
        return read_names_file(p)
    raise DatasetError(f"unknown split {split!r}: use {', '.join([*known, 'all'])}, or a file listing sequence names")


def split_names(split: str, available: dict[str, Path]) -> list[str]:
    """Names for `split`: an official list, 'all' (everything under the root) or a text file of names."""
    if split in _SPLIT_FILES:
        return list(official_split(split))
    return user_split(split, available, _SPLIT_FILES)


@dataclass
class Index:
    """The result of indexing a root for a split: what loaded, what is missing, what was skipped."""

    sequences: list[LasotSequence]
    missing: list[str]
    skipped: list[str]
    """One line per skipped sequence: the file (and line) and why."""
    on_disk: int = 0
    """Sequence folders found under the root, in the split or not (a split that keeps few is suspicious)."""
    kind: str = "lasot"
    """The reader (a `siamtool.data.datasets.KINDS` name): decides the metric and the results layout."""
    split: str = "all"
    attribute_names: dict[str, str] = field(default_factory=lambda: dict(ATTRIBUTES))
    """Code -> long name of the per-sequence attributes this benchmark defines (empty: none)."""

    def boxless_lines(self) -> list[str]:
        """Every visible frame without a usable box, over all sequences (see `LasotSequence.boxless`)."""
        return [line for seq in self.sequences for line in seq.boxless_lines()]


def index_lasot(
    root: str | Path, split: str = "all", require_images: bool = True, strict: bool = False
) -> Index:
    """Index the sequences of `split` under `root`.

    Sequences of the split that are not under the root go to `missing` (callers decide whether that is
    an error, e.g. eval refuses a partial test set unless --skip-missing). A malformed sequence raises in
    strict mode and is skipped with its reason otherwise.
    """
    available = find_sequences(root)
    loaders = {name: partial(load_sequence, path, require_images=require_images) for name, path in available.items()}
    return build_index("lasot", split, Path(root), split_names(split, available), loaders, strict, ATTRIBUTES,
                       layout="expected ROOT/<class>/<seq>/groundtruth.txt")


def read_names_file(path: Path) -> list[str]:
    """Non-empty, non-comment lines of a list file (GOT-10k and VOT `list.txt`, a user's split file)."""
    names = [line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    if not names:
        raise DatasetError(f"{path}: lists no sequences")
    return names


def build_index(
    kind: str,
    split: str,
    root: Path,
    names: Iterable[str],
    loaders: dict[str, Callable[[], LasotSequence]],
    strict: bool,
    attribute_names: dict[str, str] | None = None,
    on_disk: int | None = None,
    layout: str = "see docs/data.md for the layout",
) -> Index:
    """Load each listed sequence that has a loader (the others are `missing`), collecting errors.

    `loaders` maps a name found on disk to a function that loads it; a `DatasetError` skips the sequence
    with its one-line reason, or raises in strict mode.
    """
    seqs, missing, skipped = [], [], []
    for name in names:
        load = loaders.get(name)
        if load is None:
            missing.append(name)
            continue
        try:
            seq = load()
        except DatasetError as e:
            if strict:
                raise
            skipped.append(str(e))
            continue
        seq.dataset = kind
        seqs.append(seq)
    if not seqs and not skipped:
        raise DatasetError(f"{root}: no {kind} sequences of split {split!r} found ({layout})")
    return Index(seqs, missing, skipped, on_disk=len(loaders) if on_disk is None else on_disk, kind=kind,
                 split=split, attribute_names=dict(attribute_names or {}))

"""One reader per benchmark layout, behind one function and one sequence type.

    index = index_dataset("got10k", "/data/GOT-10k", split="val", require_images=False)
    for seq in index.sequences:      # LasotSequence: name, class_name, gt, absent, usable, frame_path(i) ...

`index_dataset` is what prepare, eval and the sampler call; `detect_kind` names the layout of a folder
(one-line `DatasetError` when none matches). Each reader module holds `SPLITS`, `DEFAULT_SPLIT`,
`detect(root)` and `index(root, split, require_images, strict)`; the frame-range and attribute tables they
need ship in `tables/`. The layouts and the quirks each reader handles are in docs/data.md.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from siamtool.data.datasets import got10k, lasot, nfs, otb, trackingnet, uav, vot
from siamtool.data.lasot import Index, LasotSequence, Sequence
from siamtool.errors import DatasetError

_READERS: dict[str, tuple[ModuleType, str | None]] = {
    "lasot": (lasot, None),
    "lasot_ext": (lasot, "extension"),
    "got10k": (got10k, None),
    "trackingnet": (trackingnet, None),
    "otb": (otb, None),
    "uav": (uav, None),
    "nfs": (nfs, None),
    "vot": (vot, None),
}
KINDS: tuple[str, ...] = tuple(_READERS)
"""Layout names for `index_dataset`, `--benchmark` and `--data KIND:ROOT`."""
ALIASES: dict[str, tuple[str, str]] = {
    "otb100": ("otb", "otb100"), "otb2015": ("otb", "otb100"), "otb2013": ("otb", "otb2013"),
    "otb50": ("otb", "otb50"), "uav123": ("uav", "UAV123"), "uav20l": ("uav", "UAV20L"),
    "uav123_10fps": ("uav", "UAV123_10fps"), "got-10k": ("got10k", "val"), "lasotext": ("lasot_ext", "extension"),
}
"""Benchmark names papers use -> (kind, split)."""
SERVER_SPLITS: dict[str, tuple[str, ...]] = {"got10k": got10k.TEST_SPLITS, "trackingnet": trackingnet.TEST_SPLITS}
"""Splits scored by the benchmark's evaluation server: `eval --checkpoint` zips their results."""
_DETECT_ORDER = ("trackingnet", "got10k", "uav", "vot", "nfs", "otb", "lasot")

__all__ = ["ALIASES", "KINDS", "SERVER_SPLITS", "Index", "LasotSequence", "Sequence", "default_split", "detect_kind", "index_dataset",
           "resolve_kind", "splits"]


def resolve_kind(name: str) -> tuple[str, str | None]:
    """(kind, split implied by the name or None) for a kind or an alias, case-insensitive."""
    key = name.lower().replace("-", "_") if name.lower() not in ALIASES else name.lower()
    if key in _READERS:
        return key, _READERS[key][1]
    if name.lower() in ALIASES:
        return ALIASES[name.lower()]
    raise DatasetError(f"unknown benchmark {name!r}: use one of {', '.join(KINDS)} "
                       f"(or {', '.join(ALIASES)})")


def default_split(kind: str) -> str:
    """The split a kind reads when none is given (the benchmark's evaluation split)."""
    module, fixed = _READERS[resolve_kind(kind)[0]]
    return fixed or module.DEFAULT_SPLIT


def splits(kind: str) -> tuple[str, ...]:
    """The named splits of a kind ('all' and a file of names work everywhere too)."""
    return tuple(_READERS[resolve_kind(kind)[0]][0].SPLITS)


def detect_kind(root: str | Path) -> str:
    """The layout of `root`, from the files its download unpacks to; a one-line error when none matches."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    for kind in _DETECT_ORDER:
        if _READERS[kind][0].detect(root):
            return kind
    raise DatasetError(f"{root}: no known dataset layout ({', '.join(KINDS)}; see docs/data.md); "
                       "pass --benchmark NAME if it is one of them")


def index_dataset(
    kind: str, root: str | Path, split: str | None = None, require_images: bool = True, strict: bool = False
) -> Index:
    """Index `split` of the `kind` dataset under `root` (kind 'auto': `detect_kind`).

    `split` None means the kind's default (its evaluation split; an alias like 'otb2013' implies one).
    Sequences of the split that are not on disk go to `Index.missing`; a malformed one is skipped with
    its one-line reason in `Index.skipped`, or raises in strict mode. `require_images` False reads the
    annotations only (enough for `eval --results`).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: dataset folder not found")
    if kind == "auto":
        kind = detect_kind(root)
    kind, implied = resolve_kind(kind)
    module, fixed = _READERS[kind]
    split = split or implied or fixed or module.DEFAULT_SPLIT
    index = module.index(root, split, require_images=require_images, strict=strict)
    index.kind = kind
    for seq in index.sequences:
        seq.dataset = kind
    return index

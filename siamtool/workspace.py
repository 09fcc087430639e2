"""What a command finds in the working folder when it is not told: the LaSOT root and the trained tracker.

The toolkit's workflow is four lines run in one folder::

    siamtool prepare --lasot /data/LaSOT      # writes shards/ and records the root in shards/prepare.json
    siamtool train configs/base.yaml          # writes runs/base/best.pt
    siamtool eval --split test                # needs the root and the tracker: found here
    siamtool track 0

so `eval` takes the LaSOT root from, in order: --lasot, the root `prepare` recorded in ./shards,
$SIAMTOOL_LASOT, the config key `eval.lasot`; and the tracker from --checkpoint/--onnx, else the newest
run under ./runs, else the tracker shipped with the package. The command says which it used.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from siamtool.errors import SiamtoolError
from siamtool.models.checkpoint import latest_checkpoint

SHARDS_DIR = Path("shards")
"""`prepare`'s default --out, where it records the LaSOT root (prepare.json, then index.json)."""
RUNS_DIR = Path("runs")
"""`train`'s default run folders live here (runs/<config name>)."""
LASOT_ENV = "SIAMTOOL_LASOT"


def recorded_lasot_root(shards: Path = SHARDS_DIR) -> tuple[Path, Path] | None:
    """(root, file that recorded it) from a prepare run in `shards`, or None when there is none.

    prepare.json is written when the run starts (an interrupted prepare still knows its root);
    index.json when it finishes.
    """
    for name, keys in (("prepare.json", ("fingerprint",)), ("index.json", ())):
        path = shards / name
        try:
            value = json.loads(path.read_text())
            for key in keys:
                value = value[key]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        root = _lasot_root_of(value) if isinstance(value, dict) else None
        if root:
            return Path(root), path
    return None


def _lasot_root_of(record: dict) -> str | None:
    """The LaSOT root a prepare record names. A record with several sources names each with its kind; one
    without a LaSOT source names none (its `source_root` is a GOT-10k or other root that eval must not
    read as LaSOT)."""
    sources = record.get("sources")
    if isinstance(sources, list):
        lasot = [s.get("root") for s in sources if isinstance(s, dict) and s.get("kind") == "lasot"]
        return lasot[0] if lasot and isinstance(lasot[0], str) else None
    root = record.get("source_root")
    return root if isinstance(root, str) and root else None


def resolve_lasot(given: Path | None, config_value: str | None) -> tuple[Path, str]:
    """The LaSOT root to use and where it came from (for the command's first line).

    Order: --lasot, the root recorded by `prepare` in ./shards, $SIAMTOOL_LASOT, `eval.lasot`.
    """
    if given is not None:
        return Path(given), "--lasot"
    candidates: list[tuple[Path, str]] = []
    recorded = recorded_lasot_root()
    if recorded is not None:
        candidates.append((recorded[0], f"recorded by `siamtool prepare` in {recorded[1]}"))
    if os.environ.get(LASOT_ENV):
        candidates.append((Path(os.environ[LASOT_ENV]), f"${LASOT_ENV}"))
    if config_value:
        candidates.append((Path(config_value), "eval.lasot in the config"))
    if not candidates:
        raise SiamtoolError(f"no LaSOT root: pass --lasot ROOT, run `siamtool prepare --lasot ROOT` in this folder "
                            f"first (eval reads the root it records in {SHARDS_DIR}/), set {LASOT_ENV}=ROOT, or "
                            "set eval.lasot in a --config")
    root, source = candidates[0]
    if not root.is_dir():
        raise SiamtoolError(f"{root}: LaSOT root not found ({source}); pass --lasot ROOT")
    return root, source


def newest_trained_checkpoint(runs: Path = RUNS_DIR) -> Path | None:
    """The checkpoint of the most recently written run under `runs` (best.pt, else its newest step
    checkpoint), or None when `runs` holds no checkpoint."""

    found: list[tuple[float, Path]] = []
    if not runs.is_dir():
        return None
    for run in runs.iterdir():
        if not run.is_dir():
            continue
        best = run / "best.pt"
        ckpt = best if best.is_file() else latest_checkpoint(run / "checkpoints")
        if ckpt is not None:
            found.append((ckpt.stat().st_mtime, ckpt))
    return max(found)[1] if found else None

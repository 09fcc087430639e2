"""Which file a checkpoint argument means: the file itself, or a run folder's best or newest checkpoint.

Pure path logic, kept apart from `siamtool.models.checkpoint` (which reads and rebuilds checkpoints with
torch) so that the export cache can find a checkpoint's cached ONNX export without importing torch or the
models (docs/design.md, "ONNX inference without torch"). `siamtool.models.checkpoint` re-exports these
names, where the rest of the code has always imported them from.
"""

from __future__ import annotations

import re
from pathlib import Path

from siamtool.errors import SiamtoolError

STEP_PATTERN = re.compile(r"^step-(\d+)\.pt$")
"""File names of the step checkpoints a training run keeps in its checkpoints/ folder."""


def checkpoint_path(path: str | Path) -> Path:
    """The file a checkpoint argument means: the file itself, or for a run folder its best model, else its
    newest step checkpoint (also for a checkpoints/ folder). Every reader (load, export cache) uses this."""
    path = Path(path)
    if path.is_dir():
        best = path / "best.pt"
        found = best if best.is_file() else latest_checkpoint(path / "checkpoints") or latest_checkpoint(path)
        if found is None:
            raise SiamtoolError(f"{path}: no checkpoint in this folder (expected best.pt or checkpoints/step-*.pt)")
        return found
    return path


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the step checkpoints in a folder, oldest first."""
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in d.iterdir() if (m := STEP_PATTERN.match(p.name))]
    return sorted(out)


def latest_checkpoint(ckpt_dir: str | Path) -> Path | None:
    found = list_checkpoints(ckpt_dir)
    return found[-1][1] if found else None

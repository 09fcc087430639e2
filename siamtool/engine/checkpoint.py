"""Checkpoints as training writes them: trainable weights + the resolved config (+ training state),
written atomically, one per step in a run's checkpoints/ folder, the oldest pruned.

Reading them (finding, verifying, rebuilding the model) is `siamtool.models.checkpoint`, which every
inference path uses without importing the training package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from siamtool import __version__
from siamtool.config import Config
from siamtool.fileio import atomic_path
from siamtool.models.checkpoint import FORMAT, FORMAT_VERSION, list_checkpoints
from siamtool.models.siamese import feature_fingerprint


def save_checkpoint(path: str | Path, model, cfg: Config, **state: Any) -> Path:
    """Write model.trainable_state_dict(), the config and any extra `state` (optimizer, step...) atomically."""
    path = Path(path)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "siamtool_version": __version__,
        "backbone": cfg.model.backbone,
        "backbone_fingerprint": feature_fingerprint(model),
        "config": cfg.to_dict(),
        "model": model.trainable_state_dict(),
        **state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def step_checkpoint_path(ckpt_dir: str | Path, step: int) -> Path:
    return Path(ckpt_dir) / f"step-{step:08d}.pt"


def prune_checkpoints(ckpt_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints."""
    found = list_checkpoints(ckpt_dir)
    for _, p in found[: max(0, len(found) - keep_last)]:
        p.unlink(missing_ok=True)

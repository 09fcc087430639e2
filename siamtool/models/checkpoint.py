"""Checkpoint files as the models read them: find, verify and load one, and rebuild its tracker.

Every inference path (tracking backends, the ONNX exporter and its cache, evaluation) loads models
through here; the training package (`siamtool.engine.checkpoint`) writes checkpoints and prunes them.
A checkpoint never contains the frozen backbone: it records the backbone's *name* (and a checksum of
its weights) and `load_model` rebuilds it from the registry, so a ViT-S tracker checkpoint is a few MB.
Files are loaded with ``weights_only=True``: a checkpoint is data, never code.
"""

from __future__ import annotations

import copy
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from siamtool.checkpoint_files import STEP_PATTERN, checkpoint_path, latest_checkpoint, list_checkpoints
from siamtool.config import Config, config_from_dict, parse_override
from siamtool.errors import SiamtoolError

if TYPE_CHECKING:
    import torch
# torch and the model are imported where used. The path helpers live in `siamtool.checkpoint_files` (the
# torch-free ONNX load path needs them) and are re-exported here:
__all__ = ["FORMAT", "FORMAT_VERSION", "STEP_PATTERN", "checkpoint_config", "checkpoint_path", "latest_checkpoint",
           "list_checkpoints", "load_checkpoint", "load_model"]

FORMAT = "siamtool-checkpoint"
FORMAT_VERSION = 1


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint; one-line SiamtoolError for a missing, corrupt or foreign file."""
    path = checkpoint_path(path)
    if not path.is_file():
        raise SiamtoolError(f"{path}: checkpoint not found")
    _check_archive(path)
    import torch

    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated zip, pickle of foreign classes, not a torch file...
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise SiamtoolError(f"{path}: not a readable siamtool checkpoint ({type(e).__name__}: {first})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise SiamtoolError(f"{path}: not a siamtool checkpoint (written by something else); pass a file from "
                            f"a `siamtool train` run folder, e.g. runs/NAME/best.pt")
    if ckpt.get("format_version", 0) > FORMAT_VERSION:
        raise SiamtoolError(f"{path}: checkpoint format {ckpt['format_version']} is newer than this siamtool "
                            f"({FORMAT_VERSION}); upgrade siamtool")
    _check_finite(path, ckpt.get("model"))
    return ckpt


def _check_archive(path: Path) -> None:
    """Refuse a file that is not a torch zip archive, or whose bytes do not match their CRC-32.

    torch.load does not verify the CRCs its own writer stores, so flipped bytes inside a tensor load
    silently as wrong (often NaN) weights; zipfile checks every member (about 1 GB/s, a few ms for a
    tracker checkpoint) and names the damaged one.
    """
    if not zipfile.is_zipfile(path):
        raise SiamtoolError(f"{path}: not a readable siamtool checkpoint (not a PyTorch zip archive, or cut "
                            "short); pass a .pt written by `siamtool train`, e.g. runs/NAME/best.pt")
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
        bad = bad.split("/", 1)[-1] if bad else None  # the archive folder is a temp name; data/N is the tensor
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        bad = f"archive structure ({e})"
    if bad is not None:
        raise SiamtoolError(f"{path}: checkpoint is corrupt (checksum mismatch in {bad}); copy it again or use "
                            "another one, e.g. an earlier runs/NAME/checkpoints/step-*.pt")


def _check_finite(path: Path, state: Any) -> None:
    """Refuse weights holding NaN or inf (a diverged run saved them): every result would be garbage."""
    if not isinstance(state, dict):
        return
    import torch

    for name, tensor in state.items():
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise SiamtoolError(f"{path}: weight {name!r} holds NaN or inf values (training diverged or the file "
                                "is damaged); use another checkpoint, e.g. an earlier runs/NAME/checkpoints/step-*.pt")


def checkpoint_config(ckpt: dict[str, Any], overrides: list[str] | tuple[str, ...] = (), source: str = "checkpoint"
                      ) -> Config:
    """The checkpoint's config with `overrides` ("model.weights=/local/dir") applied on top."""
    data = copy.deepcopy(ckpt["config"])
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        node[keys[-1]] = value
    return config_from_dict(data, source=source)


def load_model(path: str | Path, device: str | torch.device = "cpu", overrides: list[str] | tuple[str, ...] = ()):
    """Rebuild the tracker of a checkpoint: (SiamTracker in eval mode on `device`, its Config).

    The backbone is built from its registry name (pretrained weights loaded as the config says);
    `overrides` can point it elsewhere on this machine, e.g. ``["model.weights=/models/dinov3-vits16",
    "model.local_files_only=true"]``.
    """
    from siamtool.models.siamese import build_model, feature_fingerprint

    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, overrides, source=f"{path} (config)")
    model = build_model(cfg)
    model.load_trainable_state_dict(ckpt["model"], source=str(path))
    expected = ckpt.get("backbone_fingerprint")
    if expected is not None:
        got = feature_fingerprint(model)
        if abs(got - expected) > 1e-6 * max(1.0, abs(expected)):
            warnings.warn(f"{path}: the backbone weights differ from the ones it was trained with "
                          f"({cfg.model.backbone}: checksum {got:.6g} vs {expected:.6g}); results may be off",
                          stacklevel=2)
    return model.to(device).eval(), cfg

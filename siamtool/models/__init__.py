"""Models: the backbone registry, the Siamese cross-attention tracker and the shared output decoder.

The names below are imported on first use (PEP 562), not with the package: `models.checkpoint.checkpoint_path`
is on the ONNX load path of `siamtool.load_tracker`, which must not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Backbone": "backbones", "BackboneSpec": "backbones", "build_backbone": "backbones", "get_spec": "backbones",
            "list_backbones": "backbones", "decode": "decode", "SiamTracker": "siamese", "build_model": "siamese"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"siamtool.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'siamtool.models' has no attribute {name!r}")

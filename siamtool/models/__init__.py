"""Models: the backbone registry, the Siamese cross-attention tracker and the shared output decoder."""

from siamtool.models.backbones import Backbone, BackboneSpec, build_backbone, get_spec, list_backbones
from siamtool.models.decode import decode
from siamtool.models.siamese import SiamTracker, build_model

__all__ = ["Backbone", "BackboneSpec", "SiamTracker", "build_backbone", "build_model", "decode", "get_spec",
           "list_backbones"]

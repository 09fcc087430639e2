"""siamtool: Siamese single-object tracking, from LaSOT shards to ONNX."""

__version__ = "0.1.0"

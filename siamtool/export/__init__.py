"""ONNX export (`onnx.py`: two checked graphs with metadata) and the per-checkpoint export cache that
makes onnxruntime the default CPU runtime (`cache.py`). The runtime side is `siamtool.tracking.onnx_backend`."""

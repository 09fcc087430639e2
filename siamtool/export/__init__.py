"""ONNX export (`onnx.py`: two graphs with metadata, checked against PyTorch before they are kept).

The file format both sides agree on is `siamtool.onnx_format`; the runtimes that read it and the
per-checkpoint export cache that makes onnxruntime the default CPU runtime live in `siamtool.tracking`
(`onnx_backend`, `opencv_backend`, `cache`)."""

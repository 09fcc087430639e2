"""The OpenCV DNN backend: the Tracker's `Backend` protocol over the two graphs of `siamtool export`,
run by `cv2.dnn` instead of onnxruntime.

Why a second ONNX runtime: OpenCV is what C++ trackers already link (NanoTrack and VitTrack ship as
OpenCV DNN models), so a graph that runs here runs in any OpenCV program without Python or onnxruntime
(docs/runtimes.md shows the calls). This backend is that program's twin in Python: the same export
folder, the same metadata checks (`siamtool.onnx_format.export_spec`, shared with `OnnxBackend`), the
same crop geometry handed to the Tracker, and outputs within float32 rounding of onnxruntime's (tested).

OpenCV's importer takes the graphs of the convolutional backbones (ResNet, MobileNetV3,
EfficientNet-Lite0, ConvNeXt). OpenCV 5.0 refuses the DINOv3 ViT graphs (an `If` node in the RoPE
embeddings): such a folder is refused with one line that says to use onnxruntime.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from siamtool.config import Config
from siamtool.device import thread_budget
from siamtool.errors import SiamtoolError
from siamtool.images import quiet_opencv
from siamtool.onnx_format import SEARCH_OUTPUTS, crop_to_input, export_spec


def _load(file: Path) -> Any:
    """`cv2.dnn.readNetFromONNX`, with OpenCV's multi-line error reduced to the line naming the node."""
    try:
        with quiet_opencv():
            return cv2.dnn.readNetFromONNX(str(file))
    except cv2.error as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        reason = next((ln.lstrip("> ") for ln in lines if ln.startswith(">")), lines[0] if lines else "cv2.error")
        reason = reason.split(": OpenCV(")[0]  # "Node [If@ai.onnx]:(onnx_node!/...) parse error"
        raise SiamtoolError(f"{file}: OpenCV {cv2.__version__} DNN cannot load it ({reason[:160]}); track with "
                            "onnxruntime instead (--set track.backend=onnx)") from None


def _owned(a: np.ndarray) -> np.ndarray:
    """An output that no later forward() can overwrite (the Tracker keeps search features across frames)."""
    return a if a.flags.owndata else a.copy()


class OpenCVBackend:
    """`template.onnx` + `search.onnx` from one export folder, in OpenCV's DNN module on the CPU, batch 1.

    `threads`: OpenCV's thread count, which is process-wide (`cv2.setNumThreads`: it also sets the
    threads of the Tracker's own crops); None leaves it as it is.
    """

    returns_features = True

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        spec = export_spec(path)  # metadata first: a foreign folder is refused before OpenCV parses it
        self.path = spec.path
        if threads:
            cv2.setNumThreads(int(threads))
        self._template = _load(spec.template_path)
        self._search = _load(spec.search_path)
        self._outputs = list(SEARCH_OUTPUTS)
        self.metadata = spec.metadata
        self.cfg: Config = spec.cfg
        self.template_size, self.search_size, self.stride = spec.template_size, spec.search_size, spec.stride
        self.precision = spec.precision
        self.export_id = spec.export_id

    @property
    def data(self):
        """The crop geometry (`DataConfig`) the graphs expect; the Tracker must crop with it."""
        return self.cfg.data

    @classmethod
    def from_dir(cls, path: str | Path, device: Any = None,
                 threads: int | None = None) -> tuple[OpenCVBackend, Config]:
        """The backend and the config stored in the export (what `load_backend` needs).

        `threads` defaults to torch's thread count, the CPU budget callers set (as for `OnnxBackend`).
        OpenCV's DNN runs on the CPU here whatever `device` says (the pip wheels have no CUDA backend).
        """
        if device is not None and str(device).startswith("cuda"):
            warnings.warn("track.backend=opencv runs the graphs on the CPU (OpenCV's pip wheels have no CUDA "
                          "DNN backend); use track.backend=onnx or torch for the GPU", stacklevel=2)
        if threads is None:
            threads = thread_budget()
        backend = cls(path, threads)
        return backend, backend.cfg

    def template(self, crop_rgb: np.ndarray) -> np.ndarray:
        self._template.setInput(crop_to_input(crop_rgb, self.template_size, "template"), "template")
        return _owned(self._template.forward("template_features"))

    def search(self, crop_rgb: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._search.setInput(crop_to_input(crop_rgb, self.search_size, "search"), "search")
        self._search.setInput(np.ascontiguousarray(features, dtype=np.float32), "template_features")
        score, boxes, search_features = (_owned(a) for a in self._search.forward(self._outputs))
        return score[0], boxes[0], search_features[0]

    def __repr__(self) -> str:
        return (f"OpenCVBackend({str(self.path)!r}, {self.precision}, backbone={self.cfg.model.backbone}, "
                f"opencv={cv2.__version__})")

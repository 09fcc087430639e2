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

On OpenCV 4.x (Debian 12's python3-opencv is 4.6) the backend runs the export's `opencv4/` copy of the
graphs (`siamtool.export.opencv4`), the pair the reference C++ tracker runs: the main graphs do not parse
there. With Debian's python3-opencv both load the same libopencv_dnn, which is how tests/cpp compares
the C++ tracker with this one on one runtime.
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
from siamtool.onnx_format import OPENCV4_DIR, SEARCH_OUTPUTS, crop_to_input, export_spec

OPENCV4 = int(cv2.__version__.split(".")[0]) < 5
"""This OpenCV's importer needs the `opencv4/` graphs (batch 1, folded; boxes and score channel-first)."""


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
        template, search = spec.template_path, spec.search_path
        if OPENCV4:
            template, search = (spec.path / OPENCV4_DIR / p.name for p in (template, search))
            if not (template.is_file() and search.is_file()):
                raise SiamtoolError(f"{spec.path / OPENCV4_DIR}: missing; OpenCV {cv2.__version__} reads only "
                                    "the OpenCV 4 copy of the graphs, which `siamtool export` writes (the "
                                    "tracking cache's exports have none): export the checkpoint with "
                                    "`siamtool export --out DIR`, or install opencv-python>=5")
        self._template = _load(template)
        self._search = _load(search)
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
        features = np.ascontiguousarray(features, dtype=np.float32)
        # OpenCV 4's Python binding reads a 3-D array as a 2-D image of channels (here 1 x 64 with 128):
        # a trailing axis of 1 keeps it an N-d blob, and the graph's MatMuls flatten from axis 2 anyway.
        self._search.setInput(features[..., None] if OPENCV4 and features.ndim == 3 else features,
                              "template_features")
        score, boxes, search_features = (_owned(a) for a in self._search.forward(self._outputs))
        if OPENCV4:  # (1,1,H,W) and (1,4,H,W) there
            return score[0, 0], np.ascontiguousarray(boxes[0].transpose(1, 2, 0)), search_features[0]
        return score[0], boxes[0], search_features[0]

    def __repr__(self) -> str:
        return (f"OpenCVBackend({str(self.path)!r}, {self.precision}, backbone={self.cfg.model.backbone}, "
                f"opencv={cv2.__version__})")

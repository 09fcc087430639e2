"""The onnxruntime backend: the Tracker's `Backend` protocol over the two graphs of `siamtool export`.

Everything it needs comes from the graphs' metadata (see `siamtool.onnx_format.METADATA_KEYS`): the crop
geometry the model was trained with (`cfg.data`) is handed to the Tracker so it cuts the same crops,
and the search graph already ends with the shared decoder, so this backend converts crops to tensors
and nothing else. Graphs from two different exports, or of another export format version, are refused
with one line before anything is tracked.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np

from siamtool.config import Config
from siamtool.device import thread_budget
from siamtool.errors import SiamtoolError
from siamtool.onnx_format import crop_to_input, export_graph_files, export_spec, onnx_session

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def _ort():
    try:
        import onnxruntime
    except ImportError:
        raise SiamtoolError("the ONNX backend needs onnxruntime: pip install onnxruntime "
                            "(or onnxruntime-gpu)") from None
    return onnxruntime


def default_providers(device: Any = None) -> list[str]:
    """CUDA then CPU when onnxruntime has CUDA and `device` is not CPU; otherwise CPU only."""
    available = _ort().get_available_providers()
    wants_cpu = device is not None and str(device).startswith("cpu")
    if not wants_cpu and CUDA in available:
        return [CUDA, CPU]
    if device is not None and str(device).startswith("cuda") and CUDA not in available:
        warnings.warn("onnxruntime has no CUDA provider here (install onnxruntime-gpu); running the ONNX "
                      "graphs on the CPU", stacklevel=2)
    return [CPU]


class OnnxBackend:
    """`template.onnx` + `search.onnx` from one export folder, in onnxruntime, batch 1.

    `providers`: onnxruntime execution providers (default: CUDA when present, then CPU); `threads`:
    intra-op threads (default: onnxruntime's, one per physical core); `spin`: how its threads wait
    (`onnx_format.SPIN_MODES`).
    """

    returns_features = True

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 spin: str = "off") -> None:
        self.path = Path(path)
        files = export_graph_files(self.path)
        self.providers_requested = list(providers) if providers else default_providers()
        sessions = []
        for file in files:
            try:
                sessions.append(onnx_session(file, self.providers_requested, threads, spin))
            except SiamtoolError:
                raise
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for bad files
                first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                raise SiamtoolError(f"{file}: onnxruntime cannot load it ({first})") from None
        self._template, self._search = sessions
        spec = export_spec(self.path, self._template.get_modelmeta().custom_metadata_map,
                           self._search.get_modelmeta().custom_metadata_map)
        self.metadata = spec.metadata
        self.cfg: Config = spec.cfg
        self.template_size, self.search_size, self.stride = spec.template_size, spec.search_size, spec.stride
        self.precision = spec.precision
        self.export_id = spec.export_id
        self.providers: list[str] = list(self._search.get_providers())

    @property
    def data(self):
        """The crop geometry (`DataConfig`) the graphs expect; the Tracker must crop with it."""
        return self.cfg.data

    @classmethod
    def from_dir(cls, path: str | Path, device: Any = None, threads: int | None = None) -> tuple[OnnxBackend, Config]:
        """The backend and the config stored in the export (what `load_backend` needs).

        `threads` defaults to `device.thread_budget()`, torch's thread count: callers (eval workers,
        benchmarks) set their CPU budget with `torch.set_num_threads`, and onnxruntime should keep to it.
        """
        if threads is None:
            threads = thread_budget()
        backend = cls(path, default_providers(device), threads)
        return backend, backend.cfg

    def template(self, crop_rgb: np.ndarray) -> np.ndarray:
        (feat,) = self._template.run(None, {"template": crop_to_input(crop_rgb, self.template_size, "template")})
        return feat

    def search(self, crop_rgb: np.ndarray, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        score, boxes, search_features = self._search.run(
            None, {"search": crop_to_input(crop_rgb, self.search_size, "search"), "template_features": features})
        return score[0], boxes[0], search_features[0]

    def __repr__(self) -> str:
        return (f"OnnxBackend({str(self.path)!r}, {self.precision}, backbone={self.cfg.model.backbone}, "
                f"providers={self.providers})")

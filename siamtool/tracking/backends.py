"""Runtimes behind the Tracker: anything that turns crops into decoded heatmaps and boxes.

The Tracker owns everything that is not the network (crops, penalties, box smoothing, loss handling), so
PyTorch, onnxruntime or a test double produce identical tracking as long as they honour this protocol:

* `template(crop_rgb)` takes the template crop (H x W x 3 RGB 0..255, float32 from the Tracker; uint8 accepted) and returns opaque features that
  the Tracker caches for the whole sequence;
* `search(crop_rgb, features)` takes the search crop and returns ``(score, boxes)`` or
  ``(score, boxes, search_features)``: score (H, W) float32 in [0, 1] and boxes (H, W, 4) float32
  cx, cy, w, h in search-crop pixels, already decoded by `siamtool.models.decode.decode` (the one
  decoder shared with validation and export); search_features (C, H, W) float32 are the frozen
  backbone's features of the crop, which the Tracker's online target model learns on. A backend
  returns them when its class says ``returns_features = True``; otherwise the Tracker runs with the
  offline heads only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from siamtool.config import Config, config_from_dict, explicit_keys
from siamtool.errors import SiamtoolError
from siamtool.images import opencv_untested
from siamtool.reporting import SILENT, Reporter
from siamtool.tracking.cache import cached_onnx_backend, use_onnx
from siamtool.tracking.onnx_backend import OnnxBackend
from siamtool.tracking.opencv_backend import OpenCVBackend
from siamtool.weights import is_default

if TYPE_CHECKING:
    import torch
# torch is imported by `TorchBackend` and `crop_to_tensor` when used: loading an ONNX export on CPU
# (`load_backend` through the export cache) must not pay for it (`benchmarks/load_time.py`).


@runtime_checkable
class Backend(Protocol):
    """What the Tracker needs from a runtime (see the module docstring for shapes and units)."""

    def template(self, crop_rgb: np.ndarray) -> Any: ...

    def search(self, crop_rgb: np.ndarray, features: Any) -> tuple[np.ndarray, ...]: ...


def crop_to_tensor(crop_rgb: np.ndarray, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """H x W x 3 RGB 0..255 (uint8 or float32) -> (1, 3, H, W) float 0..255.

    The model normalises internally (docs/contracts.md).
    """
    import torch

    t = torch.from_numpy(np.ascontiguousarray(crop_rgb)).to(device=device, non_blocking=True)
    return t.permute(2, 0, 1).unsqueeze(0).to(dtype)


class TorchBackend:
    """A `SiamTracker` in eval mode, batch 1, under `torch.inference_mode`.

    `half=True` runs fp16 on CUDA (about 2x faster on tensor-core GPUs); on CPU fp16 is slower than
    fp32 and partly unsupported, so it is ignored there (`self.half` says what is in effect).
    """

    returns_features = True

    def __init__(self, model: torch.nn.Module, device: torch.device | str = "cpu", half: bool = False) -> None:
        import torch

        from siamtool.models.decode import decode

        self._torch = torch
        self._decode = decode
        self.device = torch.device(device)
        self.half = bool(half) and self.device.type == "cuda"
        self.dtype = torch.float16 if self.half else torch.float32
        self.model = model.to(self.device).eval()
        if self.half:
            self.model.half()
        self.stride = int(model.stride)
        self.search_size = int(model.search_size)
        self.cfg: Config | None = None
        """The checkpoint's config when built by `from_checkpoint` (what `Tracker(backend)` tracks with)."""

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: torch.device | str = "cpu",
                        half: bool = False) -> tuple[TorchBackend, Config]:
        """Load a checkpoint written by `siamtool train`; returns the backend and the training config."""
        from siamtool.models.checkpoint import load_model

        model, cfg = load_model(path, device)
        backend = cls(model, device, half)
        backend.cfg = cfg  # the checkpoint's settings, for Tracker(backend) without a config
        return backend, cfg

    def template(self, crop_rgb: np.ndarray) -> torch.Tensor:
        with self._torch.inference_mode():
            return self.model.template(crop_to_tensor(crop_rgb, self.device, self.dtype))

    def search(self, crop_rgb: np.ndarray, features: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with self._torch.inference_mode():
            heat, box_raw, feat = self.model.search_with_features(crop_to_tensor(crop_rgb, self.device, self.dtype),
                                                                  features)
            score, boxes = self._decode(heat.float(), box_raw.float(), self.stride, self.search_size)
            return (score[0].cpu().numpy().astype(np.float32, copy=False),
                    boxes[0].cpu().numpy().astype(np.float32, copy=False),
                    feat[0].float().cpu().numpy())


def merge_tracking_config(trained: Config, user: Config) -> Config:
    """The config a tracker runs with: crop geometry and model from training, tracking knobs from the
    checkpoint unless the user set them.

    `data` and `model` must be the ones the checkpoint was trained with (a different context or crop
    size is the classic silent train/test mismatch), so they are taken from the checkpoint. `track` is
    the checkpoint's own (the settings chosen for that model on its validation sequences, MODEL_CARD.md),
    with each `track.*` key the user gave in --config/--set on top (`config.explicit_keys`); `eval` and
    `export` come from the user.
    """
    merged = config_from_dict(trained.to_dict(), "checkpoint")
    for key in explicit_keys(user):
        section, _, name = key.partition(".")
        if section == "track" and name:
            setattr(merged.track, name, getattr(user.track, name))
    merged.eval = user.eval
    merged.export = user.export
    return merged


DEFAULT_TRACKER_NAME = "siamtool-default"
"""Results-folder name of the tracker shipped in the package."""


def require_tracker(checkpoint: Path | None, onnx: Path | None) -> None:
    """Commands call this before slow work so a missing --checkpoint fails at once."""
    if checkpoint is None and onnx is None:
        raise SiamtoolError("no tracker given: pass --checkpoint CKPT (a .pt written by `siamtool train`) "
                            "or --onnx DIR (a folder written by `siamtool export`)")
    if checkpoint is not None and onnx is not None:
        raise SiamtoolError("pass either --checkpoint or --onnx, not both")


def tracker_name(checkpoint: Path | None, onnx: Path | None) -> str:
    """A short name for results folders: `<run folder>-<checkpoint stem>`, or the export folder's name.

    The shipped tracker is `siamtool-default` (its file path would give `weights-lite0_default`).
    """
    if is_default(checkpoint):
        return DEFAULT_TRACKER_NAME
    if checkpoint is not None:
        p = Path(checkpoint).resolve()
        return p.name if p.is_dir() else f"{p.parent.name}-{p.stem}"
    return Path(onnx).resolve().name  # type: ignore[arg-type]


def resolved_runtime(checkpoint: Path | None, onnx: Path | None, backend: str, device_type: str) -> str:
    """The runtime `load_backend` runs for `track.backend` = `backend` on `device_type`: "torch",
    "onnxruntime" or "opencv" (never "auto").

    Results depend on the runtime (scores differ by ~1e-5, and free-running tracks can part on a near
    tie), and `auto` means onnxruntime on CPU but PyTorch on CUDA, so eval writes this name, not the
    setting, into its fingerprint: a run resumed on another device cannot mix runtimes unnoticed. (One
    case it cannot foresee: a cached export that fails its check falls back to PyTorch, with a warning.)
    """
    if checkpoint is None and onnx is not None:
        return "opencv" if backend == "opencv" else "onnxruntime"
    if use_onnx(backend, device_type):
        return "opencv" if backend == "opencv" else "onnxruntime"
    return "torch"


def load_backend(checkpoint: Path | None, onnx: Path | None, device: torch.device | str,
                 user_cfg: Config, reporter: Reporter = SILENT) -> tuple[Backend, Config, str]:
    """Open the tracker a command was given: returns (backend, merged config, `tracker_name`).

    A checkpoint may be a file or a run folder (`models.checkpoint.checkpoint_path` picks the file).
    `user_cfg.track.backend` picks its runtime: by default onnxruntime on CPU, through an export cached
    per checkpoint (`siamtool.tracking.cache`, which reports a first export through `reporter`), PyTorch
    on CUDA; `opencv` runs the export (cached, or the --onnx folder) in OpenCV's DNN module. `device` may
    be a string ("cpu", `device.device_name`): the ONNX paths then never import torch.
    """
    runtime = user_cfg.track.backend
    device_type = getattr(device, "type", str(device).split(":")[0])

    require_tracker(checkpoint, onnx)
    untested = opencv_untested()  # every runtime: the Tracker's crops are OpenCV's too
    if untested:
        reporter.warning(untested)
    if checkpoint is not None:
        checkpoint = Path(checkpoint)
        if not checkpoint.exists():
            raise SiamtoolError(f"--checkpoint {checkpoint}: file not found")
        cached = (cached_onnx_backend(checkpoint, device, reporter, runtime) if use_onnx(runtime, device_type)
                  else None)
        if cached is not None:
            backend, trained = cached, cached.cfg
        else:
            backend, trained = TorchBackend.from_checkpoint(checkpoint, device, half=user_cfg.track.half)
        return backend, merge_tracking_config(trained, user_cfg), tracker_name(checkpoint, None)
    onnx = Path(onnx)  # type: ignore[arg-type]
    if not onnx.is_dir():
        raise SiamtoolError(f"--onnx {onnx}: folder not found (expected the output folder of `siamtool export`)")
    backend, trained = (OpenCVBackend if runtime == "opencv" else OnnxBackend).from_dir(onnx, device)
    return backend, merge_tracking_config(trained, user_cfg), tracker_name(None, onnx)

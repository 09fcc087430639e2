"""The Python API: `load_tracker`, a tracker in one call with the OpenCV tracker contract.

A script should not need to know about backends, configs and devices to track a video: OpenCV's
trackers take one import and three calls (`create`, `init(frame, box)`, `ok, box = update(frame)`), and
the community's toolkits (got10k, VOT) wrap exactly that contract. `load_tracker` opens a tracker the way
`siamtool track` does (same `load_backend`, same merged settings, so the same boxes) and returns a
`SiamTracker` that speaks that contract next to the rich `initialize`/`track` of `siamtool.tracking.Tracker`.

What the wrapper adds is the conversion a script would otherwise get wrong silently: images may be BGR
arrays (OpenCV's order, the default), RGB arrays (`color="rgb"`), grayscale arrays or PIL images (always
RGB, whatever `color` says), and every bad input (a box, an image of the wrong type, a device, an override
key) is one `SiamtoolError` line naming the value. `import siamtool` stays cheap: the package's
`load_tracker` imports this module (and torch) only when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from siamtool.config import Config, config_with
from siamtool.device import device_name
from siamtool.errors import SiamtoolError
from siamtool.onnx_format import TEMPLATE_FILE
from siamtool.reporting import Reporter, WarningsReporter
from siamtool.tracking.backends import load_backend
from siamtool.tracking.cache import BACKENDS
from siamtool.tracking.tracker import Tracker, TrackResult
from siamtool.weights import default_checkpoint

COLORS = ("bgr", "rgb")
"""Channel orders a 3- or 4-channel array may come in (`load_tracker(color=...)`)."""


def _pil_to_bgr(image: Any) -> np.ndarray:
    """A PIL image (RGB by definition) as a BGR or grayscale uint8 array."""
    if image.mode in ("1", "L", "I", "I;16", "F"):
        return np.asarray(image.convert("L"))
    return cv2.cvtColor(np.asarray(image.convert("RGB")), cv2.COLOR_RGB2BGR)


def to_bgr(image: Any, color: str = "bgr") -> np.ndarray:
    """The uint8 BGR (or H x W grayscale) array the Tracker takes, from an array in `color` order or a PIL
    image; one-line `SiamtoolError` for anything else (the Tracker itself would fail deep inside OpenCV)."""
    if type(image).__module__.startswith("PIL.") and hasattr(image, "convert"):
        return _pil_to_bgr(image)
    want = f"a uint8 numpy array (H x W x 3 {color.upper()}, H x W x 4, H x W grayscale) or a PIL image"
    if not isinstance(image, np.ndarray):
        raise SiamtoolError(f"image: expected {want}, got {type(image).__name__}")
    channels = image.shape[2] if image.ndim == 3 else 1
    if image.ndim not in (2, 3) or channels not in (1, 3, 4) or image.size == 0:
        raise SiamtoolError(f"image: expected {want}, got an array of shape {image.shape}")
    if image.dtype != np.uint8:
        raise SiamtoolError(f"image: expected {want}, got dtype {image.dtype} (scale to 0..255 and "
                            "convert with .astype(np.uint8))")
    if color == "rgb" and channels in (3, 4):
        return cv2.cvtColor(image, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGR)
    return image


class SiamTracker:
    """A loaded tracker with the OpenCV contract (`init`, `update`) and siamtool's own (`initialize`, `track`).

    `init`/`update` mirror ``cv2.Tracker``: boxes are 0-based ``(x, y, w, h)`` pixels and `update`'s ``ok``
    is False while the target is reported lost (the box is then the last confident one). `initialize`/`track`
    return `siamtool.tracking.TrackResult` with the score, the search window and the heatmap.
    """

    def __init__(self, tracker: Tracker, name: str, color: str = "bgr") -> None:
        self.tracker = tracker
        self.name = name
        self.color = color

    @property
    def cfg(self) -> Config:
        """The settings it tracks with: the model's own, with the overrides given to `load_tracker`."""
        return self.tracker.cfg

    @property
    def backend(self) -> Any:
        return self.tracker.backend

    def initialize(self, image: Any, box: Any) -> None:
        """Start tracking the object in `box` (x, y, w, h) of `image`."""
        self.tracker.initialize(to_bgr(image, self.color), box)

    def track(self, image: Any) -> TrackResult:
        """Track one image; the full result (box, score, lost, timing, debug views)."""
        return self.tracker.track(to_bgr(image, self.color))

    def init(self, image: Any, box: Any) -> bool:
        """OpenCV's ``tracker.init(frame, box)``; True once the template is taken (bad input raises)."""
        self.initialize(image, box)
        return True

    def update(self, image: Any) -> tuple[bool, tuple[float, float, float, float]]:
        """OpenCV's ``ok, box = tracker.update(frame)``: ok is False while the target is lost."""
        result = self.track(image)
        x, y, w, h = (float(v) for v in result.box)
        return not result.lost, (x, y, w, h)

    def __repr__(self) -> str:
        return f"SiamTracker({self.name!r}, {self.backend!r}, color={self.color!r})"


def _tracker_source(checkpoint: str | Path | None) -> tuple[Path | None, Path | None]:
    """(checkpoint, onnx folder) for `load_backend`: the shipped tracker, a checkpoint file or run folder,
    or a folder written by `siamtool export`."""
    if checkpoint is None:
        return default_checkpoint(), None
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise SiamtoolError(f"checkpoint={str(checkpoint)!r}: not found (give a .pt written by `siamtool train`, "
                            "its run folder, a folder written by `siamtool export`, or None for the shipped tracker)")
    if path.is_dir() and (path / TEMPLATE_FILE).is_file():
        return None, path
    return path, None


def _user_config(runtime: str, overrides: dict[str, Any]) -> Config:
    """The settings the caller chose: `runtime` and the `track.*` overrides, checked like `--set` is."""
    if runtime not in BACKENDS:
        raise SiamtoolError(f"runtime={runtime!r}: expected one of {', '.join(BACKENDS)}")
    if "backend" in overrides:
        raise SiamtoolError("load_tracker(backend=...): pass runtime= instead")
    return config_with({"track": {**overrides, "backend": runtime}}, "load_tracker()")


def load_tracker(checkpoint: str | Path | None = None, *, device: Any = "auto", runtime: str = "auto",
                 color: str = "bgr", reporter: Reporter | None = None, **track_overrides: Any) -> SiamTracker:
    """Open a tracker: the shipped one by default, else a checkpoint file, a run folder or an export folder.

    It tracks with the model's own settings (those stored in the checkpoint or the export's export.json),
    with `track_overrides` (any `track:` config key, e.g. ``window_influence=0.2``) on top. `device`: auto,
    cpu, cuda, cuda:N or a torch.device. `runtime`: auto (onnxruntime on CPU through an ONNX export cached
    per checkpoint, PyTorch on CUDA), torch, onnx or opencv. A first CPU run exports the checkpoint once
    (seconds to minutes): that is announced through `reporter` (default: a Python `UserWarning`);
    ``runtime="torch"``, or an export folder from `siamtool export`, avoids it. `color`: the channel order
    of array images (PIL images are RGB).
    """
    color = str(color).lower()
    if color not in COLORS:
        raise SiamtoolError(f"color={color!r}: expected one of {', '.join(COLORS)}")
    user = _user_config(runtime, track_overrides)
    dev = device_name(device, what="device=")
    source, onnx = _tracker_source(checkpoint)
    if onnx is not None and runtime == "torch":
        raise SiamtoolError(f"{onnx}: an export folder runs with runtime='onnx' or 'opencv', not 'torch'")
    backend, cfg, name = load_backend(source, onnx, dev, user, reporter or WarningsReporter())
    return SiamTracker(Tracker(backend, cfg), name, color)

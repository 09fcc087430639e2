"""Tracking: one `Tracker` over interchangeable runtimes (`TorchBackend`, the ONNX backend, test doubles)."""

from siamtool.tracking.backends import Backend, TorchBackend, load_backend
from siamtool.tracking.tracker import Tracker, TrackResult

__all__ = ["Backend", "TorchBackend", "Tracker", "TrackResult", "load_backend"]

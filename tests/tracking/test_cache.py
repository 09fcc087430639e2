"""`--checkpoint` on CPU runs through onnxruntime by default: one checked export per checkpoint, cached."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from siamtool.errors import SiamtoolError
from siamtool.export import onnx as export_onnx
from siamtool.onnx_format import OPENCV4_DIR, REPORT_FILE, TRACKER_KEY
from siamtool.provenance import file_digest
from siamtool.tracking.backends import TorchBackend, load_backend
from siamtool.tracking.cache import cache_root, cached_onnx_backend, use_onnx
from siamtool.tracking.onnx_backend import OnnxBackend
from tests.conftest import Recorder, tiny_config
from tests.onnx_fixtures import save_tiny_checkpoint


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIAMTOOL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_backend_choice():
    assert use_onnx("auto", "cpu") and not use_onnx("auto", "cuda")
    assert use_onnx("onnx", "cuda") and not use_onnx("torch", "cpu")
    with pytest.raises(SiamtoolError, match="track.backend must be one of auto, torch, onnx"):
        use_onnx("tensorrt", "cpu")


def test_checkpoint_on_cpu_uses_a_cached_export(stable_checkpoint, cache):
    recorder = Recorder()
    backend, cfg, name = load_backend(stable_checkpoint, None, torch.device("cpu"), tiny_config("track.size_lr=0.3"),
                                      recorder)
    assert isinstance(backend, OnnxBackend)
    assert cache_root() == cache and backend.path.parent == cache / "onnx"
    assert backend.metadata["checkpoint_sha256"] == file_digest(stable_checkpoint)
    assert name == "stable-run-tiny" and cfg.track.size_lr == 0.3 and cfg.data.search_size == 80
    assert "exporting it to ONNX" in recorder.text
    # Only what Python tracks with: no online graphs or OpenCV 4 copy (`siamtool export` writes those).
    report = json.loads((backend.path / REPORT_FILE).read_text())
    assert not list(backend.path.glob("online_*.onnx")) and not (backend.path / OPENCV4_DIR).exists()
    assert "online_graphs" not in report[TRACKER_KEY] and "opencv4_graphs" not in report[TRACKER_KEY]
    stamp = (backend.path / "search.onnx").stat().st_mtime_ns
    recorder = Recorder()
    again, _, _ = load_backend(stable_checkpoint, None, torch.device("cpu"), tiny_config(), recorder)
    assert again.path == backend.path and (backend.path / "search.onnx").stat().st_mtime_ns == stamp
    assert "exporting" not in recorder.text  # exported once


def test_torch_backend_on_request(stable_checkpoint, cache):
    backend, _, _ = load_backend(stable_checkpoint, None, torch.device("cpu"), tiny_config("track.backend=torch"))
    assert isinstance(backend, TorchBackend)
    assert not cache.exists()


def test_a_retrained_checkpoint_gets_its_own_export(tmp_path, cache):
    a = save_tiny_checkpoint(tmp_path / "a.pt", seed=0)
    b = save_tiny_checkpoint(tmp_path / "b.pt", seed=1)
    ba, bb = cached_onnx_backend(a), cached_onnx_backend(b)
    assert ba.path != bb.path
    crop = np.random.default_rng(0).integers(0, 255, (80, 80, 3), dtype=np.uint8)
    feats = ba.template(crop[:32, :32])
    assert not np.allclose(ba.search(crop, feats)[0], bb.search(crop, feats)[0])


def test_a_broken_cache_is_exported_again(stable_checkpoint, cache):
    first = cached_onnx_backend(stable_checkpoint)
    search = first.path / "search.onnx"
    search.write_bytes(search.read_bytes()[: os.path.getsize(search) // 2])  # e.g. a disk-full write
    again = cached_onnx_backend(stable_checkpoint)
    assert isinstance(again, OnnxBackend) and again.path == first.path


def test_an_export_that_fails_its_check_falls_back_to_pytorch(stable_checkpoint, cache, monkeypatch):
    monkeypatch.setattr(export_onnx, "compare_with_torch", lambda *a, **k: {"score": 1.0, "boxes": 1.0})
    recorder = Recorder()
    backend, _, _ = load_backend(stable_checkpoint, None, torch.device("cpu"), tiny_config(), recorder)
    assert isinstance(backend, TorchBackend)
    assert "tracking with PyTorch instead" in recorder.text

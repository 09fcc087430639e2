"""TorchBackend with a tiny random model: the protocol's shapes, inference mode, caching, config merge."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from siamtool.data.synthetic import render_sequence
from siamtool.errors import SiamtoolError
from siamtool.models import build_model
from siamtool.models.decode import decode
from siamtool.tracking.backends import Backend, TorchBackend, load_backend, merge_tracking_config
from siamtool.tracking.tracker import Tracker
from tests.conftest import tiny_config
from tests.tracking.fakes import OracleBackend


@pytest.fixture(scope="module")
def tiny_model():
    return build_model(tiny_config())


def test_torch_backend_follows_the_protocol_and_uses_the_shared_decoder(tiny_model):
    backend = TorchBackend(tiny_model, "cpu")
    assert isinstance(backend, Backend) and isinstance(OracleBackend(), Backend)
    rng = np.random.default_rng(0)
    z = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    score, boxes, feats = backend.search(x, backend.template(z))
    assert score.shape == (4, 4) and boxes.shape == (4, 4, 4)
    assert feats.shape == (tiny_model.backbone.out_channels, 4, 4) and feats.dtype == np.float32
    assert score.dtype == np.float32 and boxes.dtype == np.float32
    assert np.all((score >= 0) & (score <= 1))
    with torch.no_grad():
        zt = torch.from_numpy(z).permute(2, 0, 1)[None].float()
        xt = torch.from_numpy(x).permute(2, 0, 1)[None].float()
        ref_score, ref_boxes = decode(*tiny_model(zt, xt), tiny_model.stride, tiny_model.search_size)
        np.testing.assert_allclose(feats, tiny_model.backbone(xt)[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(score, ref_score[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(boxes, ref_boxes[0].numpy(), atol=1e-3)


def test_tracker_with_a_tiny_model_runs_in_inference_mode_and_caches_the_template(tiny_model, monkeypatch):
    calls = {"template": 0, "search": 0, "inference_mode": []}
    model = tiny_model
    real_template, real_search = model.template, model.search_with_features

    def template(z):
        calls["template"] += 1
        return real_template(z)

    def search(x, zf):
        calls["search"] += 1
        calls["inference_mode"].append(torch.is_inference_mode_enabled() and not model.training)
        return real_search(x, zf)

    monkeypatch.setattr(model, "template", template)
    monkeypatch.setattr(model, "search_with_features", search)
    cfg = tiny_config("track.lost_threshold=0.0")
    frames, gt, _, _ = render_sequence(np.random.default_rng(1), 12, (192, 144))
    tracker = Tracker(TorchBackend(model, "cpu"), cfg)
    tracker.initialize(frames[0], gt[0])
    # initialize fits the online model on the first search crop and its 3 augmented copies
    assert calls["template"] == 1 and calls["search"] == 4
    results = [tracker.track(f) for f in frames[1:]]
    assert calls["template"] == 1 and calls["search"] == 15
    assert all(calls["inference_mode"])
    assert not np.array_equal(results[0].box, np.asarray(gt[0], float))  # the first found frame moved the box
    # The threshold is read: at 1.0 with no ratio (no score reaches it) the same frames are all lost.
    strict = Tracker(TorchBackend(model, "cpu"), tiny_config("track.lost_threshold=1.0", "track.lost_ratio=0"))
    strict.initialize(frames[0], gt[0])
    assert all(strict.track(f).lost for f in frames[1:4])
    for r in results:
        assert np.all(np.isfinite(r.box)) and 0 <= r.score <= 1 and not r.lost
        cx, cy = r.box[:2] + r.box[2:] / 2
        assert 0 <= cx <= 192 and 0 <= cy <= 144 and min(r.box[2:]) >= cfg.track.min_size
        assert r.heatmap.shape == (4, 4) and r.search_crop.shape == (64, 64, 3)
    assert tracker.template_crop.shape == (32, 32, 3)


def test_half_precision_is_ignored_on_cpu(tiny_model):
    backend = TorchBackend(tiny_model, "cpu", half=True)
    assert backend.half is False
    assert next(tiny_model.parameters()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_precision_on_cuda_matches_fp32():
    model = build_model(tiny_config())
    rng = np.random.default_rng(0)
    z = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    full = TorchBackend(model, "cuda")
    s32, b32, _ = full.search(x, full.template(z))
    half = TorchBackend(build_model(tiny_config()), "cuda", half=True)
    s16, b16, _ = half.search(x, half.template(z))
    assert half.half and s16.dtype == np.float32
    np.testing.assert_allclose(s16, s32, atol=2e-2)
    np.testing.assert_allclose(b16, b32, atol=1.0)


def test_checkpoint_fixes_geometry_and_the_user_fixes_tracking():
    trained = tiny_config("data.context=0.6")
    user = tiny_config("data.context=0.4", "track.window_influence=0.1", "eval.plots=false")
    merged = merge_tracking_config(trained, user)
    assert merged.data.context == 0.6 and merged.data.search_size == 64
    assert merged.track.window_influence == 0.1 and merged.eval.plots is False
    assert trained.track.window_influence != 0.1  # the inputs are not modified


def test_checkpoint_tracking_settings_are_used_unless_the_user_sets_them(tmp_path):
    from siamtool.engine.checkpoint import save_checkpoint
    from siamtool.models import build_model

    trained = tiny_config("track.online_weight=0.8", "track.scale=head", "track.window_influence=0.45")
    path = save_checkpoint(tmp_path / "run" / "tuned.pt", build_model(trained), trained)
    # The user sets one key, and another to the default value: that one still counts as theirs.
    user = tiny_config("track.scale=dsst", "track.backend=torch", "track.window_influence=0.3")
    _, cfg, _ = load_backend(path, None, torch.device("cpu"), user)
    assert cfg.track.online_weight == 0.8  # the checkpoint's own
    assert cfg.track.scale == "dsst" and cfg.track.window_influence == 0.3  # the user's
    _, cfg, _ = load_backend(path, None, torch.device("cpu"), tiny_config("track.backend=torch"))
    assert (cfg.track.online_weight, cfg.track.scale, cfg.track.window_influence) == (0.8, "head", 0.45)


@pytest.mark.parametrize(("ckpt", "onnx", "message"), [
    (None, None, "pass --checkpoint"),
    ("a.pt", "dir", "not both"),
    ("missing.pt", None, "not found"),
    (None, "missing_dir", "folder not found"),
])
def test_load_backend_errors(tmp_path, ckpt, onnx, message):
    ckpt = tmp_path / ckpt if ckpt else None
    onnx = tmp_path / onnx if onnx else None
    with pytest.raises(SiamtoolError, match=message):
        load_backend(ckpt, onnx, torch.device("cpu"), tiny_config())


def test_load_backend_from_a_checkpoint(tiny_checkpoint):
    user = tiny_config("track.size_lr=0.3", "track.backend=torch", "data.context=0.9")
    backend, cfg, name = load_backend(tiny_checkpoint, None, torch.device("cpu"), user)
    assert isinstance(backend, TorchBackend)
    assert name == "tiny-run-tiny" and cfg.track.size_lr == 0.3
    assert cfg.data.search_size == 64 and cfg.data.context == 0.5  # geometry from the checkpoint

"""Checkpoints: trainable weights only, atomic, clear errors, and a model that loads in a fresh process."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from siamtool.engine.checkpoint import prune_checkpoints, save_checkpoint, step_checkpoint_path
from siamtool.errors import SiamtoolError
from siamtool.models import build_model
from siamtool.models.checkpoint import latest_checkpoint, load_checkpoint, load_model
from tests.conftest import REPO, tiny_config


def _trained_like(cfg):
    model = build_model(cfg)
    torch.manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith("backbone."):
                p.add_(torch.randn_like(p) * 0.05)
    return model


def test_checkpoint_holds_no_frozen_backbone_and_roundtrips(tmp_path):
    cfg = tiny_config()
    model = _trained_like(cfg)
    path = save_checkpoint(tmp_path / "a.pt", model, cfg, step=7)
    assert not list(tmp_path.glob(".*tmp"))  # written via a temp file + rename
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 7 and ckpt["backbone"] == "dinov3_vits16"
    assert not any(k.startswith("backbone.") for k in ckpt["model"])
    loaded, cfg2 = load_model(path)
    assert cfg2 == cfg and not loaded.training
    z, x = torch.rand(1, 3, 32, 32) * 255, torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.equal(loaded(z, x)[1], model.eval()(z, x)[1])


def test_checkpoint_loads_in_a_fresh_process(tmp_path):
    cfg = tiny_config(backbone="efficientnet_lite0")
    model = _trained_like(cfg).eval()
    torch.manual_seed(0)
    z, x = torch.rand(1, 3, 32, 32) * 255, torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        heat, box = model(z, x)
    save_checkpoint(tmp_path / "m.pt", model, cfg)
    torch.save({"z": z, "x": x}, tmp_path / "inputs.pt")
    code = (
        "import torch, sys\n"
        "from siamtool.models.checkpoint import load_model\n"
        "m, cfg = load_model(sys.argv[1])\n"
        "d = torch.load(sys.argv[2])\n"
        "with torch.no_grad(): h, b = m(d['z'], d['x'])\n"
        "torch.save({'h': h, 'b': b}, sys.argv[3])\n"
    )
    subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code, str(tmp_path / "m.pt"),
                    str(tmp_path / "inputs.pt"), str(tmp_path / "out.pt")], check=True, cwd=REPO)
    out = torch.load(tmp_path / "out.pt")
    assert torch.allclose(out["h"], heat, atol=1e-6) and torch.allclose(out["b"], box, atol=1e-6)


def test_bad_checkpoints_give_one_line_errors(tmp_path):
    with pytest.raises(SiamtoolError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"\x00garbage")
    with pytest.raises(SiamtoolError, match="not a readable siamtool checkpoint") as e:
        load_checkpoint(tmp_path / "junk.pt")
    assert "\n" not in str(e.value)
    torch.save({"state_dict": {}}, tmp_path / "foreign.pt")
    with pytest.raises(SiamtoolError, match="not a siamtool checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    cfg = tiny_config()
    good = save_checkpoint(tmp_path / "good.pt", build_model(cfg), cfg)
    data = good.read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(SiamtoolError, match="trunc.pt"):
        load_checkpoint(tmp_path / "trunc.pt")


def test_changed_backbone_weights_warn(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg)
    path = save_checkpoint(tmp_path / "a.pt", model, cfg)
    ckpt = torch.load(path, weights_only=True)
    ckpt["backbone_fingerprint"] += 1.0
    torch.save(ckpt, path)
    with pytest.warns(UserWarning, match="backbone weights differ"):
        load_model(path)


def test_rotation_keeps_the_newest(tmp_path):
    cfg = tiny_config()
    model = build_model(cfg)
    for step in (5, 10, 15, 20):
        save_checkpoint(step_checkpoint_path(tmp_path, step), model, cfg, step=step)
    prune_checkpoints(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.glob("step-*.pt")) == ["step-00000015.pt", "step-00000020.pt"]
    assert latest_checkpoint(tmp_path).name == "step-00000020.pt"
    # A folder works as a checkpoint path too: a run's best.pt, else its newest step checkpoint.
    assert load_checkpoint(tmp_path)["step"] == 20
    run = tmp_path / "run"
    save_checkpoint(step_checkpoint_path(run / "checkpoints", 3), model, cfg, step=3)
    assert load_checkpoint(run)["step"] == 3
    save_checkpoint(run / "best.pt", model, cfg, step=2)
    assert load_checkpoint(run)["step"] == 2

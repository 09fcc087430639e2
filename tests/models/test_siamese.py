"""SiamTracker: the contract other engineers code against, the decoder, and the absence of a centre bias."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from siamtool.errors import ConfigError, SiamtoolError
from siamtool.models import build_model, decode, list_backbones
from siamtool.models.backbones import Backbone, BackboneSpec, FeatureBody
from siamtool.models.decode import best_boxes
from siamtool.models.siamese import SiamTracker
from tests.conftest import tiny_config


@pytest.mark.parametrize("name", list_backbones())
def test_contract_shapes_with_every_tiny_backbone(name):
    cfg = tiny_config(backbone=name)
    model = build_model(cfg)
    assert (model.stride, model.template_size, model.search_size, model.feat_size) == (16, 32, 64, 4)
    z = torch.rand(2, 3, 32, 32) * 255
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        zf = model.template(z)
        heat, box = model.search(x, zf)
        heat2, box2 = model(z, x)
    assert zf.shape[0] == 2
    assert heat.shape == (2, 1, 4, 4) and box.shape == (2, 4, 4, 4)
    assert torch.equal(heat, heat2) and torch.equal(box, box2)
    assert not any(k.startswith("backbone.") for k in model.trainable_state_dict())


def test_train_mode_keeps_backbone_in_eval_and_frozen():
    model = build_model(tiny_config()).train()
    assert model.training and model.cls_head.training
    assert not model.backbone.training
    assert all(not m.training for m in model.backbone.modules())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and not any(n.startswith("backbone.") for n in trainable)


def test_unfrozen_blocks_are_saved_and_get_a_lower_lr():
    cfg = tiny_config("model.unfreeze_last=1", "train.backbone_lr_mult=0.1")
    model = build_model(cfg)
    keys = model.trainable_state_dict()
    assert any(k.startswith("backbone.body.model.model.layer.1.") for k in keys)
    assert not any(k.startswith("backbone.body.model.model.layer.0.") for k in keys)
    groups = model.param_groups(1e-3, 1e-4, 0.1)
    lrs = {gr["name"]: gr["lr"] for gr in groups}
    assert lrs["backbone"] == pytest.approx(1e-4) and lrs["heads"] == pytest.approx(1e-3)
    assert {gr["name"]: gr["weight_decay"] for gr in groups}["heads_no_decay"] == 0.0


def test_load_trainable_state_dict_roundtrip_and_mismatch():
    a = build_model(tiny_config())
    torch.manual_seed(1)
    b = build_model(tiny_config())
    b.load_trainable_state_dict(a.trainable_state_dict())
    z, x = torch.rand(1, 3, 32, 32) * 255, torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        assert torch.equal(a(z, x)[0], b(z, x)[0])
    other = build_model(tiny_config("model.dim=16"))
    with pytest.raises(SiamtoolError, match="do not match"):
        other.load_trainable_state_dict(a.trainable_state_dict())


def test_sizes_must_be_multiples_of_the_stride():
    with pytest.raises(ConfigError, match="multiple of the backbone stride"):
        build_model(tiny_config("data.search_size=72"))


def test_decode_conventions():
    heat = torch.zeros(1, 1, 2, 3)
    heat[0, 0, 1, 2] = 5.0
    raw = torch.zeros(1, 4, 2, 3)
    raw[0, 0, 1, 2] = 0.25  # dx in cells
    raw[0, 1, 1, 2] = -0.5
    score, boxes = decode(heat, raw, stride=16, search_size=64)
    assert score.shape == (1, 2, 3) and boxes.shape == (1, 2, 3, 4)
    # Cell (row 1, col 2) centre is (2.5*16, 1.5*16); a zero size logit is half the crop.
    assert boxes[0, 1, 2].tolist() == pytest.approx([(2.5 + 0.25) * 16, (1.5 - 0.5) * 16, 32, 32])
    assert boxes[0, 0, 0, :2].tolist() == pytest.approx([8, 8])
    s, b = best_boxes(score, boxes)
    assert s.item() == pytest.approx(torch.sigmoid(torch.tensor(5.0)).item())
    assert b[0].tolist() == boxes[0, 1, 2].tolist()


class _PoolBody(FeatureBody):
    """A backbone that is exactly equivariant to 16-px shifts: 16x16 average pooling."""

    out_channels = 3

    def blocks(self) -> list[nn.Module]:
        return [nn.Identity()]

    def forward(self, x):
        return nn.functional.avg_pool2d(x, 16)


def test_no_centre_bias_heatmap_moves_with_the_target():
    """Move the target by whole cells over a plain background: heatmap and boxes move with it, exactly.

    A positional embedding or any position-dependent layer in the neck/heads would break this (the
    plain background makes the border cells alike in both maps, so even GroupNorm statistics agree).
    """
    cfg = tiny_config("data.search_size=160", "model.dropout=0.1")
    spec = BackboneSpec(name="pool", build=lambda c: _PoolBody(), build_tiny=lambda c: _PoolBody(), out_channels=3)
    torch.manual_seed(0)
    model = SiamTracker(cfg, backbone=Backbone(spec, _PoolBody())).eval()
    for p in model.parameters():  # make the random heads sensitive to their input
        if p.ndim > 1:
            nn.init.normal_(p, std=0.3)
    target = torch.rand(1, 3, 64, 64) * 255
    z = target[:, :, 16:48, 16:48]
    x0 = torch.full((1, 3, 160, 160), 100.0)
    x0[:, :, 32:96, 32:96] = target
    x1 = torch.roll(x0, shifts=(32, 16), dims=(2, 3))  # 2 cells down, 1 right; wraps only background
    with torch.no_grad():
        h0, b0 = model(z, x0)
        h1, b1 = model(z, x1)
    # Compare cells that are off the zero-padded border in both maps (roll wraps border cells inside).
    inner = (slice(None), slice(None), slice(3, 9), slice(2, 9))
    assert h0.std() > 1e-2
    assert torch.allclose(h1[inner], torch.roll(h0, shifts=(2, 1), dims=(2, 3))[inner], atol=1e-5)
    assert torch.allclose(b1[inner], torch.roll(b0, shifts=(2, 1), dims=(2, 3))[inner], atol=1e-5)

"""Backbone registry: every entry builds a tiny variant with the right stride, freezing and determinism."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from siamtool import geometry as g
from siamtool.config import ModelConfig
from siamtool.errors import ConfigError, SiamtoolError
from siamtool.models.backbones import (
    REGISTRY,
    build_backbone,
    get_spec,
    list_backbones,
    lite0_to_timm,
    lite0_weights_file,
    load_lite0_classifier,
)
from siamtool.models.fuse import fold_frozen_batchnorm
from tests.conftest import shared

ALL = list_backbones()


def test_registry_holds_the_documented_backbones():
    for name in ["dinov3_vits16", "dinov3_vits16plus", "dinov3_vitb16", "dinov3_convnext_tiny", "resnet18",
                 "mobilenet_v3_large", "efficientnet_lite0"]:
        assert name in REGISTRY
    assert ModelConfig().backbone == "dinov3_vits16"


@pytest.mark.parametrize("name", ALL)
def test_tiny_backbone_stride16_map_frozen_eval_deterministic(name):
    cfg = ModelConfig(backbone=name, tiny=True, pretrained=False)
    bb = build_backbone(cfg)
    x = torch.rand(2, 3, 64, 96) * 255  # non-square: rows and columns must not be swapped
    with torch.no_grad():
        y = bb(x)
    assert y.shape == (2, bb.out_channels, 4, 6)
    assert torch.isfinite(y).all() and y.std() > 0
    assert not bb.training
    assert not any(p.requires_grad for p in bb.parameters())
    # A random tiny backbone is seeded: another build (another process) gives the same weights.
    with torch.no_grad():
        assert torch.equal(build_backbone(cfg)(x), y)
    assert get_spec(name).stride == bb.stride == 16


@pytest.mark.parametrize("name", ALL)
def test_unfreeze_last_block_only(name):
    bb = build_backbone(ModelConfig(backbone=name, tiny=True, pretrained=False, unfreeze_last=1))
    blocks = bb.blocks()
    last = {id(p) for p in blocks[-1].parameters()}
    assert last
    for p in bb.parameters():
        assert p.requires_grad == (id(p) in last)
    with pytest.raises(ConfigError, match="unfreeze_last"):
        build_backbone(ModelConfig(backbone=name, tiny=True, pretrained=False, unfreeze_last=len(blocks) + 1))


def test_unknown_backbone_suggests_the_closest_name():
    with pytest.raises(ConfigError, match="did you mean 'dinov3_vits16'"):
        get_spec("dinov3_vit16")


def test_vit_drops_class_and_register_tokens_and_keeps_row_major_order():
    bb = build_backbone(ModelConfig(backbone="dinov3_vits16", tiny=True, pretrained=False))
    model = bb.body.model
    assert model.config.num_register_tokens == 4
    x = torch.rand(1, 3, 48, 80) * 255
    with torch.no_grad():
        fmap = bb(x)
        tokens = model(pixel_values=(x - bb.mean) / bb.std).last_hidden_state
    assert tokens.shape[1] == 1 + 4 + 3 * 5
    # Patch (row 2, col 3) is token 5 + 2*5 + 3.
    assert torch.allclose(fmap[0, :, 2, 3], tokens[0, 5 + 13])


def test_the_tracker_keeps_a_dinov3_backbone_in_eval_mode_while_training():
    """siamtool's guard (`SiamTracker.train`): training the neck and heads must not put the backbone in train
    mode, where transformers' DINOv3 jitters its RoPE (a different output on every call) and BatchNorm
    backbones would update their frozen statistics. Both precondition and guard are checked: the bare
    backbone in train mode is stochastic, and inside a tracker in train mode it gives its eval output."""
    from siamtool.models import build_model
    from tests.conftest import tiny_config

    torch.manual_seed(0)
    model = build_model(tiny_config())  # tiny dinov3_vits16
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        expected = model.backbone(x)
        model.backbone.train()  # the bare backbone, as a plain nn.Module.train() would leave it
        assert not torch.allclose(model.backbone(x), model.backbone(x)), "precondition: RoPE jitter in train mode"
        model.train()
        assert model.training and not any(m.training for m in model.backbone.modules())
        torch.testing.assert_close(model.backbone(x), expected, rtol=0, atol=0)
        torch.testing.assert_close(model.backbone(x), expected, rtol=0, atol=0)


def test_gated_dinov3_without_weights_says_how_to_log_in(tmp_path):
    cfg = ModelConfig(backbone="dinov3_vits16", pretrained=True, local_files_only=True,
                      weights=str(tmp_path / "no-such-model"))
    with pytest.raises(SiamtoolError, match="huggingface-cli login"):
        build_backbone(cfg)


def test_torchvision_weights_from_a_file(tmp_path):
    import torchvision

    torch.manual_seed(3)
    full = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(full.state_dict(), path)
    bb = build_backbone(ModelConfig(backbone="resnet18", pretrained=True, weights=str(path)))
    assert bb.out_channels == 256
    x = torch.rand(1, 3, 64, 64) * 255
    full.eval()
    with torch.no_grad():
        h = full.maxpool(full.relu(full.bn1(full.conv1((x - bb.mean) / bb.std))))
        ref = full.layer3(full.layer2(full.layer1(h)))
        assert torch.allclose(bb(x), ref, atol=1e-4)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a state dict")
    with pytest.raises(SiamtoolError, match="bad.pth"):
        build_backbone(ModelConfig(backbone="resnet18", pretrained=True, weights=str(bad)))


# ----------------------------------------------------------------------------- EfficientNet-Lite0


def test_lite0_weights_load_strictly_by_pure_rename():
    state = torch.load(lite0_weights_file(), map_location="cpu", weights_only=True)
    renamed = lite0_to_timm(state)
    assert len(renamed) == len(state) == 296
    # A rename only: every tensor is the same object under a new name.
    assert {id(v) for v in renamed.values()} == {id(v) for v in state.values()}
    model = load_lite0_classifier()  # strict=True inside
    assert torch.equal(model.conv_stem.weight, state["_conv_stem.weight"])
    bb = build_backbone(ModelConfig(backbone="efficientnet_lite0"))
    assert bb.out_channels == 112
    with torch.no_grad():
        assert bb(torch.rand(1, 3, 128, 128) * 255).shape == (1, 112, 8, 8)


def _bag_crops(n: int = 10) -> torch.Tensor:
    from siamtool.data.lasot import index_lasot

    root = shared("real_lasot")
    seq = next(s for s in index_lasot(root, "all", True, False).sequences if s.name == "bag-1")
    crops = []
    for i in np.linspace(0, len(seq.gt) - 1, n).astype(int):
        frame = cv2.imread(str(seq.frame_path(int(i))), cv2.IMREAD_COLOR)[:, :, ::-1]
        window = g.template_window(g.from_lasot(seq.gt[i]), 0.5, 224)
        crops.append(torch.from_numpy(g.crop(np.ascontiguousarray(frame), window).copy()).permute(2, 0, 1))
    return torch.stack(crops).float()


def test_lite0_weights_are_real_imagenet_weights():
    """A real photo classifies correctly: VOT's `bag` sequence is an ImageNet 'plastic bag' (class 728).

    Random weights would hit a given class 1 time in 1000; the real ones name it on most frames.
    """
    crops = _bag_crops()
    x = (crops / 255 - 0.5) / 0.5  # the backbone's registered normalisation
    with torch.no_grad():
        real = load_lite0_classifier()(x).argmax(1)
        rand = load_lite0_classifier(pretrained=False)(x).argmax(1)
    assert (real == 728).sum() >= 6, real.tolist()
    assert (rand == 728).sum() <= 1


# ------------------------------------------------------------------------------- BatchNorm folding


@pytest.mark.parametrize("name", [n for n in ALL if "torchvision" in get_spec(n).tags or "timm" in get_spec(n).tags])
def test_frozen_batchnorm_folds_exactly_into_the_convs(name):
    from torch import nn

    from siamtool.models.backbones import Backbone

    cfg = ModelConfig(backbone=name, tiny=True, pretrained=False)
    spec = get_spec(name)
    bb = Backbone(spec, spec.build_tiny(cfg)).eval()
    for p in bb.parameters():
        p.requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    bns = [m for m in bb.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:  # non-trivial statistics, or folding would be checked against an identity
        m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
        m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
        m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.2)
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        before = bb(x)
        assert fold_frozen_batchnorm(bb) == len(bns)
        after = bb(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in bb.modules())
    assert torch.allclose(before, after, rtol=1e-4, atol=1e-4 * before.abs().max().item())
    # build_backbone folds what is frozen and leaves an unfrozen block's BatchNorm trainable.
    partly = build_backbone(ModelConfig(backbone=name, tiny=True, pretrained=False, unfreeze_last=1))
    last_bns = [m for m in partly.blocks()[-1].modules() if isinstance(m, nn.BatchNorm2d)]
    assert last_bns and all(m.weight.requires_grad for m in last_bns)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in partly.modules()) == len(last_bns)


def test_same_padded_convs_export_as_one_conv_with_constant_pads_and_the_same_outputs(tmp_path):
    """timm's Conv2dSame exported as shape ops + Pad, which onnxruntime could not fuse: a third of the
    shipped tracker's search graph. The replacement pads like TensorFlow in eager mode (bit-identical,
    odd sizes too) and exports as a single Conv with asymmetric pads."""
    import onnx
    import onnxruntime as ort
    from timm.layers import Conv2dSame

    from siamtool.models.backbones import Backbone
    from siamtool.models.fuse import StaticSameConv2d, static_same_padding

    cfg = ModelConfig(backbone="efficientnet_lite0", tiny=True, pretrained=False)
    spec = get_spec("efficientnet_lite0")
    timm_bb = Backbone(spec, spec.build_tiny(cfg)).eval()
    ours = build_backbone(cfg)
    assert sum(isinstance(m, Conv2dSame) for m in timm_bb.modules()) == 4
    assert not any(isinstance(m, Conv2dSame) for m in ours.modules())
    assert sum(isinstance(m, StaticSameConv2d) for m in ours.modules()) == 4
    assert static_same_padding(ours) == 0  # nothing left to replace
    for p in timm_bb.parameters():
        p.requires_grad_(False)
    fold_frozen_batchnorm(timm_bb)  # as build_backbone does
    with torch.no_grad():
        for size in (64, 96, 71):  # even sizes (every crop) and an odd one (asymmetric pads differ)
            x = torch.rand(1, 3, size, size) * 255
            assert torch.equal(timm_bb(x), ours(x)), size

    path = tmp_path / "lite0.onnx"
    x = torch.rand(1, 3, 64, 64) * 255
    with torch.no_grad():
        torch.onnx.export(ours, (x,), str(path), input_names=["x"], opset_version=17, dynamo=False)
        ref = ours(x).numpy()
    graph = onnx.load(str(path)).graph
    assert not [n for n in graph.node if n.op_type == "Pad"]
    pads = [list(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads"]
    assert pads.count([0, 0, 1, 1]) == 3 and pads.count([1, 1, 2, 2]) == 1  # 3x3 and 5x5 stride 2
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


def test_dinov3_mask_token_stays_frozen_when_the_backbone_trains():
    """The mask token is unused outside masked pre-training: trainable, it stopped DDP at iteration 2."""
    bb = build_backbone(ModelConfig(backbone="dinov3_vits16", tiny=True, pretrained=False, freeze_backbone=False))
    trainable = {n for n, p in bb.named_parameters() if p.requires_grad}
    assert "body.model.embeddings.mask_token" not in trainable
    assert "body.model.embeddings.cls_token" in trainable and len(trainable) > 10


@pytest.mark.parametrize("name,cls", [("dinov3_vits16", "DINOv3ViTModel"),
                                      ("dinov3_convnext_tiny", "DINOv3ConvNextModel")])
def test_pretrained_dinov3_loads_in_float32_local_rank_zero_first(name, cls, monkeypatch):
    """transformers follows the hub config's dtype unless told otherwise; under torchrun local rank 0
    downloads while the other ranks wait at a barrier, then they load from the cache."""
    import torch.distributed as dist
    import transformers

    from siamtool.models import backbones

    events: list[str] = []
    real = getattr(transformers, cls)

    def fake_from_pretrained(weights, **kwargs):
        events.append(f"load dtype={kwargs.get('dtype')}")
        raise OSError("offline")  # a load that fails still passes the barrier, so no rank hangs

    monkeypatch.setattr(real, "from_pretrained", staticmethod(fake_from_pretrained))
    monkeypatch.setattr(backbones, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(dist, "barrier", lambda: events.append("barrier"))
    for local_rank in ("0", "1"):
        monkeypatch.setenv("LOCAL_RANK", local_rank)
        monkeypatch.setattr(dist, "get_rank", lambda r=int(local_rank): r)
        events.clear()
        with pytest.raises(SiamtoolError, match="cannot load"):
            backbones.build_backbone(ModelConfig(backbone=name))
        expected = ["load dtype=torch.float32", "barrier"] if local_rank == "0" else \
            ["barrier", "load dtype=torch.float32"]
        assert events == expected

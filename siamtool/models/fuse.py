"""Exact inference-speed rewrites of a frozen backbone: folded BatchNorm, static "same" padding.

A frozen CNN backbone runs in eval mode, where BatchNorm is a fixed per-channel affine map; folding it
into the preceding convolution's weights removes a full read/write pass over every feature map (about
a third of EfficientNet-Lite0's CPU time here) for training, tracking and export alike. Only pairs
whose parameters are all frozen are folded, so `unfreeze_last` blocks keep their BatchNorm.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _frozen(m: nn.Module) -> bool:
    return not any(p.requires_grad for p in m.parameters(recurse=False))


def _replacement(bn: nn.BatchNorm2d) -> nn.Module:
    # timm's BatchNormAct2d applies dropout and an activation after the affine map: keep those.
    extras = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
    return nn.Sequential(*extras) if extras else nn.Identity()


@torch.no_grad()
def fold_frozen_batchnorm(root: nn.Module) -> int:
    """Fold every frozen BatchNorm2d that directly follows a frozen Conv2d (module order); return the count.

    "Directly follows" is in registration order, which is the forward order in the torchvision and
    timm blocks registered here (tests/models check outputs before and after folding on every CNN).
    """
    modules = dict(root.named_modules())
    prev: tuple[str, nn.Conv2d] | None = None
    folds: list[tuple[str, nn.Conv2d, nn.BatchNorm2d]] = []
    for name, m in root.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            if (prev is not None and prev[1].out_channels == m.num_features and m.running_var is not None
                    and _frozen(prev[1]) and _frozen(m)):
                folds.append((name, prev[1], m))
            prev = None
        elif isinstance(m, nn.Conv2d):
            prev = (name, m)
        elif not any(True for _ in m.children()) and not isinstance(m, nn.Identity):
            prev = None  # any other leaf layer in between: not a conv -> bn pair
    for name, conv, bn in folds:
        scale = (bn.weight if bn.affine else torch.ones_like(bn.running_var)) / torch.sqrt(bn.running_var + bn.eps)
        shift = (bn.bias if bn.affine else torch.zeros_like(bn.running_mean)) - bn.running_mean * scale
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), requires_grad=False)
        conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)
        _replace(root, modules, name, _replacement(bn))
    return len(folds)


def _replace(root: nn.Module, modules: dict[str, nn.Module], name: str, new: nn.Module) -> None:
    """Put `new` where the submodule called `name` (as in `root.named_modules()`) sits."""
    parent_name, _, child = name.rpartition(".")
    setattr(modules[parent_name] if parent_name else root, child, new)


def _same_pad(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    total = max((-(-size // stride) - 1) * stride + (kernel - 1) * dilation + 1 - size, 0)
    return total // 2, total - total // 2


def _padded_conv(x, weight, bias, stride, pads, dilation, groups) -> torch.Tensor:
    top, left, bottom, right = pads
    return F.conv2d(F.pad(x, (left, right, top, bottom)), weight, bias, stride, 0, dilation, groups)


class _SameConvExport(torch.autograd.Function):
    """Export-only: a padded convolution written as ONE ONNX `Conv` with asymmetric `pads`."""

    @staticmethod
    def forward(ctx, x, weight, bias, stride, pads, dilation, groups):
        return _padded_conv(x, weight, bias, stride, pads, dilation, groups)

    @staticmethod
    def symbolic(g, x, weight, bias, stride, pads, dilation, groups):
        inputs = [x, weight] if bias is None else [x, weight, bias]
        return g.op("Conv", *inputs, kernel_shape_i=list(weight.type().sizes()[2:]), strides_i=list(stride),
                    pads_i=list(pads), dilations_i=list(dilation), group_i=groups)


class StaticSameConv2d(nn.Conv2d):
    """TensorFlow "SAME" convolution exported as a single ONNX `Conv` with constant asymmetric `pads`.

    timm's `Conv2dSame` (the stride-2 convolutions of the `tf_` EfficientNets) pads asymmetrically by an
    amount computed from the input's runtime shape: the exporter writes a chain of shape ops and a `Pad`,
    which onnxruntime neither fuses into the convolution nor runs in its blocked (NCHWc) layout, so each
    of them cost a pad plus two layout conversions, a third of EfficientNet-Lite0's search graph
    (docs/benchmarks.md). ONNX's `Conv` takes asymmetric `pads` itself; the crop sizes are fixed per
    graph, so the padding is a constant of the export. Eager PyTorch (training, the torch backend) pads
    and convolves as timm does: same zeros, same arithmetic, bit-identical outputs.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        top, bottom = _same_pad(int(x.shape[-2]), kh, sh, dh)
        left, right = _same_pad(int(x.shape[-1]), kw, sw, dw)
        conv = _SameConvExport.apply if torch.onnx.is_in_onnx_export() else _padded_conv
        return conv(x, self.weight, self.bias, self.stride, (top, left, bottom, right), self.dilation, self.groups)


@torch.no_grad()
def static_same_padding(root: nn.Module) -> int:
    """Replace every timm `Conv2dSame` under `root` by a `StaticSameConv2d` with the same parameters;
    return the count. Matched by class name so that backbones without timm need not import it."""
    swaps = [(name, m) for name, m in root.named_modules() if type(m).__name__ == "Conv2dSame"]
    modules = dict(root.named_modules())
    for name, conv in swaps:
        new = StaticSameConv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0,
                               conv.dilation, conv.groups, conv.bias is not None)
        new.weight = conv.weight
        new.bias = conv.bias
        _replace(root, modules, name, new)
    return len(swaps)

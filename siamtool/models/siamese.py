"""The Siamese cross-attention tracker: a shared backbone, a cross-attention neck and two heads.

Search tokens are the queries and template tokens the keys/values, so every search location asks
"which part of the template do I look like?" and gets an answer of the template's appearance. The neck
adds it back with a residual + 1x1 conv and fuses it with the search-template product (a correlation
cue the attention output alone lacks), then a heatmap head and a box head predict at stride 16.

No centre bias: nothing in the neck or heads knows where a search token is (no positional embedding on
search tokens, GroupNorm instead of anything position-dependent), so the net cannot learn "the target
is in the middle"; together with the shifted training crops, the peak has to come from appearance.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from siamtool.config import Config
from siamtool.errors import ConfigError, SiamtoolError
from siamtool.models.backbones import Backbone, build_backbone


def _groups(channels: int) -> int:
    for g in (32, 16, 8, 4, 2):
        if channels % g == 0 and channels // g >= 4:
            return g
    return 1


def _conv_block(cin: int, cout: int, k: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.GroupNorm(_groups(cout), cout),
                               nn.ReLU(inplace=True)]
    if dropout:
        layers.append(nn.Dropout2d(dropout))
    return nn.Sequential(*layers)


class CrossAttention(nn.Module):
    """Multi-head attention, search tokens (queries) over template tokens (keys/values).

    Written with plain matmuls (not `nn.MultiheadAttention`/SDPA) so it exports to any ONNX opset and
    runs the same on every runtime.
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ConfigError(f"model.dim ({dim}) must be divisible by model.heads ({heads})")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, query: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        b, nq, d = query.shape
        nk = memory.shape[1]
        hd = d // self.heads
        q = self.q(query).view(b, nq, self.heads, hd).transpose(1, 2)
        k = self.k(memory).view(b, nk, self.heads, hd).transpose(1, 2)
        v = self.v(memory).view(b, nk, self.heads, hd).transpose(1, 2)
        attn = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(hd)), dim=-1)
        out = (self.drop(attn) @ v).transpose(1, 2).reshape(b, nq, d)
        return self.out(out)


class SiamTracker(nn.Module):
    """Backbone + cross-attention neck + heads. Inputs are RGB float tensors in 0..255 (docs/contracts.md, "Model input").

    ``template(z) -> zf`` runs once per target; ``search(x, zf) -> (heat_logits (B,1,H,W), box_raw
    (B,4,H,W))`` runs per frame; decode the outputs with `siamtool.models.decode.decode`.
    """

    def __init__(self, cfg: Config, backbone: Backbone | None = None) -> None:
        super().__init__()
        m, d = cfg.model, cfg.data
        self.backbone = backbone if backbone is not None else build_backbone(m)
        self.stride = self.backbone.stride
        for key, size in (("template_size", d.template_size), ("search_size", d.search_size)):
            if size % self.stride:
                raise ConfigError(f"data.{key} ({size}) must be a multiple of the backbone stride ({self.stride})")
        self.template_size = d.template_size
        self.search_size = d.search_size
        self.feat_size = d.search_size // self.stride
        self.backbone_name = m.backbone
        dim = m.dim
        c = self.backbone.out_channels
        self.proj = nn.Sequential(nn.Conv2d(c, dim, 1), nn.GroupNorm(_groups(dim), dim))
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.attn = CrossAttention(dim, m.heads, m.dropout)
        self.attn_conv = nn.Conv2d(dim, dim, 1)  # the "residual + 1x1 conv" of the design
        self.fuse = _conv_block(2 * dim, dim, 1)
        self.cls_head = nn.Sequential(_conv_block(dim, dim, 3, m.dropout), nn.Conv2d(dim, 1, 1))
        self.box_head = nn.Sequential(_conv_block(dim, dim, 3, m.dropout), nn.Conv2d(dim, 4, 1))
        self._init_heads()

    def _init_heads(self) -> None:
        # Start with a low score everywhere (focal-loss prior, RetinaNet) and a typical box: centred on
        # its cell, a quarter of the crop wide, which is where a target sits at the template's scale.
        cls = self.cls_head[-1]
        nn.init.normal_(cls.weight, std=0.01)
        nn.init.constant_(cls.bias, -math.log((1 - 0.01) / 0.01))
        box = self.box_head[-1]
        nn.init.normal_(box.weight, std=0.001)
        with torch.no_grad():
            box.bias.copy_(torch.tensor([0.0, 0.0, math.log(0.25 / 0.75), math.log(0.25 / 0.75)]))

    # ------------------------------------------------------------------------------------- forward

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features of a crop (B,3,H,W) 0..255; a (B,C,h,w) map with C != 3 passes through.

        The pass-through is what lets training run on cached features of the frozen backbone
        (`siamtool.data.feature_cache`) with the very same neck and heads.
        """
        return x if x.shape[1] != 3 else self.backbone(x)

    def template(self, z: torch.Tensor) -> torch.Tensor:
        """Template crop (B,3,T,T) 0..255 -> template tokens (B, (T/16)^2, dim), normalised keys/values."""
        f = self.proj(self.features(z))
        return self.norm_kv(f.flatten(2).transpose(1, 2))

    def search(self, x: torch.Tensor, zf: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Search crop (B,3,S,S) 0..255 + template tokens -> (heat_logits (B,1,H,W), box_raw (B,4,H,W))."""
        heat, box, _ = self.search_with_features(x, zf)
        return heat, box

    def search_with_features(self, x: torch.Tensor, zf: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """`search` plus the search crop's backbone features (B,C,H,W), which the tracker's online target
        model (`siamtool.tracking.online`) learns on: one forward serves both."""
        feat = self.features(x)
        s = self.proj(feat)
        b, d, h, w = s.shape
        tokens = s.flatten(2).transpose(1, 2)
        a = self.attn(self.norm_q(tokens), zf).transpose(1, 2).reshape(b, d, h, w)
        x1 = s + self.attn_conv(a)
        f = self.fuse(torch.cat([x1, s * a], dim=1))
        return self.cls_head(f), self.box_head(f), feat

    def forward(self, z: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.search(x, self.template(z))

    # --------------------------------------------------------------------------- modes and weights

    def train(self, mode: bool = True) -> SiamTracker:
        """Train the neck and heads; the backbone stays in eval mode (RoPE jitter, frozen BN stats)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def trainable_names(self) -> set[str]:
        """State-dict keys a checkpoint must hold: everything outside the backbone + unfrozen backbone params."""
        names = {k for k in self.state_dict() if not k.startswith("backbone.")}
        names |= {f"backbone.{n}" for n, p in self.backbone.named_parameters() if p.requires_grad}
        return names

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a checkpoint stores: never the frozen backbone (it is rebuilt from its name)."""
        keep = self.trainable_names()
        return {k: v.detach().clone() for k, v in self.state_dict().items() if k in keep}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """Load `trainable_state_dict()` output; refuses missing or unexpected keys (a different config).

        `source` begins the refusal: the checkpoint's file, so the user knows which file is inconsistent."""
        expected = self.trainable_names()
        missing = sorted(expected - set(state))
        unexpected = sorted(set(state) - expected)
        if missing or unexpected:
            raise SiamtoolError(
                f"{source}: the weights do not match the model built from its config "
                f"(missing: {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected: {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
            )
        current = self.state_dict()
        wrong = [k for k in sorted(expected) if tuple(state[k].shape) != tuple(current[k].shape)]
        if wrong:
            raise SiamtoolError(
                f"{source}: the weights do not match the model built from its config ({wrong[0]}: "
                f"{tuple(state[wrong[0]].shape)} vs {tuple(current[wrong[0]].shape)})"
            )
        self.load_state_dict(state, strict=False)

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_mult: float) -> list[dict]:
        """AdamW groups: heads at `lr`, unfrozen backbone blocks at `lr * backbone_lr_mult`; no decay on
        norms and biases (decaying a GroupNorm gain only fights the normalisation)."""
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            key = (name.startswith("backbone."), p.ndim <= 1)
            groups.setdefault(key, []).append(p)
        out = []
        for (is_backbone, no_decay), params in sorted(groups.items()):
            out.append({"params": params, "lr": lr * (backbone_lr_mult if is_backbone else 1.0),
                        "weight_decay": 0.0 if no_decay else weight_decay,
                        "name": ("backbone" if is_backbone else "heads") + ("_no_decay" if no_decay else "")})
        return out


def build_model(cfg: Config) -> SiamTracker:
    """The tracker for `cfg` (backbone from the registry per `cfg.model`), in eval mode."""
    return SiamTracker(cfg).eval()


def feature_fingerprint(model: SiamTracker) -> float:
    """A cheap checksum of the frozen backbone weights, stored in checkpoints to catch a different backbone."""
    total = 0.0
    for _, p in sorted(model.backbone.named_parameters()):
        if not p.requires_grad:
            total += float(p.detach().double().abs().sum())
    return total


__all__ = ["SiamTracker", "build_model", "CrossAttention", "feature_fingerprint"]

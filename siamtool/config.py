"""One typed config tree: defaults here, a YAML file over them, `--set key=value` over that.

Unknown keys, wrong types and bad values are refused with one line that names the file, the key and,
for typos, the closest valid key (OSTrack's YAML-over-defaults, with the error messages it lacks).
The resolved config is saved next to every output so a result can always be traced to its settings.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import re
import types
import typing
from collections.abc import Hashable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from siamtool.errors import ConfigError
from siamtool.fileio import write_text_atomic


@dataclass
class SourceSpec:
    """One dataset `prepare` samples from: `--data KIND:ROOT[:SPLIT][@WEIGHT]`, or a `data.sources` entry
    (that string, or a mapping with these keys). See `parse_source` for how a spec string is cut."""

    kind: str = ""
    """Layout: lasot, stills (COCO-like JSON of still images), or a kind `siamtool.data.datasets` reads."""
    root: str = ""
    """The dataset's folder (for stills: the folder of annotations.json, or the JSON file itself)."""
    split: str | None = None
    """The dataset's split (train, val, test, all, a LaSOT file of names, ...); null = prepare's --split."""
    weight: float = 1.0
    """Share of the pairs: source i gets weight_i / sum(weights) of them (OSTrack's dataset ratios)."""

    def __str__(self) -> str:
        split = f":{self.split}" if self.split else ""
        return f"{self.kind}:{self.root}{split}" + (f"@{self.weight:g}" if self.weight != 1 else "")


_SPLIT_WORD = re.compile(r"^[A-Za-z0-9_,.-]+$")


def parse_source(text: str, where: str = "--data") -> SourceSpec:
    """`KIND:ROOT[:SPLIT][@WEIGHT]` -> SourceSpec, cut so that roots may hold ':' and '@'.

    * WEIGHT: the text after the last '@', when it is a number (else the '@' belongs to the root);
    * KIND: the text before the first ':';
    * SPLIT: the text after the last ':' of the rest, when it is a plain name (letters, digits, '_', '-',
      '.', ',': train, val, TRAIN_0,TRAIN_1) or an existing file; otherwise the whole rest is ROOT. So
      `lasot:C:\\data\\LaSOT` and `lasot:/mnt/a:b/LaSOT` are roots; a root that itself ends in `:name`
      needs its split written out: `lasot:/mnt/x:train:all`.
    """
    body, weight = text.strip(), 1.0
    if "@" in body:
        head, _, tail = body.rpartition("@")
        with contextlib.suppress(ValueError):
            weight = float(tail)
            body = head
    kind, colon, rest = body.partition(":")
    if not colon or not kind.strip() or not rest.strip():
        raise ConfigError(f"{where} {text!r}: expected KIND:ROOT[:SPLIT][@WEIGHT], e.g. got10k:/data/GOT-10k:train@2")
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", kind.strip().lower()):
        raise ConfigError(f"{where} {text!r}: {kind!r} is not a dataset kind (lasot, got10k, stills, ...)")
    root, split = rest, None
    left, sep, right = rest.rpartition(":")
    if sep and left and right and (_SPLIT_WORD.match(right) or Path(right).is_file()):
        root, split = left, right
    spec = SourceSpec(kind.strip().lower(), root, split, weight)
    _check_source(spec, where)
    return spec


def _check_source(spec: SourceSpec, where: str) -> None:
    if not spec.kind or not spec.root:
        raise ConfigError(f"{where}: a source needs a kind and a root, e.g. lasot:/data/LaSOT")
    if not math.isfinite(spec.weight) or spec.weight <= 0:
        raise ConfigError(f"{where} {spec}: the weight must be a number > 0, got {spec.weight:g}")


@dataclass
class DataConfig:
    """Pair sampling and crop geometry; prepare, train-time jitter, the tracker and export share it."""

    sources: list[SourceSpec] = field(default_factory=list)
    """Datasets `prepare` samples from (`--data` replaces this list; `--lasot DIR` means lasot:DIR)."""

    template_size: int = 128
    """Template crop side in pixels (a multiple of the backbone stride)."""
    search_size: int = 256
    """Search crop side in pixels; the search window has the template's scale (see geometry.py)."""
    context: float = 0.5
    """SiamFC context amount: window side = sqrt((w+p)(h+p)), p = context*(w+h)."""
    search_margin: float = 1.5
    """prepare stores the search crop this much larger than `search_size` (same scale), room for jitter."""
    pairs_per_sequence: int = 180
    """Pairs sampled per sequence (LaSOT train: 1120 sequences x 180 ~ 200k pairs)."""
    max_gap: int = 100
    """Largest frame distance between template and search frames of a positive pair."""
    neg_prob: float = 0.25
    """Probability that a pair is a negative (search crop without the template's target)."""
    neg_same_class: float = 0.5
    """Share of negatives taken from another sequence of the same class (semantic distractors)."""
    neg_other_class: float = 0.3
    """Share of negatives taken from a sequence of another class."""
    neg_absent: float = 0.2
    """Share of negatives taken from frames of the same sequence where the target is absent."""
    pairs_per_shard: int = 512
    """Pairs per HDF5 shard file."""
    jpeg_quality: int = 90
    """JPEG quality of the stored crops."""
    seed: int = 0
    """Sampling seed: the same seed and inputs write the same pairs."""
    val_sequences: list[str] = field(default_factory=list)
    """Sequences (by name, e.g. person-103) that prepare writes to validation shards only: train's val_*
    numbers then measure generalisation to unseen footage. Empty = `val_sequence_fraction`."""
    val_sequence_fraction: float = 0.0
    """With no `val_sequences`: this seeded share of the sequences goes to validation shards (0 = none:
    train then holds out the last shards, which mixes pairs of the training sequences)."""


@dataclass
class ModelConfig:
    backbone: str = "dinov3_vits16"
    """Backbone name from the registry (`siamtool.models.backbones`)."""
    weights: str | None = None
    """Hub id or local directory (transformers), or a weights file; None = the registry default."""
    local_files_only: bool = False
    """Never touch the network when loading backbone weights (offline machines)."""
    pretrained: bool = True
    """Load pretrained backbone weights (False = random init, for tests and smoke runs only)."""
    tiny: bool = False
    """Build a tiny random-initialised variant of the backbone's architecture (tests only)."""
    freeze_backbone: bool = True
    """Keep the backbone frozen and in eval mode."""
    unfreeze_last: int = 0
    """Unfreeze the last K backbone blocks (trained with train.backbone_lr_mult x lr)."""
    dim: int = 256
    """Width of the cross-attention neck."""
    heads: int = 8
    """Attention heads in the cross-attention."""
    dropout: float = 0.1
    """Dropout in attention and heads."""


@dataclass
class AugmentConfig:
    """Train-time jitter, done on the device from the stored generous crops."""

    shift: float = 3.0
    """Search-window shift (OSTrack's center_jitter_factor, 3-4.5): the window centre moves off the target
    centre by up to shift/2 * sqrt(w*h) per axis, uniformly, within the stored crop (data.search_margin)."""
    scale: float = 0.25
    """Log-uniform search scale jitter: the window side (so the target size) x a factor in [exp(-s), exp(s)]."""
    brightness: float = 0.2
    """Brightness factor U(1-b, 1+b), per image (template and search independently)."""
    contrast: float = 0.2
    """Contrast factor U(1-c, 1+c) around the image's mean grey, per image."""
    saturation: float = 0.2
    """Saturation factor U(1-s, 1+s) around the pixel's grey, per image."""
    grayscale_prob: float = 0.05
    """Probability that a pair is made grey (template and search together, like a grayscale video)."""
    blur_prob: float = 0.1
    """Probability of a Gaussian blur (sigma U(0.1, 2) final-crop px), per image."""


@dataclass
class TrainConfig:
    epochs: int = 20
    samples_per_epoch: int = 60000
    """Pairs per epoch, independent of the dataset size."""
    batch_size: int = 64
    lr: float = 4e-4
    backbone_lr_mult: float = 0.1
    weight_decay: float = 1e-4
    lr_batch: int | None = None
    """Global batch (pairs per optimizer step over all ranks, x accumulate) at which `lr` applies; any other
    global batch G trains at lr x sqrt(G / lr_batch) (the square-root rule for Adam-type optimizers).
    null = one process's batch (batch_size x accumulate): `lr` is what a single process uses."""
    warmup_steps: int = 500
    """Linear warm-up, in optimizer steps of `lr_batch` pairs: it lasts warmup_steps x lr_batch pairs on any
    number of GPUs (the schedule is a function of pairs seen, not of steps)."""
    grad_clip: float = 1.0
    amp: str = "auto"
    """Mixed precision: auto (bf16 on GPUs with native bf16, else fp16 on CUDA, off on CPU), bf16, fp16, off."""
    compile: bool | None = None
    """torch.compile the model and the loss: null = on CUDA (an eager step launches ~2,200 ops, more host
    time than a GPU step), off on CPU (minutes of C++ builds for little gain)."""
    accumulate: int = 1
    """Gradient accumulation steps."""
    workers: int = 4
    """DataLoader workers reading shards."""
    shuffle_buffer: int = 2048
    """In-memory shuffle buffer (pairs) of the streaming dataset."""
    val_fraction: float = 0.05
    """Share of shards held out for validation (at least one shard when there are two or more)."""
    val_samples: int = 512
    checkpoint_every: int = 1000
    """Save a checkpoint every N optimizer steps (and at the end of each epoch)."""
    keep_last: int = 3
    log_every: int = 20
    tensorboard: bool = True
    seed: int = 0
    focal_weight: float = 1.0
    l1_weight: float = 5.0
    giou_weight: float = 2.0
    feature_cache: bool = False
    """Train on cached features of the frozen backbone (`siamtool.data.feature_cache`): each pair's
    `cache_views` jittered views go through the backbone once, then epochs cost only the heads."""
    cache_views: int = 4
    """Jittered views per training pair in the feature cache (shift, scale and photometric jitter)."""
    cache_seed: int | None = None
    """Seed of the feature cache's jittered views (none: `seed`). Give every run of a seed study the same
    value and they share one cache: the seeds then differ in initialisation and sample order, not in the
    cached jitter, and each costs its training only (a lite0 cache takes 20-60 min on a 2-core CPU, its
    training 15)."""
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class TrackConfig:
    window_influence: float = 0.3
    """Weight of the Hann (cosine) window in the score: 0 = none, 1 = window only."""
    scale_penalty: float = 0.04
    """SiamRPN-style penalty k on scale and aspect change: exp(-k * (r * s - 1))."""
    select_margin: float = 0.0
    """The connected region of cells around the best one whose penalised, windowed score is within this
    margin of the best shares the answer, weighted by how far above (best - margin) they score
    (`tracker._blend_near_best`): a continuous choice instead of an argmax, so two runtimes 1e-5 apart do
    not pick different neighbouring cells at a near tie (issue #20's runtime parity); 0 = the argmax, exact
    ties averaged (the default: 0.1 and 0.2 scored lower on validation, docs/benchmarks.md)."""
    size_lr: float = 0.6
    """Learning rate of the box size update (scaled by the penalised score)."""
    min_size: float = 4.0
    """Smallest side in pixels of the reported box (the tracked state is not clipped: `Tracker.state_box`)."""
    lost_threshold: float = 0.25
    """Below this score the target is reported lost and the search region grows."""
    lost_ratio: float = 0.5
    """...but only when the score is also below lost_ratio x the score of the first tracked frame: a model
    that scores a hard-to-match target low from the start keeps tracking it instead of freezing (0 = off)."""
    reference_rate: float = 0.0
    """The reference score of `lost_ratio` follows the tracked frames' scores at this rate (an exponential
    average; 0 = the best score of the first 5 tracked frames for good), so a slow appearance change is not
    a loss."""
    recover_ratio: float = 0.4
    """Hysteresis: once lost, a frame recovers the target only with a score >= recover_ratio x the reference
    score (and above the loss threshold), so a weaker look-alike or background the search finds while the
    target is away is not taken for it (long-term trackers' re-detection check; 0 = off)..."""
    recover_radius: float = 1.0
    """...unless the candidate lies within this many target sizes (sqrt(w h)) of the last confident box:
    a target that only dimmed (blur, a partial occlusion) is taken back at the ordinary threshold."""
    search_growth: float = 1.5
    """Search window growth per lost frame (local-to-global re-detection)."""
    max_growth: float = 4.0
    """Largest search window growth while lost."""
    online: bool = True
    """Learn an online target model (a correlation filter on the backbone features, `tracking.online`) and
    fuse it with the offline heatmap; needs a backend that returns search features (all built-in ones)."""
    online_weight: float = 0.5
    """Weight of the online model in the fused score and position: 0 = offline heads only, 1 = online only."""
    online_reg: float = 0.01
    """Ridge regularisation of the correlation filter, relative to the features' mean energy."""
    online_sigma: float = 0.1
    """Std of the filter's Gaussian label, x sqrt(w h) of the target in feature cells (>= 0.25 cells)."""
    online_window: float = 3.0
    """The filter sees the search features through a window of this many target sizes (KCF's padding;
    a large value = the whole crop)."""
    online_memory: int = 8
    """Samples kept by each online model (the first frame's are permanent, see `online_first_weight`)."""
    online_first_weight: float = 0.5
    """Share of the first frame's samples in the online models, however many frames followed (anti-drift)."""
    online_interval: int = 5
    """Add a sample every N frames, from frames whose fused score is >= `online_update_ratio` x the first's."""
    online_update_ratio: float = 0.6
    """Confidence, relative to the first tracked frame, a frame needs to teach the online models."""
    distractor_weight: float = 0.0
    """Distractor-aware scoring (DaSiamRPN, `tracking.online.DistractorMemory`): cells whose backbone
    features look more like a remembered look-alike than like the target lose up to this share of their
    fused score (0 = off)."""
    online_augment: bool = True
    """Fit the first frame's filter on augmented search crops too (flip, blur, half-cell shift), as DiMP does."""
    calibrate_size: float = 0.5
    """Rescale the box head's sizes by (true / predicted size on the first frame) ** this strength
    (`Tracker._size_calibration`): 1 = the head tells the size change, the first frame the size; 0 = off."""
    online_upsample_limit: float = 0.0
    """Small targets: the crop upsampling (search px per frame px, `CropWindow.scale`) up to which the online
    model keeps its full weight; above it the weight falls as limit / scale (0 = always full). A 10 px
    target's crop is upsampled about 5x, and the filter, fitted on blurred features, then misleads more
    than the offline heads (docs/benchmarks.md "Small targets")."""
    camera_motion: bool = False
    """Move the search with the camera before each frame (`tracking.camera`): the image's shift since the
    previous frame (phase correlation) times how much this target has followed such shifts so far. For
    shaking footage (drones, hand-held); off by default (validation: +1.0 AUC, under the +2 points a shipped
    setting needs; docs/benchmarks.md "Camera-motion compensation")."""
    scale: str = "dsst"
    """Where the size comes from: dsst (a 1-D scale filter, `tracking.online.ScaleFilter`: scale only, the
    aspect ratio is kept), head (the offline box head, smoothed by `size_lr`), or both (DSST rescales,
    then the head refines size and aspect)."""
    scale_step: float = 1.02
    """Ratio between neighbouring scales of the DSST filter."""
    scale_count: int = 17
    """Scales searched by the DSST filter (odd)."""
    half: bool = False
    """fp16 inference on CUDA."""
    backend: str = "auto"
    """Runtime for --checkpoint: auto (onnxruntime on CPU through a cached, checked ONNX export: several
    times faster there, see README `export`; PyTorch on CUDA), torch, onnx (onnxruntime everywhere), or
    opencv (OpenCV's DNN module on the CPU, for --onnx too: docs/runtimes.md)."""


@dataclass
class EvalConfig:
    convention: str = "pytracking"
    """Metric rules: pytracking (reproduces the official toolkit's numbers) or official (MATLAB quirks)."""
    skip_missing: bool = False
    """Score only the sequences that have annotations and results (the count is said) instead of refusing."""
    plots: bool = True
    lasot: str | None = None
    """LaSOT root for `eval` without --lasot, used after the root `prepare` recorded in ./shards and
    $SIAMTOOL_LASOT (see `siamtool.workspace`)."""


@dataclass
class ExportConfig:
    opset: int = 17
    """ONNX opset of the exported graphs (17 to 20; 17 has LayerNormalization)."""
    tolerance: float = 1e-4
    """Largest onnxruntime - PyTorch difference accepted on the fp32 graphs: on scores (absolute), boxes
    (relative to the box size) and template features (relative to their scale); float32 rounding gives
    ~1e-6, an export bug 1e-2 or more (`siamtool.export.onnx.DIFF_UNITS`)."""
    fp16: bool = False
    """Also write fp16 graphs (DIR/fp16/) for GPU runtimes; float32 inputs and outputs either way."""


ADDED_LATER: dict[tuple[str, str], Any] = {
    ("data", "sources"): [],
    ("track", "camera_motion"): False,
    ("track", "online_upsample_limit"): 0.0,
}
"""(section, key) -> the value at which the key changes nothing; `Config.to_dict` omits it then."""


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    export: ExportConfig = field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """The tree as plain data. Keys added after the first release (`ADDED_LATER`) are left out while
        they hold the value that behaves as before they existed: the fingerprints of everything made
        before them (eval results, feature caches, exports) hash this dict and stay valid."""
        d = asdict(self)
        for (section, key), inert in ADDED_LATER.items():
            if d[section][key] == inert:
                del d[section][key]
        return d

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_yaml())


# ------------------------------------------------------------------------------------- validation

_CHOICES = {
    ("train", "amp"): ("auto", "bf16", "fp16", "off"),
    ("eval", "convention"): ("pytracking", "official"),
    ("track", "backend"): ("auto", "torch", "onnx", "opencv"),
    ("track", "scale"): ("dsst", "head", "both"),
}
_POSITIVE = {"template_size", "search_size", "pairs_per_shard", "batch_size", "epochs", "lr_batch",
             "samples_per_epoch", "heads", "dim", "accumulate", "keep_last", "checkpoint_every", "opset",
             "pairs_per_sequence", "max_gap", "lr", "val_samples", "log_every", "tolerance",
             "online_reg", "online_sigma", "online_window", "online_memory", "online_interval", "scale_count",
             "cache_views"}
_NON_NEGATIVE = {"seed", "cache_seed", "workers", "shuffle_buffer", "warmup_steps", "weight_decay", "backbone_lr_mult",
                 "grad_clip", "focal_weight", "l1_weight", "giou_weight", "unfreeze_last", "context",
                 "shift", "scale", "recover_radius", "online_upsample_limit"}
"""Why each bound: a negative seed is refused by numpy's generators, a negative lr or weight decay by
AdamW (with a ValueError, not a line naming the key), the rest have no meaning below zero."""
_PROBABILITIES = {"neg_prob", "neg_same_class", "neg_other_class", "neg_absent", "grayscale_prob",
                  "blur_prob", "val_fraction", "window_influence", "size_lr", "lost_threshold", "lost_ratio",
                  "online_weight", "online_first_weight", "online_update_ratio", "reference_rate", "recover_ratio",
                  "calibrate_size", "distractor_weight", "select_margin",
                  "val_sequence_fraction", "brightness", "contrast", "saturation"}
_RANGES = {("data", "jpeg_quality"): (1, 100), ("model", "dropout"): (0.0, 0.99), ("data", "context"): (0.0, 10.0),
           ("data", "template_size"): (1, 4096), ("data", "search_size"): (1, 8192),
           ("track", "scale_count"): (1, 255)}
_LARGEST = 2**31 - 1
"""No number in the config means anything beyond a C int: larger ones (and NaN, inf) only crash later,
in OpenCV ("integer won't fit into a C int"), numpy or the optimizer, with a message naming no key."""


def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        if item is SourceSpec:
            return _coerce_sources(value, where)
        if isinstance(value, str):  # --set data.val_sequences=a,b,c
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError:
                pass
        names = " or ".join("null" if a is type(None) else a.__name__ for a in args)
        raise ConfigError(f"{where}: expected {names}, got {value!r}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    raise ConfigError(f"{where}: unsupported type {tp}")


def _coerce_sources(value: Any, where: str) -> list[SourceSpec]:
    """`data.sources`: a list whose entries are spec strings or mappings of SourceSpec's keys."""
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{where}: expected a list of sources (KIND:ROOT[:SPLIT][@WEIGHT]), got {value!r}")
    out = []
    for i, entry in enumerate(value):
        at = f"{where}[{i}]"
        if isinstance(entry, SourceSpec):
            spec = entry
        elif isinstance(entry, str):
            spec = parse_source(entry, at)
        elif isinstance(entry, dict):
            spec = SourceSpec()
            _apply(spec, entry, "", at)
            spec.kind = spec.kind.strip().lower()
        else:
            raise ConfigError(f"{at}: expected KIND:ROOT[:SPLIT][@WEIGHT] or a mapping with kind, root, split, "
                              f"weight; got {entry!r}")
        _check_source(spec, at)
        out.append(spec)
    return out


def explicit_keys(cfg: Config) -> set[str]:
    """Dotted keys the user set (config file or --set) when `cfg` came from `load_config`; else empty.

    A checkpoint carries the tracking settings chosen for it: the user's `track.*` keys override them
    one by one, and only these, so a key left at its default never hides the checkpoint's value."""
    return set(cfg.__dict__.get("_explicit", ()))


def _dotted(values: Any, prefix: str = "") -> set[str]:
    if not isinstance(values, dict):
        return {prefix.rstrip(".")} if prefix else set()
    return {k for key, v in values.items() for k in _dotted(v, f"{prefix}{key}.")}


def _apply(obj: Any, values: dict[str, Any], prefix: str, source: str) -> None:
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping, got {values!r}")
    hints = _hints(type(obj))
    valid = [f.name for f in dataclasses.fields(obj)]
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean '{prefix}{close[0]}'?" if close else f"; valid keys: {', '.join(valid)}"
            raise ConfigError(f"{source}: unknown key '{dotted}'{hint}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _apply(current, value, f"{dotted}.", source)
        else:
            setattr(obj, key, _coerce(value, hints[key], f"{source}: {dotted}"))


def _leaves(obj: Any, prefix: str) -> typing.Iterator[tuple[str, str, Any]]:
    """(dotted key, section, value) of every non-dataclass field, nested sections (train.augment) included."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", prefix.split(".")[0], value


def _check_values(cfg: Config, source: str) -> None:
    for key, section, value in _leaves(cfg, ""):
        name = key.rsplit(".", 1)[-1]
        where = f"{source}: {key}"
        choices = _CHOICES.get((section, name))
        if choices and value not in choices:
            raise ConfigError(f"{where} must be one of {', '.join(choices)}, got {value!r}")
        if value is None or isinstance(value, (str, bool, list)):
            continue
        if not math.isfinite(value) or abs(value) > _LARGEST:
            raise ConfigError(f"{where} must be a finite number of at most {_LARGEST}, got {value!r}")
        if name in _POSITIVE and value <= 0:
            raise ConfigError(f"{where} must be > 0, got {value!r}")
        if name in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"{where} must be >= 0, got {value!r}")
        if name in _PROBABILITIES and not 0.0 <= value <= 1.0:
            raise ConfigError(f"{where} must be between 0 and 1, got {value!r}")
        lo_hi = _RANGES.get((section, name))
        if lo_hi and not lo_hi[0] <= value <= lo_hi[1]:
            raise ConfigError(f"{where} must be between {lo_hi[0]} and {lo_hi[1]}, got {value!r}")
    d = cfg.data
    mix = d.neg_same_class + d.neg_other_class + d.neg_absent
    if abs(mix - 1.0) > 1e-6:
        raise ConfigError(
            f"{source}: data.neg_same_class + neg_other_class + neg_absent must sum to 1, got {mix:g}"
        )
    if d.search_size < d.template_size:
        raise ConfigError(f"{source}: data.search_size ({d.search_size}) must be >= data.template_size")
    if not 1.0 <= d.search_margin <= 4.0:
        raise ConfigError(f"{source}: data.search_margin must be >= 1 and <= 4, got {d.search_margin}")
    t = cfg.track
    for key in ("search_growth", "max_growth"):
        if not 1.0 <= getattr(t, key) <= 100.0:
            raise ConfigError(f"{source}: track.{key} must be >= 1 (a search window never shrinks) and <= 100, "
                              f"got {getattr(t, key)}")
    if not 1.0 < t.scale_step <= 2.0 or t.scale_count % 2 == 0:
        raise ConfigError(f"{source}: track.scale_step must be > 1 and <= 2 and track.scale_count odd, "
                          f"got {t.scale_step} and {t.scale_count}")
    if t.scale_penalty < 0 or t.min_size <= 0:
        raise ConfigError(f"{source}: track.scale_penalty must be >= 0 and track.min_size > 0")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`train.lr=3e-4` -> (["train", "lr"], 3e-4); the value is parsed as YAML (numbers, bools, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    # YAML 1.1 reads '3e-4' as a string; accept it as the number the user meant.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value) if any(c in value for c in ".eE") else int(value)
    return key.strip().split("."), value


def _nest(path: list[str], value: Any) -> dict[str, Any]:
    out: Any = value
    for part in reversed(path):
        out = {part: out}
    return out


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    PyYAML keeps the last value silently: `train: {lr: 1e-3, lr: 5.0}` trains at 5.0, and a second
    `train:` section replaces the first one whole, so a user's edit seems to have no effect."""

    def construct_mapping(self, node, deep=False):
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, Hashable):
                continue  # PyYAML refuses an unhashable key itself, with its line
            if key in seen:
                raise ConfigError(f"{key_node.start_mark.name}:{line}: key '{key}' is given twice (first on line "
                                  f"{seen[key]}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _read_yaml(path: Path) -> Any:
    """The YAML document in `path`, refused in one line when it is not text, not YAML or repeats a key."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file (byte {e.start} is not UTF-8); give a YAML config") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return yaml.load(text, Loader=_make_loader(path)) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}:{line} is not valid YAML ({getattr(e, 'problem', e)})") from None


def _make_loader(path: Path) -> Any:
    """A loader class whose marks name `path` (PyYAML names a string stream '<unicode string>')."""

    def make(stream: str) -> _UniqueKeyLoader:
        loader = _UniqueKeyLoader(stream)
        loader.name = str(path)
        return loader

    return make


def _check_sections(keys: list[str], text: str, sections: tuple[str, ...] | None, command: str) -> None:
    """A --set key of a section the command never reads would be ignored without a word: refuse it."""
    if sections is None or not keys or keys[0] in sections:
        return
    reads = ", ".join(f"{s}.*" for s in sections)
    raise ConfigError(f"--set {text}: {command or 'this command'} does not use {keys[0]}.* (it reads {reads}); "
                      "remove it")


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                sections: tuple[str, ...] | None = None, command: str = "") -> Config:
    """Defaults, then the YAML file at `path` (if any), then `overrides` ("a.b=value").

    `sections`: the config sections `command` reads; a --set key of another section is refused (a file
    may hold every section: one experiment's YAML serves prepare, train and eval alike).
    """
    cfg = Config()
    source = "defaults"
    explicit: set[str] = set()
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        data = _read_yaml(path)
        _apply(cfg, data, "", source)
        explicit |= _dotted(data)
    for text in overrides:
        keys, value = parse_override(text)
        _check_sections(keys, text, sections, command)
        _apply(cfg, _nest(keys, value), "", f"--set {text}")
        explicit.add(".".join(keys))
    _check_values(cfg, source if not overrides else f"{source} + --set")
    cfg.__dict__["_explicit"] = frozenset(explicit)
    return cfg


def config_with(values: dict[str, Any], source: str) -> Config:
    """Defaults with `values` (a nested mapping, e.g. ``{"track": {"window_influence": 0.2}}``) applied and
    recorded as the user's, like `load_config` does for a file: the Python API's keyword overrides take
    the same checks (unknown keys with the closest valid one, types, ranges) and win over a checkpoint's
    settings one key at a time (`explicit_keys`)."""
    cfg = Config()
    _apply(cfg, values, "", source)
    _check_values(cfg, source)
    cfg.__dict__["_explicit"] = frozenset(_dotted(values))
    return cfg


def config_from_dict(data: dict[str, Any], source: str = "checkpoint") -> Config:
    """Rebuild a Config saved with `to_dict` (e.g. inside a checkpoint or shard attributes)."""
    cfg = Config()
    _apply(cfg, data, "", source)
    _check_values(cfg, source)
    return cfg


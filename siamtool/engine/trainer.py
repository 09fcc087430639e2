"""The training loop: one code path from a laptop CPU to `torchrun` on GPUs (docs/training.md).

* AdamW (fused; no decay on norms/biases), linear warm-up + cosine decay as a function of the pairs seen,
  gradient clipping, gradient accumulation, AMP (bf16 on GPUs with native bf16, fp16 with a GradScaler
  otherwise), `torch.compile` of the model and the loss on CUDA; single process by default, DDP when
  launched by `torchrun` (NCCL on CUDA, gloo on CPU).
* The step never waits for the device: loss terms and gradient norms stay on the device and are read
  back every `train.log_every` steps; a non-finite gradient skips its update on the device (the fused
  optimizer's found_inf); the next batch is decoded and cropped by the loader's background thread. Every
  training batch has `train.batch_size` pairs, so compiled graphs are built once.
* Position = pairs seen (`samples`, over all ranks). The step, the epoch, the position in the epoch, the
  learning rate and its warm-up all derive from it, so a run resumed on another number of processes keeps
  its schedule. The learning-rate rule for a global batch G (pairs per optimizer step, all ranks):
  ``lr(G) = train.lr * sqrt(G / train.lr_batch)``, warm-up over ``train.warmup_steps * train.lr_batch``
  pairs, cosine to 1 % of the peak at ``train.epochs * train.samples_per_epoch`` pairs.
* Run folder: ``config.yaml`` (resolved), ``log.jsonl`` (one record per log step and per validation),
  ``tb/`` (TensorBoard scalars, when tensorboard is installed), ``checkpoints/step-*.pt`` (every
  `train.checkpoint_every` steps and at each epoch end, last `train.keep_last` kept) and ``best.pt``
  (highest validation IoU: what `track`, `eval` and `export` take).
* Exact resume: a checkpoint holds the trainable weights, config, optimizer, scaler, step, pairs seen,
  RNG states and the log length. The data stream restarts at any batch (`build_loader(start_batch=...)`)
  and dropout is seeded from (seed, step, micro-batch, rank), so a killed-and-resumed run retraces the
  uninterrupted one. Ctrl-C saves a checkpoint before exiting.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from siamtool.config import Config, TrainConfig
from siamtool.data.feature_cache import build_feature_cache, cached_loader_factory
from siamtool.data.shards import load_shard_index
from siamtool.data.stream import build_loader
from siamtool.device import available_cores, resolve_device
from siamtool.engine.checkpoint import prune_checkpoints, save_checkpoint, step_checkpoint_path
from siamtool.engine.labels import make_targets
from siamtool.engine.losses import tracking_loss
from siamtool.engine.validation import validate
from siamtool.errors import ConfigError, DatasetError
from siamtool.fileio import write_text_atomic
from siamtool.models.backbones import get_spec
from siamtool.models.checkpoint import latest_checkpoint, load_checkpoint
from siamtool.models.siamese import SiamTracker, build_model
from siamtool.provenance import differences
from siamtool.reporting import SILENT, Reporter

LoaderFactory = Callable[..., Iterable[Any]]
"""``make(split, epoch, rank, world_size, start_batch)`` -> iterable of `siamtool.data.stream.Batch`.

"val": the validation batches of this rank (the same every epoch). "train": this rank's training batches
from its batch `start_batch` on, counted from the start of training across epochs (the trainer passes
``samples_seen // (batch_size * world_size)``), every batch `train.batch_size` pairs. A training iterable
may be endless (the shard stream is: one iterable serves every epoch) or end anywhere: the trainer then
asks again from where it stopped. A factory with a ``close()`` method is closed when training ends."""
StepHook = Callable[[int, dict[str, torch.Tensor]], None]
"""``on_step(step, losses)`` after every optimizer step; `losses` are that step's 0-d device tensors
(reading one synchronises with the device)."""
LOSS_TERMS = ("loss", "loss_heat", "loss_l1", "loss_giou")
PACE_STEPS = 3
"""Optimizer steps a CPU run times before it estimates how long it will take (`Trainer._check_pace`), after
its first step: that one also starts the loader (the shipped recipe reads 7 GB of cached features there)."""
PACE_WARN_S = 2 * 3600.0
"""A CPU run estimated to need longer than this is told so, with the CPU recipes to use instead."""


@dataclass
class TrainResult:
    out_dir: Path
    step: int
    total_steps: int
    epochs_done: int
    best_val_iou: float
    baseline: dict[str, float] | None = None
    """Validation of the untrained model (fresh runs only)."""
    last_val: dict[str, float] | None = None
    best_path: Path | None = None
    last_checkpoint: Path | None = None
    resumed_from: int | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    """The records this call logged (log.jsonl holds the whole run)."""
    model: SiamTracker | None = None
    """The trained model (train mode, on the training device)."""


# ------------------------------------------------------------------------------------------ helpers


def global_batch(cfg: Config, world_size: int) -> int:
    """Pairs per optimizer step over all ranks: batch_size (per rank) x world_size x accumulate."""
    return cfg.train.batch_size * world_size * cfg.train.accumulate


def lr_reference_batch(cfg: Config) -> int:
    """The global batch at which `train.lr` applies (`train.lr_batch`, default one process's batch)."""
    return cfg.train.lr_batch or cfg.train.batch_size * cfg.train.accumulate


def lr_scale(cfg: Config, world_size: int) -> float:
    """The learning-rate rule: peak lr = train.lr x sqrt(global batch / lr_batch).

    Square-root scaling keeps the update noise of Adam-type optimizers constant (Malladi et al., "On the
    SDEs and Scaling Rules for Adaptive Gradient Algorithms", 2022); linear scaling, the rule for SGD,
    overshoots with AdamW at 8 GPUs x 256 pairs (32x the reference batch of 64 would be 32x the lr).
    """
    return math.sqrt(global_batch(cfg, world_size) / lr_reference_batch(cfg))


def warmup_samples(cfg: Config) -> int:
    """Warm-up length in pairs: train.warmup_steps steps of lr_batch pairs, whatever the world size."""
    return cfg.train.warmup_steps * lr_reference_batch(cfg)


def total_samples(cfg: Config) -> int:
    return cfg.train.epochs * cfg.train.samples_per_epoch


def steps_per_epoch(cfg: Config, world_size: int) -> int:
    """Optimizer steps of the first epoch: ceil(samples_per_epoch / global batch). Epochs are counted in
    pairs and the stream never restarts, so a later epoch may take one step fewer."""
    return math.ceil(cfg.train.samples_per_epoch / global_batch(cfg, world_size))


def batches_per_epoch(cfg: Config, world_size: int) -> int:
    """Batches one rank gets in the first epoch (every batch has train.batch_size pairs)."""
    return steps_per_epoch(cfg, world_size) * cfg.train.accumulate


def lr_schedule(samples: int, batch: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """Learning-rate factor of the step that starts after `samples` pairs and trains on `batch` more.

    Linear warm-up to 1 over `warmup` pairs (the step ending at pair `samples + batch` gets
    ``(samples + batch) / warmup``), then cosine decay to `floor` at `total` pairs.
    """
    if warmup > 0 and samples < warmup:
        return min(1.0, (samples + batch) / warmup)
    progress = min(1.0, (samples - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """`lr_schedule` counted in steps: linear warmup to 1 over `warmup` steps, cosine to `floor` at `total`."""
    return lr_schedule(step, 1, warmup, total, floor)


def check_amp(amp: str, device: torch.device) -> None:
    """Refuse an impossible train.amp without touching the GPU (before the distributed set-up)."""
    if amp == "fp16" and device.type != "cuda":
        raise ConfigError("train.amp=fp16 needs CUDA; on CPU use bf16 or off")


def cuda_bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively (sm_80+). `torch.cuda.is_bf16_supported()` also counts
    emulation by default, which makes V100s and T4s run emulated (slow) bf16 instead of fp16."""
    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # torch < 2.3 has no including_emulation (and counts no emulation)
            return torch.cuda.get_device_capability(device)[0] >= 8


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """train.amp -> autocast dtype (None = full precision). On CUDA, call it after `init_distributed` has
    set this rank's device: the probe opens a context on the device it asks about."""
    check_amp(amp, device)
    if amp == "off":
        return None
    if device.type == "cuda":
        bf16 = cuda_bf16_native(device)
        if amp == "bf16" and not bf16:
            raise ConfigError(f"train.amp=bf16: {torch.cuda.get_device_name(device)} has no native bf16; use "
                              "fp16 or auto")
        return torch.bfloat16 if amp == "bf16" or (amp == "auto" and bf16) else torch.float16
    return torch.bfloat16 if amp == "bf16" else None


def resolve_compile(cfg: Config, device: torch.device) -> bool:
    """train.compile, with null meaning: on CUDA, off elsewhere."""
    return cfg.train.compile if cfg.train.compile is not None else device.type == "cuda"


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached": float(np_state[4])},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(_as_tuple(state["python"]))
    if "cuda" in state and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):
            torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _step_seed(seed: int, step: int, micro: int, rank: int) -> int:
    """Dropout randomness as a pure function of the position in training (exact resume, any worker count)."""
    return ((seed * 1_000_003 + step) * 257 + micro) * 4099 + rank


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(torch.nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})
"""DDP without a buffer broadcast before each forward (torch 2.14 renamed the option; the new one still
syncs once at start-up, which constants survive)."""
_INIT_TAKES_DEVICE_ID = "device_id" in inspect.signature(dist.init_process_group).parameters
"""torch >= 2.3."""


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """DDP when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU; else single process.

    On CUDA the rank's device is set before anything touches CUDA and handed to `init_process_group`
    (`device_id`), which binds NCCL to it at once instead of letting every rank guess GPU 0 first.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo(), device
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device.type == "cuda":
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    owns = False
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {}
        if device.type == "cuda" and _INIT_TAKES_DEVICE_ID:
            kwargs["device_id"] = device
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **kwargs)
        owns = True
    return DistInfo(rank, world, local, owns), device


class JsonlLog:
    """Append-only JSONL log that can be cut back to a checkpoint's length on resume."""

    def __init__(self, path: Path, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled
        self.lines = 0
        if enabled and path.is_file():
            self.lines = sum(1 for _ in path.open())

    def truncate(self, lines: int) -> None:
        if not self.enabled or not self.path.is_file():
            return
        kept = self.path.read_text().splitlines(keepends=True)[:lines]
        write_text_atomic(self.path, "".join(kept))
        self.lines = len(kept)

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        self.lines += 1


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _tensorboard(out: Path, enabled: bool, purge_step: int | None):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        warnings.warn("tensorboard is not installed (pip install tensorboard); scalars go to log.jsonl only",
                      stacklevel=3)
        return None
    return SummaryWriter(str(out / "tb"), purge_step=purge_step)


class ShardLoaders:
    """The default `LoaderFactory`: the shard stream of `siamtool.data.stream`.

    Validation loaders are made once per (rank, world size) and reused, so their workers persist across
    epochs; a training stream is endless, so the trainer makes it once. `close()` stops every worker.
    """

    def __init__(self, shards_dir: str | Path, cfg: Config, device: torch.device) -> None:
        self.shards_dir = shards_dir
        self.cfg = cfg
        self.device = device
        self.val: dict[tuple[int, int], Any] = {}
        self.train: list[Any] = []

    def __call__(self, split: str, epoch: int, rank: int, world_size: int, start_batch: int = 0) -> Iterable[Any]:
        if split == "val":
            key = (rank, world_size)
            if key not in self.val:
                self.val[key] = build_loader(self.shards_dir, self.cfg, self.device, split="val", epoch=epoch,
                                             rank=rank, world_size=world_size)
            return self.val[key]
        loader = build_loader(self.shards_dir, self.cfg, self.device, split=split, epoch=epoch, rank=rank,
                              world_size=world_size, start_batch=start_batch)
        self.train.append(loader)
        return loader

    def close(self) -> None:
        for loader in [*self.val.values(), *self.train]:
            loader.close()
        self.val.clear()
        self.train.clear()


def default_loader_factory(shards_dir: str | Path, cfg: Config, device: torch.device) -> LoaderFactory:
    return ShardLoaders(shards_dir, cfg, device)


def _loss_terms(heat: torch.Tensor, box: torch.Tensor, search_box: torch.Tensor, positive: torch.Tensor,
                stride: int, search_size: int, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(total loss, detached [total, heat, l1, giou]) of a batch: labels and loss in one compilable function."""
    targets = make_targets(search_box, positive, heat.shape[-2:], stride)
    loss = tracking_loss(heat.float(), box.float(), targets, stride, search_size, cfg)
    return loss.total, torch.stack([loss.total.detach(), loss.heat, loss.l1, loss.giou])


def make_optimizer(groups: list[dict[str, Any]], lr: float) -> tuple[torch.optim.Optimizer, bool]:
    """AdamW, fused where this torch has it (then a non-finite step is skipped on the device): (opt, fused)."""
    try:
        return torch.optim.AdamW(groups, lr=lr, fused=True), True
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups, lr=lr), False


# ------------------------------------------------------------------------------------------ trainer


class Trainer:
    """One training run in `out_dir` (see the module docstring). `run()` returns a `TrainResult`."""

    def __init__(self, cfg: Config, out_dir: str | Path, loader_factory: LoaderFactory, device: torch.device,
                 dist_info: DistInfo, resume: bool = True, on_step: StepHook | None = None,
                 reporter: Reporter = SILENT) -> None:
        self.cfg = cfg
        self.t = cfg.train
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.loaders = loader_factory
        self.device = device
        self.dist = dist_info
        self.resume = resume
        self.on_step = on_step
        self.reporter = reporter if dist_info.main else SILENT  # one rank reports for the run
        self._pace: tuple[float, int] | bool | None = False
        """`_check_pace`'s clock: False off (or done), None armed for the next step, else (start, step)."""
        self.amp = resolve_amp(self.t.amp, device)
        self.compile = resolve_compile(cfg, device)
        self.rank_batch = self.t.batch_size * dist_info.world_size
        """Pairs of one micro-batch over all ranks."""
        self.global_batch = global_batch(cfg, dist_info.world_size)
        self.total_samples = total_samples(cfg)
        self.warmup_samples = warmup_samples(cfg)
        self.lr_scale = lr_scale(cfg, dist_info.world_size)
        # Position: optimizer steps done and pairs seen over all ranks (the schedule's clock), the epoch.
        self.step = 0
        self.samples = 0
        self.epoch = 0
        self.best_val_iou = -1.0
        self.last_saved_step = -1
        self.history: list[dict[str, Any]] = []
        self.skipped = 0
        self.tb = None
        self._train_iter: Iterator[Any] | None = None
        self._position = 0
        """The next training micro-batch of this rank, counted from the start of training."""

    @property
    def total_steps(self) -> int:
        """Steps done + the steps left to `total_samples` at the current global batch."""
        return self.step + max(0, math.ceil((self.total_samples - self.samples) / self.global_batch))

    @property
    def batch_in_epoch(self) -> int:
        """This rank's batches into the current epoch (what older checkpoints recorded)."""
        return max(0, self.samples - self.epoch * self.t.samples_per_epoch) // self.rank_batch

    # ----------------------------------------------------------------------------------- set-up

    def _build(self) -> None:
        _seed_everything(self.t.seed)
        self.model: SiamTracker = build_model(self.cfg).to(self.device).train()
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ConfigError("nothing to train: every parameter is frozen")
        self.net: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            # The buffers (input normalisation, RoPE tables) are constants: no broadcast before each
            # forward. Gradients live in the all-reduce buckets: no copy in or out of them.
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=ids, gradient_as_bucket_view=True, **_NO_BUFFER_SYNC)
        self.fwd: Callable[..., Any] = torch.compile(self.net) if self.compile else self.net
        self.loss_fn: Callable[..., Any] = torch.compile(_loss_terms) if self.compile else _loss_terms
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        groups = self.model.param_groups(self.t.lr * self.lr_scale, self.t.weight_decay, self.t.backbone_lr_mult)
        self.base_lrs = [g["lr"] for g in groups]
        self.optimizer, self.fused = make_optimizer(groups, self.t.lr * self.lr_scale)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)
        self._window = torch.zeros(len(LOSS_TERMS), device=self.device)
        self._skipped = torch.zeros((), device=self.device)
        self._norm = torch.zeros((), device=self.device)

    def _prepare_out_dir(self) -> dict[str, Any] | None:
        """Create the run folder; return the checkpoint to resume from (or None)."""
        latest = latest_checkpoint(self.ckpt_dir) if self.resume else None
        if latest is None:
            # A fresh run: clear what an earlier run here left (it had no checkpoint, or --no-resume).
            if self.dist.main:
                shutil.rmtree(self.ckpt_dir, ignore_errors=True)
                shutil.rmtree(self.out / "tb", ignore_errors=True)
                for name in ("log.jsonl", "best.pt"):
                    (self.out / name).unlink(missing_ok=True)
            if self.dist.world_size > 1:
                dist.barrier()
            self.out.mkdir(parents=True, exist_ok=True)
            return None
        ckpt = load_checkpoint(latest, map_location="cpu")
        now = self.cfg.to_dict()
        changed = [d for section in ("model", "data")  # what shapes the weights; train.* may change on resume
                   for d in differences({section: ckpt["config"].get(section, {})}, {section: now.get(section, {})},
                                        depth=2)]
        if changed:
            d = changed[0]
            raise ConfigError(f"{self.out} holds a run with a different config ({d.key}: {d.old!r} in the run, "
                              f"{d.new!r} now); pass --no-resume to start over there, or another --out")
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_trainable_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr  # this world size's rule, not the saved one (set per step from the schedule anyway)
            if self.fused:  # a checkpoint of a non-fused optimizer (older siamtool)
                g["fused"], g["foreach"] = True, None
        if self.fused:
            for p, state in self.optimizer.state.items():
                if "step" in state:
                    state["step"] = state["step"].to(device=p.device, dtype=torch.float32)
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        saved_world = int(ckpt.get("world_size", 1))
        if "samples" in ckpt:
            self.samples = int(ckpt["samples"])
        else:  # older checkpoints counted batches of the epoch
            self.samples = (self.epoch * self.t.samples_per_epoch
                            + int(ckpt["batch_in_epoch"]) * self.t.batch_size * saved_world)
        self.best_val_iou = float(ckpt.get("best_val_iou", -1.0))
        self.last_saved_step = self.step
        if saved_world != self.dist.world_size:
            warnings.warn(f"resuming a run of {saved_world} process(es) with {self.dist.world_size}: the schedule "
                          f"continues from pair {self.samples:,} (lr x{self.lr_scale:.3g} for the new global batch "
                          f"of {self.global_batch}), but the data order differs from an uninterrupted run",
                          stacklevel=2)
        # If train.epochs changed, the schedule (built for the new length) continues from these pairs.
        _set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step, "samples": self.samples, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps, "world_size": self.dist.world_size, "global_batch": self.global_batch,
            "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
            "best_val_iou": self.best_val_iou, "rng": _rng_state(), "log_lines": self.log.lines,
        }

    def save(self, force: bool = False) -> Path | None:
        """Step checkpoint of the current position (rank 0), then rotate."""
        if not self.dist.main or self.step == 0 or (self.step == self.last_saved_step and not force):
            return latest_checkpoint(self.ckpt_dir)
        path = save_checkpoint(step_checkpoint_path(self.ckpt_dir, self.step), self.model, self.cfg,
                               **self._state())
        prune_checkpoints(self.ckpt_dir, self.t.keep_last)
        self.last_saved_step = self.step
        return path

    # ------------------------------------------------------------------------------------ steps

    def _next_batch(self) -> Any:
        """The next training batch of this rank (asks the factory again when an iterable ends)."""
        for attempt in range(2):
            if self._train_iter is None:
                self._train_iter = iter(self.loaders("train", self.epoch, self.dist.rank, self.dist.world_size,
                                                     self._position))
            try:
                batch = next(self._train_iter)
            except StopIteration:
                self._close_train_iter()
                if attempt:
                    break
                continue
            self._position += 1
            return batch
        raise DatasetError(f"the training loader yielded no batch at batch {self._position} of rank {self.dist.rank}")

    def _close_train_iter(self) -> None:
        it, self._train_iter = self._train_iter, None
        close = getattr(it, "close", None)
        if close is not None:
            close()

    def micro_step(self, batch: Any, micro: int) -> torch.Tensor:
        """Forward and backward of one micro-batch; returns its loss terms (device tensor, no readback)."""
        acc = self.t.accumulate
        torch.manual_seed(_step_seed(self.t.seed, self.step, micro, self.dist.rank))
        last = micro + 1 >= acc
        sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.net.no_sync()
        with sync:
            ctx = (torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None
                   else contextlib.nullcontext())
            with ctx:
                heat, box = self.fwd(batch.template, batch.search)
            total, terms = self.loss_fn(heat, box, batch.search_box, batch.positive, self.model.stride,
                                        self.model.search_size, self.t)
            weight = getattr(batch, "weight", 1.0)
            if weight != 1.0:  # a placeholder for a batch with no decodable pair (see Batch.weight)
                total, terms = total * weight, terms * weight
            self.scaler.scale(total / acc).backward()
        return terms

    def optimizer_step(self) -> None:
        """Clip, step and advance the position; nothing here reads a value back from the device."""
        factor = lr_schedule(self.samples, self.global_batch, self.warmup_samples, self.total_samples)
        for g, lr in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = lr * factor
        self.scaler.unscale_(self.optimizer)
        clip = self.t.grad_clip if self.t.grad_clip > 0 else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(self.params, clip)
        update = True
        if not self.scaler.is_enabled():  # (the fp16 scaler skips non-finite steps by itself, on the device)
            if self.fused:  # the fused kernel skips the update where found_inf is 1: no readback
                found_inf = (~torch.isfinite(norm)).to(torch.float32)
                self.optimizer.grad_scale, self.optimizer.found_inf = None, found_inf
                self._skipped += found_inf
            elif not math.isfinite(float(norm)):  # no fused AdamW in this torch: a readback per step
                update = False
                self.skipped += 1
                self._skipped += 1
                warnings.warn(f"step {self.step + 1}: non-finite gradient, update skipped", stacklevel=2)
        if update:
            self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.samples += self.global_batch
        self._norm = norm.detach()

    def _reduce_mean(self, values: torch.Tensor) -> torch.Tensor:
        if self.dist.world_size > 1:
            values = values.clone()
            dist.all_reduce(values)
            values /= self.dist.world_size
        return values

    def _record(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        self.history.append(record)
        self.log.write(record)
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch", "samples"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def _validate(self) -> dict[str, float]:
        loader = self.loaders("val", self.epoch, self.dist.rank, self.dist.world_size, 0)
        metrics = validate(self.net, loader, self.cfg, self.device, self.amp)
        record = {"kind": "val", "step": self.step, "epoch": self.epoch, "samples": self.samples, **metrics}
        self._record(record)
        return metrics

    # -------------------------------------------------------------------------------------- run

    def run(self) -> TrainResult:
        ckpt = self._prepare_out_dir()
        self._build()
        self.log = JsonlLog(self.out / "log.jsonl", self.dist.main)
        resumed_from = None
        if ckpt is not None:
            self._restore(ckpt)
            self.log.truncate(int(ckpt.get("log_lines", self.log.lines)))
            resumed_from = self.step
        self._position = self.samples // self.rank_batch
        if self.dist.main:
            self.cfg.save(self.out / "config.yaml")
        self.tb = _tensorboard(self.out, self.t.tensorboard and self.dist.main,
                               purge_step=self.step + 1 if resumed_from is not None else None)
        result = TrainResult(self.out, self.step, self.total_steps, self.epoch, self.best_val_iou,
                             resumed_from=resumed_from)
        try:
            if resumed_from is None:
                result.baseline = self._validate()
                self._say(f"untrained: val IoU {result.baseline['val_iou']:.3f}, "
                          f"centre error {result.baseline['val_center_err']:.1f} px")
            self.reporter.progress("train", completed=self.step, total=self.total_steps, detail="")
            self._pace = None  # armed by the first step (`_check_pace`)
            while self.epoch < self.t.epochs:
                result.last_val = self._epoch()
        except KeyboardInterrupt:
            # Ctrl-C: keep the work up to the last optimizer step, then let the CLI exit 130.
            self.save()
            raise
        finally:
            self._close_train_iter()
            close = getattr(self.loaders, "close", None)
            if close is not None:
                close()
            if self.tb is not None:
                self.tb.close()
        if self.dist.world_size > 1:
            dist.barrier()  # every rank returns after rank 0 has written the last checkpoint
        result.step, result.epochs_done, result.best_val_iou = self.step, self.epoch, self.best_val_iou
        result.total_steps = self.total_steps
        result.model = self.model
        result.best_path = self.out / "best.pt" if (self.out / "best.pt").is_file() else None
        result.last_checkpoint = latest_checkpoint(self.ckpt_dir)
        result.history = self.history
        return result

    def _epoch(self) -> dict[str, float]:
        """Train to this epoch's last pair (`samples_per_epoch` pairs per epoch, counted over all ranks),
        then validate and checkpoint."""
        t = self.t
        end = min(self.total_samples, (self.epoch + 1) * t.samples_per_epoch)
        n_window, pairs_window, t_window = 0, 0, time.perf_counter()
        self._window.zero_()
        while self.samples < end:
            terms = None
            for micro in range(t.accumulate):
                batch = self._next_batch()
                step_terms = self.micro_step(batch, micro) / t.accumulate
                terms = step_terms if terms is None else terms + step_terms
                pairs_window += len(batch) * self.dist.world_size
            self.optimizer_step()
            self._check_pace()
            self._window += terms
            n_window += 1
            if self.step % t.log_every == 0 or self.samples >= end:
                self._log_window(n_window, pairs_window, time.perf_counter() - t_window)
                n_window, pairs_window, t_window = 0, 0, time.perf_counter()
            if self.step % t.checkpoint_every == 0:
                self.save()
            if self.on_step is not None:
                self.on_step(self.step, dict(zip(LOSS_TERMS, terms.unbind())))
        self.epoch = min(t.epochs, max(self.epoch + 1, self.samples // t.samples_per_epoch))
        metrics = self._validate()
        improved = metrics["val_iou"] > self.best_val_iou
        if improved:
            self.best_val_iou = metrics["val_iou"]
        self.save(force=True)  # the epoch-end checkpoint (replaces a same-step one: the position moved on)
        if improved and self.dist.main:
            save_checkpoint(self.out / "best.pt", self.model, self.cfg, step=self.step, epoch=self.epoch,
                            val=metrics)
        self._say(f"epoch {self.epoch}/{self.t.epochs} step {self.step}: val loss {metrics['val_loss']:.4f}, "
                  f"IoU {metrics['val_iou']:.3f}, centre error {metrics['val_center_err']:.1f} px"
                  + (" (best)" if improved else ""))
        return metrics

    def _check_pace(self) -> None:
        """On a CPU, once, from this run's first steps: warn when the run would take hours or days.

        configs/base.yaml is a GPU recipe: on a CPU it started a 9,375-step DINOv3 run at about 100 s a
        step (11 days) without a word. The estimate is this machine's own, so a fast CPU is not nagged."""
        if self.device.type != "cpu" or not self.dist.main or self._pace is False:
            return
        if self._pace is None:  # the first step of this process: it carried the loader's start, so not timed
            self._pace = (time.perf_counter(), self.step)
            return
        pace = self._pace
        if self.step - pace[1] < PACE_STEPS:
            return
        self._pace = False
        per_step = (time.perf_counter() - pace[0]) / (self.step - pace[1])
        left = per_step * (self.total_steps - self.step)
        if left > PACE_WARN_S:
            self.reporter.warning(
                f"at {per_step:.1f} s a step on this CPU the remaining {self.total_steps - self.step:,} steps take "
                f"about {_duration(left)} ({self.cfg.model.backbone}, batch {self.t.batch_size}): GPU recipes such "
                "as configs/base.yaml need a GPU; on a CPU train configs/cpu-small.yaml (minutes) or "
                "configs/lite0.yaml (the shipped tracker's recipe); Ctrl-C keeps what is done")

    def _log_window(self, n_window: int, pairs: int, elapsed: float) -> None:
        """The one readback of the loop: mean loss terms (over ranks), gradient norm, skipped steps."""
        if n_window == 0:
            return
        stats = self._reduce_mean(self._window / n_window)
        values = torch.cat([stats, self._norm.float().reshape(1), self._skipped.reshape(1)]).tolist()
        self._window.zero_()
        skipped = int(values[-1])
        if skipped > self.skipped:
            warnings.warn(f"step {self.step}: {skipped - self.skipped} step(s) with a non-finite gradient were "
                          f"skipped since the last log ({skipped} so far)", stacklevel=3)
            self.skipped = skipped
        heads_lr = next((g["lr"] for g in self.optimizer.param_groups if g["name"] == "heads"),
                        self.optimizer.param_groups[0]["lr"])
        record = {"kind": "train", "step": self.step, "epoch": self.epoch, "samples": self.samples,
                  **dict(zip(LOSS_TERMS, values[:len(LOSS_TERMS)])), "lr": heads_lr,
                  "grad_norm": values[len(LOSS_TERMS)], "pairs_per_s": pairs / max(elapsed, 1e-9)}
        self._record(record)
        self._update_bar(record)

    # ---------------------------------------------------------------------------------- display

    def _say(self, text: str) -> None:
        self.reporter.status(text)

    def _update_bar(self, record: dict[str, Any]) -> None:
        stats = (f"epoch {record['epoch'] + 1} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                 f"{record['pairs_per_s']:.1f} pairs/s")
        self.reporter.progress("train", completed=self.step, total=self.total_steps, detail=stats)


def _duration(seconds: float) -> str:
    """3.2 days, 5.1 hours, 12 minutes: the unit a person plans with."""
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.1f} days"
    if seconds >= 2 * 3600:
        return f"{seconds / 3600:.1f} hours"
    return f"{seconds / 60:.0f} minutes"


def _feature_cache_factory(cfg: Config, shards_dir: str | Path, device: torch.device, info: DistInfo,
                           reporter: Reporter = SILENT) -> LoaderFactory:
    """Build (rank 0, resumably) or reuse the feature cache, then read batches from it on every rank."""
    if info.main:
        model = build_model(cfg)
        summary = build_feature_cache(shards_dir, cfg, model, device, reporter)
        reporter.status(f"feature cache: {summary.directory} ({summary.train_items:,} training views, "
                        f"{summary.val_items:,} validation pairs" + (", reused)" if summary.built == 0 else ")"))
        del model
    if info.world_size > 1:
        dist.barrier()
    return cached_loader_factory(shards_dir, cfg, device)


def train(cfg: Config, shards_dir: str | Path, out_dir: str | Path, *, device: str | torch.device = "auto",
          resume: bool = True, loader_factory: LoaderFactory | None = None, on_step: StepHook | None = None,
          reporter: Reporter = SILENT) -> TrainResult:
    """Train the tracker on the shards in `shards_dir`, writing the run to `out_dir` (resumes by default).

    Under `torchrun` each process calls this; rank 0 writes the run folder. `loader_factory` replaces
    the shard stream (tests); `on_step(step, losses)` is called after every optimizer step. Rank 0 reports
    validation results and the progress task "train" (and "feature cache") through `reporter`.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    # Refuse bad input before anything touches the run folder (and before CUDA is touched: the AMP probe
    # runs in the Trainer, once this rank's device is set).
    get_spec(cfg.model.backbone)
    check_amp(cfg.train.amp, dev)
    if loader_factory is None:
        load_shard_index(shards_dir)
    info, dev = init_distributed(dev)
    try:
        if loader_factory is None and cfg.train.feature_cache:
            loader_factory = _feature_cache_factory(cfg, shards_dir, dev, info, reporter)
        if loader_factory is None and info.main and cfg.train.workers > available_cores():
            reporter.warning(f"train.workers is {cfg.train.workers} but this process has {available_cores()} CPU "
                             f"cores: reading shards with {available_cores()} workers")
        factory = loader_factory or default_loader_factory(shards_dir, cfg, dev)
        trainer = Trainer(cfg, out_dir, factory, dev, info, resume=resume, on_step=on_step, reporter=reporter)
        return trainer.run()
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()

"""The training loop: one code path from a laptop CPU to `torchrun` on GPUs.

* AdamW (no decay on norms/biases), linear warmup + cosine decay per optimizer step, gradient clipping,
  gradient accumulation, AMP (bf16 where supported, fp16 with a GradScaler otherwise), optional
  `torch.compile`; single process by default, DDP when launched by `torchrun` (NCCL on CUDA, gloo on CPU).
* Run folder: ``config.yaml`` (resolved), ``log.jsonl`` (one record per log step and per validation),
  ``tb/`` (TensorBoard scalars, when tensorboard is installed), ``checkpoints/step-*.pt`` (every
  `train.checkpoint_every` steps and at each epoch end, last `train.keep_last` kept) and ``best.pt``
  (highest validation IoU: what `track`, `eval` and `export` take).
* Exact resume: a checkpoint holds the trainable weights, config, optimizer, scheduler, scaler, step,
  position in the epoch, RNG states and the log length. The data stream replays an epoch from any batch
  (`build_loader(start_batch=...)`) and dropout is seeded from (seed, step, micro-batch, rank), so a
  killed-and-resumed run retraces the uninterrupted one. Ctrl-C saves a checkpoint before exiting.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from siamtool.config import Config
from siamtool.device import resolve_device
from siamtool.engine.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    step_checkpoint_path,
)
from siamtool.engine.labels import make_targets
from siamtool.engine.losses import tracking_loss
from siamtool.engine.validation import validate
from siamtool.errors import ConfigError
from siamtool.fileio import write_text_atomic
from siamtool.models.backbones import get_spec
from siamtool.models.siamese import SiamTracker, build_model

LoaderFactory = Callable[..., Iterable[Any]]
"""(split, epoch, rank, world_size, start_batch) -> iterable of `siamtool.data.stream.Batch`."""
StepHook = Callable[[int, dict[str, float]], None]


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


def batches_per_epoch(cfg: Config, world_size: int) -> int:
    """Batches one rank gets per epoch (the stream's rule, see `siamtool.data.stream`)."""
    return math.ceil(math.ceil(cfg.train.samples_per_epoch / world_size) / cfg.train.batch_size)


def steps_per_epoch(cfg: Config, world_size: int) -> int:
    return math.ceil(batches_per_epoch(cfg, world_size) / cfg.train.accumulate)


def lr_factor(step: int, warmup: int, total: int, floor: float = 0.01) -> float:
    """Linear warmup to 1 over `warmup` steps, then cosine decay to `floor` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """train.amp -> autocast dtype (None = full precision)."""
    if amp == "off":
        return None
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if amp == "bf16" and not bf16:
            raise ConfigError(f"train.amp=bf16: {torch.cuda.get_device_name(device)} has no bf16; use fp16 or auto")
        return torch.bfloat16 if amp == "bf16" or (amp == "auto" and bf16) else torch.float16
    if amp == "fp16":
        raise ConfigError("train.amp=fp16 needs CUDA; on CPU use bf16 or off")
    return torch.bfloat16 if amp == "bf16" else None


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


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """DDP when launched by torchrun (WORLD_SIZE > 1): NCCL on CUDA, gloo on CPU; else single process."""
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
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
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


def _config_difference(a: dict[str, Any], b: dict[str, Any], sections: tuple[str, ...]) -> str | None:
    for section in sections:
        for key in sorted(set(a.get(section, {})) | set(b.get(section, {}))):
            va, vb = a.get(section, {}).get(key), b.get(section, {}).get(key)
            if va != vb:
                return f"{section}.{key}: {va!r} in the run, {vb!r} now"
    return None


def default_loader_factory(shards_dir: str | Path, cfg: Config, device: torch.device) -> LoaderFactory:
    from siamtool.data.stream import build_loader

    def make(split: str, epoch: int, rank: int, world_size: int, start_batch: int = 0) -> Iterable[Any]:
        return build_loader(shards_dir, cfg, device, split=split, epoch=epoch, rank=rank, world_size=world_size,
                            start_batch=start_batch)

    return make


# ------------------------------------------------------------------------------------------ trainer


class Trainer:
    """One training run in `out_dir` (see the module docstring). `run()` returns a `TrainResult`."""

    def __init__(self, cfg: Config, out_dir: str | Path, loader_factory: LoaderFactory, device: torch.device,
                 dist_info: DistInfo, resume: bool = True, progress: bool = False,
                 on_step: StepHook | None = None, console=None) -> None:
        self.cfg = cfg
        self.t = cfg.train
        self.out = Path(out_dir)
        self.ckpt_dir = self.out / "checkpoints"
        self.loaders = loader_factory
        self.device = device
        self.dist = dist_info
        self.resume = resume
        self.progress = progress and dist_info.main
        self.on_step = on_step
        self.console = console
        self.amp = resolve_amp(self.t.amp, device)
        self.bpe = batches_per_epoch(cfg, dist_info.world_size)
        self.spe = steps_per_epoch(cfg, dist_info.world_size)
        self.total_steps = self.spe * self.t.epochs
        # Position: optimizer steps done, epoch, batches of that epoch consumed at the last step.
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.best_val_iou = -1.0
        self.last_saved_step = -1
        self.history: list[dict[str, Any]] = []
        self.skipped = 0
        self.bar = None
        self.tb = None

    # ----------------------------------------------------------------------------------- set-up

    def _build(self) -> None:
        _seed_everything(self.t.seed)
        self.model: SiamTracker = build_model(self.cfg).to(self.device).train()
        if not any(p.requires_grad for p in self.model.parameters()):
            raise ConfigError("nothing to train: every parameter is frozen")
        self.net: torch.nn.Module = self.model
        if self.dist.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.fwd: torch.nn.Module = torch.compile(self.net) if self.t.compile else self.net
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            self.model.param_groups(self.t.lr, self.t.weight_decay, self.t.backbone_lr_mult), lr=self.t.lr)
        warm, total = self.t.warmup_steps, self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, warm, total))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp == torch.float16)

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
        diff = _config_difference(ckpt["config"], self.cfg.to_dict(), ("model", "data"))
        if diff:
            raise ConfigError(f"{self.out} holds a run with a different config ({diff}); pass --no-resume to "
                              "start over there, or another --out")
        return ckpt

    def _restore(self, ckpt: dict[str, Any]) -> None:
        self.model.load_trainable_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.scaler.load_state_dict(ckpt["scaler"])
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        self.batch_in_epoch = int(ckpt["batch_in_epoch"])
        self.best_val_iou = float(ckpt.get("best_val_iou", -1.0))
        self.last_saved_step = self.step
        if ckpt.get("world_size", 1) != self.dist.world_size:
            warnings.warn(f"resuming a run of {ckpt.get('world_size')} process(es) with {self.dist.world_size}: "
                          "training continues, but the data order differs from an uninterrupted run", stacklevel=2)
        # If train.epochs changed, the schedule (built for the new length) continues from this step.
        _set_rng_state(ckpt["rng"])

    # ------------------------------------------------------------------------------------ state

    def _state(self) -> dict[str, Any]:
        return {
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch,
            "total_steps": self.total_steps, "world_size": self.dist.world_size,
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "best_val_iou": self.best_val_iou, "rng": _rng_state(),
            "log_lines": self.log.lines,
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

    def _forward_loss(self, batch: Any):
        ctx = torch.autocast(self.device.type, dtype=self.amp) if self.amp is not None else contextlib.nullcontext()
        with ctx:
            heat, box = self.fwd(batch.template, batch.search)
        targets = make_targets(batch.search_box, batch.positive, heat.shape[-2:], self.model.stride)
        return tracking_loss(heat.float(), box.float(), targets, self.model.stride, self.model.search_size, self.t)

    def _optimizer_step(self) -> float:
        self.scaler.unscale_(self.optimizer)
        clip = self.t.grad_clip if self.t.grad_clip > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(self.params, clip))
        if self.scaler.is_enabled() or math.isfinite(norm):
            self.scaler.step(self.optimizer)  # the fp16 scaler skips non-finite steps by itself
        else:
            self.skipped += 1
            warnings.warn(f"step {self.step + 1}: non-finite gradient, update skipped", stacklevel=2)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.step += 1
        return norm

    def _reduce_mean(self, values: dict[str, float]) -> dict[str, float]:
        if self.dist.world_size == 1:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return {k: v / self.dist.world_size for k, v in zip(keys, t.tolist())}

    def _record(self, record: dict[str, Any]) -> None:
        if not self.dist.main:
            return
        self.history.append(record)
        self.log.write(record)
        if self.tb is not None:
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record['kind']}/{k}", v, record["step"])

    def _validate(self) -> dict[str, float]:
        loader = self.loaders("val", self.epoch, self.dist.rank, self.dist.world_size, 0)
        metrics = validate(self.net, loader, self.cfg, self.device, self.amp)
        record = {"kind": "val", "step": self.step, "epoch": self.epoch, **metrics}
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
            with self._progress() as bar:
                self.bar = bar
                while self.epoch < self.t.epochs:
                    result.last_val = self._epoch()
                self.bar = None
        except KeyboardInterrupt:
            # Ctrl-C: keep the work up to the last optimizer step, then let the CLI exit 130.
            self.save()
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
        if self.dist.world_size > 1:
            dist.barrier()  # every rank returns after rank 0 has written the last checkpoint
        result.step, result.epochs_done, result.best_val_iou = self.step, self.epoch, self.best_val_iou
        result.model = self.model
        result.best_path = self.out / "best.pt" if (self.out / "best.pt").is_file() else None
        result.last_checkpoint = latest_checkpoint(self.ckpt_dir)
        result.history = self.history
        return result

    def _epoch(self) -> dict[str, float]:
        t, acc = self.t, self.t.accumulate
        loader = self.loaders("train", self.epoch, self.dist.rank, self.dist.world_size, self.batch_in_epoch)
        consumed = self.batch_in_epoch
        window: dict[str, float] = {}
        n_window, pairs_window, t_window = 0, 0, time.perf_counter()
        micro, group = 0, 0
        for batch in loader:
            if micro == 0:
                group = min(acc, self.bpe - consumed) if consumed < self.bpe else acc
            torch.manual_seed(_step_seed(t.seed, self.step, micro, self.dist.rank))
            boundary = micro + 1 >= group
            sync = contextlib.nullcontext() if boundary or self.dist.world_size == 1 else self.net.no_sync()
            with sync:
                loss = self._forward_loss(batch)
                self.scaler.scale(loss.total / group).backward()
            for k, v in loss.as_floats().items():
                window[k] = window.get(k, 0.0) + v / group
            pairs_window += len(batch) * self.dist.world_size
            consumed += 1
            micro += 1
            if not boundary:
                continue
            norm = self._optimizer_step()
            micro = 0
            self.batch_in_epoch = consumed
            n_window += 1
            if self.on_step is not None:
                self.on_step(self.step, {k: v / n_window for k, v in window.items()})
            if self.step % t.log_every == 0 or consumed >= self.bpe:
                elapsed = max(time.perf_counter() - t_window, 1e-9)
                stats = self._reduce_mean({k: v / n_window for k, v in window.items()})
                lr = self.optimizer.param_groups[0]["lr"]
                heads_lr = next((g["lr"] for g in self.optimizer.param_groups if g["name"] == "heads"), lr)
                record = {"kind": "train", "step": self.step, "epoch": self.epoch, **stats, "lr": heads_lr,
                          "grad_norm": norm, "pairs_per_s": pairs_window / elapsed}
                self._record(record)
                self._update_bar(record)
                window, n_window, pairs_window, t_window = {}, 0, 0, time.perf_counter()
            if self.step % t.checkpoint_every == 0:
                self.save()
        if micro:  # a loader that ended inside an accumulation group: apply what was accumulated
            self._optimizer_step()
            self.batch_in_epoch = consumed
        self.epoch += 1
        self.batch_in_epoch = 0
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

    # ---------------------------------------------------------------------------------- display

    def _say(self, text: str) -> None:
        if self.dist.main and self.console is not None:
            self.console.print(text, highlight=False)

    @contextlib.contextmanager
    def _progress(self):
        if not self.progress:
            yield None
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      TextColumn("{task.fields[stats]}"), console=self.console, transient=False) as bar:
            bar.add_task("train", total=self.total_steps, completed=self.step, stats="")
            yield bar

    def _update_bar(self, record: dict[str, Any]) -> None:
        if self.bar is None:
            return
        stats = (f"epoch {record['epoch'] + 1} loss {record['loss']:.4f} lr {record['lr']:.2e} "
                 f"{record['pairs_per_s']:.1f} pairs/s")
        self.bar.update(self.bar.task_ids[0], completed=self.step, stats=stats)


def _feature_cache_factory(cfg: Config, shards_dir: str | Path, device: torch.device, info: DistInfo,
                           console=None) -> LoaderFactory:
    """Build (rank 0, resumably) or reuse the feature cache, then read batches from it on every rank."""
    from siamtool.data.feature_cache import build_feature_cache, cached_loader_factory

    if info.main:
        model = build_model(cfg)
        with contextlib.ExitStack() as stack:
            advance = None
            if console is not None:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                bar = stack.enter_context(Progress(TextColumn("[bold]feature cache[/]"), BarColumn(),
                                                   MofNCompleteColumn(), TimeRemainingColumn(), console=console))
                task = bar.add_task("cache", total=None)
                advance = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
            summary = build_feature_cache(shards_dir, cfg, model, device, progress=advance,
                                          status=(lambda text: console.print(text)) if console else None)
        if console is not None:
            console.print(f"feature cache: {summary.directory} ({summary.train_items:,} training views, "
                          f"{summary.val_items:,} validation pairs"
                          + (", reused)" if summary.built == 0 else ")"), highlight=False)
        del model
    if info.world_size > 1:
        dist.barrier()
    return cached_loader_factory(shards_dir, cfg, device)


def train(cfg: Config, shards_dir: str | Path, out_dir: str | Path, *, device: str | torch.device = "auto",
          resume: bool = True, progress: bool = False, loader_factory: LoaderFactory | None = None,
          on_step: StepHook | None = None, console=None) -> TrainResult:
    """Train the tracker on the shards in `shards_dir`, writing the run to `out_dir` (resumes by default).

    Under `torchrun` each process calls this; rank 0 writes the run folder. `loader_factory` replaces
    the shard stream (tests); `on_step(step, losses)` is called after every optimizer step.
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    # Refuse bad input before anything touches the run folder.
    get_spec(cfg.model.backbone)
    resolve_amp(cfg.train.amp, dev)
    if loader_factory is None:
        from siamtool.data.shards import load_shard_index

        load_shard_index(shards_dir)
    info, dev = init_distributed(dev)
    try:
        if loader_factory is None and cfg.train.feature_cache:
            loader_factory = _feature_cache_factory(cfg, shards_dir, dev, info, console)
        factory = loader_factory or default_loader_factory(shards_dir, cfg, dev)
        trainer = Trainer(cfg, out_dir, factory, dev, info, resume=resume, progress=progress, on_step=on_step,
                          console=console)
        return trainer.run()
    finally:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()

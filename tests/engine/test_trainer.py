"""The training loop on tiny configs: it learns, it resumes exactly (also on another number of processes),
Ctrl-C saves, DDP (gloo) agrees, the step reads nothing back from the device, loader workers persist."""

from __future__ import annotations

import contextlib
import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from siamtool.engine import trainer as trainer_mod
from siamtool.engine.trainer import (
    DistInfo,
    init_distributed,
    lr_factor,
    lr_schedule,
    read_log,
    resolve_amp,
    steps_per_epoch,
    train,
)
from siamtool.errors import ConfigError
from siamtool.models import build_model
from siamtool.models.checkpoint import list_checkpoints, load_checkpoint, load_model
from tests.conftest import tiny_config

FAST = ("train.workers=0", "train.tensorboard=false", "train.val_samples=32", "train.warmup_steps=2",
        "train.lr=3e-3")


def _cfg(*extra: str):
    return tiny_config(*FAST, *extra)


def _train_losses(run) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_log(run / "log.jsonl") if r["kind"] == "train"}


def test_training_lowers_the_loss_and_beats_the_untrained_model(synthetic_shards, tmp_path):
    cfg = _cfg("train.epochs=2", "train.samples_per_epoch=192", "train.batch_size=16", "train.val_samples=64",
               "train.log_every=4")
    result = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    assert result.step == result.total_steps == 2 * 12
    losses = list(_train_losses(tmp_path / "run").values())
    assert losses[-1] < 0.9 * losses[0]
    base, last = result.baseline, result.last_val
    assert result.best_val_iou > base["val_iou"] + 0.03
    assert last["val_center_err"] < base["val_center_err"]
    assert last["val_loss"] < base["val_loss"]
    # best.pt is a complete tracker for track/eval/export.
    model, loaded_cfg = load_model(tmp_path / "run" / "best.pt")
    assert loaded_cfg == cfg and not model.training
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_killed_run_resumes_to_the_same_steps_and_the_same_loss_curve(synthetic_shards, tmp_path):
    extra = ("train.epochs=2", "train.samples_per_epoch=64", "train.batch_size=8", "train.log_every=1",
             "train.checkpoint_every=3", "train.keep_last=2", "model.dropout=0.2")
    cfg = _cfg(*extra)
    reference = train(cfg, synthetic_shards, tmp_path / "ref", device="cpu")
    assert reference.step == 16
    ref = _train_losses(tmp_path / "ref")

    def crash(step: int, _losses) -> None:
        if step == 11:  # killed between checkpoints (the last one is step 9, in epoch 2)
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        train(cfg, synthetic_shards, tmp_path / "run", device="cpu", on_step=crash)
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [8, 9]
    resumed = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    assert resumed.resumed_from == 9 and resumed.step == reference.step
    got = _train_losses(tmp_path / "run")
    records = [r["step"] for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert records == list(range(1, 17))  # continuous: no gap, no repeated step
    for step in ref:
        assert got[step] == pytest.approx(ref[step], rel=1e-4, abs=1e-5), step
    ref_model, _ = load_model(reference.last_checkpoint)
    run_model, _ = load_model(resumed.last_checkpoint)
    for (k, a), b in zip(ref_model.trainable_state_dict().items(), run_model.trainable_state_dict().values()):
        assert torch.allclose(a, b, atol=1e-5), k


def test_ctrl_c_saves_a_checkpoint_and_the_run_finishes_on_resume(synthetic_shards, tmp_path):
    cfg = _cfg("train.epochs=1", "train.samples_per_epoch=64", "train.batch_size=8", "train.checkpoint_every=100")

    def interrupt(step: int, _losses) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, synthetic_shards, tmp_path / "run", device="cpu", on_step=interrupt)
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "step-00000005.pt")
    assert ckpt["step"] == 5 and ckpt["batch_in_epoch"] == 5 and "optimizer" in ckpt and "rng" in ckpt
    assert not any(k.startswith("backbone.") for k in ckpt["model"])
    done = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    assert done.resumed_from == 5 and done.step == 8
    # A finished run resumes to "nothing to do"; --no-resume starts over.
    again = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    assert again.step == 8 and again.last_val is None
    fresh = train(cfg, synthetic_shards, tmp_path / "run", device="cpu", resume=False)
    assert fresh.resumed_from is None and fresh.baseline is not None


def test_resume_refuses_a_different_model(synthetic_shards, tmp_path):
    cfg = _cfg("train.epochs=1", "train.samples_per_epoch=16", "train.batch_size=8")
    train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    with pytest.raises(ConfigError, match="model.dim"):
        train(_cfg("train.epochs=1", "train.samples_per_epoch=16", "train.batch_size=8", "model.dim=16"),
              synthetic_shards, tmp_path / "run", device="cpu")


def test_gradient_accumulation_counts_optimizer_steps(synthetic_shards, tmp_path):
    cfg = _cfg("train.epochs=1", "train.samples_per_epoch=40", "train.batch_size=8", "train.accumulate=2",
               "train.log_every=1")
    assert steps_per_epoch(cfg, 1) == 3  # 5 batches -> groups of 2, 2, 1
    result = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    assert result.step == 3
    assert sorted(_train_losses(tmp_path / "run")) == [1, 2, 3]


def test_bf16_autocast_trains_on_cpu(synthetic_shards, tmp_path):
    cfg = _cfg("train.epochs=1", "train.samples_per_epoch=16", "train.batch_size=8", "train.amp=bf16",
               "train.log_every=1")
    result = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    losses = _train_losses(tmp_path / "run")
    assert result.step == 2 and all(math.isfinite(v) for v in losses.values())
    assert next(result.model.parameters()).dtype == torch.float32  # weights stay fp32 under autocast


def test_schedule_and_amp_resolution():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(10, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.01)
    # In pairs: the same curve whatever the pairs per step (1 GPU x 64 or 8 x 256).
    for samples in (0, 640, 3200, 6400):
        assert lr_schedule(samples, 64, 640, 6400) == pytest.approx(lr_factor(samples // 64, 10, 100))
    assert lr_schedule(3584, 2048, 640, 6400) == pytest.approx(lr_schedule(3584, 64, 640, 6400))
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        resolve_amp("fp16", cpu)


def test_the_learning_rate_rule_for_the_global_batch():
    one = tiny_config("train.batch_size=64", "train.lr=4e-4", "train.lr_batch=64", "train.warmup_steps=500")
    assert trainer_mod.lr_scale(one, 1) == 1.0 and trainer_mod.lr_scale(one, 8) == pytest.approx(math.sqrt(8))
    assert trainer_mod.warmup_samples(one) == 32_000  # pairs, on any number of GPUs
    big = tiny_config("train.batch_size=256", "train.lr_batch=64")
    assert trainer_mod.global_batch(big, 8) == 2048 and trainer_mod.lr_scale(big, 8) == pytest.approx(math.sqrt(32))
    default = tiny_config("train.batch_size=16", "train.accumulate=2")  # lr_batch: one process's batch
    assert trainer_mod.lr_scale(default, 1) == 1.0 and trainer_mod.lr_scale(default, 2) == pytest.approx(math.sqrt(2))


def _fake_v100(monkeypatch, capability=(7, 0)):
    """A CUDA device as torch reports it, without one: bf16 'supported' only by emulation below sm_80."""
    native = capability[0] >= 8
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())


def test_auto_amp_picks_fp16_where_bf16_is_only_emulated(monkeypatch):
    cuda = torch.device("cuda", 0)
    _fake_v100(monkeypatch, (7, 0))
    assert resolve_amp("auto", cuda) == torch.float16
    with pytest.raises(ConfigError, match="no native bf16"):
        resolve_amp("bf16", cuda)
    _fake_v100(monkeypatch, (9, 0))
    assert resolve_amp("auto", cuda) == torch.bfloat16


def test_amp_is_probed_after_the_rank_device_is_set(monkeypatch, tmp_path):
    """Probing before `set_device` opened a context on GPU 0 in every rank."""
    events: list[str] = []

    def fake_init(device):
        events.append("set_device")
        return DistInfo(), torch.device("cuda", 1)

    def fake_probe(device):
        events.append(f"probe {device}")
        return True

    class Stop(Exception):
        pass

    def stop(self):
        raise Stop

    monkeypatch.setattr(trainer_mod, "init_distributed", fake_init)
    monkeypatch.setattr(trainer_mod, "cuda_bf16_native", fake_probe)
    monkeypatch.setattr(trainer_mod.Trainer, "run", stop)
    with pytest.raises(Stop):
        train(_cfg(), tmp_path, tmp_path / "run", device=torch.device("cuda"), loader_factory=lambda *a: [])
    assert events == ["set_device", "probe cuda:1"]


def test_init_distributed_binds_the_rank_device(monkeypatch):
    calls: dict[str, object] = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.setdefault("set_device", d))
    monkeypatch.setattr(trainer_mod.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(trainer_mod.dist, "init_process_group", lambda **kw: calls.setdefault("init", kw))
    info, dev = init_distributed(torch.device("cuda"))
    assert dev == torch.device("cuda", 1) and calls["set_device"] == dev
    assert calls["init"] == {"backend": "nccl", "device_id": dev}
    assert (info.rank, info.world_size, info.owns_group) == (1, 2, True)


# ------------------------------------------------------------------------------ host-side behaviour


READBACK_OPS = ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero")


def _readback_steps(prof) -> dict[int, int]:
    """Readbacks per "step-N" profiler range: item()/float()/bool() called from Python or from an autograd
    backward node (prod's backward did one), not the ones an aten op makes inside its CPU kernel."""
    out: dict[int, int] = {}
    for e in prof.events():
        if e.name not in READBACK_OPS or (e.cpu_parent is not None and e.cpu_parent.name.startswith("aten::")):
            continue
        p = e.cpu_parent
        while p is not None and not p.name.startswith("step-"):
            p = p.cpu_parent
        if p is not None:
            out[int(p.name[5:])] = out.get(int(p.name[5:]), 0) + 1
    return out


def _memory_batches(cfg, n: int, seed: int = 0) -> list:
    from siamtool.data.stream import Batch

    g = torch.Generator().manual_seed(seed)
    t, s, b = cfg.data.template_size, cfg.data.search_size, cfg.train.batch_size
    out = []
    for _ in range(n):
        size = torch.rand(b, 2, generator=g) * s * 0.3 + 8
        box = torch.cat([torch.rand(b, 2, generator=g) * (s - size), size], 1)
        kind = (torch.rand(b, generator=g) > 0.7).to(torch.uint8)
        out.append(Batch(template=torch.rand(b, 3, t, t, generator=g) * 255,
                         search=torch.rand(b, 3, s, s, generator=g) * 255, search_box=box, positive=kind == 0,
                         kind=kind))
    return out


def test_the_step_reads_nothing_back_except_every_log_every_steps(tmp_path, monkeypatch):
    """On a GPU every value read back (loss terms, gradient norm, a data-dependent branch in a backward)
    makes the host wait for the device; only the log every `log_every` steps may. Counted with the
    profiler, one range per step, plus tolist()/numpy() (which no aten op records)."""
    from torch.profiler import ProfilerActivity, profile, record_function

    cfg = _cfg("train.epochs=1", "train.samples_per_epoch=96", "train.batch_size=8", "train.log_every=4",
               "train.checkpoint_every=1000", "train.accumulate=1")
    batches = _memory_batches(cfg, 12)
    val = _memory_batches(cfg, 2, seed=1)

    def factory(split, epoch, rank, world_size, start_batch=0):
        return val if split == "val" else iter(batches[start_batch:])

    listed = [0]
    for name in ("tolist", "numpy"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            listed[0] += 1
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    marks: list[tuple[int, int]] = []
    ranges: list = []

    def on_step(step, losses):
        assert set(losses) == {"loss", "loss_heat", "loss_l1", "loss_giou"}
        marks.append((step, listed[0]))
        if ranges:
            ranges.pop().__exit__(None, None, None)
        ranges.append(record_function(f"step-{step + 1}"))
        ranges[-1].__enter__()

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        result = train(cfg, tmp_path, tmp_path / "run", device="cpu", loader_factory=factory, on_step=on_step)
        if ranges:
            ranges.pop().__exit__(None, None, None)
    assert result.step == 12
    per_step = {s: n for s, n in _readback_steps(prof).items() if s <= 12}  # step-13: the final validation
    for (_, before), (step, after) in zip(marks, marks[1:]):
        per_step[step] = per_step.get(step, 0) + after - before  # a step: forward, backward, update, its log
    quiet = {s: n for s, n in per_step.items() if s % 4 != 0}
    assert set(quiet) == {2, 3, 5, 6, 7, 9, 10, 11} and all(n == 0 for n in quiet.values()), per_step
    assert all(per_step[s] > 0 for s in (4, 8)), per_step  # the log of steps 4 and 8 reads back
    losses = [r for r in read_log(tmp_path / "run" / "log.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in losses] == [4, 8, 12] and all(math.isfinite(r["loss"]) for r in losses)


def test_a_non_finite_gradient_skips_the_update_on_the_device(tmp_path, monkeypatch):
    cfg = _cfg("train.epochs=1", "train.samples_per_epoch=32", "train.batch_size=8", "train.log_every=4")
    batches = _memory_batches(cfg, 4)
    batches[1].search[0, 0, 0, 0] = float("nan")
    val = _memory_batches(cfg, 1, seed=1)
    models: list = []
    weights: list[dict] = []
    real_build = trainer_mod.Trainer._build

    def build(self):
        real_build(self)
        models.append(self.model)

    def factory(split, epoch, rank, world_size, start_batch=0):
        return val if split == "val" else iter(batches[start_batch:])

    def on_step(step, losses):
        weights.append(models[0].trainable_state_dict())

    monkeypatch.setattr(trainer_mod.Trainer, "_build", build)
    with pytest.warns(UserWarning, match="non-finite gradient"):
        train(cfg, tmp_path, tmp_path / "run", device="cpu", loader_factory=factory, on_step=on_step)
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])  # step 2 skipped
    assert any(not torch.equal(weights[1][k], weights[2][k]) for k in weights[1])  # step 3 trained
    assert all(torch.isfinite(w).all() for w in weights[-1].values())


# ----------------------------------------------------------------------------------- DDP (gloo)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, shards: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    # A torchvision backbone: the spawned processes need not import transformers (start-up time).
    cfg = tiny_config(*FAST, "train.epochs=1", "train.samples_per_epoch=64", "train.batch_size=8",
                      "train.log_every=1", backbone="resnet18")
    result = train(cfg, shards, out, device="cpu")
    torch.save({"step": result.step, "total": result.total_steps, "weights": result.model.trainable_state_dict(),
                "last": str(result.last_checkpoint)}, f"{out}/rank{rank}.pt")


def test_ddp_two_processes_on_cpu_with_gloo(synthetic_shards, tmp_path):
    out = tmp_path / "ddp"
    mp.spawn(_ddp_worker, args=(2, _free_port(), str(synthetic_shards), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(out / f"rank{i}.pt") for i in (0, 1))
    # 64 samples over 2 ranks of batches of 8 -> 4 steps each, in lockstep.
    assert r0["step"] == r1["step"] == r0["total"] == math.ceil(math.ceil(64 / 2) / 8) == 4
    # DDP averaged the gradients: both replicas hold the same weights, and they moved from the init.
    init = build_model(tiny_config(backbone="resnet18")).trainable_state_dict()
    for k, w0 in r0["weights"].items():
        assert torch.allclose(w0, r1["weights"][k], atol=1e-6), k
    assert any(not torch.equal(w, init[k]) for k, w in r0["weights"].items())
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [4]
    saved = load_checkpoint(r1["last"])["model"]
    assert all(torch.equal(saved[k], w) for k, w in r0["weights"].items())
    log = read_log(out / "log.jsonl")
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]  # rank 0 writes the log once


def _resume_worker(rank: int, world: int, port: int, shards: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    with pytest.warns(UserWarning, match="resuming a run of 1 process"):
        result = train(_resume_cfg(), shards, out, device="cpu")
    torch.save({"step": result.step, "total": result.total_steps}, f"{out}/rank{rank}.pt")


def _resume_cfg():
    return tiny_config(*FAST, "train.epochs=2", "train.samples_per_epoch=64", "train.batch_size=8",
                       "train.log_every=1", "train.warmup_steps=3", backbone="resnet18")


def test_resume_on_two_processes_keeps_the_learning_rate_curve(synthetic_shards, tmp_path):
    """1 epoch on 1 process, then resumed under 2 (gloo): the schedule is a function of the pairs seen, so
    the second epoch follows the uninterrupted curve (x sqrt(2) for the doubled global batch) and ends at
    the same pair count, instead of "steps 24/16" at the floor learning rate."""
    cfg = _resume_cfg()
    ref = train(cfg, synthetic_shards, tmp_path / "ref", device="cpu")
    assert ref.step == ref.total_steps == 16

    def stop(step, _losses):
        if step == 8:  # the last step of epoch 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, synthetic_shards, tmp_path / "run", device="cpu", on_step=stop)
    out = tmp_path / "run"
    mp.spawn(_resume_worker, args=(2, _free_port(), str(synthetic_shards), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(out / f"rank{i}.pt") for i in (0, 1))
    # 64 pairs left, 16 per step: 4 more steps, the same on both ranks.
    assert r0["step"] == r1["step"] == r0["total"] == 12

    def curve(run, batch):
        # lr of each logged step, keyed by the pairs seen before it, in units of the run's peak lr.
        return {r["samples"] - batch: r["lr"] for r in read_log(run / "log.jsonl") if r["kind"] == "train"}

    reference = curve(tmp_path / "ref", 8)
    resumed = {s: lr for s, lr in curve(out, 16).items() if s >= 64}
    assert sorted(resumed) == [64, 80, 96, 112]
    for s in (64, 80, 96, 112):
        assert resumed[s] == pytest.approx(reference[s] * math.sqrt(2), rel=1e-6), s
    log = read_log(out / "log.jsonl")
    first = {r["samples"] - 8: r["lr"] for r in log if r["kind"] == "train" and r["step"] <= 8}
    assert first == pytest.approx({s: reference[s] for s in range(0, 64, 8)})  # epoch 1 is the reference
    assert [r["step"] for r in log if r["kind"] == "train"] == list(range(1, 13))
    assert [r["samples"] for r in log if r["kind"] == "val"][-1] == 128


class _RecordingDDP(torch.nn.parallel.DistributedDataParallel):
    options: dict = {}

    def __init__(self, module, **kwargs):
        _RecordingDDP.options = dict(kwargs)
        super().__init__(module, **kwargs)


def _unfrozen_worker(rank: int, world: int, port: int, shards: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.nn.parallel.DistributedDataParallel = _RecordingDDP
    cfg = tiny_config(*FAST, "train.epochs=1", "train.samples_per_epoch=48", "train.batch_size=8",
                      "train.log_every=1", "model.freeze_backbone=false")
    default = trainer_mod.default_loader_factory(shards, cfg, torch.device("cpu"))

    def factory(split, epoch, rank_, world_size, start_batch=0):
        loader = default(split, epoch, rank_, world_size, start_batch)
        if split == "val" or rank != 1:
            return loader

        def with_a_dead_batch():  # rank 1's 2nd batch had no decodable pair: a zero-weight placeholder
            for i, b in enumerate(loader):
                if i == 1:
                    b.weight = 0.0
                yield b

        return with_a_dead_batch()

    factory.close = default.close  # type: ignore[attr-defined]
    result = train(cfg, shards, out, device="cpu", loader_factory=factory)
    torch.save({"step": result.step, "weights": result.model.trainable_state_dict(),
                "ddp": {k: v for k, v in _RecordingDDP.options.items() if k != "device_ids"}}, f"{out}/rank{rank}.pt")


def test_ddp_trains_an_unfrozen_dinov3_and_survives_a_dead_batch(synthetic_shards, tmp_path):
    """`freeze_backbone: false` with DINOv3 stopped DDP at iteration 2 (its mask token is trainable but
    never used); a rank whose batch has no decodable pair trains a zero-weight placeholder in lockstep."""
    out = tmp_path / "ddp"
    mp.spawn(_unfrozen_worker, args=(2, _free_port(), str(synthetic_shards), str(out)), nprocs=2, join=True)
    r0, r1 = (torch.load(out / f"rank{i}.pt") for i in (0, 1))
    assert r0["step"] == r1["step"] == 3
    assert any(k.startswith("backbone.") for k in r0["weights"])  # the backbone trained
    assert not any("mask_token" in k for k in r0["weights"])  # ...but not its unused mask token
    for k, w0 in r0["weights"].items():
        assert torch.allclose(w0, r1["weights"][k], atol=1e-6), k
    assert r0["ddp"] == {"gradient_as_bucket_view": True, **trainer_mod._NO_BUFFER_SYNC}
    assert list(trainer_mod._NO_BUFFER_SYNC.values()) == [False]


def test_loader_workers_persist_across_epochs(synthetic_shards, tmp_path, monkeypatch):
    """Training workers start once for the whole run (the stream is endless) and validation workers once
    (persistent), instead of a fork of both sets per epoch."""
    from siamtool.data import stream

    pids = tmp_path / "pids"
    pids.mkdir()
    real_iter = stream.PairStream.__iter__

    def recording_iter(self):
        (pids / f"{self.split}-{os.getpid()}").touch()
        return real_iter(self)

    monkeypatch.setattr(stream.PairStream, "__iter__", recording_iter)
    cfg = _cfg("train.epochs=3", "train.samples_per_epoch=32", "train.batch_size=8", "train.workers=2",
               "train.val_samples=16", "train.shuffle_buffer=32")
    result = train(cfg, synthetic_shards, tmp_path / "run", device="cpu")
    assert result.step == 12 and result.epochs_done == 3
    seen = sorted(p.name.split("-")[0] for p in pids.iterdir())
    assert seen == ["train", "train", "val", "val"]  # 3 epochs + 4 validations, one set of workers each


def test_feature_cache_training_follows_the_loader_contract(synthetic_shards, tmp_path):
    """The cached-feature loader under the trainer's contract: `start_batch` counts from the start of
    training, batches are full and the stream does not end at an epoch."""
    import itertools
    import shutil

    from siamtool.data.feature_cache import cached_loader_factory

    shards = tmp_path / "shards"
    shutil.copytree(synthetic_shards, shards)
    cfg = _cfg("train.epochs=2", "train.samples_per_epoch=40", "train.batch_size=8", "train.log_every=1",
               "train.feature_cache=true", "train.cache_views=2")
    result = train(cfg, shards, tmp_path / "run", device="cpu")
    assert result.step == result.total_steps == 10 and result.epochs_done == 2
    make = cached_loader_factory(shards, cfg, torch.device("cpu"))
    # 30 batches = 240 pairs, past the 192 cached views, in the calls a trainer makes (one per epoch).
    first = [b for start in range(0, 30, 5) for b in make("train", start // 5, 0, 1, start)]
    assert [len(b) for b in first] == [8] * 30
    assert len(make("train", 1, 0, 1, 7)) == 3  # from batch 7 to the end of epoch 1 (batch 10)
    resumed = list(itertools.islice(iter(make("train", 1, 0, 1, 7)), 3))
    assert all(torch.equal(a.search, b.search) for a, b in zip(first[7:10], resumed))
    ranks = [list(make("train", 0, r, 2, 0)) for r in range(2)]
    assert [len(b) for rank in ranks for b in rank] == [8] * 6  # ceil(40 / 16) batches on each rank

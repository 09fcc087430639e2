"""The training loop on tiny configs: it learns, it resumes exactly, Ctrl-C saves, DDP (gloo) agrees."""

from __future__ import annotations

import math
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from siamtool.engine.checkpoint import list_checkpoints, load_checkpoint, load_model
from siamtool.engine.trainer import lr_factor, read_log, resolve_amp, steps_per_epoch, train
from siamtool.errors import ConfigError
from siamtool.models import build_model
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
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) is None and resolve_amp("off", cpu) is None
    assert resolve_amp("bf16", cpu) == torch.bfloat16
    with pytest.raises(ConfigError, match="fp16 needs CUDA"):
        resolve_amp("fp16", cpu)


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

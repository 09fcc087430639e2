"""Training speed: what a step costs the CPU, the host and the main process, and what a GPU consumes.

    python benchmarks/train_speed.py                          # sections 1-4 (1c uses /tmp/shards if present)
    python benchmarks/train_speed.py --compile                # + the compiled step in section 3 (minutes)
    python benchmarks/train_speed.py --gpu-run --shards DIR --device cuda   # section 5 only (gpu_check.sh)

Reports, in one run so the ratios are fair:
  1. CPU, configs/cpu-small.yaml (EfficientNet-Lite0, batch 16, 128/256 px crops):
     a. the frozen backbone's forward on one batch (template + search): the floor of any step;
     b. a full training step on an in-memory batch: steps/s, pairs/s and the ratio to (a);
     c. the same step fed by the shard stream (`build_loader`): ratio to (b) is the loader's share;
     d. the step of `train.feature_cache`: the same neck/heads forward + backward + AdamW on stored
        backbone feature maps (float16 on disk), no backbone forward;
     e. the cache's one-off backbone forward (onnxruntime), and (d) with it spread over the times each
        view is seen.
  2. FLOPs of one training pair for configs/base.yaml (DINOv3 ViT-S/16, 128/256 px, neck width 256),
     counted by torch's FlopCounterMode on the real architecture, and the pairs/s an H100 consumes at
     30-40 % of its 989 TFLOP/s dense bf16; the GPU step time this leaves at 64, 256 and 512 pairs.
  3. Host time of one training step of the base.yaml architecture: the main thread's work (Python,
     dispatcher, autograd, optimizer), which on a GPU must stay under the GPU step time of (2). Measured
     on the CPU with the base.yaml op graph at width 48 and token-size inputs (16 px template, 32 px
     search, 2 pairs: the same ops as at full size, nearly no arithmetic or weight traffic), with aten ops
     and device readbacks counted per step:
     before (the old loop: per-step loss and gradient-norm readbacks, LambdaLR, default AdamW), after
     (`Trainer.micro_step` + `Trainer.optimizer_step`, eager), after with torch.compile (`--compile`).
  4. Main-process receive time per batch from two DataLoader workers: the old 10-tensor batch dict
     against the packed batch (one uint8 + one float32 tensor), JPEG sizes of real shards.
  5. `--gpu-run`: the real Trainer step on streamed shards, base.yaml's shape with a random ViT-S/16,
     AMP and compile as configured, for --steps steps after --warmup: pairs/s per GPU, and (CUDA) the
     host synchronisations per step counted with torch.cuda.set_sync_debug_mode.
Each timing is the best of --repeats alternating rounds (other work on a shared machine only ever
slows a run; alternating gives every variant the same chances).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import multiprocessing
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from siamtool.config import load_config
from siamtool.engine.labels import make_targets
from siamtool.engine.losses import tracking_loss
from siamtool.models.siamese import build_model

REPO = Path(__file__).resolve().parents[1]
H100_BF16_DENSE = 989e12
UTILISATION = (0.30, 0.40)


def _batch(cfg, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t, s = cfg.data.template_size, cfg.data.search_size
    z = torch.rand(n, 3, t, t, generator=g) * 255
    x = torch.rand(n, 3, s, s, generator=g) * 255
    size = torch.rand(n, 2, generator=g) * s * 0.2 + s * 0.15
    xy = torch.rand(n, 2, generator=g) * (s - size)
    return z, x, torch.cat([xy, size], 1), torch.rand(n, generator=g) > 0.25


def _best_interleaved(fns: dict[str, object], steps: int, repeats: int) -> dict[str, float]:
    """Best mean seconds per call of each function, measured in alternating rounds.

    Alternating keeps the ratios fair on a shared machine: every function sees the same mix of quiet
    and busy moments, and the best round is the one least disturbed by other work.
    """
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            best[name] = min(best[name], (time.perf_counter() - t0) / steps)
    return best


# ---------------------------------------------------------------------------------------- 1. CPU


def cpu_speed(cfg, steps: int, repeats: int, shards: Path | None) -> None:
    model = build_model(cfg).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(model.param_groups(cfg.train.lr, cfg.train.weight_decay, 0.1), lr=cfg.train.lr)
    bs = cfg.train.batch_size
    z, x, box, pos = _batch(cfg, bs)

    def backbone_only():
        with torch.no_grad():
            model.backbone(z)
            model.backbone(x)

    def step(z=z, x=x, box=box, pos=pos):
        heat, raw = model(z, x)
        loss = tracking_loss(heat, raw, make_targets(box, pos, heat.shape[-2:], model.stride), model.stride,
                             model.search_size, cfg.train)
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()

    with torch.no_grad():  # train.feature_cache: the backbone's maps, computed once per view and stored
        zf, xf = model.backbone(z).half().float(), model.backbone(x).half().float()

    def cached_step():
        step(zf, xf)

    from siamtool.data.feature_cache import BackboneRunner

    runner = BackboneRunner(model.backbone, torch.device("cpu"))  # what builds the cache: onnxruntime on CPU

    def cache_build():
        runner(z)
        runner(x)

    times = _best_interleaved({"backbone": backbone_only, "step": step, "cached": cached_step,
                               "build": cache_build}, steps, repeats)
    runner.close()
    t_bb, t_step, t_cached, t_build = times["backbone"], times["step"], times["cached"], times["build"]
    print(f"1. CPU, {cfg.model.backbone}, batch {bs}, {cfg.data.template_size}/{cfg.data.search_size} px, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"   a. frozen backbone forward        {t_bb * 1e3:8.1f} ms/batch   {bs / t_bb:7.1f} pairs/s   (baseline)")
    print(f"   b. training step, in-memory batch {t_step * 1e3:8.1f} ms/step    {bs / t_step:7.1f} pairs/s   "
          f"{1 / t_step:.2f} steps/s   x{t_step / t_bb:.2f} of (a)")
    print(f"   d. step on cached features        {t_cached * 1e3:8.1f} ms/step    {bs / t_cached:7.1f} pairs/s   "
          f"x{t_step / t_cached:.1f} the pairs/s of (b)")
    # The cache is paid once per view: a recipe that shows each view k times pays 1/k of the cache's
    # backbone forward per pair presentation (the rendering of the view is the loader's cost either way).
    print(f"   e. cache build, backbone only     {t_build * 1e3:8.1f} ms/batch   {bs / t_build:7.1f} pairs/s   "
          f"(onnxruntime: x{t_bb / t_build:.1f} the speed of (a))")
    for k in (1, 3, 5):
        t_eff = t_cached + t_build / k
        print(f"      each view seen {k}x, build included {t_eff * 1e3:6.1f} ms/step  {bs / t_eff:7.1f} pairs/s   "
              f"x{t_step / t_eff:.1f} the pairs/s of (b)")
    if shards is None or not (shards / "index.json").is_file():
        print("   c. streamed: skipped (no --shards; run `siamtool prepare` first)")
        return
    from siamtool.data.stream import build_loader

    def streamed() -> float:
        it = iter(build_loader(shards, cfg, "cpu", split="train"))
        try:
            b = next(it)  # worker start-up is not part of the steady state
            step(b.template, b.search, b.search_box, b.positive)
            t0 = time.perf_counter()
            for _ in range(steps):
                b = next(it)
                step(b.template, b.search, b.search_box, b.positive)
            return (time.perf_counter() - t0) / steps
        finally:
            it.close()

    t_stream = min(streamed() for _ in range(repeats))
    print(f"   c. training step, streamed        {t_stream * 1e3:8.1f} ms/step    {bs / t_stream:7.1f} pairs/s   "
          f"{1 / t_stream:.2f} steps/s   x{t_stream / t_step:.2f} of (b), {cfg.train.workers} loader worker(s)")


# ---------------------------------------------------------------------------------------- 2. FLOPs


def flops_per_pair(cfg) -> tuple[float, float, float]:
    """(backbone forward, neck+heads forward, training total) FLOPs for one template/search pair."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg.model.pretrained = False  # the architecture, randomly initialised: FLOPs do not depend on weights
    model = build_model(cfg)
    body = getattr(model.backbone.body, "model", None)
    if body is not None and hasattr(body, "config"):
        body.config._attn_implementation = "eager"  # plain matmuls, so every attention FLOP is counted
    z = torch.rand(1, 3, cfg.data.template_size, cfg.data.template_size) * 255
    x = torch.rand(1, 3, cfg.data.search_size, cfg.data.search_size) * 255
    with torch.no_grad():
        with FlopCounterMode(display=False) as fc:
            fz, fx = model.backbone(z), model.backbone(x)
        backbone = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            zf = model.norm_kv(model.proj(fz).flatten(2).transpose(1, 2))
            s = model.proj(fx)
            b, d, h, w = s.shape
            a = model.attn(model.norm_q(s.flatten(2).transpose(1, 2)), zf).transpose(1, 2).reshape(b, d, h, w)
            f = model.fuse(torch.cat([s + model.attn_conv(a), s * a], 1))
            model.cls_head(f), model.box_head(f)
        heads = fc.get_total_flops()
    # Frozen backbone: forward only (no activation gradients: its input needs none). Heads: forward +
    # backward = 3x forward.
    return backbone, heads, backbone + 3 * heads


# ---------------------------------------------------------------------------------------- 3. host time


def _tiny_inputs(cfg) -> list:
    from siamtool.data.stream import Batch

    z, x, box, pos = _batch(cfg, cfg.train.batch_size)
    kind = (~pos).to(torch.uint8)
    return [Batch(template=z, search=x, search_box=box, positive=pos, kind=kind)]


def _legacy_step_fn(cfg, model):
    """The training step before #15: loss terms and gradient norm read back every step, LambdaLR, default
    (non-fused) AdamW, `GradScaler` disabled; what `Trainer._epoch` did per batch."""
    from siamtool.engine.trainer import lr_factor

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(model.param_groups(cfg.train.lr, cfg.train.weight_decay, 0.1), lr=cfg.train.lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, 500, 10_000))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    window: dict[str, float] = {}

    def step(batch) -> None:
        torch.manual_seed(0)
        heat, box = model(batch.template, batch.search)
        targets = make_targets(batch.search_box, batch.positive, heat.shape[-2:], model.stride)
        loss = tracking_loss(heat.float(), box.float(), targets, model.stride, model.search_size, cfg.train)
        scaler.scale(loss.total).backward()
        for k, v in loss.as_floats().items():
            window[k] = window.get(k, 0.0) + v
        scaler.unscale_(opt)
        norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip))
        if math.isfinite(norm):
            scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        sched.step()

    return step


def _trainer_step_fn(cfg, compile_: bool):
    from siamtool.engine.trainer import DistInfo, Trainer

    cfg.train.compile = compile_
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="siamtool-bench-"), lambda *a: [], torch.device("cpu"),
                      DistInfo())
    trainer._build()

    def step(batch) -> None:
        trainer.micro_step(batch, 0)
        trainer.optimizer_step()

    return trainer.model, step


NARROW_VIT = {"hidden_size": 48, "intermediate_size": 192}
"""Section 3 runs the ViT-S/16 op graph (12 blocks, 6 heads, 4 register tokens) at width 48: at width 384
the CPU spends ~40 ms per step just streaming the 21M weights from memory, which on a GPU is device time,
not host time. The number and kinds of ops, which is what the host pays for, do not depend on the width."""


def host_time(gcfg_path: Path, repeats: int, steps: int, compile_: bool, gpu_step_ms: dict[int, tuple[float, float]]
              ) -> None:
    from siamtool.models import backbones

    backbones._VIT_ARCH["dinov3_vits16"] = {**backbones._VIT_ARCH["dinov3_vits16"], **NARROW_VIT}
    overrides = ["model.pretrained=false", "data.template_size=16", "data.search_size=32", "train.batch_size=2",
                 "model.dropout=0.1", "train.amp='off'", "model.dim=48", "model.heads=8"]
    variants: dict[str, object] = {}
    counts: dict[str, tuple[float, float]] = {}
    batch = _tiny_inputs(load_config(gcfg_path, overrides))[0]
    cfg = load_config(gcfg_path, overrides)
    legacy_model = build_model(cfg).train()
    variants["before: eager, readbacks every step"] = _legacy_step_fn(cfg, legacy_model)
    _, variants["after: eager (Trainer)"] = _trainer_step_fn(load_config(gcfg_path, overrides), False)
    kernels = 0
    if compile_:
        from torch._inductor import metrics

        t0 = time.perf_counter()
        k0 = metrics.generated_kernel_count
        _, fn = _trainer_step_fn(load_config(gcfg_path, overrides), True)
        for _ in range(3):  # compile (forward, loss, backward), then settle
            fn(batch)
        kernels = metrics.generated_kernel_count - k0
        print(f"   (torch.compile of the step: {time.perf_counter() - t0:.0f} s, {kernels} generated kernels)",
              flush=True)
        variants["after: torch.compile (Trainer)"] = fn
    for name, fn in variants.items():
        fn(batch)
        ops, readbacks = _profile_counts(fn, batch)
        counts[name] = (ops + (kernels if "compile" in name else 0), readbacks)
    times = _best_interleaved({k: (lambda f=f: f(batch)) for k, f in variants.items()}, steps, repeats)
    print(f"3. Host time per training step: the {cfg.model.backbone} op graph (12 blocks, 6 heads) and the neck at "
          f"width 48, 16/32 px inputs, 2 pairs, on the CPU ({torch.get_num_threads()} thread(s))")
    print("| step | ops/step (compiled: + generated kernels) | readbacks/step | host ms/step | ratio |\n"
          "| --- | --- | --- | --- | --- |")
    base = None
    for name, t in times.items():
        base = base or t
        ops, rb = counts[name]
        print(f"| {name} | {ops:,.0f} | {rb:.0f} | {t * 1e3:.1f} | {base / t:.2f} |")
    print("   GPU step time of an H100 at 30-40 % (section 2): "
          + ", ".join(f"{b} pairs {lo:.1f}-{hi:.1f} ms" for b, (lo, hi) in gpu_step_ms.items()))


def _profile_counts(fn, batch) -> tuple[int, int]:
    """(aten ops, readbacks) of one step, from the profiler, counting only ops called from Python or from
    compiled code (not the ops an aten op runs inside itself, e.g. the CPU fallback of a foreach op):
    the dispatches the host pays for. A readback is an item()/float()/bool() (aten::item, is_nonzero or
    _local_scalar_dense); on a GPU each one waits for the device."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn(batch)
    top = [e for e in prof.events() if e.name.startswith("aten::")
           and (e.cpu_parent is None or not e.cpu_parent.name.startswith("aten::"))]
    return len(top), sum(1 for e in top if e.name in ("aten::item", "aten::_local_scalar_dense", "aten::is_nonzero"))


# ---------------------------------------------------------------------------------------- 4. receive


class _FakeBatches(torch.utils.data.IterableDataset):
    """Batches shaped like the stream's in CUDA mode (JPEG bytes + plan), old dict or packed format."""

    def __init__(self, packed: bool, batch: int, z_bytes: int, x_bytes: int) -> None:
        super().__init__()
        self.packed, self.batch, self.z_bytes, self.x_bytes = packed, batch, z_bytes, x_bytes

    def __iter__(self):
        from siamtool.data.stream import PAYLOAD_BYTES, pack_batch

        rng = np.random.default_rng(0)
        n = self.batch
        zs = [rng.integers(0, 256, self.z_bytes, dtype=np.uint8) for _ in range(n)]
        xs = [rng.integers(0, 256, self.x_bytes, dtype=np.uint8) for _ in range(n)]
        plan = {k: rng.random((n, w)).astype(np.float32) for k, w in
                (("template_windows", 3), ("search_windows", 3), ("search_box", 4), ("template_photo", 5),
                 ("search_photo", 5))}
        while True:
            if self.packed:
                refs = np.zeros((n, 2), np.int64)
                lengths = np.array([[len(z), len(x)] for z, x in zip(zs, xs)], np.int64)
                data = pack_batch(PAYLOAD_BYTES, 0, refs, np.zeros(n, np.uint8),
                                  [a for zx in zip(zs, xs) for a in zx], lengths=lengths)
                meta = torch.from_numpy(np.concatenate([v.reshape(-1) for v in plan.values()]))
                yield data, meta
            else:  # the dict PairStream._finish_in_worker shipped before #15: 10 tensors + 2 lists
                yield {"kind": torch.zeros(n, dtype=torch.uint8), "where": [f"shard row {i}" for i in range(n)],
                       "plan": {k: torch.from_numpy(v.copy()) for k, v in plan.items()}, "corrupt": [],
                       "template_jpeg": _old_pack(zs), "search_jpeg": _old_pack(xs)}


def _old_pack(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(a) for a in arrays])
    return torch.from_numpy(np.concatenate(arrays)), torch.from_numpy(offsets)


def _receive_ms(packed: bool, batch: int, z_bytes: int, x_bytes: int, rounds: int = 4) -> float:
    """Median main-thread CPU ms of `next()` while the workers have batches ready (the queue refilled by a
    pause before each round): the cost of receiving, not of making, a batch. CPU time, not wall time, so
    that other work on a shared machine does not count."""
    loader = torch.utils.data.DataLoader(_FakeBatches(packed, batch, z_bytes, x_bytes), batch_size=None,
                                         num_workers=2, prefetch_factor=4, multiprocessing_context="fork")
    it = iter(loader)
    times: list[float] = []
    try:
        for _ in range(rounds):
            time.sleep(1.5)
            for _ in range(6):  # < 2 workers x prefetch 4: every one is already waiting in the queue
                t0 = time.thread_time()
                next(it)
                times.append(time.thread_time() - t0)
    finally:
        del it
    return statistics.median(times) * 1e3


def receive_time(shards: Path | None, repeats: int) -> None:
    z_bytes, x_bytes = 5_500, 23_000  # typical base.yaml crops (128 px template, 384 px stored search)
    if shards is not None and (shards / "index.json").is_file():
        from siamtool.data.shards import ShardReader, load_shard_index

        with ShardReader(load_shard_index(shards).shards[0][0]) as r:
            pairs = r.read_many(range(min(64, len(r))))
        z_bytes = int(np.mean([len(p.template_jpeg) for p in pairs]))
        x_bytes = int(np.mean([len(p.search_jpeg) for p in pairs]))
    print(f"4. Main-process receive time per batch (CPU time of the main thread in next()), 2 workers, JPEG crops "
          f"of {z_bytes:,} + {x_bytes:,} bytes (median of the batches already waiting; best of --repeats)")
    print("| batch | before: 10-tensor dict (ms) | after: 2 packed tensors (ms) | ratio |\n| --- | --- | --- | --- |")
    for batch in (64, 256):
        old, new = float("inf"), float("inf")
        for _ in range(repeats):
            old = min(old, _receive_ms(False, batch, z_bytes, x_bytes))
            new = min(new, _receive_ms(True, batch, z_bytes, x_bytes))
        print(f"| {batch} | {old:.2f} | {new:.2f} | {old / new:.1f} |", flush=True)


# ---------------------------------------------------------------------------------------- 5. GPU run


def gpu_run(args) -> None:
    """The real Trainer step on streamed shards for a fixed number of steps: pairs/s per GPU."""
    from siamtool.engine.trainer import DistInfo, ShardLoaders, Trainer

    device = torch.device(args.device)
    overrides = ["model.pretrained=false", f"train.batch_size={args.batch_size}", f"train.workers={args.workers}",
                 "train.tensorboard=false", *args.set]
    cfg = load_config(args.gpu_config, overrides)
    loaders = ShardLoaders(args.shards, cfg, device)
    trainer = Trainer(cfg, tempfile.mkdtemp(prefix="siamtool-gpu-run-"), loaders, device, DistInfo())
    trainer._build()
    trainer._position = 0
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    print(f"5. Training steps on {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}): "
          f"{cfg.model.backbone} (random init), {cfg.data.template_size}/{cfg.data.search_size} px, batch "
          f"{cfg.train.batch_size}, amp {trainer.amp}, compile {trainer.compile}, {cfg.train.workers} workers",
          flush=True)

    def steps(n: int) -> None:
        for _ in range(n):
            trainer.micro_step(trainer._next_batch(), 0)
            trainer.optimizer_step()

    try:
        t0 = time.perf_counter()
        steps(args.warmup)
        sync()
        print(f"   warm-up: {args.warmup} steps in {time.perf_counter() - t0:.1f} s (compile, workers, first reads)",
              flush=True)
        t0 = time.perf_counter()
        steps(args.steps)
        sync()
        elapsed = time.perf_counter() - t0
        rate = args.steps * cfg.train.batch_size / elapsed
        print(f"   {args.steps} steps in {elapsed:.2f} s: {rate:,.0f} pairs/s per GPU, "
              f"{elapsed / args.steps * 1e3:.1f} ms/step", flush=True)
        if device.type == "cuda":
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    steps(min(20, args.steps))
                finally:
                    torch.cuda.set_sync_debug_mode("default")
            syncs = sum("synchroniz" in str(w.message) for w in caught)
            print(f"   host synchronisations in {min(20, args.steps)} steps without a log: {syncs}")
        print(f"GPU_CHECK pairs_per_s_per_gpu={rate:.0f}")
    finally:
        trainer._close_train_iter()
        loaders.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", type=Path, default=REPO / "configs" / "cpu-small.yaml")
    ap.add_argument("--gpu-config", type=Path, default=REPO / "configs" / "base.yaml")
    ap.add_argument("--shards", type=Path, default=Path("/tmp/shards"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: torch's default)")
    ap.add_argument("--sections", default="1234", help="which sections to run (default 1234)")
    ap.add_argument("--compile", action="store_true", help="section 3: also time the torch.compile'd step")
    ap.add_argument("--gpu-run", action="store_true", help="run section 5 only")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=256, help="section 5: pairs per step")
    ap.add_argument("--workers", type=int, default=8, help="section 5: loader workers")
    ap.add_argument("--warmup", type=int, default=30, help="section 5: untimed steps first")
    ap.add_argument("--set", action="append", default=[], help="section 5: extra config overrides")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.gpu_run:
        gpu_run(args)
        return
    if "1" in args.sections:
        cpu_speed(load_config(args.config), args.steps, args.repeats, args.shards)
    gcfg = load_config(args.gpu_config)
    bb, heads, total = flops_per_pair(gcfg)
    lo, hi = (H100_BF16_DENSE * u / total for u in UTILISATION)
    if "2" in args.sections:
        print(f"2. {gcfg.model.backbone}, {gcfg.data.template_size}/{gcfg.data.search_size} px, neck {gcfg.model.dim}: "
              f"{bb / 1e9:.2f} GFLOP backbone forward + {heads / 1e9:.2f} GFLOP neck/heads forward per pair")
        print(f"   training step: {total / 1e9:.2f} GFLOP per pair -> an H100 (989 TFLOP/s bf16 dense) at "
              f"{UTILISATION[0]:.0%}-{UTILISATION[1]:.0%} utilisation consumes {lo:,.0f}-{hi:,.0f} pairs/s")
    gpu_ms = {b: (b / hi * 1e3, b / lo * 1e3) for b in (64, 256, 512)}
    if "3" in args.sections:
        host_time(args.gpu_config, args.repeats, args.steps, args.compile, gpu_ms)
    if "4" in args.sections:
        receive_time(args.shards, args.repeats)


if __name__ == "__main__":
    if sys.platform.startswith("linux"):
        with contextlib.suppress(RuntimeError):
            multiprocessing.set_start_method("fork")
    main()

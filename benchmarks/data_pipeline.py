"""Streamed pairs/s of the data pipeline alone: shards -> device-ready `Batch` (no model).

    python benchmarks/data_pipeline.py                       # /tmp/shards, else prepares real_lasot shards
    python benchmarks/data_pipeline.py --shards DIR --workers 0 1 2 --batches 20 --device cpu

Reports, in one run so the ratios are fair:
  1. JPEG decoding of the stored crops: cv2.imdecode (+ BGR->RGB) vs torchvision.io.decode_jpeg on CPU;
  2. the full loader (`build_loader`) with 0, 1, 2 DataLoader workers, pairs/s and the ratio vs 0;
  3. what one worker does on a CUDA box (read, shuffle, draw the jitter, pack the JPEG bytes; decoding
     and cropping happen on the GPU), pairs/s, against the ViT-S/16 step's appetite estimated from FLOPs
     (see README, "stream").
The main process runs with --threads intra-op threads (1 by default: on a shared CPU more threads spin);
each figure is the best of --repeats runs, because other work on a shared machine only ever slows a run.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from siamtool.config import load_config
from siamtool.data.shards import ShardReader, load_shard_index
from siamtool.data.stream import PairStream, build_loader, decode_jpegs, split_parts

REPO = Path(__file__).resolve().parents[1]
REAL_LASOT = REPO.parent / "shared" / "data" / "real_lasot"

# FLOPs model of one training pair on the GPU recipe (configs/base.yaml): frozen DINOv3 ViT-S/16,
# forward only, on a 128 px template (64 patch tokens) and a 256 px search crop (256 tokens), each plus
# 1 class + 4 register tokens; the trainable neck and heads forward + backward (3x forward).
VIT_S_MACS_224 = 4.6e9  # the "4.6 GFLOPs" of ViT-S/16 at 224^2 (196 tokens) is multiply-accumulates
VIT_S_DIM, VIT_S_DEPTH, VIT_S_TOKENS_224 = 384, 12, 197
HEAD_MACS = 0.43e9  # siamese.py at dim 256: 1x1 projections, cross-attention, 1x1 fuse, two 3x3 conv heads
H100_BF16_DENSE = 990e12  # FLOP/s
UTILISATION = (0.30, 0.40)


def vit_macs(tokens: int) -> float:
    """ViT-S/16 forward MACs for `tokens` tokens: per-token linear layers + quadratic attention."""
    attn = lambda n: 2 * n * n * VIT_S_DIM * VIT_S_DEPTH  # noqa: E731 - QK^T and AV
    per_token = (VIT_S_MACS_224 - attn(VIT_S_TOKENS_224)) / VIT_S_TOKENS_224
    return per_token * tokens + attn(tokens)


def gpu_appetite() -> tuple[float, tuple[float, float]]:
    """FLOPs per pair and the pairs/s range an H100 step consumes at the assumed utilisation."""
    macs = vit_macs(64 + 5) + vit_macs(256 + 5) + 3 * HEAD_MACS
    flops = 2 * macs
    return flops, (H100_BF16_DENSE * UTILISATION[0] / flops, H100_BF16_DENSE * UTILISATION[1] / flops)


def find_shards(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    if (Path("/tmp/shards") / "index.json").is_file():
        return Path("/tmp/shards")
    out = Path(tempfile.mkdtemp(prefix="siamtool-bench-shards-"))
    print(f"preparing shards from {REAL_LASOT} into {out} ...", flush=True)
    subprocess.run([sys.executable, "-m", "siamtool", "prepare", "--lasot", str(REAL_LASOT), "--out", str(out),
                    "--split", "all", "--pairs-per-sequence", "200"], check=True)
    return out


def bench_decoders(shards: Path, n: int = 64, repeats: int = 3) -> tuple[float, float]:
    """CPU ms per pair (template + search crop) decoded as the loader does: a batch of RGB (3,H,W) tensors
    kept alive together. cv2 needs BGR->RGB and HWC->CHW on top of imdecode. The two are timed in
    alternation, best of 5 x repeats, in thread CPU time, so a busy machine disturbs them alike."""
    index = load_shard_index(shards)
    with ShardReader(index.shards[0][0]) as r:
        pairs = r.read_many(range(min(n, len(r))))

    def cv2_decode():
        return [[torch.from_numpy(cv2.cvtColor(cv2.imdecode(b, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
                 .permute(2, 0, 1).contiguous() for b in (p.template_jpeg, p.search_jpeg)] for p in pairs]

    tensors = [(torch.from_numpy(p.template_jpeg), torch.from_numpy(p.search_jpeg)) for p in pairs]

    def tv_decode():
        return (decode_jpegs([z for z, _ in tensors], index.template_size),
                decode_jpegs([x for _, x in tensors], index.search_crop_size))

    times: dict[str, list[float]] = {"cv2": [], "tv": []}
    for _ in range(5 * repeats):
        times["cv2"].append(_timed(cv2_decode, time.thread_time))
        times["tv"].append(_timed(tv_decode, time.thread_time))
    return min(times["cv2"]) / len(pairs) * 1e3, min(times["tv"]) / len(pairs) * 1e3


def _timed(fn, clock=time.perf_counter) -> float:
    t = clock()
    fn()
    return clock() - t


def _cpu_seconds() -> float:
    """User + system CPU time of this process and of its finished children (the DataLoader workers)."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_loader(shards: Path, cfg, device: str, workers: int, batches: int) -> tuple[float, float, float]:
    """(seconds to the first batch, steady pairs/s after it, CPU ms per pair of all processes together).

    The CPU cost counts every pair including start-up; unlike pairs/s it does not depend on what else
    the machine is running, so 1000 / cost is what one free core would deliver.
    """
    cfg.train.samples_per_epoch = (batches + 1) * cfg.train.batch_size
    loader = build_loader(shards, cfg, device, workers=workers)
    c0 = _cpu_seconds()
    t0 = time.perf_counter()
    it = iter(loader)
    n = len(next(it))
    t1 = time.perf_counter()
    for b in it:
        n += len(b)
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()
    t2 = time.perf_counter()
    del it  # joins the workers, so their CPU time is counted
    steady = n - cfg.train.batch_size
    return t1 - t0, steady / (t2 - t1), (_cpu_seconds() - c0) / n * 1e3


def bench_gpu_worker(shards: Path, config: str) -> tuple[float, int]:
    """pairs/s of one worker on a CUDA box (read, shuffle, plan, pack bytes; no decode), over its share
    of a base.yaml epoch (samples_per_epoch / workers, batch_size), shuffle-buffer fill included."""
    cfg = load_config(config)
    index = load_shard_index(shards)
    train, _ = split_parts(index.shards, cfg.train.val_fraction)
    samples = cfg.train.samples_per_epoch // max(1, cfg.train.workers)
    stream = PairStream(index, train, cfg, "train", 0, 0, 1, samples, mode="bytes")
    t = time.process_time()  # CPU time: what the worker delivers on a core of its own
    n = sum(len(raw["kind"]) for raw in stream)
    return n / (time.process_time() - t), n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shards", help="shard folder (default /tmp/shards, else prepared from real_lasot)")
    ap.add_argument("--config", default=str(REPO / "configs" / "base.yaml"))
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=16, help="timed batches per setting (after the first)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads of the main process")
    ap.add_argument("--repeats", type=int, default=3, help="best of N runs per row (the CPU is shared)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shards = find_shards(args.shards)
    index = load_shard_index(shards)
    cfg = load_config(args.config, [f"train.batch_size={args.batch_size}"])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; shards: {shards} ({index.pairs} pairs, template {index.template_size} px, stored search "
          f"{index.search_crop_size} px) -> template {cfg.data.template_size}, search {cfg.data.search_size}; "
          f"batch {args.batch_size}, device {args.device}, main-process threads {args.threads}")

    cv2_ms, tv_ms = bench_decoders(shards, repeats=args.repeats)
    print("\nJPEG decode, template + search crop, CPU time of one thread")
    print("| decoder | ms/pair | pairs/s | ratio |\n| --- | --- | --- | --- |")
    print(f"| cv2.imdecode + BGR->RGB | {cv2_ms:.2f} | {1e3 / cv2_ms:.0f} | 1.00 |")
    print(f"| torchvision.io.decode_jpeg | {tv_ms:.2f} | {1e3 / tv_ms:.0f} | {cv2_ms / tv_ms:.2f} |")

    print(f"\nLoader, shards -> device-ready Batch on {args.device} ({args.batches} timed batches per row)")
    print("| workers | first batch (s) | pairs/s | ratio vs 0 workers | CPU ms/pair, all processes |\n"
          "| --- | --- | --- | --- | --- |")
    base = None
    for w in args.workers:
        runs = [bench_loader(shards, cfg, args.device, w, args.batches) for _ in range(args.repeats)]
        start, rate, cost = min(r[0] for r in runs), max(r[1] for r in runs), min(r[2] for r in runs)
        base = base or rate
        print(f"| {w} | {start:.2f} | {rate:.0f} | {rate / base:.2f} | {cost:.2f} |", flush=True)

    worker_rate, share = max(bench_gpu_worker(shards, args.config) for _ in range(args.repeats))
    cpu_decode_rate = 1 / (1 / worker_rate + tv_ms / 1e3)
    flops, (lo, hi) = gpu_appetite()
    print("\nCUDA-mode worker (read + shuffle + jitter plan + pack JPEG bytes; decode/crop on the GPU), "
          f"one worker's share of a {Path(args.config).name} epoch ({share} pairs): {worker_rate:.0f} pairs per CPU second")
    print(f"ViT-S/16 step on an H100: {flops / 1e9:.1f} GFLOP/pair -> {lo:.0f}-{hi:.0f} pairs/s at "
          f"{UTILISATION[0]:.0%}-{UTILISATION[1]:.0%} of {H100_BF16_DENSE / 1e12:.0f} TFLOP/s bf16 -> "
          f"{math.ceil(hi / worker_rate)} worker(s) at this CPU's speed "
          f"({math.ceil(hi / cpu_decode_rate)} if the crops were decoded on the CPU instead, "
          f"{cpu_decode_rate:.0f} pairs/s per worker)")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

"""Streamed pairs/s of the data pipeline alone: shards -> device-ready `Batch` (no model).

    python benchmarks/data_pipeline.py                       # /tmp/shards, else prepares real_lasot shards
    python benchmarks/data_pipeline.py --shards DIR --workers 0 1 2 --batches 20 --device cpu
    python benchmarks/data_pipeline.py --shards DIR --device cuda --sections 25   # what gpu_check.sh runs

Reports, in one run so the ratios are fair (--sections picks them, default all):
  1. JPEG decoding of the stored crops: cv2.imdecode (+ BGR->RGB) vs torchvision.io.decode_jpeg on CPU;
  2. the full loader (`build_loader`) with 0, 1, 2 DataLoader workers, pairs/s and the ratio vs 0;
  3. what one worker does on a CUDA box (read, shuffle, draw the jitter, pack the JPEG bytes; decoding
     and cropping happen on the GPU), pairs/s, against the ViT-S/16 step's appetite estimated from FLOPs
     (see README, "stream");
  4. HDF5 reads of a block of rows: h5py list indexing vs a slice, all columns vs the training columns;
     and the sample order of the old base.yaml recipe on 1 and 8 GPUs (simulated on row references):
     pairs read per pair emitted and views per pair over 40 epochs, the old per-epoch shuffle buffer vs
     the new groups;
  5. on CUDA: nvjpeg images/s, a batch's templates and searches decoded in one call vs two calls.
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
from siamtool.data.stream import PairStream, build_loader, decode_jpegs, split_parts, unpack_batch

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
    loader = build_loader(shards, cfg, device, workers=workers, batches=batches + 1)
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
    loader.close()  # joins the workers, so their CPU time is counted
    steady = n - cfg.train.batch_size
    return t1 - t0, steady / (t2 - t1), (_cpu_seconds() - c0) / n * 1e3


def bench_gpu_worker(shards: Path, config: str) -> tuple[float, int]:
    """pairs/s of one worker on a CUDA box (read, shuffle, plan, pack bytes; no decode), over its share
    of a base.yaml epoch (samples_per_epoch / workers, batch_size), first group read included."""
    cfg = load_config(config)
    index = load_shard_index(shards)
    train, _ = split_parts(index.shards, cfg.train.val_fraction, index.splits)
    batches = max(1, cfg.train.samples_per_epoch // max(1, cfg.train.workers) // cfg.train.batch_size)
    stream = PairStream(index, train, cfg, "train", 0, 1, mode="bytes", batches=batches)
    t = time.process_time()  # CPU time: what the worker delivers on a core of its own
    n = sum(unpack_batch(*raw).n for raw in stream)
    return n / (time.process_time() - t), n


def bench_h5_reads(shards: Path, rows: int = 128, repeats: int = 10) -> dict[str, float]:
    """ms per block of `rows` consecutive rows: list indexing vs slices, all columns vs training columns."""
    import h5py

    from siamtool.data.shards import DATASETS, TRAIN_COLUMNS

    path = load_shard_index(shards).shards[0][0]
    out: dict[str, float] = {}
    with h5py.File(path, "r") as f:
        n = len(f["kind"])
        k = min(rows, n)
        starts = [(i * 97) % max(1, n - k + 1) for i in range(8)]
        variants = {
            "list, all 8 columns (before)": (DATASETS, lambda a: list(range(a, a + k))),
            "slice, all 8 columns": (DATASETS, lambda a: slice(a, a + k)),
            "list, 5 training columns": (TRAIN_COLUMNS, lambda a: list(range(a, a + k))),
            "slice, 5 training columns (after)": (TRAIN_COLUMNS, lambda a: slice(a, a + k)),
        }
        for name in variants:
            out[name] = float("inf")
        for _ in range(repeats):
            for name, (cols, key) in variants.items():
                t0 = time.perf_counter()
                for a in starts:
                    for c in cols:
                        f[c][key(a)]
                out[name] = min(out[name], (time.perf_counter() - t0) / len(starts) * 1e3)
    return out


def _old_order_views(n_rows: int, n_slots: int, buffer: int, batch: int, epochs: int, per_epoch: int
                     ) -> tuple[float, np.ndarray]:
    """The sample order before #15 (stream.py's slot_parts / slot_pairs / _shuffled), simulated on row
    references: each epoch the parts (one 1,000-row shard each) are permuted and dealt to the slots (cut
    into interleaved row slices when there are fewer parts than slots); a slot cycles its parts in random
    128-row blocks through a shuffle buffer that emits once it holds min(buffer, 2 x batch + emitted)
    pairs; what it holds at the epoch end is dropped."""
    views = np.zeros(n_rows, np.int64)
    reads = emits = 0
    share = per_epoch // n_slots
    initial = min(buffer, 2 * batch)
    for epoch in range(epochs):
        perm = np.random.default_rng([0, epoch, 0]).permutation(n_rows // 1000)
        parts = [np.arange(p * 1000, (p + 1) * 1000) for p in perm]
        if len(parts) < n_slots:
            k = math.ceil(n_slots / len(parts))
            parts = [rows[j::k] for rows in parts for j in range(k) if len(rows[j::k])]
        for slot in range(n_slots):
            mine = parts[slot::n_slots] or [parts[slot % len(parts)]]
            rng = np.random.default_rng([0, epoch, slot, 1])
            pick = np.random.default_rng([0, epoch, slot, 2])
            buf: list[int] = []
            emitted, cycle = 0, 0
            while emitted < share:
                for j in (range(len(mine)) if cycle == 0 else rng.permutation(len(mine))):
                    rows = mine[j]
                    for b in rng.permutation(math.ceil(len(rows) / 128)):
                        for r in rows[b * 128:(b + 1) * 128]:
                            reads += 1
                            buf.append(int(r))
                            if len(buf) >= min(buffer, initial + emitted):
                                i = int(pick.integers(len(buf)))
                                buf[i], buf[-1] = buf[-1], buf[i]
                                views[buf.pop()] += 1
                                emitted += 1
                                if emitted == share:
                                    break
                        if emitted == share:
                            break
                    if emitted == share:
                        break
                cycle += 1
            emits += emitted
    return reads / emits, views


def _new_order_views(n_rows: int, n_slots: int, buffer: int, epochs: int, per_epoch: int) -> tuple[float, np.ndarray]:
    from siamtool.data.stream import Part, SlotOrder, make_blocks

    blocks = make_blocks([Part(i, 0, 1000) for i in range(n_rows // 1000)], n_slots)
    emits = epochs * per_epoch // n_slots
    views = np.zeros((n_rows // 1000, 1000), np.int64)
    reads = 0
    for slot in range(n_slots):
        got = 0
        for group in SlotOrder(blocks, n_slots, slot, 0, buffer).groups():
            reads += sum(len(b) for b in group.blocks)
            refs = group.refs()[:emits - got]
            np.add.at(views, (refs[:, 0], refs[:, 1]), 1)
            got += len(refs)
            if got == emits:
                break
    return reads / (emits * n_slots), views.reshape(-1)


def bench_order(n_rows: int = 200_000, epochs: int = 40, per_epoch: int = 60_000, batch: int = 64,
                buffer: int = 4096, workers: int = 8) -> None:
    """The issue's scenario (the base.yaml recipe before #15: 40 epochs x 60,000 pairs, batch 64, 8 workers
    per GPU, a 4,096-pair buffer) over ~LaSOT-train's 200,000 pairs, for both orders."""
    print(f"\nSample order, {workers} workers per GPU, shuffle {buffer}, batch {batch}, {epochs} epochs x "
          f"{per_epoch:,} pairs over {n_rows:,} training pairs, simulated on row references")
    print("| GPUs | order | pairs read per pair emitted | views per pair: min / mean / max |\n| --- | --- | --- | --- |")
    for gpus in (1, 8):
        slots = gpus * workers
        old_ratio, old_views = _old_order_views(n_rows, slots, buffer, batch, epochs, per_epoch)
        new_ratio, new_views = _new_order_views(n_rows, slots, buffer, epochs, per_epoch)
        for name, ratio, v in (("before: per-epoch buffer", old_ratio, old_views),
                               ("after: endless groups", new_ratio, new_views)):
            print(f"| {gpus} | {name} | {ratio:.2f} | {v.min()} / {v.mean():.0f} / {v.max()} |", flush=True)


def bench_nvjpeg(shards: Path, device: str, batch: int = 256, repeats: int = 5) -> tuple[float, float]:
    """nvjpeg images/s: a batch's templates and searches in one decode call vs one call each."""
    index = load_shard_index(shards)
    with ShardReader(index.shards[0][0]) as r:
        pairs = r.read_many([i % len(r) for i in range(batch)])
    zs = [torch.from_numpy(p.template_jpeg) for p in pairs]
    xs = [torch.from_numpy(p.search_jpeg) for p in pairs]
    sizes = [index.template_size] * len(zs) + [index.search_crop_size] * len(xs)

    def one_call():
        decode_jpegs(zs + xs, sizes, device)

    def two_calls():
        decode_jpegs(zs, index.template_size, device)
        decode_jpegs(xs, index.search_crop_size, device)

    best = {"one": float("inf"), "two": float("inf")}
    for fn in (one_call, two_calls):
        fn()
    for _ in range(repeats):
        for name, fn in (("one", one_call), ("two", two_calls)):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - t0)
    return 2 * batch / best["one"], 2 * batch / best["two"]


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
    ap.add_argument("--sections", default="12345", help="which sections to run (default all)")
    ap.add_argument("--set", action="append", default=[], help="config override, e.g. data.template_size=32")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    shards = find_shards(args.shards)
    index = load_shard_index(shards)
    cfg = load_config(args.config, [f"train.batch_size={args.batch_size}", *args.set])
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; shards: {shards} ({index.pairs} pairs, template {index.template_size} px, stored search "
          f"{index.search_crop_size} px) -> template {cfg.data.template_size}, search {cfg.data.search_size}; "
          f"batch {args.batch_size}, device {args.device}, main-process threads {args.threads}")

    tv_ms = 0.5
    if "1" in args.sections:
        cv2_ms, tv_ms = bench_decoders(shards, repeats=args.repeats)
        print("\nJPEG decode, template + search crop, CPU time of one thread")
        print("| decoder | ms/pair | pairs/s | ratio |\n| --- | --- | --- | --- |")
        print(f"| cv2.imdecode + BGR->RGB | {cv2_ms:.2f} | {1e3 / cv2_ms:.0f} | 1.00 |")
        print(f"| torchvision.io.decode_jpeg | {tv_ms:.2f} | {1e3 / tv_ms:.0f} | {cv2_ms / tv_ms:.2f} |")

    if "2" in args.sections:
        print(f"\nLoader, shards -> device-ready Batch on {args.device} ({args.batches} timed batches per row)")
        print("| workers | first batch (s) | pairs/s | ratio vs first row | CPU ms/pair, all processes |\n"
              "| --- | --- | --- | --- | --- |")
        base = None
        for w in args.workers:
            runs = [bench_loader(shards, cfg, args.device, w, args.batches) for _ in range(args.repeats)]
            start, rate, cost = min(r[0] for r in runs), max(r[1] for r in runs), min(r[2] for r in runs)
            base = base or rate
            print(f"| {w} | {start:.2f} | {rate:.0f} | {rate / base:.2f} | {cost:.2f} |", flush=True)
            print(f"GPU_CHECK loader_pairs_per_s_{args.device.split(':')[0]}_{w}_workers={rate:.0f}", flush=True)

    if "3" in args.sections:
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

    if "4" in args.sections:
        reads = bench_h5_reads(shards, repeats=max(10, args.repeats))
        print("\nHDF5 read of a 128-row block (ms, best of rounds over 8 blocks)")
        print("| read | ms/block | ratio vs before |\n| --- | --- | --- |")
        base = next(iter(reads.values()))
        for name, ms in reads.items():
            print(f"| {name} | {ms:.2f} | {base / ms:.2f} |")
        bench_order()

    if "5" in args.sections and torch.device(args.device).type == "cuda":
        one, two = bench_nvjpeg(shards, args.device)
        print(f"\nnvjpeg on {torch.cuda.get_device_name(torch.device(args.device))}, 256 pairs: "
              f"{one:,.0f} images/s in one call, {two:,.0f} in two calls (x{one / two:.2f})")
        print(f"GPU_CHECK nvjpeg_images_per_s={one:.0f}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()

"""What building a shard in memory costs: `shards.write_shard` (HDF5 into a BytesIO, then one write()) against
the former direct write (h5py writing the file itself).

write_shard builds the file in memory because HDF5 writing to a full disk failed inside its own flush
and close, and the half-closed objects it left crashed the interpreter at exit (docs/data.md "Never lose
work"). This measures the price: process CPU time per shard (other jobs on the shared CPUs barely move
it), median over interleaved repeats, on shards of real stored pairs (~25 kB each) when a shard folder is
given, else of random-content JPEG crops of the same sizes.

    python benchmarks/shard_write.py                           # 512 synthetic pairs, 15 repeats
    python benchmarks/shard_write.py --shards /tmp/shards      # the pairs of that folder's first shard
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siamtool.data import shards  # noqa: E402
from siamtool.data.shards import Pair, ShardReader, load_shard_index  # noqa: E402


def direct_write(path: Path, pairs: list[Pair], attrs: dict) -> int:
    """The former write_shard body: h5py writes the (temp) file itself."""
    n = len(pairs)
    with h5py.File(path, "w") as f:
        for key, value in {"format_version": shards.FORMAT_VERSION, **attrs}.items():
            f.attrs[key] = value
        f.create_dataset("template", (n,), dtype=shards._VLEN_U8, data=shards._vlen([p.template_jpeg for p in pairs]))
        f.create_dataset("search", (n,), dtype=shards._VLEN_U8, data=shards._vlen([p.search_jpeg for p in pairs]))
        f.create_dataset("template_box", data=shards._rows([p.template_box for p in pairs], (n, 4), np.float32))
        f.create_dataset("search_box", data=shards._rows([p.search_box for p in pairs], (n, 4), np.float32))
        f.create_dataset("kind", data=np.array([p.kind for p in pairs], dtype=np.uint8).reshape(n))
        f.create_dataset("sequence", data=[p.sequence for p in pairs], dtype=shards._STR, shape=(n,))
        f.create_dataset("search_sequence", data=[p.search_sequence for p in pairs], dtype=shards._STR, shape=(n,))
        f.create_dataset("frames", data=shards._rows([p.frames for p in pairs], (n, 2), np.int32))
    return path.stat().st_size


def synthetic_pairs(n: int) -> list[Pair]:
    """Smooth random 128 px and 384 px crops, JPEG q90 (about the size of real stored pairs)."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        crops = [cv2.GaussianBlur(rng.integers(0, 256, (s, s, 3), dtype=np.uint8), (0, 0), 2.0) for s in (128, 384)]
        jpegs = [cv2.imencode(".jpg", c, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].reshape(-1) for c in crops]
        box = np.array([10, 10, 50, 50], np.float32)
        out.append(Pair(jpegs[0], jpegs[1], box, box, 0, f"seq-{i % 7}", f"seq-{i % 7}", np.array([i, i + 1], np.int32)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shards", type=Path, help="a prepared shard folder: its first shard's pairs are written")
    ap.add_argument("--pairs", type=int, default=512, help="synthetic pairs per shard (without --shards)")
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    if args.shards:
        with ShardReader(load_shard_index(args.shards).shards[0][0]) as r:
            pairs = r.read_many(range(len(r)))
    else:
        pairs = synthetic_pairs(args.pairs)
    attrs = {"config": "data: {}\n" * 40, "siamtool_version": "bench", "source_root": "/x"}
    times: dict[str, list[float]] = {"direct": [], "in memory": []}
    sizes = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for name, fn in (("direct", direct_write), ("in memory", shards.write_shard)):
                path = Path(tmp) / f"{name.replace(' ', '_')}-{i}.h5"
                t0 = time.process_time()
                sizes[name] = fn(path, pairs, attrs)
                times[name].append(time.process_time() - t0)
                path.unlink()
    kb = sum(len(p.template_jpeg) + len(p.search_jpeg) for p in pairs) / len(pairs) / 1e3
    print(f"{len(pairs)} pairs per shard ({kb:.1f} kB of JPEG per pair), {args.repeats} interleaved repeats")
    for name, ts in times.items():
        print(f"  {name:10s} CPU {statistics.median(ts) * 1e3:6.1f} ms per shard (min {min(ts) * 1e3:.1f}), "
              f"{sizes[name] / 1e6:.2f} MB file")


if __name__ == "__main__":
    main()

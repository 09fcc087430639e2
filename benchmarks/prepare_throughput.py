"""`siamtool prepare` throughput: pairs/s, where worker time goes, and the ratio to the naive way.

Measured in one run on the same sampled pairs, written to the same kind of shards:

* naive (1 worker): the seed's way. Per pair, `cv2.imread` both frames at full resolution, pad each
  frame with `cv2.copyMakeBorder` (replicated border, enough for the window), slice the window, resize
  it with `cv2.resize`, then JPEG-encode and write exactly as prepare does.
* prepare, 1 and 2 workers: `siamtool.data.prepare.prepare_shards` (what the CLI runs): each frame
  decoded once per shard at the coarsest JPEG reduction its crops allow, one warpAffine per crop on a
  BGRA frame padded only when a window leaves it.
* per-pair (1 worker): prepare's crop path called one pair at a time in the naive loop, so no frame
  is decoded once for two pairs (the tiny real_lasot shards reuse frames far more than LaSOT would).
  per-pair / naive is the ratio to trust for full LaSOT.
* prepare without reduced decode (1 worker, `max_decode_factor=1`): the gain of the reduced decode.
* per-pair and prepare 1w with `decoder="opencv"`: the old decode path (cv2.imdecode with
  IMREAD_REDUCED_*, then a BGR->BGRA conversion of the cropped region), against the new one
  (libjpeg-turbo through simplejpeg, straight to BGRX, `siamtool.images.decode_reduced`). Both write
  the same bytes (tests/data/test_prepare.py), so the ratio is the decode path's gain alone.

Two datasets: `../shared/data/real_lasot` as it is (240p-480p frames, smaller than LaSOT's), and the
same sequences upscaled to 720 px high (LaSOT's typical 1280x720), JPEG q95, made once in --workdir.
Configurations are interleaved per repeat (the 2 CPUs are shared); medians are reported.

    python benchmarks/prepare_throughput.py                         # 200 pairs/sequence, 3 repeats
    python benchmarks/prepare_throughput.py --repeats 1 --no-hires  # quick look
"""

from __future__ import annotations

import argparse
import os
import shutil
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

from siamtool.config import Config, DataConfig  # noqa: E402
from siamtool.data.lasot import find_sequences, index_lasot  # noqa: E402
from siamtool.data.prepare import CropParams, Timing, make_pairs, pair_windows, prepare_shards  # noqa: E402
from siamtool.data.sampling import PairSpec, sample_pairs  # noqa: E402
from siamtool.data.shards import Pair, write_shard  # noqa: E402
from siamtool.geometry import CropWindow  # noqa: E402


def naive_crop(img: np.ndarray, w: CropWindow) -> np.ndarray:
    """The seed's crop: pad the whole frame, slice an integer window, resize it."""
    h, wd = img.shape[:2]
    x0, y0 = round(w.x0), round(w.y0)
    side = max(1, round(w.side))
    pad = max(0, -x0, -y0, x0 + side - wd, y0 + side - h)
    padded = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE) if pad else img
    patch = padded[y0 + pad:y0 + pad + side, x0 + pad:x0 + pad + side]
    return cv2.resize(patch, (w.out_size, w.out_size), interpolation=cv2.INTER_LINEAR)


def naive_run(specs: list[PairSpec], data: DataConfig, out: Path) -> tuple[float, dict[str, float]]:
    """Write `specs` the naive way into shards under `out`; return (seconds, stage seconds)."""
    quality = [cv2.IMWRITE_JPEG_QUALITY, data.jpeg_quality]
    stages = {"decode": 0.0, "crop": 0.0, "encode": 0.0, "write": 0.0}
    start = time.perf_counter()
    per = data.pairs_per_shard
    for k in range(0, len(specs), per):
        pairs = []
        for s in specs[k:k + per]:
            tw, sw = pair_windows(s, data)
            jpegs = []
            for path, w in ((s.template_path, tw), (s.search_path, sw)):
                t0 = time.perf_counter()
                img = cv2.imread(str(path), cv2.IMREAD_COLOR)
                t1 = time.perf_counter()
                patch = naive_crop(img, w)
                t2 = time.perf_counter()
                jpegs.append(cv2.imencode(".jpg", patch, quality)[1].reshape(-1))
                stages["decode"] += t1 - t0
                stages["crop"] += t2 - t1
                stages["encode"] += time.perf_counter() - t2
            pairs.append(Pair(jpegs[0], jpegs[1], tw.box_to_crop(np.asarray(s.template_box)).astype(np.float32),
                              sw.box_to_crop(np.asarray(s.search_box)).astype(np.float32), s.kind, s.sequence,
                              s.search_sequence, np.array([s.template_frame, s.search_frame], np.int32)))
        t0 = time.perf_counter()
        write_shard(out / f"shard-{k // per:05d}.h5", pairs, {"config": ""})
        stages["write"] += time.perf_counter() - t0
    return time.perf_counter() - start, stages


def unshared_run(specs: list[PairSpec], data: DataConfig, out: Path, decoder: str = "auto") -> tuple[float, Timing]:
    """prepare's crop path (`make_pairs`) called one pair at a time, in naive_run's loop: no frame is
    decoded for two pairs, so the ratio to naive isolates the decode + crop method from the sharing."""
    timing = Timing()
    params = CropParams(data, decoder=decoder)
    start = time.perf_counter()
    per = data.pairs_per_shard
    for k in range(0, len(specs), per):
        pairs = []
        for s in specs[k:k + per]:
            pairs += make_pairs([s], params, timing)[0]
        write_shard(out / f"shard-{k // per:05d}.h5", pairs, {"config": ""})
    return time.perf_counter() - start, timing


def make_hires(src: Path, dst: Path, height: int = 720) -> Path:
    """Copy the dataset with every frame upscaled to `height` px (JPEG q95) and the GT scaled to match."""
    done = dst / ".complete"
    if done.is_file():
        return dst
    shutil.rmtree(dst, ignore_errors=True)
    for name, seq in sorted(find_sequences(src).items()):
        out = dst / seq.parent.name / name
        (out / "img").mkdir(parents=True)
        scale = None
        for f in sorted((seq / "img").glob("*.jpg")):
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            scale = height / img.shape[0]
            big = cv2.resize(img, (round(img.shape[1] * scale), height), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(out / "img" / f.name), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
        gt = np.loadtxt(seq / "groundtruth.txt", delimiter=",", ndmin=2)
        # 1-based corners scale about pixel 0.5 (continuous 0-based coordinates scale about 0).
        gt[:, :2] = (gt[:, :2] - 1) * scale + 1
        gt[:, 2:] *= scale
        np.savetxt(out / "groundtruth.txt", gt, fmt="%.3f", delimiter=",")
        for extra in ("full_occlusion.txt", "out_of_view.txt", "nlp.txt"):
            if (seq / extra).is_file():
                shutil.copy(seq / extra, out / extra)
    done.write_text("ok\n")
    return dst


def raw_bytes_per_pair(out: Path, data: DataConfig, n: int = 64) -> dict[str, float]:
    """Bytes/pair if the crops were stored as chunked uint8 arrays (no JPEG), lzf or gzip-1 compressed."""
    from siamtool.data.shards import ShardReader

    with ShardReader(next(out.glob("shard-*.h5"))) as r:
        pairs = r.read_many(range(min(n, len(r))))
    t = np.stack([cv2.imdecode(p.template_jpeg, cv2.IMREAD_COLOR) for p in pairs])
    s = np.stack([cv2.imdecode(p.search_jpeg, cv2.IMREAD_COLOR) for p in pairs])
    sizes = {"uint8 raw": float(t[0].nbytes + s[0].nbytes)}
    for name, opts in (("uint8 lzf", {"compression": "lzf"}), ("uint8 gzip-1", {"compression": "gzip",
                                                                              "compression_opts": 1})):
        path = out / f"raw-{name.split()[-1]}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("template", data=t, chunks=(1, *t.shape[1:]), **opts)
            f.create_dataset("search", data=s, chunks=(1, *s.shape[1:]), **opts)
        sizes[name] = path.stat().st_size / len(pairs)
        path.unlink()
    return sizes


def bench(root: Path, label: str, pairs_per_sequence: int, repeats: int, work: Path) -> dict[str, object]:
    """Run every configuration `repeats` times, interleaved; wall and CPU pairs/s, medians."""
    cfg = Config()
    cfg.data.pairs_per_sequence = pairs_per_sequence
    specs = sample_pairs(index_lasot(root, "all").sequences, cfg.data).pairs
    n = len(specs)
    wall: dict[str, list[float]] = {"naive": [], "per-pair": [], "per-pair_old": [], "w1": [], "w1_old": [],
                                    "w1_full": [], "w2": []}
    cpu: dict[str, list[float]] = {k: [] for k in ("naive", "per-pair", "per-pair_old", "w1", "w1_old", "w1_full")}
    decode_share, unshared_share, factors, decodes, stages, naive_stages, bpp = [], [], {}, 0, {}, {}, 0.0

    def fresh(key: str) -> Path:
        out = work / f"{label}-{key}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        return out

    for rep in range(repeats):
        c0 = time.process_time()
        sec, naive_stages = naive_run(specs, cfg.data, fresh("naive"))
        cpu["naive"].append(n / (time.process_time() - c0))
        wall["naive"].append(n / sec)
        for key, decoder in (("per-pair_old", "opencv"), ("per-pair", "auto")):
            c0 = time.process_time()
            sec, unshared = unshared_run(specs, cfg.data, fresh(key), decoder)
            cpu[key].append(n / (time.process_time() - c0))
            wall[key].append(n / sec)
            if key == "per-pair":
                unshared_share.append(unshared.decode / sec)
        for key, workers, factor, decoder in (("w1_old", 1, 8, "opencv"), ("w1", 1, 8, "auto"),
                                              ("w1_full", 1, 1, "auto"), ("w2", 2, 8, "auto")):
            c0 = time.process_time()
            s = prepare_shards(root, work / f"{label}-{key}", cfg, "all", workers=workers, overwrite=True,
                               max_decode_factor=factor, decoder=decoder)
            if workers == 1:
                cpu[key].append(n / (time.process_time() - c0))
            wall[key].append(s.pairs_per_second)
            if key == "w1":
                tm = s.timing
                decode_share.append(tm.decode / tm.total)
                factors, decodes, bpp = dict(tm.decode_factors), tm.frames, s.bytes_per_pair
                stages = {k: getattr(tm, k) / tm.total for k in ("read", "decode", "crop", "encode", "write")}
        print(f"  [{label} repeat {rep + 1}, load {os.getloadavg()[0]:.2f}] wall pairs/s: "
              + ", ".join(f"{k} {v[-1]:.0f}" for k, v in wall.items())
              + " | CPU pairs/s: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in cpu.items()), flush=True)
    w = {k: statistics.median(v) for k, v in wall.items()}
    c = {k: statistics.median(v) for k, v in cpu.items()}
    naive_total = sum(naive_stages.values())
    return {
        "label": label, "pairs": n, "wall": w, "cpu": c,
        "decode_share": statistics.median(decode_share), "unshared_decode_share": statistics.median(unshared_share),
        "stages": stages, "naive_stages": {k: v / naive_total for k, v in naive_stages.items()},
        "factors": factors, "decodes_per_pair": decodes / n, "bytes_per_pair": bpp,
        "raw": raw_bytes_per_pair(work / f"{label}-w1", cfg.data),
    }


def decode_floor(root: Path, frames: int = 30, repeats: int = 7) -> list[str]:
    """ms of CPU per frame to decode `frames` frames of `root` at 1/1..1/8, OpenCV vs simplejpeg (best of
    `repeats`). libjpeg-turbo Huffman-decodes every coefficient at every scale; at 1/8 only the DC term
    goes through the IDCT, so that row is about the entropy-decoding floor no reduction can go below."""
    from siamtool.geometry import REDUCED_FLAGS
    from siamtool.images import decode_reduced

    files = sorted(root.glob("*/*/img/*.jpg"))
    data = [f.read_bytes() for f in files[:: max(1, len(files) // frames)][:frames]]
    rows = ["| scale | OpenCV imdecode (BGR) ms | simplejpeg (BGRX) ms | OpenCV / simplejpeg |", "|---|---|---|---|"]
    for k in (1, 2, 4, 8):
        best = {}
        for name, fn in (("opencv", lambda d, k=k: cv2.imdecode(np.frombuffer(d, np.uint8), REDUCED_FLAGS[k])),
                         ("simplejpeg", lambda d, k=k: decode_reduced(d, k))):
            times = []
            for _ in range(repeats):
                c0 = time.process_time()
                for d in data:
                    fn(d)
                times.append((time.process_time() - c0) / len(data) * 1e3)
            best[name] = min(times)
        rows.append(f"| 1/{k} | {best['opencv']:.2f} | {best['simplejpeg']:.2f} | "
                    f"{best['opencv'] / best['simplejpeg']:.2f}x |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lasot", type=Path, default=REPO.parent / "shared" / "data" / "real_lasot")
    ap.add_argument("--pairs-per-sequence", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-hires", action="store_true", help="Skip the 720p variant.")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "siamtool_prepare_bench")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    args.workdir.mkdir(parents=True, exist_ok=True)
    sets = [(args.lasot, "real_lasot")]
    if not args.no_hires:
        sets.append((make_hires(args.lasot, args.workdir / "real_lasot_720p"), "real_lasot 720p"))
    results = [bench(root, label, args.pairs_per_sequence, args.repeats, args.workdir / "out") for root, label in sets]
    print()
    print("| data | pairs | naive 1w | per-pair 1w | prepare 1w | prepare 2w (wall) | per-pair / naive | 1w / naive "
          "| 2w / naive (wall) | reduced-decode gain | decode share 1w (per-pair) | decodes/pair | kB/pair |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        c, w = r["cpu"], r["wall"]
        print(f"| {r['label']} | {r['pairs']} | {c['naive']:.0f} | {c['per-pair']:.0f} | {c['w1']:.0f} | {w['w2']:.0f} | "
              f"{c['per-pair'] / c['naive']:.2f}x | {c['w1'] / c['naive']:.2f}x | {w['w2'] / w['naive']:.2f}x | "
              f"{c['w1'] / c['w1_full']:.2f}x | {100 * r['decode_share']:.0f}% ({100 * r['unshared_decode_share']:.0f}%) | "
              f"{r['decodes_per_pair']:.2f} | {r['bytes_per_pair'] / 1e3:.1f} |")
    print("\nThe old decode path (cv2.imdecode IMREAD_REDUCED_* + BGR->BGRA) against the new one (simplejpeg, BGRX), "
          "same run, same bytes written:\n")
    print("| data | per-pair old / naive | per-pair new / naive | per-pair new / old | 1w old / naive | 1w new / naive "
          "| 1w new / old |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        c = r["cpu"]
        print(f"| {r['label']} | {c['per-pair_old'] / c['naive']:.2f}x | {c['per-pair'] / c['naive']:.2f}x | "
              f"{c['per-pair'] / c['per-pair_old']:.2f}x | {c['w1_old'] / c['naive']:.2f}x | "
              f"{c['w1'] / c['naive']:.2f}x | {c['w1'] / c['w1_old']:.2f}x |")
    print("\n1-worker columns are pairs per CPU-second of this process (robust to other jobs on the shared CPUs);"
          " wall pairs/s medians: " + "; ".join(
              f"{r['label']}: " + ", ".join(f"{k} {v:.0f}" for k, v in r["wall"].items()) for r in results))
    print()
    for r in results:
        st = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["stages"].items())
        nst = ", ".join(f"{k} {100 * v:.0f}%" for k, v in r["naive_stages"].items())
        raw = ", ".join(f"{k} {v / 1e3:.0f} kB" for k, v in r["raw"].items())
        print(f"{r['label']}: prepare 1w time: {st}; naive: {nst}; decode factors {r['factors']}; "
              f"without JPEG: {raw} per pair")
    if not args.no_hires:
        print(f"\nDecode cost per frame, {sets[-1][1]} (CPU ms, best of 7):\n")
        print("\n".join(decode_floor(sets[-1][0])))
    print(f"\nload average after the run: {', '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"(2 CPUs; > ~1.5 means other jobs competed)")


if __name__ == "__main__":
    main()

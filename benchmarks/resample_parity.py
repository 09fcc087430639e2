"""Do the tracker's crops and prepare's crops band-limit the same way, and does the difference matter?

prepare decodes a JPEG at the coarsest reduction (1/2, 1/4, 1/8) a crop allows (libjpeg's scaled
decode, DCT-domain) and warps to uint8 (`geometry.crop`); the tracker gets frames already decoded,
block-averages k x k and samples bilinearly in float32 (`geometry.resample`). The two are not the same
filter: this script measures by how much, on the crops the tracker really cuts, and whether tracking
notices (issue #20 item 7).

    python benchmarks/resample_parity.py --set validation
    python benchmarks/resample_parity.py --set dev-test --json /tmp/resample.json

1. Pixels: for every frame, the search window around the ground-truth box (and the template window of
   frame 1); where it is reduced (k > 1), the crop made both ways; mean and max absolute difference in
   grey levels (all channels), and the share of crops that are reduced at all.
2. Tracking: the shipped tracker (onnxruntime) one-pass on the sequences twice, its crops made (a) the
   tracker's way and (b) prepare's way (the frame's JPEG decoded at 1/k for every reduced crop, the
   template's included); success AUC of each and the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from runtime_parity import sequences  # noqa: E402
from tune_tracking import locate_sequences, score  # noqa: E402

from siamtool.data.lasot import load_sequence  # noqa: E402
from siamtool.geometry import (  # noqa: E402
    REDUCED_FLAGS,
    crop,
    crop_antialiased,
    from_lasot,
    reduced_decode_factor,
    search_window,
    template_window,
)
from siamtool.images import read_image  # noqa: E402
from siamtool.reporting import WarningsReporter  # noqa: E402
from siamtool.tracking import tracker as tracker_module  # noqa: E402
from siamtool.tracking.cache import cached_onnx_backend  # noqa: E402
from siamtool.weights import default_checkpoint  # noqa: E402


class FramePaths:
    """Which JPEG a decoded frame came from (by the array's identity), and its reduced decodes."""

    def __init__(self) -> None:
        self.paths: dict[int, Path] = {}
        self._reduced: dict[tuple[Path, int], np.ndarray] = {}

    def reduced(self, path: Path, k: int) -> np.ndarray:
        if (path, k) not in self._reduced:
            img = read_image(path, REDUCED_FLAGS[k])
            if img is None:
                raise SystemExit(f"{path}: not readable")
            self._reduced[(path, k)] = img
        return self._reduced[(path, k)]

    def prepare_crop(self, frame: np.ndarray, window) -> np.ndarray:
        """The crop as prepare makes it: the JPEG decoded at 1/k, then one uint8 warpAffine (`crop`)."""
        k = reduced_decode_factor(window.scale)
        path = self.paths.get(id(frame))
        if path is None:
            return crop_antialiased(frame, window)
        return crop(frame, window) if k == 1 else crop(self.reduced(path, k), window.scaled(1.0 / k))


def load(roots: list[Path], names: list[str], paths: FramePaths):
    data = []
    for name, path in locate_sequences(roots, names).items():
        seq = load_sequence(path)
        frames = []
        for i in range(seq.n_frames):
            path = seq.frame_path(i)
            frame = read_image(path)
            if frame is None:
                raise SystemExit(f"{path}: not readable")
            paths.paths[id(frame)] = path
            frames.append(frame)
        data.append((name, frames, seq.gt, seq.absent))
    return data


def pixel_differences(data, paths: FramePaths, cfg) -> dict:
    d = cfg.data
    diffs, reduced, total = [], 0, 0
    for _, frames, gt, absent in data:
        windows = [(0, template_window(from_lasot(gt[0]), d.context, d.template_size))]
        windows += [(i, search_window(from_lasot(gt[i]), d.context, d.template_size, d.search_size))
                    for i in range(len(frames)) if not absent[i] and gt[i][2] > 0 and gt[i][3] > 0]
        for i, window in windows:
            total += 1
            if reduced_decode_factor(window.scale) == 1:
                continue
            reduced += 1
            a = crop_antialiased(frames[i], window)
            b = paths.prepare_crop(frames[i], window).astype(np.float32)
            diffs.append(np.abs(a - b))
    flat = np.concatenate([x.reshape(-1) for x in diffs]) if diffs else np.zeros(1)
    return {"crops": total, "reduced": reduced, "mean_abs": float(flat.mean()), "max_abs": float(flat.max()),
            "p99_abs": float(np.percentile(flat, 99))}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", choices=("dev-test", "validation"))
    ap.add_argument("--lasot", type=Path, action="append")
    ap.add_argument("--sequences", nargs="+")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    paths = FramePaths()
    roots, names = sequences(args)
    data = load(roots, names, paths)
    backend = cached_onnx_backend(default_checkpoint(), "cpu", WarningsReporter())
    pixels = pixel_differences(data, paths, backend.cfg)
    print(f"crops: {pixels['reduced']} of {pixels['crops']} reduced; |tracker - prepare| mean "
          f"{pixels['mean_abs']:.2f}, p99 {pixels['p99_abs']:.0f}, max {pixels['max_abs']:.1f} grey levels", flush=True)
    rows = {}
    for way, fn in (("tracker (block mean, float)", crop_antialiased), ("prepare (JPEG scaled decode, uint8)", paths.prepare_crop)):
        tracker_module.crop_antialiased = fn  # what Tracker.initialize and Tracker.track call
        r = score(backend, backend.cfg, [], data)
        rows[way] = {"auc": round(r["auc"], 2), "per_sequence": r["per_sequence"], "fps": round(r["fps"], 1)}
        print(f"{way:30s} AUC {r['auc']:6.2f}  {r['per_sequence']}", flush=True)
    tracker_module.crop_antialiased = crop_antialiased
    aucs = [v["auc"] for v in rows.values()]
    load_avg = os.getloadavg()[0]
    print(f"AUC difference: {aucs[1] - aucs[0]:+.2f} points; {len(data)} sequences; load average {load_avg:.1f}")
    if args.json:
        args.json.write_text(json.dumps({"sequences": names, "pixels": pixels, "tracking": rows,
                                         "load_average": load_avg}, indent=1))


if __name__ == "__main__":
    main()

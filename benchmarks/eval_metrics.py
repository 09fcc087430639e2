"""How long scoring one tracker on the 280 LaSOT test sequences takes, vs a naive per-frame Python loop.

    python benchmarks/eval_metrics.py [--lasot ../shared/data/lasot_test_annos] [--results DIR]

Measures, in one run and on the same data:
  * `evaluate_results` end to end (read 280 result files + score + JSON report; no plots);
  * the vectorised scoring alone (`batch_curves` over all frames at once + mean) on boxes already in memory;
  * the baseline: the same rules as a plain per-frame, per-threshold Python loop (how evaluation code is
    often written), on the same boxes; it must give the same AUC, P and P_norm.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from siamtool.data.lasot import index_lasot
from siamtool.eval.metrics import (
    CENTRE_THRESHOLDS,
    NORM_THRESHOLDS,
    REPORT_INDEX,
    batch_curves,
    overlap_thresholds,
)
from siamtool.eval.report import evaluate_results
from siamtool.eval.results import read_result_file

REPO = Path(__file__).resolve().parents[1]


def naive_curves(pred: np.ndarray, gt: np.ndarray, absent: np.ndarray) -> tuple[list, list, list]:
    """The pytracking rules, one frame and one threshold at a time."""
    thr_o, thr_c, thr_n = overlap_thresholds().tolist(), CENTRE_THRESHOLDS.tolist(), NORM_THRESHOLDS.tolist()
    s, p, n = [0] * len(thr_o), [0] * len(thr_c), [0] * len(thr_n)
    pred, gt, absent = pred.tolist(), gt.tolist(), absent.tolist()
    for i, (b, g, a) in enumerate(zip(pred, gt, absent)):
        if i == 0:
            b = g
        x, y, w, h = b
        gx, gy, gw, gh = g
        valid = gw > 0 and gh > 0 and not a
        iw = max(0.0, min(x + w, gx + gw) - max(x, gx))
        ih = max(0.0, min(y + h, gy + gh) - max(y, gy))
        inter = iw * ih
        union = w * h + gw * gh - inter
        iou = inter / union if valid and union > 0 else -1.0
        cx, cy, gcx, gcy = x + 0.5 * (w - 1), y + 0.5 * (h - 1), gx + 0.5 * (gw - 1), gy + 0.5 * (gh - 1)
        err = math.hypot(cx - gcx, cy - gcy) if valid else math.inf
        if a:
            nerr = math.inf
        elif not valid:
            nerr = -1.0
        else:
            nerr = math.sqrt((cx / gw - gcx / gw) ** 2 + (cy / gh - gcy / gh) ** 2)
        for k, t in enumerate(thr_o):
            if iou > t:
                s[k] += 1
        for k, t in enumerate(thr_c):
            if err <= t:
                p[k] += 1
        for k, t in enumerate(thr_n):
            if nerr <= t:
                n[k] += 1
    total = len(gt)
    return [v / total for v in s], [v / total for v in p], [v / total for v in n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lasot", type=Path, default=REPO.parent / "shared" / "data" / "lasot_test_annos")
    ap.add_argument("--results", type=Path, default=REPO.parent / "shared" / "data" / "raw_results" / "ATOM")
    ap.add_argument("--repeat", type=int, default=3, help="Best of N for the fast paths.")
    args = ap.parse_args()

    t0 = time.perf_counter()
    index = index_lasot(args.lasot, "test", require_images=False)
    t_index = time.perf_counter() - t0
    seqs = index.sequences
    frames = sum(s.n_frames for s in seqs)
    print(f"{len(seqs)} sequences, {frames:,} frames; indexing the annotations took {t_index:.2f} s (not counted)")

    with tempfile.TemporaryDirectory() as tmp:
        full = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            report = evaluate_results({args.results.name: args.results}, index, report_path=Path(tmp) / "r.json",
                                      plots=False)
            full.append(time.perf_counter() - t0)
    t_full = min(full)
    r = report["trackers"][args.results.name]

    boxes = {s.name: read_result_file(args.results / f"{s.name}.txt", s.n_frames) for s in seqs}
    fast = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        curves = batch_curves([boxes[s.name] for s in seqs], [s.gt for s in seqs], [s.absent for s in seqs]).mean()
        fast.append(time.perf_counter() - t0)
    t_fast = min(fast)

    t0 = time.perf_counter()
    naive = [naive_curves(boxes[s.name], s.gt, s.absent) for s in seqs]
    t_naive = time.perf_counter() - t0
    n_auc = 100 * float(np.mean([np.mean(c[0]) for c in naive]))
    n_p = 100 * float(np.mean([c[1][REPORT_INDEX] for c in naive]))
    n_pn = 100 * float(np.mean([c[2][REPORT_INDEX] for c in naive]))

    print(f"evaluate_results (read + score + JSON): {t_full:.2f} s   "
          f"AUC {r['success_auc']:.4f}  P {r['precision_20']:.4f}  P_norm {r['norm_precision_20']:.4f}")
    print(f"vectorised scoring only:               {t_fast:.3f} s   AUC {100 * curves.auc:.4f}")
    print(f"naive per-frame Python loop:           {t_naive:.2f} s   "
          f"AUC {n_auc:.4f}  P {n_p:.4f}  P_norm {n_pn:.4f}")
    print(f"speed-up of the scoring: {t_naive / t_fast:.0f}x; end to end vs the loop alone: {t_naive / t_full:.1f}x")
    same = all(abs(a - b) < 1e-9 for a, b in ((n_auc, r["success_auc"]), (n_p, r["precision_20"]),
                                              (n_pn, r["norm_precision_20"])))
    print("naive and vectorised agree" if same else "MISMATCH between naive and vectorised scores")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())

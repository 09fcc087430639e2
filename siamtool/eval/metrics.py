"""LaSOT one-pass metrics: success, precision and normalized precision curves, vectorised, in float64.

Trackers are compared by these numbers, so they must be the numbers papers report. Two conventions:

* ``pytracking`` (default) follows ``pytracking/analysis/extract_results.py``, which reproduces the
  official toolkit's published numbers. Per frame: IoU of the boxes as given; centre error between
  centres ``x + (w - 1) / 2``; normalized centre error computed by dividing each *centre* by the GT
  width/height and then subtracting (not by dividing the offset: the two differ in the last bit, which
  decides exact ties at thresholds like 0.20 and moves LaSOT P_norm by ~0.002 points). Absent frames
  fail all three metrics; a visible frame whose GT has w <= 0 or h <= 0 fails success and precision and,
  as in pytracking, *passes* normalized precision (its error is -1).
* ``official`` follows the MATLAB toolkit (``LaSOT_Evaluation_Toolkit/utils``) where it differs: a GT
  box is valid only when all of x, y, w, h are > 0, an invalid visible frame fails success but passes
  both precisions (error -1), overlap thresholds are MATLAB's ``0:0.05:1`` (which differ from numpy's in
  the last bit, so IoU ties like 13/20 count as a success at 0.65), and a sequence whose whole curve is
  zero is left out of the mean (per metric).

Both: frame 1 is replaced by the GT; success = IoU strictly greater than each of 21 thresholds 0..1 and
AUC is the plain mean of those 21 points; precision = error <= t for t = 0..50 px, reported at 20 px;
normalized precision thresholds 0..0.5 step 0.01, reported at 0.20; every frame, absent ones included,
stays in the denominator (dividing by visible frames only inflates AUC by about a point).

Other benchmarks (`dataset`): pytracking scores LaSOT, LaSOT_ext, TrackingNet, OTB, NfS and VOT boxes
with the rules above, and UAV123 with one difference: a frame whose GT is invalid (NaN: the target is
absent; or a size <= 0) *passes* precision (error -1) as well as normalized precision, and fails success.
GOT-10k's own numbers are AO and SR (`got10k_scores`), computed as the official ``got10k`` toolkit does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from siamtool.errors import SiamtoolError
from siamtool.geometry import iou_xywh

CONVENTIONS = ("pytracking", "official")
INVALID_PASSES_PRECISION = ("uav",)
"""Datasets whose invalid-GT frames pass precision in pytracking's analysis (its ``dataset in ['uav']``)."""
CENTRE_THRESHOLDS = np.arange(51, dtype=np.float64)
"""Precision thresholds in pixels, 0..50."""
NORM_THRESHOLDS = np.arange(51, dtype=np.float64) / 100.0
"""Normalized precision thresholds 0..0.5 (i / 100, as both toolkits compute them)."""
REPORT_INDEX = 20
"""Index of the reported point on both precision curves: 20 px and 0.20."""


def _matlab_colon(start: float, step: float, stop: float) -> np.ndarray:
    """MATLAB's ``start:step:stop``: the upper half is counted down from `stop`, so 0.6 is exactly 0.6."""
    n = int(round((stop - start) / step))
    k = np.arange(n + 1)
    values = np.where(k <= n / 2, start + k * step, stop - (n - k) * step)
    if n % 2 == 0:
        values[n // 2] = (start + stop) / 2
    return values.astype(np.float64)


_OVERLAP_THRESHOLDS = {
    "pytracking": np.arange(21, dtype=np.float64) * 0.05,
    "official": _matlab_colon(0.0, 0.05, 1.0),
}


def check_convention(convention: str) -> str:
    """Return `convention` or raise a one-line error naming the valid ones."""
    if convention not in CONVENTIONS:
        raise SiamtoolError(f"unknown convention {convention!r}: use --convention pytracking or official")
    return convention


def overlap_thresholds(convention: str = "pytracking") -> np.ndarray:
    """The 21 IoU thresholds 0, 0.05, ..., 1 exactly as the convention's toolkit computes them."""
    return _OVERLAP_THRESHOLDS[check_convention(convention)].copy()


def centre_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame centre error in pixels and normalized by the GT size, in the toolkits' operation order.

    Returns NaN/inf where the GT has a zero size; callers mask those frames.
    """
    pred_c = pred[:, :2] + 0.5 * (pred[:, 2:] - 1.0)
    gt_c = gt[:, :2] + 0.5 * (gt[:, 2:] - 1.0)
    err = np.sqrt(((pred_c - gt_c) ** 2).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        norm = np.sqrt(((pred_c / gt[:, 2:] - gt_c / gt[:, 2:]) ** 2).sum(axis=1))
    return err, norm


@dataclass
class Curves:
    """Success (21), precision (51) and normalized precision (51) curves as fractions in [0, 1].

    One sequence holds 1-D arrays; `batch_curves` returns (S, T) arrays, one row per sequence, which
    index like a list of sequences (`curves[rows]`) and average with `mean`.
    """

    success: np.ndarray
    precision: np.ndarray
    norm_precision: np.ndarray

    @property
    def auc(self) -> np.ndarray | float:
        """Plain mean of the 21 success points (the toolkits' AUC, not a trapezoid)."""
        return self.success.mean(axis=-1)

    @property
    def precision_20(self) -> np.ndarray | float:
        return self.precision[..., REPORT_INDEX]

    @property
    def norm_precision_20(self) -> np.ndarray | float:
        return self.norm_precision[..., REPORT_INDEX]

    def __len__(self) -> int:
        return len(self.success) if self.success.ndim == 2 else 1

    def __getitem__(self, rows) -> Curves:
        return Curves(self.success[rows], self.precision[rows], self.norm_precision[rows])

    def mean(self, convention: str = "pytracking") -> Curves:
        """Average (S, T) sequence curves into the dataset's curves (AUC = mean of the averaged curve)."""
        return Curves(mean_curve(self.success, convention), mean_curve(self.precision, convention),
                      mean_curve(self.norm_precision, convention))


def frame_errors(
    pred: np.ndarray,
    gt: np.ndarray,
    absent: np.ndarray,
    convention: str = "pytracking",
    first_frames: np.ndarray | None = None,
    dataset: str = "lasot",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (IoU, centre error, normalized centre error) with the convention's failure markers.

    `pred` and `gt` are (N, 4) x,y,w,h in the same pixel convention, `pred` already cleaned by
    `results.clean_boxes` (same length as `gt`). `first_frames` (default ``[0]``) are the rows that start
    a sequence when several are concatenated; they are replaced by the GT here. A failure is encoded as
    IoU -1 / error +inf and a forced pass as error -1, so thresholding needs no special cases. `dataset`
    (a `siamtool.data.datasets` kind) selects pytracking's per-dataset rule (UAV, see the module docstring).
    """
    check_convention(convention)
    pred = np.array(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    absent = np.asarray(absent, dtype=bool)
    if pred.shape != gt.shape or len(absent) != len(gt):
        raise ValueError(f"shapes differ: pred {pred.shape}, gt {gt.shape}, absent {absent.shape}")
    first = np.zeros(1, dtype=np.int64) if first_frames is None else np.asarray(first_frames)
    pred[first] = gt[first]
    iou = iou_xywh(pred, gt)
    err, norm = centre_errors(pred, gt)
    if convention == "pytracking":
        invalid = ~((gt[:, 2] > 0) & (gt[:, 3] > 0)) | absent
        iou[invalid] = -1.0
        err[invalid] = -1.0 if dataset in INVALID_PASSES_PRECISION else np.inf
        norm[invalid] = -1.0
        if dataset not in INVALID_PASSES_PRECISION:
            norm[absent] = np.inf
    else:
        invalid = ~(gt > 0).all(axis=1)
        iou[invalid] = -1.0
        err[invalid] = -1.0
        norm[invalid] = -1.0
        iou[absent] = -1.0
        err[absent] = np.inf
        norm[absent] = np.inf
    # NaN boxes (possible only in the official convention, which carries them forward from frame 1)
    # fail every threshold, as NaN comparisons do in MATLAB.
    iou[np.isnan(iou)] = -1.0
    err[np.isnan(err)] = np.inf
    norm[np.isnan(norm)] = np.inf
    return iou, err, norm


def _counts(values: np.ndarray, seq_id: np.ndarray, n_seq: int, thresholds: np.ndarray, above: bool) -> np.ndarray:
    """Per sequence and threshold, how many frames have value > t (`above`) or value <= t; (S, T) int.

    Exact comparisons without an (N, T) matrix: searchsorted gives each frame the number of thresholds
    it passes, a bincount per (sequence, number) and a cumulative sum turn that into counts.
    """
    n_thr = len(thresholds)
    # k = number of thresholds strictly below the value, so value > t[j] <=> j < k, value <= t[j] <=> j >= k.
    k = np.searchsorted(thresholds, values, side="left")
    hist = np.bincount(seq_id * (n_thr + 1) + k, minlength=n_seq * (n_thr + 1)).reshape(n_seq, n_thr + 1)
    if above:
        return np.cumsum(hist[:, ::-1], axis=1)[:, ::-1][:, 1:]
    return np.cumsum(hist, axis=1)[:, :n_thr]


def batch_curves(
    preds: list[np.ndarray], gts: list[np.ndarray], absents: list[np.ndarray], convention: str = "pytracking",
    dataset: str = "lasot",
) -> Curves:
    """Success (S, 21), precision (S, 51) and normalized precision (S, 51) curves of S sequences at once.

    All frames are scored in one vectorised pass; each sequence's denominator is all of its frames.
    """
    lengths = np.array([len(g) for g in gts], dtype=np.int64)
    if (lengths == 0).any():
        raise ValueError("a sequence has no frames")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    iou, err, norm = frame_errors(np.concatenate(preds), np.concatenate(gts), np.concatenate(absents),
                                  convention, first_frames=starts, dataset=dataset)
    seq_id = np.repeat(np.arange(len(gts)), lengths)
    n = lengths[:, None].astype(np.float64)
    s = len(gts)
    return Curves(
        success=_counts(iou, seq_id, s, overlap_thresholds(convention), above=True) / n,
        precision=_counts(err, seq_id, s, CENTRE_THRESHOLDS, above=False) / n,
        norm_precision=_counts(norm, seq_id, s, NORM_THRESHOLDS, above=False) / n,
    )


def sequence_curves(
    pred: np.ndarray, gt: np.ndarray, absent: np.ndarray, convention: str = "pytracking"
) -> Curves:
    """The three curves of one sequence; the denominator is every frame of the sequence."""
    return batch_curves([pred], [gt], [absent], convention)[0]


def mean_curve(curves: np.ndarray, convention: str = "pytracking") -> np.ndarray:
    """Mean of per-sequence curves (S, T) over sequences.

    The official toolkit drops sequences whose curve is zero everywhere before averaging (a quirk of
    its plotting code that decides its numbers); pytracking averages all of them.
    """
    curves = np.asarray(curves, dtype=np.float64)
    if curves.ndim != 2 or len(curves) == 0:
        raise ValueError("mean_curve needs a non-empty (sequences, thresholds) array")
    if check_convention(convention) == "official":
        kept = curves[curves.sum(axis=1) > np.finfo(np.float64).eps]
        if len(kept) == 0:
            return np.zeros(curves.shape[1])
        curves = kept
    return curves.mean(axis=0)


# ------------------------------------------------------------------------------------------- GOT-10k


def got10k_ious(pred: np.ndarray, gt: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """IoU per frame exactly as the got10k toolkit's ``rect_iou(..., bound=resolution)``.

    Both boxes are first clipped to the image (x to [0, W], then w to [0, W - x]; likewise y, h), areas
    are plain w*h (no +1), and the IoU is ``inter / (union + eps)`` clipped to [0, 1].
    """
    boxes = []
    for b in (np.array(pred, dtype=np.float64), np.array(gt, dtype=np.float64)):
        b[:, 0] = np.clip(b[:, 0], 0, resolution[0])
        b[:, 1] = np.clip(b[:, 1], 0, resolution[1])
        b[:, 2] = np.clip(b[:, 2], 0, resolution[0] - b[:, 0])
        b[:, 3] = np.clip(b[:, 3], 0, resolution[1] - b[:, 1])
        boxes.append(b)
    p, g = boxes
    x1 = np.maximum(p[:, 0], g[:, 0])
    y1 = np.maximum(p[:, 1], g[:, 1])
    x2 = np.minimum(p[:, 0] + p[:, 2], g[:, 0] + g[:, 2])
    y2 = np.minimum(p[:, 1] + p[:, 3], g[:, 1] + g[:, 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = np.prod(p[:, 2:], axis=1) + np.prod(g[:, 2:], axis=1) - inter
    return np.clip(inter / (union + np.finfo(float).eps), 0.0, 1.0)


def got10k_sequence_ious(pred: np.ndarray, gt: np.ndarray, cover: np.ndarray, resolution: tuple[int, int]) -> np.ndarray:
    """The IoUs one GOT-10k sequence contributes: frame 1 left out, then frames with cover 0 left out."""
    ious = got10k_ious(pred[1:], gt[1:], resolution)
    return ious[np.asarray(cover)[1:] > 0]


def got10k_scores(ious: np.ndarray) -> dict[str, float]:
    """AO, SR0.50 and SR0.75 in percent from IoUs pooled over every frame of every sequence.

    As the toolkit: AO is the mean IoU, SR_t the fraction of IoUs strictly greater than t (its success
    curve uses ``np.linspace(0, 1, 101)``, whose 0.5 and 0.75 are exact).
    """
    ious = np.asarray(ious, dtype=np.float64)
    if ious.size == 0:
        raise ValueError("no frames to score (every frame has cover 0)")
    return {"ao": float(np.mean(ious)) * 100.0, "sr50": float(np.mean(ious > 0.5)) * 100.0,
            "sr75": float(np.mean(ious > 0.75)) * 100.0}

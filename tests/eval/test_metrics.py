"""Hand-computed cases for every scoring rule, in both conventions."""

from __future__ import annotations

import numpy as np
import pytest

from siamtool.eval.metrics import (
    CENTRE_THRESHOLDS,
    NORM_THRESHOLDS,
    centre_errors,
    frame_errors,
    mean_curve,
    overlap_thresholds,
    sequence_curves,
)

GT4 = np.array([[1, 1, 10, 10]] * 4, dtype=float)
PRED4 = np.array([[50, 50, 3, 3], [1, 1, 10, 10], [6, 1, 10, 10], [1, 1, 10, 10]], dtype=float)
ABSENT4 = np.array([False, False, False, True])


def test_hand_computed_sequence():
    """Frame 1 replaced by GT; IoU 1, 1, 1/3, absent -> success 3/4 below 1/3, 2/4 up to 0.95, 0 at 1."""
    c = sequence_curves(PRED4, GT4, ABSENT4)
    thr = overlap_thresholds()
    expected_success = np.where(thr < 1 / 3, 0.75, np.where(thr < 1.0, 0.5, 0.0))
    np.testing.assert_array_equal(c.success, expected_success)
    # AUC is the plain mean of the 21 points, not a trapezoid over them.
    assert c.auc == pytest.approx((7 * 0.75 + 13 * 0.5) / 21, abs=1e-15)
    assert c.auc != pytest.approx(np.trapezoid(expected_success, thr), abs=1e-3)
    # Centre errors 0, 0, 5 px, absent: 2/4 below 5 px, 3/4 from 5 px on.
    np.testing.assert_array_equal(c.precision, np.where(CENTRE_THRESHOLDS < 5, 0.5, 0.75))
    assert c.precision_20 == 0.75
    # Normalized: 0.5 of the width on frame 3, so at 0.20 only frames 1 and 2 pass.
    assert c.norm_precision_20 == 0.5
    assert c.norm_precision[-1] == 0.75
    assert c.success.dtype == c.precision.dtype == c.norm_precision.dtype == np.float64


def test_absent_frames_stay_in_the_denominator():
    """A perfect tracker on a half-absent sequence scores half, never 100 %."""
    gt = np.array([[1, 1, 10, 10]] * 4, dtype=float)
    absent = np.array([False, True, True, False])
    for convention in ("pytracking", "official"):
        c = sequence_curves(gt, gt, absent, convention)
        assert c.success[0] == 0.5 and c.precision_20 == 0.5 and c.norm_precision_20 == 0.5


def test_frame_one_is_replaced_by_the_ground_truth():
    pred = np.array([[100, 100, 1, 1], [1, 1, 10, 10]], dtype=float)
    gt = np.array([[1, 1, 10, 10]] * 2, dtype=float)
    iou, err, _ = frame_errors(pred, gt, np.zeros(2, bool))
    assert iou[0] == 1.0 and err[0] == 0.0


def test_non_positive_ground_truth_pytracking():
    """Visible frame with GT w<=0: fails success and precision, passes normalized precision (pytracking)."""
    gt = np.array([[1, 1, 10, 10], [1, 1, -1, -1], [1, 1, 0, 5]], dtype=float)
    pred = np.array([[1, 1, 10, 10], [1, 1, 10, 10], [1, 1, 10, 10]], dtype=float)
    iou, err, norm = frame_errors(pred, gt, np.zeros(3, bool), "pytracking")
    assert list(iou[1:]) == [-1.0, -1.0]
    assert np.isinf(err[1:]).all()
    assert list(norm[1:]) == [-1.0, -1.0]
    c = sequence_curves(pred, gt, np.zeros(3, bool), "pytracking")
    assert c.success[0] == pytest.approx(1 / 3) and c.precision_20 == pytest.approx(1 / 3)
    assert c.norm_precision_20 == 1.0


def test_non_positive_ground_truth_official():
    """Official toolkit: a GT box is valid only if x, y, w, h are all > 0; invalid frames pass both precisions."""
    gt = np.array([[1, 1, 10, 10], [0, 5, 10, 10], [1, 1, 0, 5]], dtype=float)
    pred = gt.copy()
    pred[2] = [1, 1, 10, 10]
    c = sequence_curves(pred, gt, np.zeros(3, bool), "official")
    assert c.success[0] == pytest.approx(1 / 3)  # x = 0 makes frame 2 invalid even though the box is exact
    assert c.precision_20 == 1.0 and c.norm_precision_20 == 1.0
    p = sequence_curves(pred, gt, np.zeros(3, bool), "pytracking")
    assert p.success[0] == pytest.approx(2 / 3)  # pytracking only looks at w and h


def test_normalized_error_divides_centres_then_subtracts():
    """GT (1,1,5,5), prediction 1 px right: the offset is exactly 0.2 of the width, but the toolkits divide
    each centre by the width first, which rounds to 0.20000000000000007 and fails the 0.20 threshold.
    This rounding is what makes ATOM's P_norm 57.6806 (dividing the offset gives 57.6826)."""
    gt = np.array([[1, 1, 5, 5]], dtype=float)
    pred = np.array([[2, 1, 5, 5]], dtype=float)
    err, norm = centre_errors(pred, gt)
    assert err[0] == 1.0
    assert norm[0] > 0.2 and norm[0] == pytest.approx(0.2, abs=1e-12)
    assert not norm[0] <= NORM_THRESHOLDS[20]


def test_official_thresholds_count_iou_ties_differently():
    """IoU exactly 13/20: MATLAB's 0:0.05:1 holds 0.65 as 0.6499999999999999, so the tie is a success there."""
    gt = np.array([[1, 1, 20, 1], [1, 1, 20, 1]], dtype=float)
    pred = np.array([[1, 1, 20, 1], [1, 1, 13, 1]], dtype=float)
    assert overlap_thresholds("official")[13] < 0.65 <= overlap_thresholds("pytracking")[13]
    off = sequence_curves(pred, gt, np.zeros(2, bool), "official")
    pyt = sequence_curves(pred, gt, np.zeros(2, bool), "pytracking")
    assert off.success[13] == 1.0 and pyt.success[13] == 0.5
    assert np.allclose(overlap_thresholds("official"), np.linspace(0, 1, 21), atol=1e-15)


def test_official_mean_drops_all_zero_sequences():
    curves = np.array([[0.0, 0.0], [0.5, 0.25]])
    np.testing.assert_array_equal(mean_curve(curves, "pytracking"), [0.25, 0.125])
    np.testing.assert_array_equal(mean_curve(curves, "official"), [0.5, 0.25])


def test_nan_boxes_fail_everything():
    gt = np.array([[1, 1, 10, 10]] * 2, dtype=float)
    pred = np.array([[1, 1, 10, 10], [np.nan] * 4])
    c = sequence_curves(pred, gt, np.zeros(2, bool), "official")
    assert c.success[0] == 0.5 and c.precision[-1] == 0.5 and c.norm_precision[-1] == 0.5


def test_unknown_convention_is_a_clear_error():
    from siamtool.errors import SiamtoolError

    with pytest.raises(SiamtoolError, match="pytracking or official"):
        overlap_thresholds("got10k")


def test_batch_scores_each_sequence_on_its_own():
    """Concatenated scoring = one sequence at a time, frame 1 of every sequence replaced, own denominators."""
    from siamtool.eval.metrics import batch_curves

    rng = np.random.default_rng(0)
    gts = [np.c_[rng.integers(1, 50, (n, 2)), rng.integers(1, 30, (n, 2))].astype(float) for n in (5, 9, 3)]
    preds = [g + rng.normal(0, 4, g.shape) for g in gts]
    for p in preds:
        p[0] = [500, 500, 1, 1]  # frame 1 is always replaced by the GT
        p[:, 2:] = np.abs(p[:, 2:]) + 1
    absents = [rng.random(len(g)) < 0.3 for g in gts]
    for a in absents:
        a[0] = False
    batch = batch_curves(preds, gts, absents)
    assert batch.success.shape == (3, 21) and batch.precision.shape == (3, 51)
    for i, (p, g, a) in enumerate(zip(preds, gts, absents)):
        one = sequence_curves(p, g, a)
        np.testing.assert_array_equal(batch[i].success, one.success)
        np.testing.assert_array_equal(batch[i].precision, one.precision)
        np.testing.assert_array_equal(batch[i].norm_precision, one.norm_precision)
        assert batch[i].success[0] >= 1 / len(g)  # frame 1 counts, whatever was written there
    np.testing.assert_allclose(batch.mean().success, batch.success.mean(axis=0))

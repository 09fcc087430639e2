"""Issue #20's correctness defects of the Tracker and the online model, each pinned by a test that failed
before the fix: non-finite scores and boxes, the online peak's 1/4-cell staircase, the Hann window's
tie on an even map, growth compared as a float, clipped state against an unclipped template, and state
(and the loss reference) carried over between sequences or frozen on frame 2."""

from __future__ import annotations

import numpy as np
import pytest

from siamtool.errors import SiamtoolError
from siamtool.geometry import search_window, template_window, xywh_to_cxcywh
from siamtool.tracking.online import TranslationFilter, gaussian_label, refine_peak, upsampled_response
from siamtool.tracking.tracker import Tracker
from tests.tracking.fakes import OracleBackend, ScriptedBackend, peaks, render, small_config

BOX = (100.0, 100.0, 40.0, 40.0)


def _scripted(box=BOX, **track):
    backend = ScriptedBackend()
    tracker = Tracker(backend, small_config(**{"calibrate_size": 0.0, **track}))
    tracker.initialize(render(box), box)
    return backend, tracker


def _confident(cell=(8, 8), score=0.9):
    """A peak at `cell` whose box is the 40x40 target where it was (64 crop px at the crop centre)."""
    return peaks(16, [(*cell, score, (128.0, 128.0, 64.0, 64.0))])


# ------------------------------------------------------------------------------- non-finite answers


def test_a_nan_cell_never_wins_and_never_enters_the_state():
    backend, tracker = _scripted(window_influence=0.0)
    score, boxes = _confident((8, 8))
    score[2, 3] = np.nan  # argmax of a map with a NaN picks the NaN
    backend.queue.append((score, boxes))
    r = tracker.track(render(BOX))
    assert not r.lost and np.isfinite(r.score) and np.all(np.isfinite(r.box))
    np.testing.assert_allclose(r.box, BOX, atol=1e-6)


@pytest.mark.parametrize("what", ["score", "box"])
def test_a_non_finite_answer_is_a_lost_frame_and_tracking_goes_on(what):
    backend, tracker = _scripted()
    backend.queue.append(_confident())
    tracker.track(render(BOX))
    score, boxes = _confident()
    if what == "score":
        score[:] = np.nan
    else:
        boxes[:] = np.inf
    backend.queue.append((score, boxes))
    r = tracker.track(render(BOX))
    assert r.lost and r.score == 0.0
    np.testing.assert_allclose(r.box, BOX)  # the last confident box, not NaN
    assert np.all(np.isfinite(tracker.center)) and np.all(np.isfinite(tracker.size))
    backend.queue.append(_confident())
    r = tracker.track(render(BOX))
    assert not r.lost and np.all(np.isfinite(r.box))


def test_the_online_filter_survives_nan_and_all_zero_features():
    n = 16
    f = TranslationFilter()
    f.add_sample(np.zeros((8, n, n), np.float32), (7.0, 7.0), (3.0, 3.0), permanent=True)
    f.calibrate(np.zeros((8, n, n), np.float32))
    coarse, fine = f.respond(np.zeros((8, n, n), np.float32))  # 0 / 0 before
    assert np.all(np.isfinite(coarse)) and np.all(np.isfinite(fine)) and np.isfinite(f.peak)
    rng = np.random.default_rng(0)
    good = rng.normal(size=(8, n, n)).astype(np.float32)
    g = TranslationFilter()
    g.add_sample(good, (7.0, 7.0), (3.0, 3.0), permanent=True)
    bad = good.copy()
    bad[0, 3, 3] = np.nan
    g.add_sample(bad, (7.0, 7.0), (3.0, 3.0))  # ignored: one NaN cell poisons every frequency
    assert np.all(np.isfinite(g.respond(good)[0]))


# --------------------------------------------------------------------------------- sub-cell peak


@pytest.mark.parametrize("centre", [(7.0, 7.0), (7.1, 6.93), (7.37, 7.62), (6.55, 7.45), (7.875, 7.2)])
def test_refine_peak_finds_an_off_grid_peak_to_a_hundredth_of_a_cell(centre):
    n, factor = 16, 4
    fine = upsampled_response(np.fft.rfft2(gaussian_label((n, n), centre, sigma=1.0)), (n, n), factor)
    row, col = refine_peak(fine, factor, (7, 7))
    assert (row, col) == pytest.approx(centre, abs=0.01)  # the 1/4-cell grid alone is off by up to 0.125


def test_a_smoothly_moving_peak_comes_out_smooth_not_in_quarter_cell_steps():
    n, factor = 16, 4
    truth = np.linspace(7.0, 7.5, 11)
    found = [refine_peak(upsampled_response(np.fft.rfft2(gaussian_label((n, n), (7.0, c), 1.0)), (n, n), factor),
                         factor, (7, 7))[1] for c in truth]
    np.testing.assert_allclose(found, truth, atol=0.01)
    assert np.all(np.diff(found) > 0)  # strictly increasing: no staircase


@pytest.mark.parametrize("centre", [(7.3, 6.8), (8.6, 9.15)])
def test_the_filter_peaks_where_it_was_told_the_target_is_off_grid(centre):
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(32, 16, 16)).astype(np.float32)
    f = TranslationFilter(reg=0.01, sigma_factor=0.1, upsample=4)
    f.add_sample(feats, centre, (10.0, 10.0), permanent=True)  # sigma = 1 cell
    _, fine = f.respond(feats)
    assert refine_peak(fine, 4, (int(centre[0]), int(centre[1]))) == pytest.approx(centre, abs=0.03)


# --------------------------------------------------------------------- even Hann window, growth


def test_a_flat_score_map_keeps_the_box_still_instead_of_walking_up_left():
    """Four equal Hann maxima around the centre of a 16x16 map: argmax chose the top-left one, and boxes
    that sit at their cell centres moved the target half a cell up and left every frame."""
    backend, tracker = _scripted(window_influence=0.3, scale_penalty=0.0)
    centres = (np.arange(16) + 0.5) * 16
    boxes = np.zeros((16, 16, 4), np.float32)
    boxes[..., 0], boxes[..., 1], boxes[..., 2:] = centres[None, :], centres[:, None], 64.0
    for _ in range(10):
        backend.queue.append((np.full((16, 16), 0.5, np.float32), boxes.copy()))
        r = tracker.track(render(BOX))
    assert xywh_to_cxcywh(r.box)[:2] == pytest.approx((120.0, 120.0), abs=1e-6)


def test_growth_that_reaches_the_widest_window_up_to_rounding_restarts_the_cycle():
    # 1.7 * 1.7 = 2.8899999999999997 < 2.89: compared as floats, the widest window was searched twice.
    backend, tracker = _scripted(lost_threshold=0.25, lost_ratio=0.0, search_growth=1.7, max_growth=2.89)
    growths = []
    for _ in range(5):
        backend.queue.append(_confident(score=0.05))
        growths.append(tracker.track(render(BOX)).growth)
    assert growths == pytest.approx([1.0, 1.7, 2.89, 1.0, 1.7])


# ------------------------------------------------------------------ unclipped state, tiny boxes


@pytest.mark.parametrize("box", [(150.0, 100.0, 2.0, 3.0), (300.0, 100.0, 50.0, 40.0), (-12.0, 230.0, 30.0, 20.0)])
def test_the_state_is_the_box_the_template_was_cut_from(box):
    """A 2x3 box was searched as if 4 wide (min_size) and a box over the edge started shifted (centre
    clamped); the template is cut from the raw box, so the state must be the raw box too."""
    _, tracker = _scripted(box)
    np.testing.assert_allclose(tracker.state_box, box)
    window = tracker.next_window()
    tpl = template_window(np.array(box), 0.5, 128)
    assert (window.cx, window.cy) == pytest.approx((tpl.cx, tpl.cy))
    assert window.side == pytest.approx(tpl.side * 2)
    # The reported box is still clipped to the frame and at least min_size.
    cx, cy, w, h = xywh_to_cxcywh(tracker.box)
    assert 0 <= cx <= 320 and 0 <= cy <= 240 and w >= 4.0 and h >= 4.0


def test_a_tiny_target_is_tracked_at_its_own_scale():
    box = np.array([150.0, 100.0, 3.0, 3.0])
    gt = box + np.arange(8)[:, None] * np.array([0.5, 0.25, 0.0, 0.0])
    tracker = Tracker(OracleBackend(), small_config(window_influence=0.0, scale_penalty=0.0, size_lr=1.0))
    tracker.initialize(render(gt[0]), gt[0])
    for b in gt[1:]:
        r = tracker.track(render(b))
        assert not r.lost
        assert xywh_to_cxcywh(tracker.state_box) == pytest.approx(xywh_to_cxcywh(b), abs=0.05)
        assert r.window.side == pytest.approx(search_window(b, 0.5, 128, 256).side, rel=0.05)


# --------------------------------------------------------------- state between sequences, gates


def test_a_rejected_initial_box_leaves_no_state_of_the_previous_sequence():
    backend, tracker = _scripted()
    backend.queue.append(_confident())
    tracker.track(render(BOX))
    with pytest.raises(SiamtoolError, match="outside"):
        tracker.initialize(render(BOX), (500.0, 10.0, 20.0, 20.0))
    with pytest.raises(RuntimeError, match="before initialize"):
        tracker.track(render(BOX))  # before the fix: tracked the previous sequence's target


def test_a_new_sequence_starts_with_a_fresh_reference_and_growth():
    backend, tracker = _scripted(lost_threshold=0.25, lost_ratio=0.5)
    backend.queue.append(_confident(score=0.95))
    tracker.track(render(BOX))
    backend.queue.append(_confident(score=0.01))
    assert tracker.track(render(BOX)).lost and tracker.growth > 1.0
    tracker.initialize(render(BOX), BOX)
    assert tracker.growth == 1.0 and tracker.reference_score is None and not tracker.lost


def test_an_occluded_frame_2_does_not_lower_the_loss_threshold_for_the_whole_sequence():
    backend, tracker = _scripted(lost_threshold=0.25, lost_ratio=0.5)
    for s in (0.04, 0.9, 0.85, 0.9):  # frame 2 occluded, then the target is back
        backend.queue.append(_confident(score=s))
        tracker.track(render(BOX))
    backend.queue.append(_confident(score=0.1))
    assert tracker.track(render(BOX)).lost  # 0.1 < min(0.25, 0.5 x 0.9); keyed off frame 2: 0.1 > 0.02

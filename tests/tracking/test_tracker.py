"""The Tracker's crop -> backend -> post-processing -> inverse-map chain, with backends whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from siamtool.errors import SiamtoolError
from siamtool.geometry import iou_xywh, search_window, xywh_to_cxcywh
from siamtool.tracking.tracker import Tracker, check_init_box, hann_window, select_candidate
from tests.tracking.fakes import OracleBackend, ScriptedBackend, peaks, render, small_config

EXACT = {"window_influence": 0.0, "scale_penalty": 0.0, "size_lr": 1.0}
"""Post-processing that trusts the network fully: the box must then equal the oracle's answer."""


def trajectory(n: int, start, end) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    return np.asarray(start, float) * (1 - t) + np.asarray(end, float) * t


def run(tracker: Tracker, boxes: np.ndarray, size=(320, 240), visible=None):
    tracker.initialize(render(boxes[0], size), boxes[0])
    out = []
    for i, b in enumerate(boxes[1:], 1):
        out.append(tracker.track(render(b, size, visible=True if visible is None else bool(visible[i]))))
    return out


@pytest.mark.parametrize(("size", "start", "end"), [
    # small target: the search crop upsamples the frame
    ((320, 240), (60.3, 70.6, 40.0, 30.0), (190.7, 120.2, 58.0, 52.5)),
    # large target: the crop shrinks the frame > 2x, so the anti-aliased (block-average) path runs
    ((640, 480), (120.4, 90.2, 190.0, 150.0), (260.9, 200.5, 230.0, 170.0)),
])
def test_oracle_box_comes_back_exactly(size, start, end):
    """A backend that finds the target perfectly must yield the true box in frame pixels.

    Errors are measured in search-crop pixels (the oracle's resolution): a half-pixel convention slip
    anywhere in crop / inverse map would show up as >= 0.5 crop px in the centre.
    """
    gt = trajectory(25, start, end)
    backend = OracleBackend()
    tracker = Tracker(backend, small_config(**EXACT))
    results = run(tracker, gt, size)
    err = np.abs(xywh_to_cxcywh(np.stack([r.box for r in results])) - xywh_to_cxcywh(gt[1:]))
    err_crop_px = err * np.array([r.window.scale for r in results])[:, None]
    assert err_crop_px[:, :2].max() < 0.15, err_crop_px.max(axis=0)
    assert err_crop_px[:, 2:].max() < 0.3, err_crop_px.max(axis=0)
    assert not any(r.lost for r in results)
    assert all(abs(r.score - 0.95) < 0.2 for r in results)


def test_oracle_with_default_post_processing_follows_closely():
    gt = trajectory(30, (60, 70, 40, 30), (200, 130, 60, 45))
    results = run(Tracker(OracleBackend(), small_config()), gt)
    ious = iou_xywh(np.stack([r.box for r in results]), gt[1:])
    assert ious.min() > 0.85
    centre_err = np.abs(xywh_to_cxcywh(np.stack([r.box for r in results]))[:, :2] - xywh_to_cxcywh(gt[1:])[:, :2])
    assert centre_err.max() < 0.6  # the centre is not smoothed, only the size


class ShrinkingHead(OracleBackend):
    """An oracle whose box head regresses heights towards the mean: every height x 0.6."""

    def search(self, crop_rgb, features):
        score, boxes = super().search(crop_rgb, features)
        boxes = boxes.copy()
        boxes[..., 3] *= 0.6
        return score, boxes


def test_first_frame_calibration_undoes_a_biased_box_head():
    """track.calibrate_size: the head's size error on the first frame (known answer) is divided out, so
    a head that sizes a tall target 40 % too short keeps the box right; without it the box shrinks."""
    gt = trajectory(30, (60, 40, 30, 90), (180, 80, 36, 108))
    for calibrate, bound in ((1.0, 0.05), (0.0, None)):
        tracker = Tracker(ShrinkingHead(), small_config(calibrate_size=calibrate))
        results = run(tracker, gt)
        heights = np.array([r.box[3] for r in results]) / gt[1:, 3]
        if calibrate:
            assert np.abs(heights - 1).max() < bound, heights
            np.testing.assert_allclose(tracker.size_calibration, [1.0, 1 / 0.6], rtol=0.02)
        else:
            assert heights[-1] < 0.7, heights  # converged towards the biased head's 0.6


def test_template_features_are_computed_once():
    gt = trajectory(11, (60, 70, 40, 30), (100, 90, 40, 30))
    backend = OracleBackend()
    run(Tracker(backend, small_config()), gt)
    assert backend.template_calls == 1
    assert backend.search_calls == 11  # 10 frames + the first frame's (size calibration)


def _scripted(box=(100.0, 100.0, 40.0, 40.0), **track):
    """A tracker whose every search answers the next queued maps (no first-frame calibration search,
    which would consume one)."""
    backend = ScriptedBackend()
    tracker = Tracker(backend, small_config(**{"calibrate_size": 0.0, **track}))
    tracker.initialize(render(box), box)
    return backend, tracker


def _cell_centre(i: int, j: int) -> tuple[float, float]:
    return (j + 0.5) * 16, (i + 0.5) * 16


def test_window_penalty_prefers_the_peak_near_the_last_position():
    # Previous box 40x40 -> crop scale 1.6 -> 64 px in the crop: candidates of that size get no scale penalty.
    far, near = (1, 1), (8, 9)
    def frame_maps():
        return peaks(16, [(*far, 0.9, (*_cell_centre(*far), 64, 64)), (*near, 0.8, (*_cell_centre(*near), 64, 64))])

    for influence, expected in ((0.0, far), (0.3, near)):
        backend, tracker = _scripted(window_influence=influence, scale_penalty=0.0)
        window = tracker.next_window()
        backend.queue.append(frame_maps())
        r = tracker.track(render((100, 100, 40, 40)))
        cx, cy = xywh_to_cxcywh(r.box)[:2]
        ex, ey = window.points_to_frame(np.array(_cell_centre(*expected)))
        assert (cx, cy) == pytest.approx((ex, ey)), influence


def test_scale_penalty_suppresses_a_sudden_size_change():
    a, b = (7, 8), (8, 7)  # symmetric about the centre: the same window value
    def maps(big_score):
        return peaks(16, [(*a, 0.8, (*_cell_centre(*a), 64, 64)), (*b, big_score, (*_cell_centre(*b), 128, 128))])

    # The argmax (select_margin 0, the default): the penalty decides which of the two neighbours wins.
    for k, expected_w in ((0.0, 128), (0.2, 64)):
        backend, tracker = _scripted(window_influence=0.3, scale_penalty=k, size_lr=1.0)
        backend.queue.append(maps(0.85))
        r = tracker.track(render((100, 100, 40, 40)))
        assert r.crop_box[2] == pytest.approx(expected_w), k
    # A select_margin blends two neighbours this close (test_runtime_parity): the penalty moves weight off
    # the sudden size change.
    widths = []
    for k in (0.0, 0.2):
        backend, tracker = _scripted(window_influence=0.3, scale_penalty=k, size_lr=1.0, select_margin=0.2)
        backend.queue.append(maps(0.85))
        widths.append(tracker.track(render((100, 100, 40, 40))).crop_box[2])
    assert 64 < widths[1] < widths[0] < 128, widths


def test_aspect_change_is_penalised_like_scale_change():
    score = np.full((3, 3), 0.8, np.float32)
    boxes = np.tile(np.float32([64, 64, 64, 64]), (3, 3, 1))
    boxes[0, 0] = [64, 64, 32, 128]  # same area, aspect 4x
    score[0, 0] = 0.85
    flat = np.ones((3, 3), np.float32)
    chosen = select_candidate(score, boxes, (64, 64), flat, 0.0, 0.0, 0.5)
    assert chosen.index == (0, 0)
    chosen = select_candidate(score, boxes, (64, 64), flat, 0.0, 0.2, 0.5)
    assert chosen.index != (0, 0)
    assert chosen.penalty == pytest.approx(1.0)


def test_size_moves_by_the_learning_rate_times_penalised_score():
    backend, tracker = _scripted(window_influence=0.0, scale_penalty=0.1, size_lr=0.6)
    window = tracker.next_window()
    c = _cell_centre(8, 8)
    backend.queue.append(peaks(16, [(8, 8, 0.8, (c[0] + 3.2, c[1] - 1.6, 128, 128))]))
    r = tracker.track(render((100, 100, 40, 40)))
    sel = select_candidate(*peaks(16, [(8, 8, 0.8, (0, 0, 128, 128))]), (64, 64), hann_window(16, 16), 0, 0.1, 0.5)
    lr = sel.penalty * 0.8 * 0.6
    assert sel.penalty < 1
    cx, cy, w, h = xywh_to_cxcywh(r.box)
    assert w == pytest.approx(40 * (1 - lr) + 80 * lr)  # 128 crop px = 80 frame px
    assert h == pytest.approx(w)
    # The centre follows the box head fully (sub-cell refinement), it is not smoothed.
    assert (cx, cy) == pytest.approx(tuple(window.points_to_frame(np.array([c[0] + 3.2, c[1] - 1.6]))))


def test_lost_keeps_the_box_and_grows_the_search_step_by_step():
    box = (100.0, 100.0, 40.0, 40.0)
    backend, tracker = _scripted(box, lost_threshold=0.25, search_growth=1.5, max_growth=4.0)
    # A confident first frame sets the reference score (the box stays: the peak is the box itself).
    backend.queue.append(peaks(16, [(8, 8, 0.9, (128, 128, 64, 64))]))
    np.testing.assert_allclose(tracker.track(render(box)).box, box)
    base = search_window(np.array(box), 0.5, 128, 256).side
    growths = []
    for _ in range(7):
        backend.queue.append(peaks(16, [(3, 3, 0.1, (40, 40, 64, 64))]))
        r = tracker.track(render(box))
        assert r.lost and r.score < 0.25
        np.testing.assert_allclose(r.box, box)
        assert r.window.side == pytest.approx(base * r.growth)
        growths.append(r.growth)
    # Local to global, then the cycle restarts at the training scale (where the model sees best).
    assert growths == pytest.approx([1.0, 1.5, 2.25, 3.375, 4.0, 1.0, 1.5])
    for _ in range(2):  # 2.25, 3.375: the next search is the widest again
        backend.queue.append(peaks(16, [(3, 3, 0.1, (40, 40, 64, 64))]))
        tracker.track(render(box))
    # Re-detection: a confident peak anywhere in the grown window recovers the target there.
    window = tracker.next_window()
    assert window.side == pytest.approx(base * 4.0)
    backend.queue.append(peaks(16, [(9, 10, 0.9, (*_cell_centre(9, 10), 16, 16))]))
    r = tracker.track(render(box))
    assert not r.lost and r.growth == pytest.approx(4.0)
    assert xywh_to_cxcywh(r.box)[:2] == pytest.approx(window.points_to_frame(np.array(_cell_centre(9, 10))))
    assert tracker.growth == 1.0 and tracker.next_window().side == pytest.approx(
        search_window(r.box, 0.5, 128, 256).side)


def test_recovery_far_from_the_last_box_needs_a_strong_score():
    """Hysteresis (track.recover_ratio/recover_radius): while lost, a weak candidate far from where the
    target was last seen (a look-alike found while the target is away) does not end the loss; the same
    weak score next to the last box does (a target that only dimmed), and so does a strong far one."""
    box = (100.0, 100.0, 40.0, 40.0)
    far, near = (2, 13), (8, 8)

    def lose_then(cell, score):
        backend, tracker = _scripted(box, lost_threshold=0.25, lost_ratio=0.0, recover_ratio=0.5,
                                     recover_radius=1.0, window_influence=0.0)
        backend.queue.append(peaks(16, [(8, 8, 0.9, (128, 128, 64, 64))]))  # reference score 0.9
        tracker.track(render(box))
        backend.queue.append(peaks(16, [(8, 8, 0.1, (128, 128, 64, 64))]))
        assert tracker.track(render(box)).lost
        tracker.growth = 1.0  # the next window at the normal size, so cells map as in the first frame
        backend.queue.append(peaks(16, [(*cell, score, (*_cell_centre(*cell), 64, 64))]))
        return tracker.track(render(box))

    assert lose_then(far, 0.4).lost  # above lost_threshold, below 0.5 x 0.9, 1.5 target sizes away
    assert not lose_then(near, 0.4).lost
    assert not lose_then(far, 0.5).lost
    # Off (recover_ratio 0): the weak far candidate recovers, as before.
    backend, tracker = _scripted(box, lost_threshold=0.25, lost_ratio=0.0, window_influence=0.0)
    backend.queue.append(peaks(16, [(8, 8, 0.1, (128, 128, 64, 64))]))
    assert tracker.track(render(box)).lost
    tracker.growth = 1.0
    backend.queue.append(peaks(16, [(*far, 0.4, (*_cell_centre(*far), 64, 64))]))
    assert not tracker.track(render(box)).lost


def test_a_target_scored_low_from_the_start_is_tracked_not_lost():
    """Per-target calibration: a visible target the model scores 0.2 is followed; a drop below half of
    the first frame's score is still reported lost."""
    box = (100.0, 100.0, 40.0, 40.0)
    backend, tracker = _scripted(box, lost_threshold=0.25, lost_ratio=0.5)
    for s in (0.2, 0.15, 0.11):
        backend.queue.append(peaks(16, [(8, 8, s, (128, 128, 64, 64))]))
        assert not tracker.track(render(box)).lost
    backend.queue.append(peaks(16, [(8, 8, 0.09, (128, 128, 64, 64))]))
    assert tracker.track(render(box)).lost
    # With the ratio off, the absolute threshold alone decides (the old behaviour).
    backend, tracker = _scripted(box, lost_threshold=0.25, lost_ratio=0.0)
    backend.queue.append(peaks(16, [(8, 8, 0.2, (128, 128, 64, 64))]))
    assert tracker.track(render(box)).lost


def test_oracle_redetects_a_target_that_vanished_and_reappeared_far_away():
    a, b = (60.0, 60.0, 40.0, 30.0), (230.0, 150.0, 40.0, 30.0)
    boxes = np.array([a] * 6 + [a] * 4 + [b] * 10)
    visible = [True] * 6 + [False] * 4 + [True] * 10
    tracker = Tracker(OracleBackend(), small_config())
    results = run(tracker, boxes, visible=visible)
    lost = [r.lost for r in results]
    assert not any(lost[:5]) and all(lost[5:9])
    for r in results[5:9]:
        assert iou_xywh(r.box, np.array(a)) > 0.9  # the box stays while lost
    assert not results[-1].lost
    assert iou_xywh(results[-1].box, np.array(b)) > 0.85
    assert max(r.growth for r in results) > 1.0


def test_box_is_clipped_to_the_frame_and_kept_above_min_size():
    backend, tracker = _scripted(window_influence=0.0, scale_penalty=0.0, size_lr=1.0, min_size=6.0)
    backend.queue.append(peaks(16, [(8, 8, 0.9, (-4000.0, 9000.0, 0.01, 0.01))]))
    r = tracker.track(render((100, 100, 40, 40)))
    cx, cy, w, h = xywh_to_cxcywh(r.box)
    assert 0 <= cx <= 320 and 0 <= cy <= 240
    assert w >= 6.0 and h >= 6.0


def test_grayscale_and_bgra_frames_are_accepted():
    backend, tracker = _scripted()
    gray = render((100, 100, 40, 40))[..., 1]
    tracker.initialize(gray, (100, 100, 40, 40))
    backend.queue.append(peaks(16, [(8, 8, 0.9, (*_cell_centre(8, 8), 64, 64))]))
    bgra = np.dstack([render((100, 100, 40, 40)), np.full((240, 320), 255, np.uint8)])
    assert tracker.track(bgra).search_crop.shape == (256, 256, 3)


@pytest.mark.parametrize(("box", "msg"), [
    ((400, 10, 20, 20), "outside the 320x240 frame"),
    ((-50, -50, 20, 20), "outside the 320x240 frame"),
    ((10, 10, 0, 20), "empty box"),
    ((10, 10, float("nan"), 20), "finite"),
])
def test_bad_initial_boxes_are_one_line_errors(box, msg):
    with pytest.raises(SiamtoolError, match=msg):
        check_init_box(box, 320, 240, what="--init")


def test_track_before_initialize_is_a_programming_error():
    with pytest.raises(RuntimeError):
        Tracker(ScriptedBackend(), small_config()).track(render((1, 1, 5, 5)))


@pytest.mark.parametrize(("override", "message"), [
    ("track.max_growth=0.5", "max_growth must be >= 1"),
    ("track.search_growth=0.9", "search_growth must be >= 1"),
    ("track.lost_threshold=1.5", "lost_threshold must be between 0 and 1"),
    ("track.recover_ratio=1.2", "recover_ratio must be between 0 and 1"),
    ("track.calibrate_size=-0.5", "calibrate_size must be between 0 and 1"),
    ("track.recover_radius=-1", "recover_radius must be >= 0"),
    ("track.min_size=0", "min_size > 0"),
])
def test_track_settings_are_validated(override, message):
    from siamtool.config import load_config
    from siamtool.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])

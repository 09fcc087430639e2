"""The online target model: the correlation filter finds a target it was shown and follows it when it
moves; the scale filter reads a size change; the Tracker follows a target through it when the offline
heads are blind, and does not without it."""

from __future__ import annotations

import numpy as np
import pytest

from siamtool.geometry import iou_xywh
from siamtool.tracking.online import (
    SampleMemory,
    ScaleFilter,
    TranslationFilter,
    gaussian_label,
    parabolic_offset,
    refine_peak,
    upsampled_response,
)
from siamtool.tracking.tracker import Tracker, libm_exp
from tests.tracking.fakes import small_config


def textured_map(rng: np.random.Generator, channels: int = 32, n: int = 16) -> np.ndarray:
    return rng.normal(size=(channels, n, n)).astype(np.float32)


def test_filter_finds_the_target_where_it_moved():
    rng = np.random.default_rng(0)
    background = textured_map(rng)
    target = rng.normal(size=(32, 3, 3)).astype(np.float32) * 3
    first = background.copy()
    first[:, 6:9, 6:9] = target  # target centred on cell (7, 7)
    f = TranslationFilter(reg=0.01, sigma_factor=0.1, upsample=4)
    f.add_sample(first, (7.0, 7.0), (3.0, 3.0), permanent=True)
    f.calibrate(first)
    moved = textured_map(rng) * 0.5 + background * 0.5  # the background changes too
    moved[:, 9:12, 4:7] = target  # now centred on cell (10, 5)
    coarse, fine = f.respond(moved)
    assert np.unravel_index(int(np.argmax(coarse)), coarse.shape) == (10, 5)
    # Sub-cell: the refined peak, not the 1/4-cell grid (off-grid peaks: test_robustness.py).
    assert refine_peak(fine, 4, (10, 5)) == pytest.approx((10.0, 5.0), abs=0.1)  # the new background pulls 0.05
    # calibrated: the first frame's own response peaks at 1
    assert f.respond(first)[0].max() == pytest.approx(1.0, abs=1e-5)


def test_host_arithmetic_is_float64_whatever_numpy_does_with_float32():
    """numpy >= 2 keeps float32 in float32 (FFTs, scalar arithmetic), numpy 1 promoted to float64: the
    filter's transforms and the peak's parabola are float64 either way, as the C++ tracker computes them,
    and the penalty's exp is libm's, the C++ `std::exp`, to the bit."""
    import math

    rng = np.random.default_rng(1)
    feats = textured_map(rng)
    f = TranslationFilter()
    f.add_sample(feats, (7.0, 7.0), (3.0, 3.0), permanent=True)
    assert f._spectrum(feats).dtype == np.complex128 and f._num.dtype == np.complex128
    left, centre, right = np.float32(0.7), np.float32(0.9000001), np.float32(0.8)
    assert parabolic_offset(left, centre, right) == parabolic_offset(float(left), float(centre), float(right))
    x = -rng.uniform(0, 30, size=(16, 16))
    assert [float(v) for v in libm_exp(x).ravel()] == [math.exp(v) for v in x.ravel()]


def test_upsampled_response_interpolates_a_band_limited_peak():
    n, factor = 16, 4
    label = gaussian_label((n, n), (5.25, 9.5), sigma=1.5)
    fine = upsampled_response(np.fft.rfft2(label), (n, n), factor)
    np.testing.assert_allclose(fine[::factor, ::factor], label, atol=1e-4)  # exact on the coarse grid
    i, j = np.unravel_index(int(np.argmax(fine)), fine.shape)
    assert (i / factor, j / factor) == (5.25, 9.5)


def test_memory_keeps_the_first_sample_weight_however_long():
    mem = SampleMemory(size=4, first_weight=0.5)
    mem.add(np.ones(2), np.ones(2), permanent=True)
    for k in range(50):
        mem.add(np.full(2, k), np.ones(2))
    assert len(mem.nums) == 4 and mem.weights()[0] == 0.5
    assert [float(a[0]) for a in mem.nums[1:]] == [47.0, 48.0, 49.0]


def _textured_frame(size_wh, box, rng_bg: int = 1, rng_target: int = 2, scale: float = 1.0) -> np.ndarray:
    """A static, mildly textured background with a high-contrast textured target pasted at `box`."""
    import cv2

    w, h = size_wh
    bg = cv2.resize(np.random.default_rng(rng_bg).integers(70, 180, (h // 24, w // 24, 3), dtype=np.uint8),
                    (w, h), interpolation=cv2.INTER_LINEAR)
    tex = cv2.resize(np.random.default_rng(rng_target).integers(0, 255, (6, 6, 3), dtype=np.uint8),
                     (int(round(box[2])), int(round(box[3]))), interpolation=cv2.INTER_NEAREST)
    x, y = int(round(box[0])), int(round(box[1]))
    bg[y:y + tex.shape[0], x:x + tex.shape[1]] = tex
    return bg


def test_scale_filter_reads_a_size_change():
    import cv2

    box = np.array([100.0, 80.0, 60.0, 60.0])
    grey = cv2.cvtColor(_textured_frame((320, 240), box), cv2.COLOR_BGR2GRAY)
    sf = ScaleFilter(n=17, step=1.02)
    sf.set_model_size(box[2:])
    centre = box[:2] + box[2:] / 2
    sf.add_sample(grey, centre, box[2:])
    assert sf.estimate(grey, centre, box[2:]) == 1.0
    # The tracker believes the target is 10 % larger than it is: the filter says shrink by ~1/1.1.
    assert sf.estimate(grey, centre, box[2:] * 1.1) == pytest.approx(1 / 1.1, abs=0.03)


class BlindHeadsBackend:
    """Offline heads that see nothing (flat score, boxes of the previous size at every cell centre) and
    'backbone features' that are the crop itself, average-pooled to the 16 x 16 cells per channel."""

    returns_features = True

    def __init__(self, search_size: int = 256, stride: int = 16) -> None:
        self.n = search_size // stride

    def template(self, crop_rgb):
        return "template"

    def search(self, crop_rgb, features):
        import cv2

        f = cv2.resize(crop_rgb.astype(np.float32), (self.n, self.n), interpolation=cv2.INTER_AREA)
        grad = np.abs(np.diff(crop_rgb.astype(np.float32), axis=1, prepend=0))
        g = cv2.resize(grad, (self.n, self.n), interpolation=cv2.INTER_AREA)
        feats = np.concatenate([f, g], axis=2).transpose(2, 0, 1) - 128.0
        centres = (np.arange(self.n) + 0.5) * 16
        boxes = np.zeros((self.n, self.n, 4), np.float32)
        boxes[..., 0], boxes[..., 1] = centres[None, :], centres[:, None]
        boxes[..., 2:] = 64.0
        return np.full((self.n, self.n), 0.5, np.float32), boxes, feats.astype(np.float32)


@pytest.mark.parametrize("online", [True, False])
def test_tracker_follows_a_moving_target_only_with_the_online_model(online):
    cfg = small_config(online_weight=1.0, window_influence=0.2)
    cfg.track.online = online
    cfg.track.scale = "head"
    cfg.track.size_lr = 0.0  # the blind heads' boxes say nothing about size
    tracker = Tracker(BlindHeadsBackend(), cfg)
    box = np.array([120.0, 90.0, 40.0, 40.0])
    tracker.initialize(_textured_frame((400, 300), box), box)
    ious = []
    for _ in range(12):
        box = box + np.array([6.0, 3.0, 0.0, 0.0])  # steady motion, 80 px in total
        r = tracker.track(_textured_frame((400, 300), box))
        ious.append(float(iou_xywh(r.box, box)))
    if online:
        assert min(ious) > 0.6, ious
    else:
        assert ious[-1] < 0.2, ious  # blind heads + motion window: the box stays behind


def test_distractor_memory_discounts_cells_that_look_like_a_seen_look_alike():
    """DaSiamRPN-style scoring: a confident frame with a second strong peak outside the target remembers
    that peak's features; later, cells with those features lose score, target-like cells keep theirs."""
    from siamtool.tracking.online import DistractorMemory

    rng = np.random.default_rng(3)
    target, lookalike = rng.normal(size=32), rng.normal(size=32)
    feats = textured_map(rng) * 0.1
    feats[:, 7, 7], feats[:, 3, 12] = target, lookalike
    mem = DistractorMemory(weight=0.8, ratio=0.5)
    mem.start(feats, (7.0, 7.0))
    assert mem.multiplier(feats) is None  # nothing seen yet: scores untouched
    score = np.full((16, 16), 0.05, np.float32)
    score[7, 7], score[3, 12], score[7, 8] = 0.9, 0.6, 0.85  # (7, 8) is the target's own shoulder
    assert mem.observe(feats, score, (7, 7), (2.0, 2.0), (7.0, 7.0)) == 1
    np.testing.assert_allclose(mem.distractors[0], lookalike / np.linalg.norm(lookalike), rtol=1e-5)
    later = textured_map(rng) * 0.1
    later[:, 8, 8], later[:, 9, 10] = target, lookalike  # both moved; the look-alike came close
    factor = mem.multiplier(later)
    assert factor[8, 8] == pytest.approx(1.0)
    assert factor[9, 10] < 0.4  # 1 - 0.8 x (cos to look-alike ~1 - cos to target ~0)
    # A weak second peak (below ratio x the target's score) is not a distractor.
    score[3, 12] = 0.3
    fresh = DistractorMemory(weight=0.8, ratio=0.5)
    fresh.start(feats, (7.0, 7.0))
    assert fresh.observe(feats, score, (7, 7), (2.0, 2.0), (7.0, 7.0)) == 0


class TwinBackend(BlindHeadsBackend):
    """Blind heads, except that the heatmap peaks on the crop centre and on a second cell: a look-alike."""

    def search(self, crop_rgb, features):
        score, boxes, feats = super().search(crop_rgb, features)
        score = np.full_like(score, 0.05)
        score[8, 8], score[3, 12] = 0.9, 0.8
        return score, boxes, feats


@pytest.mark.parametrize("weight", [0.0, 1.0])
def test_the_tracker_remembers_the_first_frames_look_alike_only_when_asked(weight):
    cfg = small_config(distractor_weight=weight)
    cfg.track.scale = "head"
    tracker = Tracker(TwinBackend(), cfg)
    box = np.array([120.0, 90.0, 40.0, 40.0])
    tracker.initialize(_textured_frame((400, 300), box), box)
    if weight == 0:
        assert tracker.online.distractors is None  # off: the default scoring is untouched
    else:
        assert len(tracker.online.distractors.distractors) == 1
    r = tracker.track(_textured_frame((400, 300), box))
    assert np.all(np.isfinite(r.box)) and not r.lost


@pytest.mark.parametrize(("side", "limit", "shrinks"), [(12.0, 2.5, True), (60.0, 2.5, False), (12.0, 0.0, False)])
def test_the_online_weight_shrinks_only_for_crops_upsampled_past_the_limit(side, limit, shrinks):
    """`track.online_upsample_limit`: a 12 px target's crop is upsampled about 7x, so the online model's
    weight falls to online_weight x limit / scale; a 60 px target (about 1.4x) and limit 0 keep it whole."""
    cfg = small_config(online_weight=0.5, online_upsample_limit=limit)
    tracker = Tracker(BlindHeadsBackend(), cfg)
    used, fuse = [], tracker._fuse

    def spy(score, out, upsample):
        fused = fuse(score, out, upsample)
        used.append(fused[2])
        return fused

    tracker._fuse = spy
    box = np.array([150.0, 110.0, side, side])
    tracker.initialize(_textured_frame((400, 300), box), box)
    scale = tracker.track(_textured_frame((400, 300), box)).window.scale
    assert (scale > 2.5) == (side < 30)
    want = 0.5 * min(1.0, limit / scale) if shrinks else 0.5
    assert used == [pytest.approx(want)]
    assert (used[0] < 0.49) == shrinks


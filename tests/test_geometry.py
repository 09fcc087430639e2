import cv2
import numpy as np
import pytest
import torch

from siamtool import geometry as g


def random_boxes(rng, n, width=640, height=480):
    """Boxes anywhere, including partly or wholly outside the frame, thin and tiny ones."""
    w = rng.uniform(1, width, n) * rng.choice([0.02, 0.2, 1.0], n)
    h = rng.uniform(1, height, n) * rng.choice([0.02, 0.2, 1.0], n)
    x = rng.uniform(-w, width, n)
    y = rng.uniform(-h, height, n)
    return np.stack([x, y, w + 0.5, h + 0.5], axis=1)


def test_box_conversions_roundtrip():
    rng = np.random.default_rng(0)
    b = random_boxes(rng, 100)
    np.testing.assert_allclose(g.xyxy_to_xywh(g.xywh_to_xyxy(b)), b, atol=1e-9)
    np.testing.assert_allclose(g.cxcywh_to_xywh(g.xywh_to_cxcywh(b)), b, atol=1e-9)
    np.testing.assert_allclose(g.from_lasot(g.to_lasot(b)), b)
    assert g.to_lasot(np.array([0.0, 0, 5, 5]))[0] == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_crop_then_inverse_returns_the_box(seed):
    rng = np.random.default_rng(seed)
    for box in random_boxes(rng, 200):
        for win in (g.template_window(box, 0.5, 128), g.search_window(box, 0.5, 128, 256, growth=1.7)):
            back = win.box_to_frame(win.box_to_crop(box))
            assert np.max(np.abs(back - box)) < 1e-4


def test_target_is_centred_at_the_template_scale():
    box = np.array([100.0, 50.0, 40.0, 20.0])
    zw = g.template_window(box, 0.5, 128)
    xw = g.search_window(box, 0.5, 128, 256)
    assert zw.side == pytest.approx(np.sqrt((40 + 30) * (20 + 30)))
    # Same scale in both crops: the target has the same size in pixels.
    np.testing.assert_allclose(zw.box_to_crop(box)[2:], xw.box_to_crop(box)[2:])
    cb = xw.box_to_crop(box)
    np.testing.assert_allclose(cb[:2] + cb[2:] / 2, [128, 128])


def test_crop_pixels_follow_the_box_map():
    """A bright square in the frame lands where box_to_crop says, with sub-pixel accuracy."""
    frame = np.zeros((300, 400), np.float32)
    frame[100:140, 200:260] = 1.0  # x 200..260, y 100..140 in continuous coords
    box = np.array([200.0, 100.0, 60.0, 40.0])
    win = g.CropWindow(215.3, 131.7, 173.0, 128)
    c = g.crop(frame, win)
    mapped = win.box_to_crop(box)
    ys, xs = np.nonzero(c > 0.5)
    # Mass centre of the crop's square equals the mapped box centre.
    np.testing.assert_allclose([(xs + 0.5).mean(), (ys + 0.5).mean()], mapped[:2] + mapped[2:] / 2, atol=0.3)
    np.testing.assert_allclose(c.sum() / win.scale**2, 60 * 40, rtol=0.02)


def test_border_is_replicated_not_black():
    frame = np.full((50, 50, 3), 200, np.uint8)
    c = g.crop(frame, g.CropWindow(0, 0, 100, 64))
    assert c.min() == 200


def test_reduced_decode_factor_and_scaled_window():
    assert g.reduced_decode_factor(1.2) == 1
    assert g.reduced_decode_factor(0.5) == 2
    assert g.reduced_decode_factor(0.2) == 4
    assert g.reduced_decode_factor(0.01) == 8
    frame = cv2.resize(np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8), (320, 240),
                       interpolation=cv2.INTER_NEAREST)
    half = cv2.resize(frame, (160, 120), interpolation=cv2.INTER_AREA)
    win = g.CropWindow(150.0, 110.0, 200.0, 64)
    a = g.crop(frame, win, cv2.INTER_AREA).astype(float)
    b = g.crop(half, win.scaled(0.5)).astype(float)
    assert np.abs(a - b).mean() < 12  # same content, different resampling


def test_sub_window_composes():
    outer = g.CropWindow(300, 200, 400, 384)
    inner = g.CropWindow(200, 180, 256, 256)
    comp = outer.sub_window(inner)
    box = np.array([250.0, 170.0, 60, 50])
    np.testing.assert_allclose(inner.box_to_crop(outer.box_to_crop(box)), comp.box_to_crop(box), atol=1e-9)


def test_crop_batch_matches_cv2_crop():
    rng = np.random.default_rng(1)
    img = cv2.GaussianBlur(rng.integers(0, 255, (120, 160, 3)).astype(np.float32), (9, 9), 3)
    wins = [g.CropWindow(70.2, 50.5, 90.0, 48), g.CropWindow(10.0, 100.0, 40.0, 48)]
    batch = torch.from_numpy(np.stack([img, img])).permute(0, 3, 1, 2)
    out = g.crop_batch(batch, np.array([[w.cx, w.cy, w.side] for w in wins]), 48).permute(0, 2, 3, 1).numpy()
    for k, w in enumerate(wins):
        np.testing.assert_allclose(out[k], g.crop(img, w), atol=0.5)


def test_clip_box_keeps_size_and_frame():
    b = g.clip_box(np.array([-500.0, 10, 1.0, 30]), 100, 80, min_size=4)
    cx, cy, w, h = g.xywh_to_cxcywh(b)
    assert cx == 0 and w == 4 and h == 30


def test_iou():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 0, 0]], float)
    b = np.array([[5, 0, 10, 10], [20, 20, 5, 5], [0, 0, 0, 0]], float)
    np.testing.assert_allclose(g.iou_xywh(a, b), [50 / 150, 0, 0])


def resample_reference(frame, window):
    """The spec of `geometry.resample` written the slow way: reduce the whole frame (edge-extended to a
    multiple of k, k x k sums in float64 / k^2), then bilinear taps of every output pixel, rows first."""
    k = g.reduced_decode_factor(window.scale)
    h, w = frame.shape[:2]
    padded = np.pad(frame, ((0, -h % k), (0, -w % k), (0, 0)), mode="edge").astype(np.float64)
    small = (padded.reshape(padded.shape[0] // k, k, padded.shape[1] // k, k, 3).sum(axis=(1, 3)) / (k * k))
    small = small.astype(np.float32)
    out = np.empty((window.out_size, window.out_size, 3), np.float32)
    step = window.side / k / window.out_size
    pos = [window.x0 / k + step * (np.arange(window.out_size) + 0.5) - 0.5,
           window.y0 / k + step * (np.arange(window.out_size) + 0.5) - 0.5]
    lo = [np.floor(p).astype(int) for p in pos]
    frac = [(p - np.floor(p)).astype(np.float32) for p in pos]
    for i in range(window.out_size):
        y0, y1 = (min(max(v, 0), small.shape[0] - 1) for v in (lo[1][i], lo[1][i] + 1))
        x0 = np.clip(lo[0], 0, small.shape[1] - 1)
        x1 = np.clip(lo[0] + 1, 0, small.shape[1] - 1)
        fx = frac[0][:, None]
        top = small[y0, x0] * (1 - fx) + small[y0, x1] * fx
        bottom = small[y1, x0] * (1 - fx) + small[y1, x1] * fx
        out[i] = top * (1 - frac[1][i]) + bottom * frac[1][i]
    return out


@pytest.mark.parametrize("size", [(240, 360), (250, 330)])
def test_resample_reads_only_its_region_and_equals_its_spec_bit_for_bit(size):
    """Random textured frames (sides that are and are not multiples of 8), random windows at every
    reduction factor, many partly or wholly outside the frame: the region-only crop equals the
    whole-frame reference to the bit (the C++ tracker reproduces the same spec), and stays within
    rounding of OpenCV's warp of an INTER_AREA-reduced frame."""
    rng = np.random.default_rng(size[0])
    h, w = size
    frame = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_NEAREST)
    frame = (frame.astype(np.int16) + rng.integers(-40, 40, frame.shape)).clip(0, 255).astype(np.uint8)
    factors, outside = set(), 0
    for _ in range(60):
        side = float(rng.uniform(40, 3 * max(h, w)))
        cx, cy = rng.uniform(-0.6 * w, 1.6 * w), rng.uniform(-0.6 * h, 1.6 * h)
        window = g.CropWindow(cx, cy, side, int(rng.choice([64, 128])))
        factors.add(g.reduced_decode_factor(window.scale))
        outside += int(cx - side / 2 < 0 or cy - side / 2 < 0 or cx + side / 2 > w or cy + side / 2 > h)
        new = g.crop_antialiased(frame, window)
        assert new.dtype == np.float32 and new.shape == (window.out_size, window.out_size, 3)
        assert np.array_equal(new, resample_reference(frame, window)), window
    assert factors == {1, 2, 4, 8} and outside > 30
    inside = g.CropWindow(w / 2 + 0.3, h / 2 - 0.2, 0.7 * min(h, w), 256)  # k = 1
    assert np.abs(g.crop_antialiased(frame, inside) - g.crop(frame, inside)).max() <= 0.6  # uint8 rounding, 1/32 px


def test_a_tiny_window_change_is_a_tiny_crop_change():
    """Why the tracker resamples in float: moving the window by 1e-3 px changes the crop by about
    1e-3 x the image gradient, where warpAffine's uint8 crop (1/32 px coordinate steps, rounded result)
    jumps by whole grey levels, which the network then turned into 0.1 px box changes (runtime parity,
    issue #20)."""
    rng = np.random.default_rng(3)
    frame = cv2.GaussianBlur(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8), (0, 0), 2)
    a, b = g.CropWindow(150.0, 120.0, 100.0, 128), g.CropWindow(150.001, 120.0, 100.0, 128)
    gradient = np.abs(np.diff(frame.astype(np.float32), axis=1)).max()
    assert np.abs(g.crop_antialiased(frame, a) - g.crop_antialiased(frame, b)).max() <= 1e-3 * gradient * 1.01
    assert np.abs(g.crop(frame, a).astype(int) - g.crop(frame, b).astype(int)).max() >= 1


def test_crop_patches_share_one_band_limit_and_sample_like_resample():
    """Every DSST scale is reduced by the largest patch's k (scales differ in where they sample, not in
    blur), and a scale whose own k is that k equals `resample` of its window."""
    rng = np.random.default_rng(4)
    grey = rng.integers(0, 256, (300, 400), dtype=np.uint8)
    factors = np.array([0.98, 1.0, 1.02])
    patches = g.crop_patches(grey, np.array([200.3, 150.7]), np.array([80.0, 40.0]), factors, (20, 12))
    assert patches.shape == (3, 12, 20) and patches.dtype == np.float32
    for f, patch in zip(factors, patches):
        ref = g.resample(grey, (200.3, 150.7), (80.0 * f, 40.0 * f), (20, 12))
        assert g.reduced_decode_factor(max(20 / (80 * f), 12 / (40 * f))) == 2
        assert np.array_equal(patch, ref)

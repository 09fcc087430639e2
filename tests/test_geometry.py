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


def _crop_from_whole_reduced_frame(frame, window):
    """crop_antialiased as it was: area-resize the whole frame by k, then warp the window out of it."""
    k = g.reduced_decode_factor(window.scale)
    if k == 1:
        return g.crop(frame, window)
    small = cv2.resize(frame, (0, 0), fx=1.0 / k, fy=1.0 / k, interpolation=cv2.INTER_AREA)
    return g.crop(small, window.scaled(1.0 / k))


@pytest.mark.parametrize("size", [(240, 360), (480, 640), (250, 330)])
def test_crop_antialiased_reads_only_its_region_and_matches_the_whole_frame_way(size):
    """Random textured frames, random windows at every reduction factor, many partly or wholly outside
    the frame: the region-only crop is bit-identical to the crop from the whole reduced frame."""
    rng = np.random.default_rng(size[0])
    h, w = size
    frame = cv2.resize(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), (w, h),
                       interpolation=cv2.INTER_NEAREST)
    frame = (frame.astype(np.int16) + rng.integers(-40, 40, frame.shape)).clip(0, 255).astype(np.uint8)
    factors, outside = set(), 0
    for _ in range(120):
        side = float(rng.uniform(40, 3 * max(h, w)))
        cx, cy = rng.uniform(-0.6 * w, 1.6 * w), rng.uniform(-0.6 * h, 1.6 * h)
        window = g.CropWindow(cx, cy, side, int(rng.choice([64, 128, 256])))
        factors.add(g.reduced_decode_factor(window.scale))
        outside += int(cx - side / 2 < 0 or cy - side / 2 < 0 or cx + side / 2 > w or cy + side / 2 > h)
        new = g.crop_antialiased(frame, window).astype(np.int16)
        old = _crop_from_whole_reduced_frame(frame, window).astype(np.int16)
        assert new.shape == old.shape == (window.out_size, window.out_size, 3)
        assert np.array_equal(new, old), (window, np.abs(new - old).max())
    assert factors == {1, 2, 4, 8} and outside > 60


def test_reduced_region_covers_the_window_and_stays_in_the_image():
    assert g.reduced_region(g.CropWindow(50, 40, 20, 64), 100, 80) == (38, 28, 62, 52)
    assert g.reduced_region(g.CropWindow(-500, 40, 20, 64), 100, 80)[::2] == (0, 1)  # wholly left: column 0
    assert g.reduced_region(g.CropWindow(500, 900, 20, 64), 100, 80) == (99, 79, 100, 80)  # wholly right/below
    assert g.reduced_region(g.CropWindow(50, 40, 1000, 64), 100, 80) == (0, 0, 100, 80)

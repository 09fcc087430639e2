"""Train-time jitter: the box label follows the pixels, the target moves, the template stays centred."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from siamtool import geometry as g
from siamtool.config import load_config
from siamtool.data import augment as A
from siamtool.data.shards import search_crop_size, stored_search_window

S = 128  # final search size in these tests
STORED = 192  # stored search crop: S x data.search_margin (1.5)


def make_cfg(*overrides: str):
    return load_config(None, ["data.template_size=64", f"data.search_size={S}", *overrides])


def centred_box(w: float = 32.0, h: float = 32.0, size: int = STORED) -> np.ndarray:
    """A box centred in the stored crop, as prepare stores it (nominal window = S stored px for 32x32)."""
    return np.array([size / 2 - w / 2, size / 2 - h / 2, w, h])


def plan(boxes: np.ndarray, cfg, seed: int = 0, stored: int = STORED, photometric: bool = False) -> A.AugmentPlan:
    zboxes = np.tile([16.0, 16.0, 32.0, 32.0], (len(boxes), 1))
    return A.plan_pairs(zboxes, boxes, stored, cfg, np.random.default_rng(seed), photometric=photometric)


def smooth_texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (h // 8, w // 8, 3)).astype(np.float32)
    return np.clip(cv2.GaussianBlur(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), (0, 0), 2), 0, 255)


def test_batched_windows_equal_the_scalar_ones():
    """The batch forms used by plan_pairs are the tracker's scalar windows and box map, row by row."""
    rng = np.random.default_rng(0)
    boxes = np.stack([rng.uniform(-50, 400, 40), rng.uniform(-50, 300, 40), rng.uniform(1, 200, 40),
                      rng.uniform(1, 200, 40)], axis=1)
    zw = g.template_windows(boxes, 0.5)
    xw = g.search_windows(boxes, 0.5, 128, 256, growth=1.3)
    mapped = g.boxes_to_crops(xw, 256, boxes[::-1])
    for i, b in enumerate(boxes):
        z, x = g.template_window(b, 0.5, 128), g.search_window(b, 0.5, 128, 256, growth=1.3)
        np.testing.assert_allclose(zw[i], [z.cx, z.cy, z.side], rtol=1e-12)
        np.testing.assert_allclose(xw[i], [x.cx, x.cy, x.side], rtol=1e-12)
        np.testing.assert_allclose(mapped[i], x.box_to_crop(boxes[::-1][i]), rtol=1e-12, atol=1e-9)


def test_jittered_box_contains_the_rendered_square():
    """A known square in the stored crop lands exactly where the plan's search_box says, after jitter."""
    cfg = make_cfg()
    box = np.array([81.0, 77.0, 30.0, 38.0])  # integer edges: the square is exact in the stored image
    stored = np.zeros((1, 3, STORED, STORED), np.float32)
    stored[:, :, 77:115, 81:111] = 200.0
    n = 48
    p = plan(np.tile(box, (n, 1)), cfg, seed=3)
    template = torch.zeros(n, 3, 64, 64)
    _, x = A.render_pairs(template, torch.from_numpy(stored).expand(n, -1, -1, -1), p.to_tensors(), cfg)
    checked = 0
    for i in range(n):
        b = p.search_box[i].astype(np.float64)
        x0, y0 = np.clip(b[:2], 0, S)
        x1, y1 = np.clip(b[:2] + b[2:], 0, S)
        if (x1 - x0) * (y1 - y0) < 50:
            continue
        img = x[i, 0].numpy() / 200.0
        ys, xs = np.mgrid[0:S, 0:S] + 0.5
        mass = img.sum()
        np.testing.assert_allclose(mass, (x1 - x0) * (y1 - y0), rtol=0.03)
        centroid = [(img * xs).sum() / mass, (img * ys).sum() / mass]
        np.testing.assert_allclose(centroid, [(x0 + x1) / 2, (y0 + y1) / 2], atol=0.3)
        checked += 1
    assert checked > n * 0.8


def test_final_crop_is_what_the_tracker_would_cut_from_the_frame():
    """frame -> stored crop (prepare) -> jittered final crop == one crop of the frame at the composed window.

    And without jitter the final window is exactly the tracker's search window around the box.
    """
    cfg = make_cfg()
    frame = smooth_texture(360, 480)
    frame_box = np.array([201.3, 140.6, 41.0, 27.5])
    stored_win = stored_search_window(frame_box, cfg.data)
    assert stored_win.out_size == search_crop_size(cfg.data) == STORED
    stored = g.crop(frame, stored_win)
    stored_box = stored_win.box_to_crop(frame_box)

    for overrides, seed in ((("train.augment.shift=0", "train.augment.scale=0"), 0), ((), 1), ((), 2)):
        c = make_cfg(*overrides)
        p = plan(stored_box[None], c, seed=seed)
        _, x = A.render_pairs(torch.zeros(1, 3, 64, 64), torch.from_numpy(stored).permute(2, 0, 1)[None],
                              p.to_tensors(), c)
        cx, cy, side = p.search_windows[0].astype(np.float64)
        in_frame = stored_win.sub_window(g.CropWindow(cx, cy, side, S))
        np.testing.assert_allclose(p.search_box[0], in_frame.box_to_crop(frame_box), atol=1e-3)
        direct = g.crop(frame, in_frame)
        assert np.abs(x[0].permute(1, 2, 0).numpy() - direct).mean() < 2.0
        if not overrides[1:] and overrides:  # no jitter: the tracker's own window
            tracker = g.search_window(frame_box, c.data.context, c.data.template_size, S)
            np.testing.assert_allclose([in_frame.cx, in_frame.cy, in_frame.side],
                                       [tracker.cx, tracker.cy, tracker.side], rtol=1e-5)
            np.testing.assert_allclose(p.search_box[0], tracker.box_to_crop(frame_box), atol=1e-3)


def test_target_centre_is_spread_not_always_centred():
    cfg = make_cfg()  # shift 3, scale 0.25 (defaults)
    n = 4000
    p = plan(np.tile(centred_box(), (n, 1)), cfg, seed=0)
    centre = p.search_box[:, :2] + p.search_box[:, 2:] / 2
    off = centre - S / 2
    assert np.abs(off.mean(axis=0)).max() < 1.5  # unbiased
    assert off.std(axis=0).min() > 12  # spread over a good part of the 128 px crop
    assert np.abs(off).max() > 45
    assert (np.abs(off) < 2).mean() < 0.1  # rarely at the centre
    assert abs(np.corrcoef(off[:, 0], off[:, 1])[0, 1]) < 0.1  # x and y independent
    # The window never leaves the stored crop (no invented border pixels).
    cx, cy, side = p.search_windows.T
    assert (cx - side / 2).min() >= -1e-3 and (cx + side / 2).max() <= STORED + 1e-3
    assert (cy - side / 2).min() >= -1e-3 and (cy + side / 2).max() <= STORED + 1e-3


def test_shift_means_half_shift_target_sizes():
    """shift=3: the window centre moves up to 1.5 * sqrt(w h) per axis, uniformly (room permitting)."""
    cfg = make_cfg("train.augment.shift=3", "train.augment.scale=0")
    big = 4000  # a stored crop so large that the room limit never binds
    box = centred_box(20.0, 45.0, size=big)
    p = plan(np.tile(box, (3000, 1)), cfg, stored=big)
    d = p.search_windows[:, :2] - (box[:2] + box[2:] / 2)
    m = 1.5 * np.sqrt(20.0 * 45.0)
    assert np.abs(d).max() <= m + 1e-3
    assert np.abs(d).max() > 0.98 * m
    assert np.abs(d).mean() == pytest.approx(m / 2, rel=0.05)  # uniform on [-m, m]


def test_scale_jitter_is_log_uniform_and_shift_free_when_shift_is_zero():
    cfg = make_cfg("train.augment.shift=0", "train.augment.scale=0.25")
    box = centred_box(30.0, 20.0)
    p = plan(np.tile(box, (3000, 1)), cfg)
    nominal = g.search_window(box, cfg.data.context, cfg.data.template_size, S).box_to_crop(box)
    log_r = np.log(p.search_box[:, 2] / nominal[2])
    assert log_r.min() >= -0.25 - 1e-4 and log_r.max() <= 0.25 + 1e-4
    assert log_r.min() < -0.24 and log_r.max() > 0.24 and abs(log_r.mean()) < 0.01
    np.testing.assert_allclose(p.search_box[:, 3] / p.search_box[:, 2], 20 / 30, rtol=1e-4)  # aspect kept
    np.testing.assert_allclose(p.search_box[:, :2] + p.search_box[:, 2:] / 2, S / 2, atol=1e-3)


def test_template_is_never_moved():
    cfg = make_cfg()
    z = torch.from_numpy(smooth_texture(64, 64).round()).permute(2, 0, 1)[None].repeat(4, 1, 1, 1)
    frame_box = np.array([100.0, 80.0, 20.0, 28.0])
    box = g.template_window(frame_box, 0.5, 64).box_to_crop(frame_box)  # as prepare stores it
    p = A.plan_pairs(np.tile(box, (4, 1)), np.tile(centred_box(), (4, 1)), STORED, cfg,
                     np.random.default_rng(0), photometric=False)
    np.testing.assert_allclose(p.template_windows, [[32, 32, 64]] * 4, atol=1e-4)
    out, _ = A.render_pairs(z, torch.zeros(4, 3, STORED, STORED), p.to_tensors(), cfg)
    assert torch.equal(out, z)
    # A config with a smaller template resamples the same window: same content, fewer pixels.
    small = make_cfg("data.template_size=32")
    p = A.plan_pairs(np.tile(box, (4, 1)), np.tile(centred_box(), (4, 1)), STORED, small,
                     np.random.default_rng(0), photometric=False)
    out, _ = A.render_pairs(z, torch.zeros(4, 3, STORED, STORED), p.to_tensors(), small)
    expected = g.crop(z[0].permute(1, 2, 0).numpy(), g.CropWindow(32, 32, 64, 32))
    np.testing.assert_allclose(out[0].permute(1, 2, 0).numpy(), expected, atol=0.5)


# --------------------------------------------------------------------------------------- photometric


def params(n: int, **cols: float) -> torch.Tensor:
    p = torch.from_numpy(np.tile(A.PHOTO_IDENTITY, (n, 1)))
    names = {"brightness": A.P_BRIGHTNESS, "contrast": A.P_CONTRAST, "saturation": A.P_SATURATION,
             "grey": A.P_GREY, "blur": A.P_BLUR}
    for k, v in cols.items():
        p[:, names[k]] = v
    return p


@pytest.fixture
def images() -> torch.Tensor:
    return torch.stack([torch.from_numpy(smooth_texture(48, 48, s)).permute(2, 0, 1) for s in range(3)])


def grey_of(x: torch.Tensor) -> torch.Tensor:
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def test_photometric_identity_brightness_contrast_saturation(images):
    assert torch.equal(A.photometric(images.clone(), params(3)), images)
    np.testing.assert_allclose(A.photometric(images.clone(), params(3, brightness=1.3)),
                               (images * 1.3).clamp(0, 255), rtol=1e-6, atol=1e-4)
    flat = A.photometric(images.clone(), params(3, contrast=0.0))
    means = grey_of(images).mean(dim=(1, 2))
    np.testing.assert_allclose(flat, means.view(3, 1, 1, 1).expand_as(images), rtol=1e-5)
    desat = A.photometric(images.clone(), params(3, saturation=0.0))
    np.testing.assert_allclose(desat, grey_of(images)[:, None].expand_as(images), rtol=1e-5, atol=1e-3)


def test_photometric_grayscale_and_blur_per_image(images):
    images[2] = torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0)) * 255  # pixel noise
    p = params(3)
    p[1, A.P_GREY] = 1
    p[2, A.P_BLUR] = 1.5
    out = A.photometric(images.clone(), p)
    torch.testing.assert_close(out[0], images[0])  # untouched
    assert torch.allclose(out[1, 0], out[1, 1]) and torch.allclose(out[1, 1], out[1, 2])
    np.testing.assert_allclose(out[1, 0], grey_of(images[1:2])[0], rtol=1e-5)

    def roughness(x):
        return (x[:, 1:, :] - x[:, :-1, :]).abs().mean()

    assert roughness(out[2]) < 0.3 * roughness(images[2])
    assert out[2].mean() == pytest.approx(float(images[2].mean()), rel=0.02)
    assert out.min() >= 0 and out.max() <= 255


def test_photometric_equals_the_ops_applied_one_by_one(images):
    """The fused one-pass form equals brightness, contrast, saturation, grayscale applied in sequence."""
    cfg = make_cfg("train.augment.brightness=0.4", "train.augment.contrast=0.4", "train.augment.saturation=0.6",
                   "train.augment.grayscale_prob=0.5", "train.augment.blur_prob=0")
    _, p = A.photometric_params(np.random.default_rng(1), 3, cfg)
    p[1, A.P_GREY], p[2, A.P_GREY] = 0, 1
    x = images.double()
    for i, (b, c, s, grey, _) in enumerate(p):
        y = x[i:i + 1] * b
        m = grey_of(y).mean()
        y = (y - m) * c + m
        y = (y - grey_of(y)[:, None]) * s + grey_of(y)[:, None]
        if grey:
            y = grey_of(y)[:, None].expand_as(y)
        x[i] = y[0]
    np.testing.assert_allclose(A.photometric(images.clone(), torch.from_numpy(p)), x.clamp(0, 255).float(),
                               rtol=1e-4, atol=1e-2)


def test_random_photometric_params_follow_the_config():
    cfg = make_cfg("train.augment.brightness=0.3", "train.augment.grayscale_prob=0.5", "train.augment.blur_prob=0.25")
    z, x = A.photometric_params(np.random.default_rng(0), 4000, cfg)
    for p in (z, x):
        assert p[:, A.P_BRIGHTNESS].min() >= 0.7 and p[:, A.P_BRIGHTNESS].max() <= 1.3
        assert p[:, A.P_BRIGHTNESS].std() > 0.1
        assert (p[:, A.P_BLUR] > 0).mean() == pytest.approx(0.25, abs=0.03)
        blurred = p[p[:, A.P_BLUR] > 0, A.P_BLUR]
        assert blurred.min() >= A.BLUR_SIGMA[0] and blurred.max() <= A.BLUR_SIGMA[1]
    np.testing.assert_array_equal(z[:, A.P_GREY], x[:, A.P_GREY])  # a grey video is grey in both crops
    assert z[:, A.P_GREY].mean() == pytest.approx(0.5, abs=0.03)
    assert not np.array_equal(z[:, A.P_BRIGHTNESS], x[:, A.P_BRIGHTNESS])  # otherwise independent


def test_per_sample_generators_make_a_sample_independent_of_its_batch():
    """Validation: sample j gets the same crop whether it is drawn alone or in any batch."""
    cfg = make_cfg()
    boxes = np.tile(centred_box(), (5, 1)) + np.arange(5)[:, None]
    zb = np.tile([16.0, 16.0, 32.0, 32.0], (5, 1))

    def gens(js):
        return [np.random.default_rng([7, j]) for j in js]

    whole = A.plan_pairs(zb, boxes, STORED, cfg, gens(range(5)), photometric=False)
    alone = A.plan_pairs(zb[3:4], boxes[3:4], STORED, cfg, gens([3]), photometric=False)
    np.testing.assert_array_equal(whole.search_windows[3], alone.search_windows[0])
    np.testing.assert_array_equal(whole.search_box[3], alone.search_box[0])
    np.testing.assert_array_equal(whole.search_photo, np.tile(A.PHOTO_IDENTITY, (5, 1)))

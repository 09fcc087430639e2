"""The one crop geometry shared by prepare, train-time jitter, the tracker and export.

A mismatch between training crops and tracking crops is the classic silent bug of Siamese trackers, so
every crop in siamtool is described by a `CropWindow` and made by the functions below.

Conventions (see README, "Geometry"):

* Image coordinates are continuous and 0-based: pixel (i, j) covers [i, i+1) x [j, j+1), its centre is
  at (i + 0.5, j + 0.5). LaSOT/OTB ground truth is 1-based (MATLAB); `from_lasot` / `to_lasot` convert.
* Boxes are float arrays `(..., 4)`; `xywh` = top-left corner + size, `xyxy` = corners,
  `cxcywh` = centre + size.
* A crop window is a square of side `side` (frame pixels) centred at (cx, cy), resampled to
  `out_size` x `out_size` pixels. The template window side follows SiamFC:
  ``s_z = sqrt((w + p) * (h + p))`` with ``p = context * (w + h)``; the search window has the same scale
  as the template (``s_x = s_z * search_size / template_size``) so that the target has the same size in
  pixels in both crops, which is what a Siamese matcher needs.
* prepare's crop is one ``cv2.warpAffine`` with ``BORDER_REPLICATE`` (`crop`), from a JPEG decoded at 1/k;
  the tracker's crops (`resample`: template, search, the DSST scale pyramid) are exact float32 bilinear
  samples after a k x k block mean, specified to the bit so that the C++ tracker cuts the same crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from siamtool.config import DataConfig

# ---------------------------------------------------------------------------------------------- boxes


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., :2] + b[..., 2:]], axis=-1)


def xyxy_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([b[..., :2], b[..., 2:] - b[..., :2]], axis=-1)


def xywh_to_cxcywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([b[..., :2] + b[..., 2:] / 2, b[..., 2:]], axis=-1)


def cxcywh_to_xywh(b: np.ndarray) -> np.ndarray:
    b = np.asarray(b, dtype=np.float64)
    return np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., 2:]], axis=-1)


LASOT_ORIGIN = 1.0
"""LaSOT (and OTB, and the raw-results format) count pixels from 1."""


def from_lasot(b: np.ndarray) -> np.ndarray:
    """LaSOT 1-based x,y,w,h -> siamtool's 0-based continuous x,y,w,h."""
    b = np.array(b, dtype=np.float64)
    b[..., :2] -= LASOT_ORIGIN
    return b


def to_lasot(b: np.ndarray) -> np.ndarray:
    """siamtool's 0-based x,y,w,h -> LaSOT 1-based x,y,w,h (the raw-results format)."""
    b = np.array(b, dtype=np.float64)
    b[..., :2] += LASOT_ORIGIN
    return b


def clip_box(box_xywh: np.ndarray, width: int, height: int, min_size: float = 4.0) -> np.ndarray:
    """Keep a tracker box inside the frame and at least `min_size` pixels wide and high.

    The centre is clipped to the frame first, then the size, so a box drifting off an edge keeps its
    size instead of collapsing (which would make the next search window tiny).
    """
    cx, cy, w, h = xywh_to_cxcywh(box_xywh)
    cx = float(np.clip(cx, 0, width))
    cy = float(np.clip(cy, 0, height))
    w = float(np.clip(w, min_size, max(min_size, width)))
    h = float(np.clip(h, min_size, max(min_size, height)))
    return cxcywh_to_xywh(np.array([cx, cy, w, h]))


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise IoU of two arrays of x,y,w,h boxes (0 where the union is empty)."""
    a = xywh_to_xyxy(a)
    b = xywh_to_xyxy(b)
    lt = np.maximum(a[..., :2], b[..., :2])
    rb = np.minimum(a[..., 2:], b[..., 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[..., 2:] - a[..., :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[..., 2:] - b[..., :2], 0, None), axis=-1)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


# ----------------------------------------------------------------------------------------- windows


def context_side(w: float | np.ndarray, h: float | np.ndarray, context: float) -> np.ndarray:
    """SiamFC template window side: sqrt((w + p)(h + p)), p = context * (w + h).

    Chosen over OSTrack's `factor * sqrt(w*h)` because it keeps thin boxes (a pole, a person seen from
    far) from getting a window that is too small in the long direction.
    """
    w = np.asarray(w, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    p = context * (w + h)
    return np.sqrt(np.maximum(w + p, 1e-6) * np.maximum(h + p, 1e-6))


@dataclass(frozen=True)
class CropWindow:
    """A square window of `side` frame pixels centred at (cx, cy), resampled to `out_size` pixels."""

    cx: float
    cy: float
    side: float
    out_size: int

    @property
    def scale(self) -> float:
        """Crop pixels per frame pixel."""
        return self.out_size / self.side

    @property
    def x0(self) -> float:
        return self.cx - self.side / 2

    @property
    def y0(self) -> float:
        return self.cy - self.side / 2

    def affine(self) -> np.ndarray:
        """2x3 matrix mapping frame pixel indices to crop pixel indices (pixel centres at +0.5)."""
        s = self.scale
        return np.array(
            [[s, 0.0, s * (0.5 - self.x0) - 0.5], [0.0, s, s * (0.5 - self.y0) - 0.5]], dtype=np.float64
        )

    def box_to_crop(self, box_xywh: np.ndarray) -> np.ndarray:
        """Frame x,y,w,h -> crop x,y,w,h (exact inverse of `box_to_frame`)."""
        b = np.array(box_xywh, dtype=np.float64)
        s = self.scale
        b[..., 0] = (b[..., 0] - self.x0) * s
        b[..., 1] = (b[..., 1] - self.y0) * s
        b[..., 2] *= s  # column by column: also elementwise when the fields are arrays (boxes_to_crops)
        b[..., 3] *= s
        return b

    def box_to_frame(self, box_xywh: np.ndarray) -> np.ndarray:
        """Crop x,y,w,h -> frame x,y,w,h."""
        b = np.array(box_xywh, dtype=np.float64)
        s = self.scale
        b[..., 0] = b[..., 0] / s + self.x0
        b[..., 1] = b[..., 1] / s + self.y0
        b[..., 2:] /= s
        return b

    def points_to_frame(self, xy: np.ndarray) -> np.ndarray:
        xy = np.array(xy, dtype=np.float64)
        xy[..., 0] = xy[..., 0] / self.scale + self.x0
        xy[..., 1] = xy[..., 1] / self.scale + self.y0
        return xy

    def scaled(self, factor: float) -> CropWindow:
        """The same window in an image resized by `factor` (e.g. 0.5 for a half-size JPEG decode)."""
        return CropWindow(self.cx * factor, self.cy * factor, self.side * factor, self.out_size)

    def sub_window(self, inner: CropWindow) -> CropWindow:
        """Compose: `inner` is a window in this crop's pixels; return it in frame pixels."""
        s = self.scale
        return CropWindow(inner.cx / s + self.x0, inner.cy / s + self.y0, inner.side / s, inner.out_size)


def template_window(box_xywh: np.ndarray, context: float, template_size: int) -> CropWindow:
    """The template crop window for a target box (frame coordinates)."""
    cx, cy, side = template_windows(box_xywh, context)[0]
    return CropWindow(float(cx), float(cy), float(side), template_size)


def search_window(
    box_xywh: np.ndarray, context: float, template_size: int, search_size: int, growth: float = 1.0
) -> CropWindow:
    """The search window around a box: same scale as the template, `growth` x larger when re-detecting.

    With `growth` > 1 the window covers more of the frame at the same output size (coarser scale); the
    tracker uses it to widen the search step by step while the target is lost.
    """
    cx, cy, side = search_windows(box_xywh, context, template_size, search_size, growth)[0]
    return CropWindow(float(cx), float(cy), float(side), search_size)


@dataclass(frozen=True)
class CropGeometry:
    """The crop geometry of one model: context factor and template/search crop sizes.

    Built once from the data config (`from_data`) so callers ask for "the template window of this box"
    instead of unpacking (context, template_size, search_size) by hand and risking a mismatched
    argument order: training crops, tracker crops and the export's parity crops come from the same three
    numbers.
    """

    context: float
    template_size: int
    search_size: int

    @classmethod
    def from_data(cls, data: DataConfig) -> CropGeometry:
        return cls(float(data.context), int(data.template_size), int(data.search_size))

    def template(self, box_xywh: np.ndarray) -> CropWindow:
        """`template_window` of a box."""
        return template_window(box_xywh, self.context, self.template_size)

    def search(self, box_xywh: np.ndarray, growth: float = 1.0) -> CropWindow:
        """`search_window` of a box (`growth` > 1 while re-detecting)."""
        return search_window(box_xywh, self.context, self.template_size, self.search_size, growth)

    def templates(self, boxes_xywh: np.ndarray) -> np.ndarray:
        """`template_windows` of (N,4) boxes: (N,3) cx, cy, side."""
        return template_windows(boxes_xywh, self.context)

    def searches(self, boxes_xywh: np.ndarray) -> np.ndarray:
        """`search_windows` of (N,4) boxes: (N,3) cx, cy, side."""
        return search_windows(boxes_xywh, self.context, self.template_size, self.search_size)


# Batched forms of the two windows and of `box_to_crop`, for train-time jitter, which resolves a whole
# batch at once; the scalar functions above are these with N = 1, so there is one formula for each.


def template_windows(boxes_xywh: np.ndarray, context: float) -> np.ndarray:
    """(N,4) boxes -> (N,3) template windows (cx, cy, side), the format of `crop_batch`."""
    c = xywh_to_cxcywh(np.asarray(boxes_xywh, dtype=np.float64).reshape(-1, 4))
    return np.stack([c[:, 0], c[:, 1], context_side(c[:, 2], c[:, 3], context)], axis=1)


def search_windows(
    boxes_xywh: np.ndarray, context: float, template_size: int, search_size: int, growth: float = 1.0
) -> np.ndarray:
    """(N,4) boxes -> (N,3) search windows (cx, cy, side): `search_window` for a batch."""
    w = template_windows(boxes_xywh, context)
    w[:, 2] = w[:, 2] * search_size / template_size * growth
    return w


def boxes_to_crops(windows: np.ndarray, out_size: int, boxes_xywh: np.ndarray) -> np.ndarray:
    """Box i (N,4, x,y,w,h) mapped into the crop of window i (N,3): `CropWindow.box_to_crop` for a batch."""
    w = np.asarray(windows, dtype=np.float64)
    return CropWindow(w[:, 0], w[:, 1], w[:, 2], out_size).box_to_crop(boxes_xywh)  # type: ignore[arg-type]


def crop(
    image: np.ndarray, window: CropWindow, interpolation: int = cv2.INTER_LINEAR
) -> np.ndarray:
    """Cut `window` out of `image` in one warpAffine; pixels outside the frame replicate the border.

    Downscaling by more than 2x with bilinear sampling aliases; callers that shrink a lot should decode
    a reduced-size JPEG first (see `reduced_decode_factor`) and pass `window.scaled(1/k)`.
    """
    return cv2.warpAffine(
        image,
        window.affine(),
        (window.out_size, window.out_size),
        flags=interpolation,
        borderMode=cv2.BORDER_REPLICATE,
    )


def reduced_decode_factor(window_scale: float, max_factor: int = 8) -> int:
    """Largest JPEG reduction k in {1, 2, 4, 8} such that the crop is still upsampled or ~1:1 from it.

    `window_scale` is crop pixels per frame pixel. Decoding at 1/k keeps k * window_scale >= 1 so no
    detail the crop could show is lost, while the JPEG decoder does k^2 less work.
    """
    k = 1
    while k * 2 <= max_factor and window_scale * k * 2 <= 1.0:
        k *= 2
    return k


REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}


def crop_antialiased(frame: np.ndarray, window: CropWindow) -> np.ndarray:
    """The tracker's crop of `window`: `resample` of the square window, float32 (not rounded to uint8).

    Every crop the tracker feeds the network (template, search, the online model's augmented copies)
    and the export's parity crops come from here; see `resample` for why float and exact.
    """
    return resample(frame, (window.cx, window.cy), (window.side, window.side), (window.out_size, window.out_size))


def resample(image: np.ndarray, center: tuple[float, float], size_wh: tuple[float, float],
             out_wh: tuple[int, int]) -> np.ndarray:
    """The one resample path of tracking: the `size_wh` window at `center`, as (out_h, out_w[, C]) float32.

    Two steps, each exactly specified so that another language reproduces it bit for bit (the C++ tracker
    in `cpp/` does; docs/runtimes.md, "Crops"):

    1. **Band-limit**: when the window shrinks by 2x or more, the image is first reduced by the largest k
       in {1, 2, 4, 8} with ``k x scale <= 1`` (`reduced_decode_factor` of the larger of the two axis
       scales) by averaging k x k blocks (`block_mean`), as prepare decodes JPEGs at 1/k: bilinear
       sampling alone would alias large targets into crops that training never showed.
    2. **Exact bilinear sampling** with the border replicated (`sample_bilinear`): source coordinates in
       float64, weights and arithmetic in float32, no rounding to uint8.

    Why not `cv2.warpAffine`: it rounds source coordinates to 1/32 pixel and returns uint8 for uint8
    input, so a state change of 1e-5 px moved whole grey levels on some pixels; the network turned them
    into 0.1 px box changes, and two runtimes whose outputs agree to 1e-6 tracked apart within 30 frames
    (docs/benchmarks.md, "Runtime parity"). Here a small change of the window is a small change of the
    crop. prepare's training crops are still JPEG-scaled decodes then a warp (docs/benchmarks.md,
    "Prepare's crops against the tracker's crops", measured equal in tracking AUC): prepare reads each
    JPEG at 1/k, which is where its speed comes from, and its crops are stored as JPEGs anyway.
    """
    cx, cy = float(center[0]), float(center[1])
    w, h = float(size_wh[0]), float(size_wh[1])
    out_w, out_h = int(out_wh[0]), int(out_wh[1])
    k = reduced_decode_factor(max(out_w / w, out_h / h))
    return sample_bilinear(image, k, (cx - w / 2) / k, (cy - h / 2) / k, w / k / out_w, h / k / out_h, out_w, out_h)


def _taps(start: float, step: float, n: int, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps of n output pixels: source pixel (i + 0.5) * step + start - 0.5 (float64), its two
    neighbours clamped to [0, size) (border replication) and the float32 weight of the second."""
    pos = start + step * (np.arange(n, dtype=np.float64) + 0.5) - 0.5
    i0 = np.floor(pos)
    frac = (pos - i0).astype(np.float32)
    i0 = i0.astype(np.int64)
    return np.clip(i0, 0, size - 1), np.clip(i0 + 1, 0, size - 1), frac


def sample_bilinear(image: np.ndarray, k: int, x0: float, y0: float, step_x: float, step_y: float,
                    out_w: int, out_h: int) -> np.ndarray:
    """Bilinear samples of `image` reduced by k (`block_mean`): output pixel (i, j) reads the reduced
    image at (x0 + (j + 0.5) step_x - 0.5, y0 + (i + 0.5) step_y - 0.5), border replicated.

    Separable, rows first: t = a (1 - fx) + b fx along x, then t0 (1 - fy) + t1 fy along y, each product
    and sum rounded to float32; only the reduced pixels that the taps touch are computed, so a small
    window of a large frame costs what its own pixels cost. Channels are interleaved in one row axis and
    gathered with `take` on the uint8 pixels: 0.4-0.8 ms for a 256 x 256 x 3 crop (7x the first
    fancy-indexing version, `benchmarks/track_profile.py` gives the per-frame share).
    """
    height, width = image.shape[:2]
    taps = _taps(x0, step_x, out_w, -(-width // k)), _taps(y0, step_y, out_h, -(-height // k))
    left, top, right, bottom = _tap_bounds([taps])
    return _interpolate(block_mean(image, k, left, top, right, bottom), left, top, *taps)


Taps = tuple[np.ndarray, np.ndarray, np.ndarray]


def _tap_bounds(taps: list[tuple[Taps, Taps]]) -> tuple[int, int, int, int]:
    """The reduced-pixel bounds left, top, right, bottom (end exclusive) that (x, y) taps read."""
    return (min(int(x[0][0]) for x, _ in taps), min(int(y[0][0]) for _, y in taps),
            max(int(x[1][-1]) for x, _ in taps) + 1, max(int(y[1][-1]) for _, y in taps) + 1)


def _interpolate(region: np.ndarray, left: int, top: int, x_taps: Taps, y_taps: Taps) -> np.ndarray:
    """`sample_bilinear`'s arithmetic on `region`, the reduced image from pixel (left, top) on."""
    (xa, xb, fx), (ya, yb, fy) = x_taps, y_taps
    channels = 1 if region.ndim == 2 else region.shape[2]
    flat = region.reshape(region.shape[0], -1)
    offsets = np.arange(channels)
    wx = np.repeat(fx, channels)
    rows = flat.take(((xa - left)[:, None] * channels + offsets).ravel(), axis=1).astype(np.float32)
    rows *= 1 - wx
    right = flat.take(((xb - left)[:, None] * channels + offsets).ravel(), axis=1).astype(np.float32)
    right *= wx
    rows += right
    fy = fy[:, None]
    out = rows.take(ya - top, axis=0)
    out *= 1 - fy
    below = rows.take(yb - top, axis=0)
    below *= fy
    out += below
    return out.reshape((len(ya), len(xa)) + region.shape[2:])


def block_mean(image: np.ndarray, k: int, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    """Pixels [x0, x1) x [y0, y1) of `image` reduced by k: each the mean of a k x k block (float32 for
    k > 1; for k = 1 the pixels themselves, a view).

    The image is extended by replicating its last row and column to a multiple of k, so a partial block
    at the right or bottom edge averages real and repeated pixels. For the tracker's integer images the
    mean is exact before its one rounding to float32 in any summation order (at most 64 integers of at
    most 255, times 1/k^2, a power of two), so OpenCV's integer-factor `INTER_AREA` here, a float64 sum
    in numpy and a C++ loop give the same bits.
    """
    if k == 1:
        return image[y0:y1, x0:x1]
    height, width = image.shape[:2]
    if y1 * k <= height and x1 * k <= width:
        block = image[y0 * k:y1 * k, x0 * k:x1 * k]
    else:
        rows = np.minimum(np.arange(y0 * k, y1 * k), height - 1)
        block = image[rows][:, np.minimum(np.arange(x0 * k, x1 * k), width - 1)]
    out = cv2.resize(block.astype(np.float32), (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    return out.reshape((y1 - y0, x1 - x0) + image.shape[2:])


# --------------------------------------------------------------------------------- torch (batched)


def windows_to_theta(windows: np.ndarray, in_size: tuple[int, int], out_size: int):
    """Batched windows -> `F.affine_grid` thetas, for one batched resample on the GPU.

    `windows` is (B, 3) of (cx, cy, side) in the input image's pixels; `in_size` is (H, W). With
    ``align_corners=False`` the normalised grid uses the same pixel-centre convention as `crop`, so a
    batched crop equals `crop` up to interpolation rounding (tested).
    """
    import torch

    w = torch.as_tensor(windows, dtype=torch.float32)
    h_in, w_in = in_size
    cx, cy, side = w[:, 0], w[:, 1], w[:, 2]
    theta = torch.zeros(w.shape[0], 2, 3, dtype=torch.float32, device=w.device)
    theta[:, 0, 0] = side / w_in
    theta[:, 0, 2] = 2 * cx / w_in - 1
    theta[:, 1, 1] = side / h_in
    theta[:, 1, 2] = 2 * cy / h_in - 1
    return theta


def crop_batch(images, windows, out_size: int):
    """Crop B windows from B images (B,C,H,W float tensor) in one `grid_sample`, border replicated."""
    import torch
    import torch.nn.functional as F

    windows = torch.as_tensor(windows, dtype=torch.float32, device=images.device)
    theta = windows_to_theta(windows, images.shape[-2:], out_size).to(images.device)
    grid = F.affine_grid(theta, [images.shape[0], images.shape[1], out_size, out_size], align_corners=False)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


# ------------------------------------------------------------------------------- scale pyramids


def crop_patches(
    image: np.ndarray, center: np.ndarray, size_wh: np.ndarray, factors: np.ndarray, out_wh: tuple[int, int]
) -> np.ndarray:
    """Target-shaped patches at several scales: patch k covers `size_wh * factors[k]` around `center`,
    resampled to `out_wh` (w, h). Returns (K, out_h, out_w) float32 (the DSST scale pyramid).

    The same path as the tracker's crops (`resample`), with one band-limit factor for every scale (the
    largest patch's), so the scales differ only in where they sample, not in how blurred they are; the
    block means under all of them are computed once.
    """
    cx, cy = float(center[0]), float(center[1])
    w, h = float(size_wh[0]), float(size_wh[1])
    ow, oh = int(out_wh[0]), int(out_wh[1])
    big = float(np.max(factors))
    k = reduced_decode_factor(max(ow / (w * big), oh / (h * big)))
    height, width = image.shape[:2]
    taps = [(_taps((cx - w * f / 2) / k, w * f / k / ow, ow, -(-width // k)),
             _taps((cy - h * f / 2) / k, h * f / k / oh, oh, -(-height // k))) for f in factors]
    left, top, right, bottom = _tap_bounds(taps)
    region = block_mean(image, k, left, top, right, bottom)
    return np.stack([_interpolate(region, left, top, *t) for t in taps])

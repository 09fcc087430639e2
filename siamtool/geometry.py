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
* The crop is one ``cv2.warpAffine`` with ``BORDER_REPLICATE``: no padded copy of the full frame.
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
    """`crop` after an integer block average that removes the detail the crop cannot show (no aliasing),
    at the same reduction factor as `prepare`'s training crops, but not with the same filter.

    prepare decodes each JPEG at the coarsest reduction (1/2, 1/4, 1/8) the crop allows and then
    warps; a tracker that warped the full frame directly would see aliased crops of large targets
    that training never showed. Frames here are already decoded (video, camera, eval), so the reduction
    is a k x k block average (INTER_AREA at an integer factor), then the same warp. libjpeg's scaled
    decode filters in the DCT domain, so the two are close, not equal: on the reduced crops of the
    validation sequences they differ by 0.29 grey levels on average, 2 at the 99th percentile, 19 at
    most. Tracking with crops made prepare's way scores 48.74 AUC against 49.12 the tracker's way on
    validation, 61.3 against 66.3 on dev-test, where one sequence (motorcycle-2) flips, as it does between
    runtimes whose crops are identical: at this data size the two filters cannot be told apart by AUC
    (`benchmarks/resample_parity.py`, docs/benchmarks.md). The DSST pyramid
    (`crop_patches`) band-limits its own way again; it is learnt online, never trained offline.

    Only the k-aligned region of the frame that the warp reads is averaged (`reduced_region`), into its
    place in an otherwise blank reduced frame, and the window is warped out of that with the same
    matrix: a window much smaller than the frame costs what its own pixels cost, and the crop is
    bit-identical to the one from the whole reduced frame (the same block averages under every pixel
    the warp reads, the same border replication at the frame's edges). Frames whose sides are not
    multiples of k (where the whole-frame resize averages fractional blocks) take the whole-frame way.
    """
    k = reduced_decode_factor(window.scale)
    if k == 1:
        return crop(frame, window)
    small_window = window.scaled(1.0 / k)
    height, width = frame.shape[:2]
    if width % k or height % k:
        small = cv2.resize(frame, (0, 0), fx=1.0 / k, fy=1.0 / k, interpolation=cv2.INTER_AREA)
        return crop(small, small_window)
    x0, y0, x1, y1 = reduced_region(small_window, width // k, height // k)
    small = np.zeros((height // k, width // k) + frame.shape[2:], frame.dtype)
    cv2.resize(frame[y0 * k:y1 * k, x0 * k:x1 * k], (x1 - x0, y1 - y0), dst=small[y0:y1, x0:x1],
               interpolation=cv2.INTER_AREA)
    return crop(small, small_window)


def reduced_region(window: CropWindow, width: int, height: int, margin: int = 2) -> tuple[int, int, int, int]:
    """Pixel bounds x0, y0, x1, y1 (end exclusive) of a `width` x `height` image that a bilinear `crop`
    of `window` reads, `margin` pixels wider, clipped to the image and never empty (a window wholly
    outside the image reads the nearest edge pixels, which border replication repeats)."""
    half = window.side / 2
    bounds = []
    for centre, size in ((window.cx, width), (window.cy, height)):
        lo = min(max(int(np.floor(centre - half)) - margin, 0), size - 1)
        hi = max(min(int(np.ceil(centre + half)) + margin, size), lo + 1)
        bounds.append((lo, hi))
    (x0, x1), (y0, y1) = bounds
    return x0, y0, x1, y1


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
    resampled to `out_wh` (w, h). Returns (K, out_h, out_w) of `image`'s dtype (the DSST scale pyramid).

    The largest patch is band-limited once (INTER_AREA to about twice the output size), and every scale
    is then one bilinear warp of that small image, so a large target costs no more than a small one.
    """
    cx, cy = float(center[0]), float(center[1])
    w, h = float(size_wh[0]), float(size_wh[1])
    ow, oh = out_wh
    big = float(np.max(factors))
    shrink = min(1.0, 2.0 * ow / max(w * big, 1e-6), 2.0 * oh / max(h * big, 1e-6))
    if shrink < 0.5:
        x0, y0 = int(np.floor(cx - w * big / 2)) - 2, int(np.floor(cy - h * big / 2)) - 2
        x1, y1 = int(np.ceil(cx + w * big / 2)) + 2, int(np.ceil(cy + h * big / 2)) + 2
        inside = x0 >= 0 and y0 >= 0 and x1 <= image.shape[1] and y1 <= image.shape[0]
        region = (image[y0:y1, x0:x1] if inside else  # an integer shift with the border replicated
                  cv2.warpAffine(image, np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0]]), (x1 - x0, y1 - y0),
                                 flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REPLICATE))
        sw = max(1, int(round(region.shape[1] * shrink)))
        sh = max(1, int(round(region.shape[0] * shrink)))
        image = cv2.resize(region, (sw, sh), interpolation=cv2.INTER_AREA)
        sx, sy = sw / region.shape[1], sh / region.shape[0]
        cx, cy, w, h = (cx - x0) * sx, (cy - y0) * sy, w * sx, h * sy
    out = np.empty((len(factors), oh, ow) + image.shape[2:], dtype=image.dtype)
    for k, f in enumerate(factors):
        ax, ay = ow / (w * f), oh / (h * f)
        m = np.array([[ax, 0.0, ax * (0.5 - (cx - w * f / 2)) - 0.5],
                      [0.0, ay, ay * (0.5 - (cy - h * f / 2)) - 0.5]])
        out[k] = cv2.warpAffine(image, m, (ow, oh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out

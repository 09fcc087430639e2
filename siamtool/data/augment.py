"""Train-time jitter: the final template/search crops cut from the stored crops on the device.

prepare stores a template crop (target centred, `data.template_size`) and a *generous* search crop
(`data.search_margin` x the search window, centred on the search-frame box). Everything random happens
here, at train time, in two steps:

1. `plan_pairs` (NumPy, cheap, in the DataLoader worker) draws every random number of a batch and turns
   it into crop windows with `siamtool.geometry`: the final search window is
   ``geometry.search_window(stored_box, data.context, template_size, search_size)`` (exactly the window
   the Tracker cuts around its previous box), scaled by a log-uniform factor and moved off the target.
   The target box in final-crop pixels is that window's `box_to_crop` of the stored box, so the label
   and the pixels come from the same map.
2. `render_pairs` (torch, on the training device) cuts all search crops in ONE batched affine resample
   (`geometry.crop_batch`, the same pixel-centre convention as `geometry.crop`) and applies photometric
   jitter batched (per-sample factors), so a GPU run never touches pixels on the CPU.

Why the target must move: a search crop always centred on the target teaches the network "the answer
is in the middle", and the tracker then fails exactly when it is needed, on fast motion. Shift jitter
(`train.augment.shift`) follows OSTrack's `center_jitter_factor`: the window centre is displaced from
the target centre by (dx, dy), each uniform in [-m, m] with ``m = shift / 2 * sqrt(w * h)`` (w, h the
target size; 3 -> up to 1.5 target sizes, 96 px of a 256 crop for a square target), then limited so
the window stays inside the stored crop (no replicated-border streaks, which would be a shortcut that
points away from the target). Scale jitter (`train.augment.scale` = s): the window side is multiplied
by exp(u), u uniform in [-s, s], so the target appears between exp(-s) and exp(s) times its nominal
size. The room left for shifting is `(search_margin - exp(u)) / 2` search windows on each side; raise
`data.search_margin` (re-run prepare) for larger shifts.

The template is never shifted or scaled: the Tracker always centres it. It is resampled only when the
config's template size differs from the stored one (same window, so the same content).

Photometric jitter (`train.augment.*`), per image unless stated: brightness x U(1-b, 1+b), contrast
(blend with the image's mean grey) x U(1-c, 1+c), saturation (blend with its grey image) x U(1-s, 1+s),
grayscale with probability `grayscale_prob` for template and search together (a grayscale video is
grey in both), Gaussian blur with probability `blur_prob` and sigma U(0.1, 2.0) px of the final crop.
Validation uses the same geometric distribution with fixed per-sample seeds and no photometric jitter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from siamtool import geometry
from siamtool.config import Config

BLUR_SIGMA = (0.1, 2.0)
"""Range of the Gaussian blur sigma in final-crop pixels (torchvision's GaussianBlur default)."""
GREY_WEIGHTS = (0.299, 0.587, 0.114)
"""ITU-R 601 luma weights, as torchvision's rgb_to_grayscale."""

# Photometric parameter columns, one row per image: identity is [1, 1, 1, 0, 0].
P_BRIGHTNESS, P_CONTRAST, P_SATURATION, P_GREY, P_BLUR = range(5)
PHOTO_IDENTITY = np.array([1.0, 1.0, 1.0, 0.0, 0.0], dtype=np.float32)


@dataclass
class AugmentPlan:
    """Everything random about a batch, as small arrays (drawn in a worker, applied on the device).

    Windows are (cx, cy, side) in stored-crop pixels, the format of `geometry.crop_batch`.
    """

    template_windows: np.ndarray
    """(B, 3) float32: template window in stored template-crop pixels."""
    search_windows: np.ndarray
    """(B, 3) float32: final search window in stored search-crop pixels."""
    search_box: np.ndarray
    """(B, 4) float32: x,y,w,h of the stored search box in final search-crop pixels."""
    template_photo: np.ndarray
    """(B, 5) float32 photometric parameters of the template (columns P_*)."""
    search_photo: np.ndarray
    """(B, 5) float32 photometric parameters of the search crop."""

    def __len__(self) -> int:
        return len(self.search_box)

    def to_tensors(self) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in vars(self).items()}


def search_jitter_windows(boxes: np.ndarray, stored_size: int, cfg: Config, u: np.ndarray) -> np.ndarray:
    """Final search windows (N,3) for stored search boxes (N,4), given uniform draws u (N,3) in [-1, 1].

    u[:, 0] maps to the scale factor exp(u * augment.scale); u[:, 1:] to the displacement of the window
    centre, u * m with m = augment.shift / 2 * sqrt(w h), limited so the window stays in the stored crop.
    """
    d, a = cfg.data, cfg.train.augment
    boxes = np.asarray(boxes, dtype=np.float64)
    win = geometry.CropGeometry.from_data(d).searches(boxes)
    side = win[:, 2] * np.exp(u[:, 0] * a.scale)
    m = (a.shift / 2 * np.sqrt(np.clip(boxes[:, 2], 0, None) * np.clip(boxes[:, 3], 0, None)))[:, None]
    c = win[:, :2]
    # Allowed centres: window [c' - side/2, c' + side/2] inside [0, stored_size] and |c' - c| <= m.
    lo = np.maximum(c - m, side[:, None] / 2)
    hi = np.minimum(c + m, stored_size - side[:, None] / 2)
    inside = (lo + hi) / 2 + u[:, 1:] * (hi - lo) / 2  # uniform over the interval, symmetric when centred
    # A window larger than the stored crop: centre it, as close to the target as the shift allows.
    centred = np.clip(stored_size / 2, c - m, c + m)
    centre = np.where(lo <= hi, inside, centred)
    return np.concatenate([centre, side[:, None]], axis=1)


def photometric_params(rng: np.random.Generator, n: int, cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """Random photometric parameters for `n` templates and `n` search crops (grayscale shared per pair)."""
    a = cfg.train.augment
    out = []
    grey = (rng.random(n) < a.grayscale_prob).astype(np.float32)
    for _ in range(2):
        p = np.empty((n, 5), dtype=np.float32)
        p[:, P_BRIGHTNESS] = rng.uniform(1 - a.brightness, 1 + a.brightness, n)
        p[:, P_CONTRAST] = rng.uniform(1 - a.contrast, 1 + a.contrast, n)
        p[:, P_SATURATION] = rng.uniform(1 - a.saturation, 1 + a.saturation, n)
        p[:, P_GREY] = grey
        blur = rng.random(n) < a.blur_prob
        p[:, P_BLUR] = np.where(blur, rng.uniform(*BLUR_SIGMA, n), 0.0)
        out.append(p)
    return out[0], out[1]


def plan_pairs(
    template_boxes: np.ndarray,
    search_boxes: np.ndarray,
    stored_search_size: int,
    cfg: Config,
    rng: np.random.Generator | list[np.random.Generator],
    photometric: bool = True,
) -> AugmentPlan:
    """Draw the jitter of a batch (boxes in stored-crop pixels) and resolve it to windows and boxes.

    `rng` is one generator for the batch (training: a stream per worker) or one per pair (validation:
    seeded by the sample index, so a sample looks the same whatever the worker count or batch size).
    """
    d = cfg.data
    n = len(search_boxes)
    per_sample = isinstance(rng, list)
    u = np.stack([r.uniform(-1.0, 1.0, 3) for r in rng]) if per_sample else rng.uniform(-1.0, 1.0, (n, 3))
    zwin = geometry.CropGeometry.from_data(d).templates(template_boxes)
    xwin = search_jitter_windows(search_boxes, stored_search_size, cfg, u.reshape(n, 3))
    xbox = geometry.boxes_to_crops(xwin, d.search_size, np.asarray(search_boxes, dtype=np.float64))
    if not photometric:
        zp = np.tile(PHOTO_IDENTITY, (n, 1))
        xp = np.tile(PHOTO_IDENTITY, (n, 1))
    elif per_sample:
        rows = [photometric_params(r, 1, cfg) for r in rng]
        zp, xp = np.concatenate([r[0] for r in rows]), np.concatenate([r[1] for r in rows])
    else:
        zp, xp = photometric_params(rng, n, cfg)
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return AugmentPlan(f32(zwin), f32(xwin), f32(xbox), f32(zp), f32(xp))


# ------------------------------------------------------------------------------------- on the device
#
# The plan arrives as CPU tensors (pinned when training on CUDA). Decisions that depend on its values
# (skip an identity resample, which images to blur) are taken on the CPU copy, and the tensors go to the
# device with non_blocking=True: nothing here waits for the GPU, so batch preparation overlaps the step.


def _is_full_crop(windows: torch.Tensor, in_size: int, out_size: int) -> bool:
    """True when every window is the whole input at the output size (the resample would be a no-op)."""
    if in_size != out_size:
        return False
    full = torch.tensor([in_size / 2, in_size / 2, in_size], dtype=windows.dtype)
    return bool((windows.cpu() - full).abs().max() < 1e-3)


def _grey(x: torch.Tensor) -> torch.Tensor:
    r, g, b = GREY_WEIGHTS
    return r * x[:, 0:1] + g * x[:, 1:2] + b * x[:, 2:3]


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of x (N,3,H,W) with its own sigma (N,): one separable grouped convolution."""
    n, c, h, w = x.shape
    radius = int(np.ceil(3 * BLUR_SIGMA[1]))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None, :] / sigma[:, None].clamp_min(1e-3)) ** 2)
    k = (k / k.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*3, 2r+1)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="replicate"), k[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="replicate"), k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def photometric(x: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Apply per-image photometric jitter to float RGB images (N,3,H,W) in 0..255; returns 0..255.

    `params` (N,5) should be a CPU tensor (see above). The ops, in this order, are
    brightness ``x *= b``, contrast ``x = (x - mean(grey(x))) * c + mean``, saturation
    ``x = (x - grey(x)) * s + grey(x)``, grayscale ``x = grey(x)``, then blur. The first four are affine
    in x and its grey image g, so they collapse to one pass, ``x' = A x + B g + C`` with per-image
    A = s c b, B = (1 - s) c b, C = (1 - c) b mean(g) (grayscale: A -> 0, B -> A + B); clamped once.
    """
    p_cpu = params.detach().to("cpu", torch.float64)
    if bool((p_cpu == torch.from_numpy(PHOTO_IDENTITY).double()).all()):
        return x
    b, c, s = p_cpu[:, P_BRIGHTNESS], p_cpu[:, P_CONTRAST], p_cpu[:, P_SATURATION]
    grey = p_cpu[:, P_GREY] > 0.5
    a_, b_ = s * c * b, (1 - s) * c * b
    a_, b_ = torch.where(grey, 0.0, a_), torch.where(grey, a_ + b_, b_)
    coef = torch.stack([a_, b_, (1 - c) * b], dim=1).to(device=x.device, dtype=x.dtype, non_blocking=True)
    g = _grey(x)
    col = lambda j: coef[:, j].view(-1, 1, 1, 1)  # noqa: E731
    out = x * col(0) + g * col(1) + g.mean(dim=(2, 3), keepdim=True) * col(2)
    blur = (p_cpu[:, P_BLUR] > 0).nonzero().flatten()
    if blur.numel():
        sigma = p_cpu[blur, P_BLUR].to(device=x.device, dtype=x.dtype, non_blocking=True)
        idx = blur.to(x.device, non_blocking=True)
        out = out.index_copy(0, idx, _gaussian_blur(out.index_select(0, idx), sigma))
    return out.clamp_(0.0, 255.0)


def render_pairs(
    template: torch.Tensor, search: torch.Tensor, plan: dict[str, torch.Tensor], cfg: Config
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stored crops (uint8 or float (B,3,H,W) RGB, on the device) + a CPU plan -> final float crops 0..255.

    The search crops are cut in one `geometry.crop_batch` (one `grid_sample`); the template is cut the
    same way only when its window is not simply the whole stored template. The results are rounded to
    integers: integer crops travel from CPU workers as uint8 (4x less inter-process traffic than float32,
    which cost more than the crop itself). The tracker's crops are float (`geometry.resample`); half a grey
    level of rounding is far below the JPEG loss of the stored crops.
    """
    d = cfg.data
    z = template.float()
    if not _is_full_crop(plan["template_windows"], z.shape[-1], d.template_size):
        z = geometry.crop_batch(z, plan["template_windows"].to(z.device, non_blocking=True), d.template_size)
    x = search.float()
    x = geometry.crop_batch(x, plan["search_windows"].to(x.device, non_blocking=True), d.search_size)
    return torch.round(photometric(z, plan["template_photo"])), torch.round(photometric(x, plan["search_photo"]))

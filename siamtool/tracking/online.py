"""Online target models: what the tracker learns about *this* target while it tracks.

The offline heads (`siamtool.models.siamese`) were trained on a few thousand pairs and know "things that
look like the template" in general; on unfamiliar footage their confidence collapses. Trackers built on
frozen ImageNet features without any tracking-specific training (CF2, C-COT, ECO on OTB-100: AUC 56-69)
show why: they learn a discriminative model of the target online, from the first frame, and it tells
the target from the background around it in the very footage being tracked. DiMP and ATOM pair such
an online classifier with an offline box estimator. siamtool does the same with two small models:

* `TranslationFilter`: a multi-channel discriminative correlation filter (DCF, MOSSE/DSST form) on the
  frozen backbone's stride-16 feature map of the search crop, the same map the offline neck sees. Closed
  form in the Fourier domain, so fitting it is one FFT, and applying it costs less than a millisecond.
* `ScaleFilter`: a DSST 1-D scale filter over a pyramid of target-shaped patches described by cheap
  gradient-orientation histograms; it replaces three forward passes of a 3-scale search by one FFT.

Both keep a bounded sample memory (`SampleMemory`): the first frame's samples are never forgotten (they
are the only ground truth the tracker ever gets), recent confident frames fill the rest, and the model
is the weighted sum of the samples' numerators and denominators. A long video therefore adapts to slow
appearance change without drifting onto whatever the tracker followed last.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from siamtool.config import TrackConfig
from siamtool.geometry import crop_patches

# --------------------------------------------------------------------------------------------- memory


@dataclass
class SampleMemory:
    """Numerators and denominators of up to `size` samples; the first `keep` are permanent.

    The model is ``A = sum w_i A_i``, ``B = sum w_i B_i``: the permanent samples share `first_weight`,
    the rest share ``1 - first_weight`` equally, so the first frame's say never drops below
    `first_weight` however long the video is (the anti-drift anchor).
    """

    size: int
    first_weight: float
    keep: int = 0
    nums: list[np.ndarray] = field(default_factory=list)
    dens: list[np.ndarray] = field(default_factory=list)

    def add(self, num: np.ndarray, den: np.ndarray, permanent: bool = False) -> None:
        if permanent:
            self.nums.insert(self.keep, num)
            self.dens.insert(self.keep, den)
            self.keep += 1
        else:
            self.nums.append(num)
            self.dens.append(den)
        while len(self.nums) > max(self.size, self.keep):
            del self.nums[self.keep]
            del self.dens[self.keep]

    def weights(self) -> np.ndarray:
        n, k = len(self.nums), self.keep
        if n == k:
            return np.full(n, 1.0 / n)
        w = np.full(n, (1.0 - self.first_weight) / (n - k))
        w[:k] = self.first_weight / k
        return w

    def model(self) -> tuple[np.ndarray, np.ndarray]:
        w = self.weights()
        num = sum(wi * a for wi, a in zip(w, self.nums))
        den = sum(wi * b for wi, b in zip(w, self.dens))
        return num, den  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- helpers


def hann(n: int) -> np.ndarray:
    """Hann window of length n with no zero ends (the ends would erase the border cells entirely)."""
    return np.hanning(n + 2)[1:-1].astype(np.float32)


def target_window(n: int, extent: float) -> np.ndarray:
    """A Hann-shaped window over `extent` cells around the middle of an `n`-cell axis (the whole axis
    when `extent` >= n): the filter's view of the search crop, focused on the target and its close
    surroundings, as KCF's padding is. Without it a static, textured background that fills most of the
    crop outweighs the target, and the filter keeps answering "no motion" while the target walks away."""
    if extent >= n:
        return hann(n)
    x = (np.arange(n) + 0.5 - n / 2) / max(extent / 2, 0.5)
    return np.where(np.abs(x) < 1, 0.5 + 0.5 * np.cos(np.pi * x), 0.0).astype(np.float32) * 0.95 + 0.05


def gaussian_label(shape: tuple[int, int], center: tuple[float, float], sigma: float) -> np.ndarray:
    """Periodic 2-D Gaussian peaking at `center` (row, col in cells): the DCF's desired response.

    Periodic because the DCF sees the feature map as one period of an infinite tiling; a label that
    wraps around keeps a target near the border from getting a truncated peak.
    """
    h, w = shape
    dy = (np.arange(h) - center[0] + h / 2) % h - h / 2
    dx = (np.arange(w) - center[1] + w / 2) % w - w / 2
    return np.exp(-0.5 * (dy[:, None] ** 2 + dx[None, :] ** 2) / sigma**2).astype(np.float32)


def upsampled_response(spectrum: np.ndarray, shape: tuple[int, int], factor: int) -> np.ndarray:
    """Real response on a `factor` x finer grid from its half spectrum (rfft2 layout), by zero padding.

    Sample (k, l) of the result lies at cell (k / factor, l / factor) of the original grid: sub-cell
    positions without any interpolation model but the band limit of the response itself.
    """
    h, w = shape
    if factor == 1:
        return np.fft.irfft2(spectrum, s=(h, w))
    spectrum = spectrum.copy()
    if w % 2 == 0:
        spectrum[:, -1] *= 0.5  # the Nyquist column stands for +w/2 and -w/2: in the larger grid, only +
    big = np.zeros((h * factor, w * factor // 2 + 1), dtype=spectrum.dtype)
    half = (h + 1) // 2
    big[:half, : spectrum.shape[1]] = spectrum[:half]
    big[-(h - half):, : spectrum.shape[1]] = spectrum[half:]
    if h % 2 == 0:  # the Nyquist row is split between +h/2 and -h/2
        big[half] = big[-half] * 0.5
        big[-half] *= 0.5
    return np.fft.irfft2(big, s=(h * factor, w * factor)) * factor * factor


# ---------------------------------------------------------------------------------- translation DCF


class TranslationFilter:
    """Multi-channel DCF on (C, H, W) feature maps: where in the search crop is the target now?

    Training sample: features normalised to unit mean energy (so `reg` means the same for every backbone
    and every crop) and multiplied by a window (`target_window`: `window` x the target's size, so the map's
    borders do not wrap into each other and the target, not the background, dominates);
    label: a Gaussian of std ``sigma_factor * sqrt(w h) / stride`` cells (at least 0.25) at the target's
    cell. ``A_c = conj(Y) X_c``, ``B = sum_c |X_c|^2``; the response to a new map Z is
    ``irfft2(sum_c conj(A_c) Z_c / (B + reg * mean(B)))`` (DSST's closed form, per frequency).
    """

    def __init__(self, reg: float = 0.01, sigma_factor: float = 0.1, upsample: int = 4,
                 memory: int = 8, first_weight: float = 0.5, window: float = 3.0) -> None:
        self.reg = reg
        self.window = window
        self.size_cells: tuple[float, float] = (0.0, 0.0)
        self.sigma_factor = sigma_factor
        self.upsample = upsample
        self.memory = SampleMemory(memory, first_weight)
        self.shape: tuple[int, int] = (0, 0)
        self._win: np.ndarray | None = None
        self._num: np.ndarray | None = None
        self._den: np.ndarray | None = None
        self.peak = 1.0
        """Response peak on the first sample: responses are divided by it, so the first frame scores 1
        and the fused score mixes two maps of the same range."""

    def calibrate(self, feats: np.ndarray) -> None:
        """Set `peak` from the response to the first frame's own features."""
        self.peak = 1.0
        peak = float(self.respond(feats)[0].max())
        self.peak = max(peak, 1e-6) if np.isfinite(peak) else 1.0  # max(nan, 1e-6) is nan

    def _spectrum(self, feats: np.ndarray) -> np.ndarray:
        """The windowed, energy-normalised features' half spectrum.

        Every precision is spelled out (the energy summed in float64, the division and the window in
        float32, the transform in float64) because numpy 1 and 2 promote float32 differently, and the C++
        tracker (`cpp/`) computes exactly this: one float32 ulp here parted the two tracks on face-3."""
        x = np.asarray(feats, dtype=np.float32)
        if x.shape[1:] != self.shape or self._win is None:
            self.shape = x.shape[1:]
            w, h = self.size_cells
            self._win = np.outer(target_window(self.shape[0], self.window * h),
                                 target_window(self.shape[1], self.window * w))
        energy = float(np.mean(np.square(x, dtype=np.float64)))
        x = x / np.float32(np.sqrt(energy + 1e-12))
        return np.fft.rfft2((x * self._win).astype(np.float64))

    def add_sample(self, feats: np.ndarray, center_cells: tuple[float, float], size_cells: tuple[float, float],
                   permanent: bool = False) -> None:
        """Learn that the target of size `size_cells` (w, h) sits at `center_cells` (row, col) of `feats`.

        The first sample fixes the filter's window (`window` x the target's size, in cells). A sample with
        non-finite features is ignored: in the Fourier domain one NaN cell would poison every frequency of
        the model for good."""
        if not np.all(np.isfinite(feats)):
            return
        if self._num is None:
            self.size_cells = (float(size_cells[0]), float(size_cells[1]))
            self._win = None
        xf = self._spectrum(feats)
        sigma = max(self.sigma_factor * float(np.sqrt(size_cells[0] * size_cells[1])), 0.25)
        yf = np.fft.rfft2(gaussian_label(self.shape, center_cells, sigma).astype(np.float64))
        self.memory.add(np.conj(yf)[None] * xf, np.sum((xf * np.conj(xf)).real, axis=0), permanent)
        self._num, den = self.memory.model()
        self._den = den + self.reg * max(float(den.mean()), 1e-12)  # all-zero features: 0 / 0 otherwise

    def respond(self, feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Response to `feats`: (on the cell grid (H, W), on the `upsample` x finer grid)."""
        zf = self._spectrum(feats)
        spectrum = np.sum(np.conj(self._num) * zf, axis=0) / self._den  # type: ignore[arg-type]
        spectrum = spectrum / self.peak
        coarse = np.fft.irfft2(spectrum, s=self.shape).astype(np.float32)
        fine = upsampled_response(spectrum, self.shape, self.upsample).astype(np.float32)
        return coarse, fine


def parabolic_offset(left: float, centre: float, right: float) -> float:
    """Sub-sample offset in [-0.5, 0.5] of the vertex of the parabola through three samples around a
    maximum at `centre` (KCF's and ECO's sub-pixel step); 0 where the three are flat or not a maximum."""
    left, centre, right = float(left), float(centre), float(right)  # float64 under numpy 1 and 2 alike
    curvature = left - 2.0 * centre + right
    if not (np.isfinite(curvature) and curvature < 0):
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def refine_peak(fine: np.ndarray, factor: int, cell: tuple[int, int], radius: float = 1.0) -> tuple[float, float]:
    """Sub-cell (row, col) of the fine response's maximum within `radius` cells of `cell`.

    The cell comes from the fused score (offline heads + DCF + motion window); the fine grid only says
    where inside that neighbourhood the peak is, so a far-away DCF maximum cannot override the choice.
    The fine grid's argmax is then refined by a parabola through it and its two neighbours along each
    axis: without it the peak moves in 1/`factor`-cell steps (7.0, 7.0, 7.25, 7.25, ... for a target
    moving smoothly), and that staircase was blended 50/50 into the centre.
    """
    r = int(round(radius * factor))
    h, w = fine.shape
    rows = (np.arange(-r, r + 1) + cell[0] * factor) % h
    cols = (np.arange(-r, r + 1) + cell[1] * factor) % w
    patch = fine[np.ix_(rows, cols)]
    i, j = np.unravel_index(int(np.argmax(patch)), patch.shape)
    fi, fj = int(rows[i]), int(cols[j])
    di = parabolic_offset(fine[(fi - 1) % h, fj], fine[fi, fj], fine[(fi + 1) % h, fj])
    dj = parabolic_offset(fine[fi, (fj - 1) % w], fine[fi, fj], fine[fi, (fj + 1) % w])
    return (cell[0] * factor + i - r + di) / factor, (cell[1] * factor + j - r + dj) / factor


# --------------------------------------------------------------------------------------- scale DSST


def gradient_histograms(patches: np.ndarray, cell: int = 4, bins: int = 9) -> np.ndarray:
    """(N, H, W) grey patches -> (N, D) unsigned-orientation gradient histograms pooled in cell x cell
    blocks, plus the block means of the grey level: a cheap HOG that survives blur and brightness."""
    n, h, w = patches.shape
    flat = patches.reshape(n * h, w).astype(np.float32)
    gx = cv2.Sobel(flat, cv2.CV_32F, 1, 0, ksize=1).reshape(n, h, w)
    gy = cv2.Sobel(flat, cv2.CV_32F, 0, 1, ksize=1).reshape(n, h, w)
    mag = np.sqrt(gx * gx + gy * gy)
    ori = (np.arctan2(gy, gx) % np.pi) * (bins / np.pi)
    idx = np.minimum(ori.astype(np.int32), bins - 1)
    hist = np.zeros((n, bins, h, w), np.float32)
    np.put_along_axis(hist, idx[:, None], mag[:, None], axis=1)
    hist = np.concatenate([hist, patches[:, None].astype(np.float32) / 255.0], axis=1)
    pooled = hist.reshape(n, bins + 1, h // cell, cell, w // cell, cell).mean(axis=(3, 5))
    return pooled.reshape(n, -1)


class ScaleFilter:
    """DSST's 1-D scale filter: which of `n` scales ``step**k`` makes the target look like its model?

    Each scale's patch is the target box times the factor (aspect kept), resampled to a fixed model
    size of about `model_area` pixels, described by `gradient_histograms` and weighted by a Hann window
    over the scales; the filter is a DCF along the scale axis with a 1-D Gaussian label at the middle.
    """

    def __init__(self, n: int = 17, step: float = 1.02, reg: float = 0.01, model_area: int = 512,
                 memory: int = 8, first_weight: float = 0.5) -> None:
        self.n = n
        self.factors = step ** (np.arange(n) - (n - 1) / 2)
        self.reg = reg
        self.model_area = model_area
        self.memory = SampleMemory(memory, first_weight)
        self.model_wh = (8, 8)
        sigma = 0.25 * n / np.sqrt(33.0)
        d = np.arange(n) - (n - 1) / 2
        self._yf = np.fft.fft(np.exp(-0.5 * (d / sigma) ** 2))
        self._win = hann(n)[:, None]
        self._num: np.ndarray | None = None
        self._den: np.ndarray | None = None

    def set_model_size(self, size_wh: np.ndarray) -> None:
        """Fix the patch size from the first box: ~`model_area` pixels, multiples of 4, target aspect."""
        w, h = float(size_wh[0]), float(size_wh[1])
        k = np.sqrt(self.model_area / max(w * h, 1e-6))
        self.model_wh = (max(8, int(round(w * k / 4)) * 4), max(8, int(round(h * k / 4)) * 4))

    def _spectrum(self, grey: np.ndarray, center: np.ndarray, size: np.ndarray) -> np.ndarray:
        patches = crop_patches(grey, center, size, self.factors, self.model_wh)
        feats = gradient_histograms(patches) * self._win
        return np.fft.fft(feats.astype(np.float64), axis=0)

    def add_sample(self, grey: np.ndarray, center: np.ndarray, size: np.ndarray) -> None:
        xf = self._spectrum(grey, center, size)
        self.memory.add(np.conj(self._yf)[:, None] * xf, np.sum((xf * np.conj(xf)).real, axis=1),
                        permanent=self._num is None)
        self._num, den = self.memory.model()
        self._den = den + self.reg * float(den.mean())

    def estimate(self, grey: np.ndarray, center: np.ndarray, size: np.ndarray) -> float:
        """The scale factor (one of `factors`) that best explains the target at `center` with `size`."""
        zf = self._spectrum(grey, center, size)
        response = np.fft.ifft(np.sum(np.conj(self._num) * zf, axis=1) / self._den).real  # type: ignore[arg-type]
        return float(self.factors[int(np.argmax(response))])


# ------------------------------------------------------------------------------- look-alikes


def unit_cells(feats: np.ndarray) -> np.ndarray:
    """(C, H, W) features -> (H * W, C) unit vectors, one per cell (cosine similarity by dot product)."""
    x = np.asarray(feats, dtype=np.float32).reshape(feats.shape[0], -1).T
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def local_maxima(score: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of the cells of `score` that are >= their 8 neighbours and >= `floor`, best first."""
    rows, cols = np.nonzero((score >= cv2.dilate(score, np.ones((3, 3), np.uint8))) & (score >= floor))
    order = np.argsort(-score[rows, cols])
    return rows[order], cols[order]


class DistractorMemory:
    """DaSiamRPN's distractor-aware scoring, at tracking time, on the frozen backbone's per-cell features.

    The offline heads answer "does this look like the template?", and a person among people, a player
    among players, all do; the correlation filter only learns the background inside its window. This
    remembers what the look-alikes the tracker met look like: on a confident frame, every other local
    maximum of the fused score that is at least `ratio` x the chosen cell's score and lies outside the
    target is a distractor, and its feature vector joins a bounded memory (the newest `size`). The target
    is the first frame's vector and an average of confident frames' vectors. On a later frame a cell whose
    features are closer (cosine) to a remembered distractor than to the target loses ``weight x`` that
    margin of its score, so the look-alike the tracker already saw next to the target does not take over
    when it comes close; a cell that looks like the target keeps its score.
    """

    def __init__(self, weight: float, ratio: float = 0.5, size: int = 8, target_rate: float = 0.1) -> None:
        self.weight = weight
        self.ratio = ratio
        self.size = size
        self.target_rate = target_rate
        self.first: np.ndarray | None = None
        self.recent: np.ndarray | None = None
        self.distractors: list[np.ndarray] = []

    def start(self, feats: np.ndarray, cell: tuple[float, float]) -> None:
        """The target's vector from the first frame's features at its cell (row, col)."""
        self.first = self._at(feats, cell)
        self.recent = self.first.copy()

    @staticmethod
    def _at(feats: np.ndarray, cell: tuple[float, float]) -> np.ndarray:
        n_rows, n_cols = feats.shape[1:]
        i = int(np.clip(round(cell[0]), 0, n_rows - 1))
        j = int(np.clip(round(cell[1]), 0, n_cols - 1))
        v = np.asarray(feats[:, i, j], dtype=np.float32)
        return v / (np.linalg.norm(v) + 1e-6)

    def multiplier(self, feats: np.ndarray) -> np.ndarray | None:
        """(H, W) factors in [1 - weight, 1] for the fused score; None while no distractor is known."""
        if not self.distractors or self.first is None:
            return None
        u = unit_cells(feats)
        to_target = np.maximum(u @ self.first, u @ self.recent)  # type: ignore[operator]
        to_distractor = (u @ np.stack(self.distractors).T).max(axis=1)
        margin = np.clip(to_distractor - to_target, 0.0, 1.0)
        return (1.0 - self.weight * margin).reshape(feats.shape[1:]).astype(np.float32)

    def observe(self, feats: np.ndarray, score: np.ndarray, cell: tuple[int, int], size_cells: tuple[float, float],
                target_cell: tuple[float, float]) -> int:
        """Learn from a confident frame: `score` the fused map, `cell` the chosen one, `size_cells` (w, h)
        the target's size and `target_cell` (row, col) its new centre; returns the distractors added."""
        if self.first is None or not np.all(np.isfinite(feats)) or not np.all(np.isfinite(score)):
            return 0
        v = self._at(feats, target_cell)
        self.recent = self.recent + self.target_rate * (v - self.recent)  # type: ignore[operator]
        self.recent /= np.linalg.norm(self.recent) + 1e-6
        rows, cols = local_maxima(score, self.ratio * score[cell])
        outside = (np.abs(rows - cell[0]) > size_cells[1] / 2 + 1) | (np.abs(cols - cell[1]) > size_cells[0] / 2 + 1)
        added = 0
        for k in range(len(rows)):
            if outside[k] and added < 3:
                self.distractors.append(self._at(feats, (rows[k], cols[k])))
                added += 1
        del self.distractors[: max(0, len(self.distractors) - self.size)]
        return added


# ------------------------------------------------------------------------------------------ bundle


class OnlineTarget:
    """The translation filter and (with ``track.scale: dsst``) the scale filter of one target, with the
    update schedule of `track:`: the Tracker hands it features and boxes, it keeps the memory."""

    def __init__(self, t: TrackConfig) -> None:
        self.t = t
        self.translation = TranslationFilter(t.online_reg, t.online_sigma, upsample=4, memory=t.online_memory,
                                             first_weight=t.online_first_weight, window=t.online_window)
        self.scale = (ScaleFilter(t.scale_count, t.scale_step, memory=t.online_memory,
                                  first_weight=t.online_first_weight) if t.scale in ("dsst", "both") else None)
        self.distractors = DistractorMemory(t.distractor_weight) if t.distractor_weight > 0 else None
        self.frames_since_update = 0

    def start(self, samples: list[tuple[np.ndarray, tuple[float, float]]], size_cells: tuple[float, float],
              grey: np.ndarray, center: np.ndarray, size: np.ndarray) -> None:
        """First frame: every (features, target cell) sample is permanent; the scale model starts here."""
        for feats, cell in samples:
            self.translation.add_sample(feats, cell, size_cells, permanent=True)
        self.translation.calibrate(samples[0][0])
        if self.distractors is not None:
            self.distractors.start(*samples[0])
        if self.scale is not None:
            self.scale.set_model_size(size)
            self.scale.add_sample(grey, center, size)

    def maybe_update(self, confident: bool, feats: np.ndarray, cell: tuple[float, float],
                     size_cells: tuple[float, float], grey: np.ndarray | None, center: np.ndarray,
                     size: np.ndarray) -> bool:
        """Every `online_interval` frames, learn from this frame if it was `confident`; True if it did."""
        self.frames_since_update += 1
        if not confident or self.frames_since_update < self.t.online_interval:
            return False
        self.frames_since_update = 0
        self.translation.add_sample(feats, cell, size_cells)
        if self.scale is not None and grey is not None:
            self.scale.add_sample(grey, center, size)
        return True

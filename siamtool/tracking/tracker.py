"""The one Tracker: eval, the interactive app and the ONNX runtime all track through this class.

Per sequence: `initialize(frame, box)` crops the template (geometry.template_window, the training
geometry) and caches its features; with `track.online` it also fits the online target model
(`siamtool.tracking.online`) on the first frame's search crop and three augmented copies of it. Per
frame, `track(frame)`:

0. with `track.camera_motion`, moves the state by the share of the camera's shift since the previous frame
   that this target has followed so far (`siamtool.tracking.camera`; off by default);
1. crops the search window around the previous box (geometry.search_window, same context and sizes
   as training; `growth` x larger while the target is lost);
2. runs one search forward of the backend, which returns the decoded score map, per-cell boxes and
   the crop's backbone features; the online correlation filter's response to those features is fused
   with the score map, ``(1 - online_weight) x heatmap + online_weight x filter response`` (the weight
   shrinks for a crop upsampled beyond `track.online_upsample_limit`: a small target);
3. picks a cell by SiamRPN-style post-processing (`select_candidate`): the fused score is multiplied by
   a penalty on scale and aspect change relative to the previous box, then blended with a Hann window
   that favours small motion; the centre comes from the box head at that cell and the filter's
   sub-cell peak next to it, mixed by the same weight;
4. updates the state: centre moves to the prediction; the size comes from the DSST scale filter
   (``track.scale: dsst``), moves towards the box head's prediction by `size_lr x penalty x score`
   (``head``; the head's sizes rescaled per target by the first frame, `Tracker._size_calibration`), or
   both in turn (``both``: DSST rescales, then the head refines size and aspect); the state stays
   unclipped (the box the template was cut from), only the reported box is clipped to the frame and
   kept >= `min_size`; every `online_interval` frames a confident frame becomes a sample of the online
   models (bounded memory, first frame kept);
5. a non-finite score or box is a lost frame. Otherwise, if the fused score at the chosen cell is below
   `lost_threshold` and below `lost_ratio` x a reference score (the best of the first `REFERENCE_FRAMES`
   tracked frames, then followed at `reference_rate`: a per-target calibration, since a
   model whose scores shift down on unfamiliar footage would otherwise call a visible target lost from
   frame 2 on), the target is reported lost: the box
   stays where it was and the next search window grows by `search_growth` per frame up to
   `max_growth` (local-to-global re-detection, DaSiamRPN); the cosine window is weakened by the same
   factor so a detection far from the last position can win. After the widest window the cycle starts
   again at the normal size: a wider window shows the target smaller than training did, and a model
   only finds targets near its training scale (measured: a LaSOT motorcycle that reappeared was found
   at growth 1 and 1.5 and missed at 2.25 and above), so a search stuck at the widest window would
   never see the target again. The first confident frame recovers, with hysteresis: a candidate more
   than `recover_radius` target sizes from the last confident box must also score `recover_ratio` x
   the reference (a look-alike the search meets while the target is out of view scores well above the
   loss threshold but below the target; measured on long rendered clips with exits: 45.8 -> 49.6 AUC,
   no change on the short real validation sequences), while a candidate near the last box, a target
   that only dimmed, comes back at the loss threshold.

Every knob is in the `track:` config section.
"""

from __future__ import annotations

import dataclasses
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from siamtool.config import Config, TrackConfig
from siamtool.errors import SiamtoolError
from siamtool.geometry import (
    CropWindow,
    clip_box,
    context_side,
    crop_antialiased,
    cxcywh_to_xywh,
    search_window,
    template_window,
    xywh_to_cxcywh,
)
from siamtool.tracking.backends import Backend
from siamtool.tracking.camera import CameraMotion
from siamtool.tracking.online import OnlineTarget, refine_peak


@dataclass
class TrackResult:
    """One tracked frame: the answer (`box`, `score`, `lost`) and what produced it (debug views)."""

    box: np.ndarray
    """(4,) x, y, w, h in 0-based frame pixels, clipped to the frame; while lost, the last confident box."""
    score: float
    """Raw model confidence in [0, 1] at the chosen cell (before penalties and window)."""
    lost: bool
    """True when `score` < min(track.lost_threshold, track.lost_ratio x the reference score), or the answer
    was not finite: the box was not updated this frame."""
    time_s: float
    """Tracking time of this frame: search crop + forward + decode + post-processing (no image decode)."""
    window: CropWindow
    """The search window used this frame (frame coordinates)."""
    growth: float
    """Search window growth used this frame (1 = normal, > 1 while re-detecting)."""
    search_crop: np.ndarray
    """The search crop fed to the backend, float32 RGB 0..255 (`geometry.resample`: not rounded)."""
    heatmap: np.ndarray
    """(H, W) raw score map of this frame."""
    crop_box: np.ndarray
    """(4,) the chosen candidate, x, y, w, h in search-crop pixels (also drawn when lost)."""


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Accept grayscale (H x W), BGR and BGRA frames; the tracker works on 3-channel BGR."""
    if frame.ndim == 2:
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.shape[2] == 1:
        return cv2.cvtColor(frame[..., 0], cv2.COLOR_GRAY2BGR)
    return frame


def check_init_box(box_xywh: Any, width: int, height: int, what: str = "initial box") -> np.ndarray:
    """Validate an initial box against the frame; one-line SiamtoolError naming `what` otherwise."""
    try:
        box = np.asarray(box_xywh, dtype=np.float64).reshape(4)
    except (TypeError, ValueError):
        raise SiamtoolError(f"{what} {box_xywh!r}: expected 4 numbers x,y,w,h") from None
    text = ",".join(f"{v:g}" for v in box)
    if not np.all(np.isfinite(box)):
        raise SiamtoolError(f"{what} {text}: values must be finite numbers")
    x, y, w, h = box
    if w <= 0 or h <= 0:
        raise SiamtoolError(f"{what} {text}: width and height must be > 0 (empty box)")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise SiamtoolError(f"{what} {text} is outside the {width}x{height} frame "
                            f"(x,y are 0-based pixels of the top-left corner)")
    return box


def hann_window(height: int, width: int) -> np.ndarray:
    """Outer product of Hann windows, peak 1 at the centre: the prior that the target moved little."""
    win = np.outer(np.hanning(height + 2)[1:-1], np.hanning(width + 2)[1:-1])
    return (win / win.max()).astype(np.float32)


def _change(r: np.ndarray) -> np.ndarray:
    return np.maximum(r, 1.0 / r)


@dataclass
class Candidate:
    """The cell chosen by `select_candidate` and the penalty it got."""

    index: tuple[int, int]
    score: float
    penalty: float
    box_cxcywh: np.ndarray


def select_candidate(
    score: np.ndarray,
    boxes: np.ndarray,
    expected_wh: tuple[float, float],
    window: np.ndarray,
    window_influence: float,
    scale_penalty: float,
    context: float,
    margin: float = 0.0,
) -> Candidate:
    """SiamRPN post-processing: pick the cell with the best penalised, windowed score.

    `expected_wh` is the previous box size in search-crop pixels. The scale change compares
    context-padded sizes (geometry.context_side, as the template window does) and the aspect change
    compares w/h ratios; ``penalty = exp(-k (r_change * s_change - 1))`` is 1 for an unchanged box and
    falls for implausible jumps, which suppresses distractors of a different size. The answer is the best
    cell's, blended with its neighbours within `margin` of it (`_blend_near_best`).
    """
    w = np.maximum(boxes[..., 2].astype(np.float64), 1e-6)
    h = np.maximum(boxes[..., 3].astype(np.float64), 1e-6)
    ew, eh = max(expected_wh[0], 1e-6), max(expected_wh[1], 1e-6)
    with np.errstate(invalid="ignore", over="ignore"):  # non-finite cells are masked out below
        s_change = _change(context_side(w, h, context) / context_side(ew, eh, context))
        r_change = _change((ew / eh) / (w / h))
        penalty = libm_exp(-(r_change * s_change - 1.0) * scale_penalty)
        pscore = penalty * score * (1.0 - window_influence) + window * window_influence
    # A non-finite cell (fp16/int8 overflow, a broken backend) can never win: argmax would pick a NaN.
    pscore = np.where(np.isfinite(pscore) & np.all(np.isfinite(boxes), axis=-1), pscore, -np.inf)
    i, j = np.unravel_index(int(np.argmax(pscore)), pscore.shape)
    if not np.isfinite(pscore[i, j]):
        return Candidate((int(i), int(j)), float("nan"), 0.0, np.full(4, np.nan))
    return _blend_near_best(pscore, score, penalty, boxes, (int(i), int(j)), margin)


def libm_exp(x: np.ndarray) -> np.ndarray:
    """``exp`` of each value through the C library's `exp`, as the C++ tracker's `std::exp` computes it.

    numpy's vectorised float64 exp differs from libm's in the last bit on some values; the penalty then
    moves the box by 1e-14 px, and a tracker that oscillates between two cells amplifies that into a
    parted track within a hundred frames (`benchmarks/cpp_parity_trace.py`, face-3). 256 calls per frame."""
    flat = np.minimum(np.asarray(x, dtype=np.float64), 700.0).ravel().tolist()
    return np.array([math.exp(v) for v in flat], dtype=np.float64).reshape(np.shape(x))


def _blend_near_best(pscore: np.ndarray, score: np.ndarray, penalty: np.ndarray, boxes: np.ndarray,
                     best: tuple[int, int], margin: float) -> Candidate:
    """The candidate of the best cell, averaged with the cells around it that score (nearly) as well.

    The target usually sits between cells, and neighbouring cells' box-head answers differ by several
    pixels: an argmax then jumps between them on scores 1e-5 apart (measured: on motorcycle-2 PyTorch and
    onnxruntime picked different centre cells at frame 28 and never met again), and the Hann window of an
    even-sized map has four equal maxima, where argmax alone walks the box up and left. So the answer is
    the centroid of the peak: the connected (8-neighbour) region of cells within `margin` of the best
    pscore that holds the best cell, each weighted by ``pscore - (best - margin)``. That is a continuous
    function of the scores (a cell enters or leaves the region at weight 0), symmetric about a peak that
    lies between cells, and it never averages two separate peaks (two look-alikes) into a box between
    them. The score and penalty stay the best cell's: the loss, recovery and update gates compare them
    with thresholds, and a blend with weaker cells would lower them. `margin` 0: the exact ties next to
    the best cell only (relative 1e-6), averaged equally.
    """
    i, j = best
    if margin > 0:
        weight = np.maximum(pscore - (pscore[i, j] - margin), 0.0)
        _, labels = cv2.connectedComponents((weight > 0).astype(np.uint8), connectivity=8)
        weight = np.where(labels == labels[i, j], weight, 0.0)
        weight = weight / weight.sum()
        box = np.tensordot(weight, boxes.astype(np.float64), axes=([0, 1], [0, 1]))
        return Candidate(best, float(score[i, j]), float(penalty[i, j]), box)
    rows = slice(max(i - 1, 0), i + 2)
    cols = slice(max(j - 1, 0), j + 2)
    tied = np.isclose(pscore[rows, cols], pscore[i, j], rtol=1e-6, atol=1e-9)
    if tied.sum() <= 1:
        return Candidate(best, float(score[i, j]), float(penalty[i, j]), boxes[i, j].astype(np.float64))
    box = boxes[rows, cols][tied].astype(np.float64).mean(axis=0)
    return Candidate(best, float(score[rows, cols][tied].mean()), float(penalty[rows, cols][tied].mean()), box)


STATE_MIN_SIZE = 1.0
"""Smallest state size in frame pixels: a floor against a box head that predicts ~0, far below any real
initial box; `track.min_size` applies to the reported box only."""

REFERENCE_FRAMES = 5
"""Tracked frames whose best fused score becomes the reference of the loss, recovery and update gates."""

GROWTH_TOL = 1e-9
"""Search growths within this of 1 (or of `track.max_growth`) count as equal to it: growth is a product
of floats."""


def _settings(backend: Backend, cfg: Config | None) -> Config:
    """The config a Tracker runs with: `cfg`, else the backend's own. A `cfg` whose track section is the
    library defaults while the backend carries other tuned settings is most likely ``Config()`` passed by
    habit; it is honoured, with a warning, since it tracks visibly worse than the model's own settings."""
    own = getattr(backend, "cfg", None)
    if cfg is None:
        if not isinstance(own, Config):
            raise SiamtoolError(f"Tracker({type(backend).__name__}): this backend carries no settings; pass a Config")
        return own
    if isinstance(own, Config) and cfg.track == TrackConfig() and own.track != cfg.track:
        diff = [f"{k} {v!r} vs {getattr(own.track, k)!r}" for k, v in dataclasses.asdict(cfg.track).items()
                if getattr(own.track, k) != v and k != "backend"]
        warnings.warn(f"Tracker: cfg.track holds the library defaults, not the settings this model was tuned "
                      f"with ({', '.join(diff[:3])}{', ...' if len(diff) > 3 else ''}); pass Tracker(backend) "
                      "or use siamtool.load_tracker() to track with them", UserWarning, stacklevel=3)
    return cfg


class Tracker:
    """Single-object tracker over any `Backend`; see the module docstring for the per-frame steps."""

    def __init__(self, backend: Backend, cfg: Config | None = None) -> None:
        """`cfg` None: the settings the backend carries (an export's or a checkpoint's, `backend.cfg`)."""
        self.backend = backend
        self.cfg = _settings(backend, cfg)
        self._windows: dict[tuple[int, int], np.ndarray] = {}
        self._reset()

    def _reset(self) -> None:
        """Forget the previous sequence: `initialize` calls this before it validates anything, so a
        rejected initial box leaves a tracker that refuses to track instead of one that follows the
        previous sequence's target (eval workers reuse one Tracker for many sequences)."""
        self.features: Any = None
        self.template_crop: np.ndarray | None = None
        self.init_time_s = 0.0
        self.frame_size = (0, 0)
        self.center = np.zeros(2)
        self.size = np.zeros(2)
        self.score = 1.0
        self.lost = False
        self.growth = 1.0
        self.reference_score: float | None = None
        self.reference_frames = 0
        self.online: OnlineTarget | None = None
        self.size_calibration = np.ones(2)
        self.camera: CameraMotion | None = None
        self._cells = 16

    # ------------------------------------------------------------------------------------ state

    @property
    def state_box(self) -> np.ndarray:
        """The tracked geometry x, y, w, h, unclipped: it may cross the frame edge and be smaller than
        `track.min_size`, exactly as the template was cut, so the search scale matches the template's."""
        return cxcywh_to_xywh(np.concatenate([self.center, self.size]))

    @property
    def box(self) -> np.ndarray:
        """The reported box x, y, w, h (0-based frame pixels): the state clipped to the frame and kept
        >= `track.min_size`."""
        width, height = self.frame_size
        return clip_box(self.state_box, width, height, self.cfg.track.min_size)

    def next_window(self) -> CropWindow:
        """The search window the next `track` call will crop (depends on the state only; with
        `track.camera_motion` the next frame's camera shift moves it first)."""
        d = self.cfg.data
        return search_window(self.state_box, d.context, d.template_size, d.search_size, self.growth)

    def _hann(self, shape: tuple[int, int]) -> np.ndarray:
        if shape not in self._windows:
            self._windows[shape] = hann_window(*shape)
        return self._windows[shape]

    # ------------------------------------------------------------------------------------- API

    def initialize(self, frame_bgr: np.ndarray, box_xywh: Any) -> None:
        """Start tracking the object in `box_xywh` (0-based x, y, w, h) of `frame_bgr`.

        The template is cropped from the box as given (so a box partly outside the frame shows the
        replicated border, as in training), and the tracked state is that same box: only the reported
        `box` is clipped to the frame.
        """
        self._reset()
        start = time.perf_counter()
        frame = as_bgr(frame_bgr)
        height, width = frame.shape[:2]
        box = check_init_box(box_xywh, width, height)
        d = self.cfg.data
        tpl = crop_antialiased(frame, template_window(box, d.context, d.template_size))
        self.template_crop = cv2.cvtColor(tpl, cv2.COLOR_BGR2RGB)
        self.frame_size = (width, height)
        self._set_box(box)
        if self.cfg.track.camera_motion:
            self.camera = CameraMotion(frame)
        self.features = self.backend.template(self.template_crop)
        # A backend without search features gets the offline heads only.
        online = self.cfg.track.online and getattr(self.backend, "returns_features", False)
        if online or self.cfg.track.calibrate_size > 0:
            window = self.next_window()
            crop = crop_antialiased(frame, window)
            out = self._search(crop)
            if self.cfg.track.calibrate_size > 0:
                self.size_calibration = self._size_calibration(window, out)
            if online:
                self.online = self._start_online(frame, window, crop, out)
        self.init_time_s = time.perf_counter() - start

    def _search(self, crop_bgr: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.backend.search(cv2.cvtColor(np.ascontiguousarray(crop_bgr), cv2.COLOR_BGR2RGB), self.features)

    def _size_calibration(self, window: CropWindow, out: tuple[np.ndarray, ...]) -> np.ndarray:
        """Per-target correction of the box head's size: (true / predicted size on the first frame) ** k.

        A head trained on a few dozen sequences regresses sizes towards the mean target shape: on the very
        frame it was initialised on, it sizes a standing person (70 x 178 px in `oneperson.mp4`) as about
        70 x 107, and the size update then shrinks the box to the torso within 15 frames and drifts onto
        the background. The first frame is the one frame whose answer is known, so its ratio rescales
        every later prediction: the head says how the size *changes*, the first frame what it *is*. One
        frame's ratio is bias plus that frame's noise, so it is applied with strength k =
        `track.calibrate_size` (0.5: the geometric mean of trusting the head and trusting the ratio;
        measured in MODEL_CARD.md) and bounded to [1/2, 2]. Same idea as the reference score of the lost
        rule: calibrate per target what the model gets wrong per target.
        """
        t = self.cfg.track
        expected = self.size * window.scale
        cand = select_candidate(out[0], out[1], tuple(expected), self._hann(out[0].shape), t.window_influence,
                                t.scale_penalty, self.cfg.data.context, t.select_margin)
        ratio = expected / np.maximum(cand.box_cxcywh[2:], 1e-6)
        if not np.all(np.isfinite(ratio)):  # a non-finite first answer calibrates nothing
            return np.ones(2)
        return np.clip(ratio, 0.5, 2.0) ** t.calibrate_size

    def _target_cell(self, window: CropWindow, center: np.ndarray) -> tuple[float, float]:
        """(row, col) of a frame point in the feature cells of `window`'s crop (cell i covers
        [i, i+1) x stride crop pixels, so its centre is cell i + 0.5)."""
        stride = self.cfg.data.search_size / self._cells
        x, y = window.box_to_crop(np.array([center[0], center[1], 0.0, 0.0]))[:2]
        return y / stride - 0.5, x / stride - 0.5

    def _size_cells(self, window: CropWindow) -> tuple[float, float]:
        stride = self.cfg.data.search_size / self._cells
        return self.size[0] * window.scale / stride, self.size[1] * window.scale / stride

    def _start_online(self, frame: np.ndarray, window: CropWindow, crop: np.ndarray,
                      out: tuple[np.ndarray, ...]) -> OnlineTarget:
        """Fit the online target model on the first frame: its search crop (`crop`, searched as `out`) and,
        with `online_augment`, a mirrored, a blurred and a half-cell-shifted copy (appearance changes the
        first frame lacks)."""
        def features_of(crop_bgr: np.ndarray) -> np.ndarray:
            return np.asarray(self._search(crop_bgr)[2], dtype=np.float32)

        feats = np.asarray(out[2], dtype=np.float32)
        self._cells = n = feats.shape[-1]
        cell = self._target_cell(window, self.center)
        samples = [(feats, cell)]
        if self.cfg.track.online_augment:
            half = 0.5 / window.scale * self.cfg.data.search_size / n  # half a cell, in frame pixels
            shifted = CropWindow(window.cx + half, window.cy + half, window.side, window.out_size)
            samples += [(features_of(crop[:, ::-1]), (cell[0], n - 1 - cell[1])),  # mirrored
                        (features_of(cv2.GaussianBlur(crop, (0, 0), 2.0)), cell),  # motion/defocus blur
                        (features_of(crop_antialiased(frame, shifted)), (cell[0] - 0.5, cell[1] - 0.5))]
        online = OnlineTarget(self.cfg.track)
        online.start(samples, self._size_cells(window), self._grey(frame), self.center, self.size)
        if online.distractors is not None:  # what else in the first frame looks like the target (DaSiamRPN)
            at = (int(np.clip(round(cell[0]), 0, n - 1)), int(np.clip(round(cell[1]), 0, n - 1)))
            online.distractors.observe(feats, np.asarray(out[0], np.float32), at, self._size_cells(window), cell)
        return online

    @staticmethod
    def _grey(frame: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)

    def _set_box(self, box_xywh: np.ndarray) -> None:
        """Take `box_xywh` as the state, unclipped but bounded: at least `STATE_MIN_SIZE` and at most the
        frame in size, and still touching the frame (a state that left the frame entirely would search
        empty border). A non-finite box is refused (the caller treats such a frame as lost)."""
        c = xywh_to_cxcywh(np.asarray(box_xywh, dtype=np.float64))
        if not np.all(np.isfinite(c)):
            raise ValueError(f"non-finite box {c}")
        width, height = self.frame_size
        size = np.clip(c[2:], STATE_MIN_SIZE, np.maximum([width, height], STATE_MIN_SIZE))
        center = np.clip(c[:2], -size / 2, np.array([width, height]) + size / 2)
        self.center, self.size = center, size

    def _gates(self, score: float) -> tuple[float, float]:
        """(loss threshold, far-recovery threshold) for this frame, from the reference score.

        The reference is the best fused score of the first `REFERENCE_FRAMES` tracked frames (then it
        follows confident frames at `track.reference_rate`): keyed off frame 2 alone, an occluded or
        blurred frame 2 lowered every threshold for the whole sequence.
        """
        t = self.cfg.track
        if self.reference_frames < REFERENCE_FRAMES and np.isfinite(score):
            self.reference_score = score if self.reference_score is None else max(self.reference_score, score)
            self.reference_frames += 1
        ref = self.reference_score if self.reference_score is not None else 0.0
        threshold = min(t.lost_threshold, t.lost_ratio * ref) if t.lost_ratio > 0 else t.lost_threshold
        return threshold, max(threshold, t.recover_ratio * ref)

    def track(self, frame_bgr: np.ndarray) -> TrackResult:
        """Track one frame; returns the box, the confidence and whether the target is lost."""
        if self.features is None:
            raise RuntimeError("Tracker.track called before initialize")
        start = time.perf_counter()
        t = self.cfg.track
        frame = as_bgr(frame_bgr)
        before, shift = self._follow_camera(frame)
        growth = self.growth
        window = self.next_window()
        search_rgb = cv2.cvtColor(crop_antialiased(frame, window), cv2.COLOR_BGR2RGB)  # 40x a [..., ::-1] copy
        out = self.backend.search(search_rgb, self.features)
        score, boxes = out[0], out[1]
        if t.calibrate_size > 0:
            boxes = boxes.copy()
            boxes[..., 2:] *= self.size_calibration
        score, fine, weight = self._fuse(score, out, window.scale)
        cand = select_candidate(
            score, boxes,
            expected_wh=(self.size[0] * window.scale, self.size[1] * window.scale),
            window=self._hann(score.shape),
            window_influence=t.window_influence / growth,
            scale_penalty=t.scale_penalty,
            context=self.cfg.data.context,
            margin=t.select_margin,
        )
        if fine is not None:
            # The centre: the online model's sub-cell peak near the chosen cell, blended with the box head's.
            row, col = refine_peak(fine, fine.shape[0] // score.shape[0], cand.index)
            stride = self.cfg.data.search_size / score.shape[0]
            online_xy = np.array([(col + 0.5) * stride, (row + 0.5) * stride])
            cand.box_cxcywh[:2] = (1.0 - weight) * cand.box_cxcywh[:2] + weight * online_xy
        crop_box = cxcywh_to_xywh(cand.box_cxcywh)
        pred = xywh_to_cxcywh(window.box_to_frame(crop_box))
        # A non-finite score or box (fp16/int8 overflow, a broken backend) is a lost frame: it must never
        # reach the state, where one NaN would make every later box NaN.
        finite = bool(np.isfinite(cand.score) and np.all(np.isfinite(pred)))
        threshold, far_threshold = self._gates(cand.score)
        if finite and self.lost and np.hypot(*(pred[:2] - self.center)) > t.recover_radius * np.sqrt(np.prod(self.size)):
            threshold = far_threshold
        lost = not finite or cand.score < threshold
        if not lost and t.reference_rate > 0 and self.reference_frames >= REFERENCE_FRAMES:
            self.reference_score += t.reference_rate * (cand.score - self.reference_score)  # type: ignore[operator]
        if lost:
            # Keep the last confident box; widen the next search step by step, then start over.
            widest = growth >= t.max_growth * (1.0 - GROWTH_TOL)
            self.growth = 1.0 if widest else min(growth * t.search_growth, t.max_growth)
        else:
            self._update_state(frame, window, cand, pred, out, growth, score)
            self.growth = 1.0
            if shift is not None:
                self.camera.observe(self.center - before, shift)  # type: ignore[union-attr]
        score_out = cand.score if finite else 0.0
        self.score, self.lost = score_out, lost
        elapsed = time.perf_counter() - start
        return TrackResult(self.box, score_out, lost, elapsed, window, growth, search_rgb, score, crop_box)

    def _follow_camera(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """(centre before, camera shift or None): moves the state by the camera's share of the motion.

        The gain learned by `CameraMotion` says how much of the image's shift the target follows, so a
        target the camera pans with stays put while one in a shaking scene moves with it.
        """
        if self.camera is None:
            return self.center, None
        before = self.center.copy()
        shift = self.camera.shift(frame)
        moved = self.center + self.camera.gain(self.size) * shift
        self._set_box(cxcywh_to_xywh(np.concatenate([moved, self.size])))
        return before, shift

    def _fuse(self, score: np.ndarray, out: tuple[np.ndarray, ...],
              upsample: float) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(fused score, the filter's fine response or None, the online weight used) of one search.

        Non-finite features would spread through the filter's FFT to every cell: offline heads only then.
        A crop upsampled beyond `track.online_upsample_limit` (a small target) trusts the filter less.
        With `track.distractor_weight` the fused score is then discounted where the features look like a
        remembered look-alike (`online.DistractorMemory`)."""
        t = self.cfg.track
        weight = t.online_weight if self.online is not None and np.all(np.isfinite(out[2])) else 0.0
        if t.online_upsample_limit > 0:
            weight *= min(1.0, t.online_upsample_limit / upsample)
        if weight <= 0:
            return score, None, 0.0
        coarse, fine = self.online.translation.respond(out[2])  # type: ignore[union-attr]
        score = (1.0 - weight) * score + weight * np.clip(coarse, 0.0, 1.0)
        if self.online.distractors is not None:  # type: ignore[union-attr]
            factor = self.online.distractors.multiplier(out[2])  # type: ignore[union-attr]
            if factor is not None:
                score = score * factor
        return score, fine, weight

    def _update_state(self, frame: np.ndarray, window: CropWindow, cand: Candidate, pred: np.ndarray,
                      out: tuple[np.ndarray, ...], growth: float, fused: np.ndarray) -> None:
        """Move to the prediction; the size comes from the scale filter or from the box head; the online
        model learns from the frame when it is confident and the window had its normal size."""
        t = self.cfg.track
        grey = None
        size = self.size
        dsst = self.online is not None and self.online.scale is not None
        if dsst:
            grey = self._grey(frame)
            size = size * self.online.scale.estimate(grey, pred[:2], size)  # type: ignore[union-attr]
        if t.scale != "dsst" or not dsst:  # head, both, or no scale filter: towards the box head's size
            lr = cand.penalty * cand.score * t.size_lr
            size = size * (1.0 - lr) + pred[2:] * lr
        self._set_box(cxcywh_to_xywh(np.concatenate([pred[:2], size])))
        if self.online is not None and abs(growth - 1.0) <= GROWTH_TOL:  # learn from normal-size windows only
            confident = cand.score >= t.online_update_ratio * (self.reference_score or 0.0)
            if grey is None and self.online.scale is not None:
                grey = self._grey(frame)
            cell, size_cells = self._target_cell(window, self.center), self._size_cells(window)
            self.online.maybe_update(confident, out[2], cell, size_cells, grey, self.center, self.size)
            if confident and self.online.distractors is not None and np.all(np.isfinite(out[2])):
                self.online.distractors.observe(out[2], fused, cand.index, size_cells, cell)

"""Camera-motion compensation (`track.camera_motion`): move the search to where a shaking camera put the target.

A Siamese tracker searches around the previous box. When the camera itself jumps (a drone in wind, a
hand-held phone), the whole image shifts by more than the target's size between frames, and the search
window lands next to the target, often on a look-alike beside it: on validation person-103 and person-122
(people in a group filmed from a drone) the target moves 1-4 cell widths per frame with the image, and
the tracker switches to a neighbour within 4-8 frames.

The global shift between consecutive frames is cheap to measure: phase correlation (`cv2.phaseCorrelate`)
of two small grey copies (longest side about `WIDTH` px, Hann-windowed), about 0.5 ms a frame. But moving the
state by it is wrong whenever the camera *follows* the target (a pan that keeps a runner centred: the
background moves, the target does not; on person-206 and car-112 plain compensation lost the target).
So the state moves by ``alpha x shift``, where alpha is how much this target has moved with the camera so
far: the running least-squares gain of the target's observed motion ``d`` on the camera's shift ``c``,

    alpha = clip(sum(d . c) / (sum(c . c) + (PRIOR x sqrt(w h))^2), 0, 1)

with exponential forgetting (`RATE`): 1 for a target standing in a shaking scene, 0 for one the camera
pans with, and 0 until the camera has moved noticeably (the prior term, a quarter of the target's size:
under a static camera the tracker follows the same boxes as without this option, to a few hundredths of a
pixel). Only confident frames update it.
The same idea as the motion models of multi-object trackers with camera-motion compensation (BoT-SORT's
CMC), reduced to one gain because a single-object tracker has one target to learn it from.

Measured on validation-22 (3 seeds, docs/benchmarks.md "Camera-motion compensation"): person-103 14.9 ->
42.6 and person-122 18.2 -> 60.3 AUC, up in every seed; the mean 59.3 -> 60.3 (58.3 -> 59.7 over five
starts per sequence), under the +2 points the shipped settings require, so the option is off by default:
switch it on for shaking footage.
"""

from __future__ import annotations

import cv2
import numpy as np

WIDTH = 160
"""About the longest side in pixels of the grey copies phase correlation compares (a 640 px frame: 1/4)."""
RATE = 0.5
"""Forgetting rate of the gain's running sums per confident frame."""
PRIOR = 0.25
"""Ridge on the gain, as a fraction of the target size sqrt(w h): shifts much smaller than this teach little."""


class CameraMotion:
    """The camera's frame-to-frame shift and how much of it this target follows."""

    def __init__(self, frame_bgr: np.ndarray) -> None:
        self._previous = self._small(frame_bgr)
        self._window = cv2.createHanningWindow(self._previous.shape[::-1], cv2.CV_32F)
        self._num = 0.0
        self._den = 0.0

    def _small(self, frame_bgr: np.ndarray) -> np.ndarray:
        """Grey, then k x k block means with the integer k that brings the longest side nearest `WIDTH`:
        OpenCV's integer-factor INTER_AREA is 3-10x faster than an arbitrary size (0.15 against 0.9-1.6
        ms on a 620 x 370 frame here), and a shift in its pixels is exactly k frame pixels."""
        self._factor = max(1, round(max(frame_bgr.shape[:2]) / WIDTH))
        grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
        small = cv2.resize(grey, None, fx=1.0 / self._factor, fy=1.0 / self._factor, interpolation=cv2.INTER_AREA)
        return small.astype(np.float32)

    def shift(self, frame_bgr: np.ndarray) -> np.ndarray:
        """(dx, dy) in frame pixels by which the image content moved since the previous call's frame (or
        the first frame); zero when this frame's size differs (a new stream) or the answer is not finite."""
        small = self._small(frame_bgr)
        previous, self._previous = self._previous, small
        if previous.shape != small.shape:
            self._window = cv2.createHanningWindow(small.shape[::-1], cv2.CV_32F)
            return np.zeros(2)
        # A copy: OpenCV 4.6's phaseCorrelate windows its inputs in place, and `small` is the next call's
        # `previous` (the C++ port links 4.6; 5.x leaves them alone).
        (dx, dy), _ = cv2.phaseCorrelate(previous, small.copy(), self._window)
        shift = np.array([dx, dy]) * self._factor
        return shift if np.all(np.isfinite(shift)) else np.zeros(2)

    def gain(self, size: np.ndarray) -> float:
        """alpha in [0, 1]: the share of the camera's shift the target is expected to follow."""
        prior = (PRIOR * float(np.sqrt(np.prod(size)))) ** 2
        return float(np.clip(self._num / (self._den + prior), 0.0, 1.0))

    def observe(self, moved: np.ndarray, shift: np.ndarray) -> None:
        """Learn from a confident frame: the target moved by `moved` while the camera shifted by `shift`."""
        self._num = (1.0 - RATE) * self._num + RATE * float(np.dot(moved, shift))
        self._den = (1.0 - RATE) * self._den + RATE * float(np.dot(shift, shift))

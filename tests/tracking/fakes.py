"""Test doubles for the Backend protocol and frames they can see.

`OracleBackend` finds a pure-red target in the search crop by colour and reports a heatmap peaking at
that target's cell plus its exact box at every cell: a perfect "network". With it, the box the Tracker
returns in frame coordinates checks the whole crop -> decode -> inverse-map chain.
"""

from __future__ import annotations

import numpy as np

from siamtool.config import Config

STRIDE = 16


def small_config(**track: float) -> Config:
    cfg = Config()
    for k, v in track.items():
        setattr(cfg.track, k, v)
    return cfg


BG_BGR = (150.0, 120.0, 30.0)
"""Constant background (blue-green, little red) so the red coverage of a pixel is exactly recoverable."""


def render(box_xywh, size=(320, 240), visible: bool = True, background: np.ndarray | None = None) -> np.ndarray:
    """A BGR frame: plain background (or `background`, (h, w, 3) float, whose red must stay BG_BGR's) with a
    pure red rectangle at the continuous box.

    Edge pixels get partial coverage (anti-aliased), so the box is defined to sub-pixel precision.
    """
    w, h = size
    frame = np.empty((h, w, 3), np.float64)
    frame[:] = BG_BGR if background is None else background
    if visible:
        x, y, bw, bh = box_xywh
        cols = np.clip(np.minimum(np.arange(w) + 1, x + bw) - np.maximum(np.arange(w), x), 0, 1)
        rows = np.clip(np.minimum(np.arange(h) + 1, y + bh) - np.maximum(np.arange(h), y), 0, 1)
        cover = rows[:, None] * cols[None, :]
        red = np.array([0, 0, 255.0])
        frame = frame * (1 - cover[..., None]) + red * cover[..., None]
    return np.round(frame).astype(np.uint8)


class OracleBackend:
    """A perfect network for red targets: score peaks at the target's cell, boxes are exact."""

    def __init__(self, search_size: int = 256, stride: int = STRIDE) -> None:
        self.search_size = search_size
        self.stride = stride
        self.template_calls = 0
        self.search_calls = 0
        self.crops: list[np.ndarray] = []

    def template(self, crop_rgb: np.ndarray) -> dict:
        self.template_calls += 1
        assert crop_rgb.dtype == np.float32 and crop_rgb.shape[2] == 3  # geometry.resample: not rounded
        return {"template": crop_rgb.copy()}

    def search(self, crop_rgb: np.ndarray, features: dict) -> tuple[np.ndarray, np.ndarray]:
        self.search_calls += 1
        self.crops.append(crop_rgb)
        n = self.search_size // self.stride
        # Red coverage per pixel, read from the R channel of an RGB crop: if the Tracker forgot the
        # BGR -> RGB conversion, channel 0 would hold blue and the box would be nonsense.
        cover = np.clip((crop_rgb[..., 0].astype(np.float64) - BG_BGR[2]) / (255.0 - BG_BGR[2]), 0, 1)
        if cover.sum() < 4:
            return np.full((n, n), 0.05, np.float32), np.tile(np.float32([128, 128, 40, 40]), (n, n, 1))
        rows, cols = cover.sum(1), cover.sum(0)
        ys, xs = np.arange(len(rows)) + 0.5, np.arange(len(cols)) + 0.5
        cx, cy = (xs * cols).sum() / cols.sum(), (ys * rows).sum() / rows.sum()
        w, h = cols.sum() / cols.max(), rows.sum() / rows.max()
        centres = (np.arange(n) + 0.5) * self.stride
        d2 = (centres[None, :] - cx) ** 2 + (centres[:, None] - cy) ** 2
        score = 0.95 * np.exp(-d2 / (2 * self.stride**2))
        boxes = np.tile(np.float32([cx, cy, w, h]), (n, n, 1))
        return score.astype(np.float32), boxes


class ScriptedBackend:
    """Returns whatever score map and boxes the test queued (or a function of the crop)."""

    def __init__(self, n: int = 16) -> None:
        self.n = n
        self.queue: list[tuple[np.ndarray, np.ndarray]] = []
        self.windows_seen = 0

    def template(self, crop_rgb: np.ndarray) -> str:
        return "features"

    def search(self, crop_rgb: np.ndarray, features: str) -> tuple[np.ndarray, np.ndarray]:
        self.windows_seen += 1
        return self.queue.pop(0)


def peaks(n: int, cells: list[tuple[int, int, float, tuple[float, float, float, float]]],
          floor: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """A score map with the given (i, j, score, cx cy w h) peaks; other cells score `floor`."""
    score = np.full((n, n), floor, np.float32)
    boxes = np.tile(np.float32([128, 128, 40, 40]), (n, n, 1))
    for i, j, s, box in cells:
        score[i, j] = s
        boxes[i, j] = box
    return score, boxes

"""`track.camera_motion`: the camera's shift is measured, learned per target, and moves the search.

Scenes: a textured background (green and blue only, so `OracleBackend` still reads the red target
exactly) seen through a camera that shakes, pans with the target, or stands still.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from siamtool.config import Config
from siamtool.tracking.camera import CameraMotion
from siamtool.tracking.tracker import Tracker
from tests.tracking.fakes import BG_BGR, OracleBackend, render, small_config

SIZE = (320, 240)
TARGET = 20.0


def _texture(seed: int = 0) -> np.ndarray:
    """A large canvas of blobs in the green and blue channels; red stays the background's."""
    rng = np.random.default_rng(seed)
    canvas = np.empty((600, 700, 3), np.float64)
    for c in (0, 1):
        noise = cv2.resize(rng.uniform(0, 1, (75, 88)), (700, 600), interpolation=cv2.INTER_CUBIC)
        canvas[..., c] = BG_BGR[c] + 60 * (noise - 0.5)
    canvas[..., 2] = BG_BGR[2]
    return canvas


CANVAS = _texture()


def scene(camera: tuple[int, int], target_xy: tuple[float, float]) -> np.ndarray:
    """The canvas seen from `camera` (its top-left corner on the canvas), with a red TARGET-px square whose
    top-left corner is at `target_xy` in canvas coordinates."""
    cx, cy = camera
    box = (target_xy[0] - cx, target_xy[1] - cy, TARGET, TARGET)
    return render(box, SIZE, background=CANVAS[cy:cy + SIZE[1], cx:cx + SIZE[0]])


def track(cfg: Config, cameras: list[tuple[int, int]], targets: list[tuple[float, float]]) -> tuple[Tracker, list]:
    tracker = Tracker(OracleBackend(), cfg)
    (cx, cy), (tx, ty) = cameras[0], targets[0]
    tracker.initialize(scene(cameras[0], targets[0]), (tx - cx, ty - cy, TARGET, TARGET))
    results = []
    for camera, target in zip(cameras[1:], targets[1:]):
        results.append((tracker.track(scene(camera, target)), (target[0] - camera[0], target[1] - camera[1])))
    return tracker, results


def test_the_shift_of_the_image_is_measured_to_a_pixel():
    motion = CameraMotion(scene((100, 100), (300, 250)))
    shift = motion.shift(scene((113, 93), (300, 250)))  # the camera moved right and up: content moves left, down
    np.testing.assert_allclose(shift, [-13, 7], atol=1.0)
    assert motion.gain(np.array([TARGET, TARGET])) == 0.0  # nothing learned yet: no compensation


@pytest.mark.parametrize(("moves", "expect"), [(1.0, (0.8, 1.0)), (0.0, (0.0, 0.05))])
def test_the_gain_learns_whether_the_target_moves_with_the_camera(moves, expect):
    motion = CameraMotion(scene((100, 100), (300, 250)))
    for k in range(6):
        shift = np.array([15.0 if k % 2 else -12.0, 9.0])
        motion.observe(moves * shift, shift)
    assert expect[0] <= motion.gain(np.array([TARGET, TARGET])) <= expect[1]


def _shaking(jump: int) -> tuple[list[tuple[int, int]], list[tuple[float, float]]]:
    """A still target under a camera that shakes by 12 px for six frames, then jumps by `jump` px."""
    cameras = [(200, 200)]
    for k in range(6):
        cameras.append((200 + (12 if k % 2 == 0 else 0), 200 + (8 if k % 2 == 0 else 0)))
    cameras.append((cameras[-1][0] - jump, cameras[-1][1]))
    return cameras, [(350.0, 300.0)] * len(cameras)


def test_a_camera_jump_larger_than_the_search_is_followed_with_camera_motion():
    cameras, targets = _shaking(jump=70)
    cfg = small_config(camera_motion=True, window_influence=0.1)
    tracker, results = track(cfg, cameras, targets)
    last, truth = results[-1]
    assert not last.lost
    np.testing.assert_allclose(last.box[:2], truth, atol=1.5)
    assert tracker.camera.gain(tracker.size) > 0.7
    # Without it the target has left the search window: the frame is lost.
    _, plain = track(small_config(window_influence=0.1), cameras, targets)
    assert plain[-1][0].lost


def test_a_camera_panning_with_the_target_is_not_compensated():
    """The background moves 14 px a frame, the target stays put on screen: the gain stays near 0."""
    cameras = [(150 + 14 * k, 200) for k in range(10)]
    targets = [(300.0 + 14 * k, 300.0) for k in range(10)]
    tracker, results = track(small_config(camera_motion=True), cameras, targets)
    assert tracker.camera.gain(tracker.size) < 0.1
    for r, truth in results:
        assert not r.lost
        np.testing.assert_allclose(r.box[:2], truth, atol=1.5)


def test_a_still_camera_tracks_as_without_the_option():
    cameras = [(200, 200)] * 8
    targets = [(350.0 + 3 * k, 300.0 - 2 * k) for k in range(8)]
    _, on = track(small_config(camera_motion=True), cameras, targets)
    _, off = track(small_config(), cameras, targets)
    for (a, _), (b, _) in zip(on, off):
        np.testing.assert_allclose(a.box, b.box, atol=0.05)

"""`siamtool track`: headless runs on real and synthetic video, the interactive loop with a scripted
window (mouse drag, pause, re-select, quit), live camera selection, and the one-line errors."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from siamtool.app import track as track_app
from siamtool.app.sources import CameraSource, ImageSequenceSource, open_source
from siamtool.app.track import parse_init, run_track
from siamtool.cli import app
from siamtool.data.synthetic import render_sequence, write_video
from siamtool.errors import SiamtoolError
from siamtool.tracking.tracker import Tracker
from tests.conftest import shared
from tests.tracking.fakes import OracleBackend, render, small_config

runner = CliRunner()
ENTER, ESC, SPACE = 13, 27, 32


def count_video_frames(path: Path) -> tuple[int, tuple[int, int]]:
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened(), f"{path} does not open"
    n = 0
    size = (int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    while cap.read()[0]:
        n += 1
    cap.release()
    return n, size


def read_boxes(path: Path) -> np.ndarray:
    lines = path.read_text().splitlines()
    assert all(len(line.split(",")) == 6 for line in lines)
    return np.array([[float(v) for v in line.split(",")] for line in lines])


@pytest.fixture(scope="module")
def synthetic_video(tmp_path_factory) -> tuple[Path, np.ndarray]:
    frames, boxes, _, _ = render_sequence(np.random.default_rng(3), 30, (192, 144))
    path = write_video(tmp_path_factory.mktemp("video") / "synthetic.avi", frames, fps=15)
    return path, boxes


# ------------------------------------------------------------------------------------ headless


@pytest.mark.slow
def test_headless_on_the_real_bag_video(tiny_checkpoint, tmp_path):
    video = shared("videos", "bag.avi")
    out, boxes = tmp_path / "out.mp4", tmp_path / "b.txt"
    r = runner.invoke(app, ["--device", "cpu", "track", str(video), "--checkpoint", str(tiny_checkpoint),
                            "--init", "292,125,150,140", "--no-show", "--output", str(out),
                            "--save-boxes", str(boxes)])
    assert r.exit_code == 0, r.output
    b = read_boxes(boxes)
    assert len(b) == 196  # one line per frame
    np.testing.assert_allclose(b[0], [292, 125, 150, 140, 1, 0])
    assert set(np.unique(b[:, 5])) <= {0.0, 1.0}
    assert np.all((b[:, 4] >= 0) & (b[:, 4] <= 1))
    assert count_video_frames(out) == (196, (480, 360))  # playable, every frame
    assert "196 frames" in r.output and "FPS" in r.output
    assert not list(tmp_path.glob(".*partial*"))  # temp files renamed away


def test_headless_on_synthetic_video_writes_avi_and_moving_boxes(tiny_checkpoint, synthetic_video, tmp_path):
    video, gt = synthetic_video
    init = ",".join(f"{v:.1f}" for v in gt[0])
    out, boxes = tmp_path / "out.avi", tmp_path / "boxes.txt"
    # lost_threshold=0: the random tiny model never counts as lost, so the box must move every frame.
    r = runner.invoke(app, ["--device", "cpu", "track", str(video), "--checkpoint", str(tiny_checkpoint),
                            "--init", init, "--no-show", "--output", str(out), "--save-boxes", str(boxes),
                            "--set", "track.lost_threshold=0.0"])
    assert r.exit_code == 0, r.output
    b = read_boxes(boxes)
    assert len(b) == 30
    assert not b[:, 5].any()
    assert len(np.unique(b[:, :4].round(2), axis=0)) > 5
    centres = b[:, :2] + b[:, 2:4] / 2
    assert np.all((centres >= -0.01) & (centres <= [192.01, 144.01]))  # 2-decimal rounding
    assert np.all(b[:, 2:4] >= 4.0)  # track.min_size
    assert count_video_frames(out) == (30, (192, 144))


def test_headless_on_an_image_glob(tiny_checkpoint, tmp_path):
    for i in range(5):
        cv2.imwrite(str(tmp_path / f"f{i}.jpg"), render((40 + 5 * i, 40, 30, 30)))
    boxes = tmp_path / "b.txt"
    r = runner.invoke(app, ["track", str(tmp_path / "f*.jpg"), "--checkpoint", str(tiny_checkpoint),
                            "--init", "40,40,30,30", "--no-show", "--save-boxes", str(boxes)])
    assert r.exit_code == 0, r.output
    assert len(boxes.read_text().splitlines()) == 5


@pytest.mark.parametrize(("args", "message"), [
    (["--checkpoint", "CKPT", "--no-show"], "pass --init X,Y,W,H"),
    (["--checkpoint", "CKPT", "--no-show", "--init", "600,10,20,20"], "outside the 192x144 frame"),
    (["--checkpoint", "CKPT", "--no-show", "--init", "10,10,0,20"], "empty box"),
    (["--checkpoint", "CKPT", "--no-show", "--init", "ten,10,20,20"], "expected X,Y,W,H"),
    (["--checkpoint", "CKPT", "--no-show", "--init", "1,2,3,4", "--output", "x.mkv"], ".mp4"),
    (["--checkpoint", "NOPE.pt", "--no-show", "--init", "1,2,3,4"], "not found"),
])
def test_bad_arguments_are_one_line_errors(tiny_checkpoint, synthetic_video, args, message):
    args = [str(tiny_checkpoint) if a == "CKPT" else a for a in args]
    r = runner.invoke(app, ["track", str(synthetic_video[0]), *args])
    assert r.exit_code == 2, r.output
    assert message in r.output
    assert "Traceback" not in r.output


def test_without_checkpoint_or_shipped_model_the_error_says_to_pass_one(synthetic_video, monkeypatch, tmp_path):
    import siamtool.weights

    monkeypatch.setattr(siamtool.weights, "DEFAULT_CHECKPOINT", tmp_path / "not-installed.pt")
    r = runner.invoke(app, ["track", str(synthetic_video[0]), "--init", "1,2,3,4", "--no-show"])
    assert r.exit_code == 2 and "pass --checkpoint" in r.output


def test_missing_camera_is_a_one_line_error(tiny_checkpoint):
    r = runner.invoke(app, ["track", "9", "--checkpoint", str(tiny_checkpoint), "--no-show", "--init", "1,2,3,4"])
    assert r.exit_code == 2
    assert "camera 9 could not be opened" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_without_a_display_init_is_required(tiny_checkpoint, synthetic_video, monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    r = runner.invoke(app, ["track", str(synthetic_video[0]), "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 2 and "no display available" in r.output


def test_parse_init():
    np.testing.assert_allclose(parse_init("1, 2.5,3,4"), [1, 2.5, 3, 4])
    with pytest.raises(SiamtoolError):
        parse_init("1,2,3")


# ---------------------------------------------------------------------------------- interactive


class ScriptedWindow:
    """Stands in for the OpenCV window: each wait_key call plays the next scripted action.

    An action is a key code (-1 for none) or ("drag", x0, y0, x1, y1), which sends the mouse events a
    real drag produces. When the script runs out the user presses q.
    """

    def __init__(self, script: list) -> None:
        self.script = list(script)
        self.callback = None
        self.shown: list[tuple[int, ...]] = []
        self.closed_by_app = False

    def show(self, image: np.ndarray) -> None:
        self.shown.append(image.shape)

    def wait_key(self, delay_ms: int) -> int:
        if not self.script:
            return ord("q")
        action = self.script.pop(0)
        if isinstance(action, tuple):
            _, x0, y0, x1, y1 = action
            self.callback(cv2.EVENT_LBUTTONDOWN, x0, y0, 0, None)
            self.callback(cv2.EVENT_MOUSEMOVE, (x0 + x1) // 2, (y0 + y1) // 2, 0, None)
            self.callback(cv2.EVENT_MOUSEMOVE, x1, y1, 0, None)
            self.callback(cv2.EVENT_LBUTTONUP, x1, y1, 0, None)
            return -1
        return action

    def set_mouse_callback(self, callback) -> None:
        self.callback = callback

    def closed(self) -> bool:
        return False

    def close(self) -> None:
        self.closed_by_app = True


def red_target_folder(tmp_path: Path, n: int = 30) -> tuple[Path, np.ndarray]:
    gt = np.stack([np.linspace(40, 200, n), np.linspace(50, 120, n), np.full(n, 40.0), np.full(n, 30.0)], 1)
    for i, b in enumerate(gt):
        cv2.imwrite(str(tmp_path / f"{i:04d}.png"), render(b))
    return tmp_path, gt


def drag(box) -> tuple:
    x, y, w, h = (round(v) for v in box)
    return ("drag", x, y, x + w, y + h)


def test_interactive_select_track_pause_reselect_and_quit(tmp_path):
    folder, gt = red_target_folder(tmp_path)
    source = open_source(str(folder))
    assert isinstance(source, ImageSequenceSource)  # not live: the first frame stays until a box is drawn
    tracker = Tracker(OracleBackend(), small_config())
    script = [-1, -1, drag(gt[0]), ENTER,  # draw on the frozen first frame, confirm
              -1, -1, -1, -1, -1,  # 5 frames tracked
              SPACE, -1, -1,  # pause: no frames
              SPACE,  # resume (this iteration tracks a frame)
              -1, -1,
              ord("r"), drag(gt[8] + [0, 0, 6, 6]), ENTER,  # re-select on the current frame (frame 8)
              -1, -1, -1,
              ord("q")]
    window = ScriptedWindow(script)
    boxes = tmp_path / "out" / "b.txt"
    summary = run_track(source, tracker, None, window, save_boxes=boxes)
    b = read_boxes(boxes)
    assert summary.frames == len(b) == 1 + 5 + 1 + 2 + 3
    np.testing.assert_allclose(b[0, :4], [round(v) for v in gt[0, :2]] + [40, 30])
    # The oracle follows the red target in every tracked frame (the frame index is the line index).
    ious = [_iou(b[i, :4], gt[i]) for i in range(1, len(b))]
    assert min(ious) > 0.7
    # After the re-selection the box size comes from the new, larger box (46x36), not the old one.
    assert b[9, 2] > 41
    # The window showed the frame plus the side panel (template, search, heatmap).
    assert max(s[1] for s in window.shown) > 320
    assert window.closed_by_app and not window.script


def _iou(a, b) -> float:
    from siamtool.geometry import iou_xywh

    return float(iou_xywh(np.asarray(a), np.asarray(b)))


def test_confirming_an_empty_selection_is_a_one_line_error(tmp_path):
    folder, _ = red_target_folder(tmp_path, 3)
    window = ScriptedWindow([-1, ("drag", 10, 10, 10, 11), ENTER])  # a click, not a drag
    with pytest.raises(SiamtoolError, match="empty selection"):
        run_track(open_source(str(folder)), Tracker(OracleBackend(), small_config()), None, window)


def test_escape_before_selecting_quits_without_writing(tmp_path):
    folder, _ = red_target_folder(tmp_path, 3)
    boxes = tmp_path / "b.txt"
    summary = run_track(open_source(str(folder)), Tracker(OracleBackend(), small_config()), None,
                        ScriptedWindow([ESC]), save_boxes=boxes)
    assert summary.quit_before_start and summary.frames == 0
    assert not boxes.exists()


def test_cancelled_reselection_keeps_tracking_the_old_target(tmp_path):
    folder, gt = red_target_folder(tmp_path, 10)
    boxes = tmp_path / "b.txt"
    window = ScriptedWindow([drag(gt[0]), ENTER, -1, -1, ord("r"), -1, ESC, -1, -1, ord("q")])
    run_track(open_source(str(folder)), Tracker(OracleBackend(), small_config()), None, window, save_boxes=boxes)
    b = read_boxes(boxes)
    assert len(b) == 5
    assert _iou(b[-1, :4], gt[4]) > 0.7


class RedCamera:
    """A fake camera filming the red target moving one pixel per frame at 100 fps."""

    def __init__(self) -> None:
        self.n = 0

    def isOpened(self) -> bool:  # noqa: N802
        return True

    def get(self, prop: int) -> float:
        return 100.0

    def read(self):
        time.sleep(0.01)
        self.n += 1
        return True, render((40 + self.n, 60, 40, 30))

    def release(self) -> None:
        pass


def test_camera_selection_is_live(tmp_path):
    cam = RedCamera()
    source = open_source("0", capture_factory=lambda i: cam)
    assert isinstance(source, CameraSource)
    tracker = Tracker(OracleBackend(), small_config())
    seen_during_selection = []

    class Recording(ScriptedWindow):
        def show(self, image):
            super().show(image)
            if tracker.template_crop is None:
                seen_during_selection.append(cam.n)

    window = Recording([-1, -1, -1, ("drag", 45, 60, 85, 90), ENTER, -1, -1, -1, ord("q")])
    boxes = tmp_path / "b.txt"
    run_track(source, tracker, None, window, save_boxes=boxes)
    source.close()
    # The picture kept changing while the user was drawing (a camera is not frozen).
    assert len(set(seen_during_selection)) >= 3
    b = read_boxes(boxes)
    assert len(b) == 4
    np.testing.assert_allclose(b[0, :4], [45, 60, 40, 30])
    # Each tracked frame is a newer camera frame (CameraSource never returns one twice), on which the target
    # is at least 1 px further right: the box must follow it every frame (a box that stands still fails).
    assert not b[1:, 5].any()
    assert np.all(np.diff(b[:, 0]) > 0.5), b[:, 0]


def test_interactive_through_the_cli(tiny_checkpoint, synthetic_video, monkeypatch, tmp_path):
    monkeypatch.setattr(track_app, "has_display", lambda: True)
    window = ScriptedWindow([("drag", 20, 20, 60, 50), ENTER, -1, -1, -1, ord("q")])
    monkeypatch.setattr(track_app, "OpenCVWindow", lambda: window)
    boxes = tmp_path / "b.txt"
    r = runner.invoke(app, ["track", str(synthetic_video[0]), "--checkpoint", str(tiny_checkpoint),
                            "--save-boxes", str(boxes)])
    assert r.exit_code == 0, r.output
    b = read_boxes(boxes)
    assert len(b) == 4
    np.testing.assert_allclose(b[0, :4], [20, 20, 40, 30])


def test_an_unreadable_frame_keeps_its_line_and_its_video_frame(tmp_path):
    """Issue #23: the line of an unreadable frame was dropped (29 lines for 30 frames), so every later line
    named the wrong frame. Now: the previous box, score 0, lost 1, and the previous picture in --output."""
    (tmp_path / "frames").mkdir()
    folder, gt = red_target_folder(tmp_path / "frames", 12)
    (folder / "0005.png").write_bytes(b"not a png")
    boxes, out = tmp_path / "b.txt", tmp_path / "o.avi"
    summary = run_track(open_source(str(folder)), Tracker(OracleBackend(), small_config()), gt[0], None,
                        output=out, save_boxes=boxes)
    b = read_boxes(boxes)
    assert len(b) == 12 and summary.skipped == 1
    np.testing.assert_allclose(b[5], [*b[4, :4], 0, 1])  # frame 5: frame 4's box, lost
    for i in (1, 4, 6, 11):  # line i is frame i, before and after the hole
        assert _iou(b[i, :4], gt[i]) > 0.7 and b[i, 5] == 0
    assert count_video_frames(out)[0] == 12


def test_a_container_that_overstates_its_frame_count_has_no_unreadable_frame(tmp_path, monkeypatch):
    """Issue #23: "1 unreadable skipped" for a video whose container says one frame more than it decodes."""
    from siamtool.app.sources import VideoSource

    path = write_video(tmp_path / "v.avi", [render((40 + 4 * i, 60, 40, 30)) for i in range(6)], fps=10)
    real = cv2.VideoCapture

    class Overstating:  # a wrapper: a Python subclass of cv2.VideoCapture crashed the interpreter's last GC
        def __init__(self, *args) -> None:
            self.cap = real(*args)

        def get(self, prop):
            return self.cap.get(prop) + (prop == cv2.CAP_PROP_FRAME_COUNT)

        def __getattr__(self, name):
            return getattr(self.cap, name)

    monkeypatch.setattr(cv2, "VideoCapture", Overstating)
    source = VideoSource(path)
    assert source.frame_count == 7
    assert len(list(source)) == 6 and source.skipped == 0


# ------------------------------------------------------------------------ the window (issue #23)


class RecordingWindow(ScriptedWindow):
    """A ScriptedWindow that keeps the pictures it was shown and the waits it was asked for."""

    def __init__(self, script: list) -> None:
        super().__init__(script)
        self.images: list[np.ndarray] = []
        self.delays: list[int] = []

    def show(self, image: np.ndarray) -> None:
        super().show(image)
        self.images.append(image.copy())

    def wait_key(self, delay_ms: int) -> int:
        self.delays.append(delay_ms)
        time.sleep(delay_ms / 1000)  # as cv2.waitKey does when no key comes
        return super().wait_key(delay_ms)


def yellow_pixels(image: np.ndarray) -> int:
    return int(np.all(image == track_app.YELLOW, axis=2).sum())


def test_the_window_view_keeps_the_frame_whole_and_adds_keys_and_marks():
    frame = np.full((240, 320, 3), 90, np.uint8)
    panel = track_app.blank_panel(240)
    view = track_app.window_view(frame, panel)
    assert view.shape == (288, 320 + panel.shape[1], 3)  # frame at full size beside the panel, not squeezed
    np.testing.assert_array_equal(view[:200, :320], frame[:200])  # untouched above the key help
    assert (view[220:, :320] != 90).any()  # the key help along the bottom
    assert yellow_pixels(view) == 0
    paused, ended = track_app.window_view(frame, panel, paused=True), track_app.window_view(frame, panel, ended=True)
    assert yellow_pixels(paused) > 50 and yellow_pixels(ended) > 50
    assert not np.array_equal(paused, ended)


def test_the_pacer_waits_for_the_video_frame_rate():
    now = [0.0]
    pacer = track_app.Pacer(10.0, clock=lambda: now[0])
    assert pacer.delay_ms() == 1  # nothing shown yet
    pacer.shown()
    now[0] = 0.03  # tracking took 30 ms: wait the other 70
    assert pacer.delay_ms() == 70
    now[0] = 0.105  # shown a little late: the next frame keeps the schedule
    pacer.shown()
    now[0] = 0.15
    assert pacer.delay_ms() == 50
    now[0] = 0.5  # far behind (a slow tracker): no wait, and no burst to catch up afterwards
    assert pacer.delay_ms() == 1
    pacer.shown()
    now[0] = 0.52
    assert pacer.delay_ms() == 80
    assert track_app.Pacer(None).delay_ms() == 1


@pytest.mark.parametrize("fast", [False, True])
def test_a_video_plays_at_its_own_frame_rate_unless_fast(tmp_path, fast):
    """Issue #23: a 19 s clip played in 5 s (every wait was 1 ms)."""
    gt = np.stack([np.linspace(40, 120, 8), np.full(8, 60.0), np.full(8, 40.0), np.full(8, 30.0)], 1)
    path = write_video(tmp_path / "v.avi", [render(b) for b in gt], fps=10)
    window = RecordingWindow([drag(gt[0]), ENTER] + [-1] * 8 + [ord("q")])
    run_track(open_source(str(path)), Tracker(OracleBackend(), small_config()), None, window, fast=fast)
    tracking_waits = window.delays[2:9]
    if fast:
        assert max(tracking_waits) == 1
    else:
        assert all(50 <= d <= 100 for d in tracking_waits), window.delays  # 100 ms a frame, less tracking time


def test_the_last_frame_stays_until_a_key(tmp_path):
    """Issue #23: the window closed with the last frame. Now it shows it, marked, until a key."""
    folder, gt = red_target_folder(tmp_path, 4)
    boxes = tmp_path / "b.txt"
    window = RecordingWindow([drag(gt[0]), ENTER, -1, -1, -1, -1] + [-1] * 5 + [ord("x")])
    run_track(open_source(str(folder)), Tracker(OracleBackend(), small_config()), None, window, save_boxes=boxes)
    assert not window.script  # every wait after the end was sat through, until the key
    assert len(read_boxes(boxes)) == 4
    assert yellow_pixels(window.images[-1]) > 50  # the end mark
    assert len({img.shape for img in window.images}) == 1  # selection and tracking: one window size


def test_pause_shows_a_mark_and_a_cancelled_reselection_leaves_no_hint(tmp_path):
    """Issue #23: no PAUSED mark; after r then Esc while paused the "drag a box" text stayed."""
    folder, gt = red_target_folder(tmp_path, 10)
    window = RecordingWindow([drag(gt[0]), ENTER, -1, -1, SPACE, -1, ord("r"), -1, ESC, -1, ord("q")])
    run_track(open_source(str(folder)), Tracker(OracleBackend(), small_config()), None, window)
    before_space = next(i for i, img in enumerate(window.images) if yellow_pixels(img))
    paused_view = window.images[before_space]
    assert yellow_pixels(window.images[before_space - 1]) == 0  # tracking: no mark
    np.testing.assert_array_equal(window.images[-1], paused_view)  # after Esc: the paused view, no hint
    assert any(not np.array_equal(img, paused_view) for img in window.images[before_space + 1:-1])  # the hint

"""`siamtool track`: follow one object in a camera, video, image folder or glob, with or without a window.

Interactive (a display is available and --no-show is not given): the user drags a box on the first
frame (a video stays frozen until then; a camera keeps streaming), confirms with Enter or space, then
sees the frame with the box, score and FPS, and a side panel with the template crop, the search crop
with the predicted box, and the heatmap over it. Keys (shown along the bottom): space pause/resume (a
PAUSED mark while paused), r re-select, q or Esc quit. A video file plays at its own frame rate (`fast`:
as fast as it tracks), and its last frame stays on screen until a key is pressed.

Headless (--no-show, or no display): `--init X,Y,W,H` (0-based pixels) is required; the loop is the same
minus the window. `--output` writes the annotated frames as a video (.mp4: mp4v, .avi: MJPG) and
`--save-boxes` writes one line per frame: ``x,y,w,h,score,lost`` (0-based pixels; the first line is the
initial box with score 1; lost is 1 when the tracker reported the target lost and kept the last box).
Both files are written to a temporary name and renamed when the run ends (also on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from siamtool.app.sources import FrameSource, open_source
from siamtool.config import Config
from siamtool.errors import SiamtoolError
from siamtool.fileio import temp_beside, write_text_atomic
from siamtool.reporting import SILENT, Reporter
from siamtool.tracking.backends import load_backend, require_tracker
from siamtool.tracking.tracker import Tracker, TrackResult, check_init_box

WINDOW_NAME = "siamtool track"
VIDEO_CODECS = {".mp4": "mp4v", ".avi": "MJPG"}
KEY_ESC, KEY_SPACE = 27, 32
KEYS_CONFIRM = (10, 13, KEY_SPACE)
KEYS_QUIT = (KEY_ESC, ord("q"))
GREEN, RED, WHITE, BLACK, YELLOW = (0, 220, 0), (0, 0, 255), (255, 255, 255), (0, 0, 0), (0, 220, 255)
KEY_HELP = "space: pause  r: re-select  q/Esc: quit"


# ------------------------------------------------------------------------------------ arguments


def parse_init(text: str) -> np.ndarray:
    """`--init X,Y,W,H` -> float array; one-line error for anything else."""
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 4:
        raise SiamtoolError(f"--init {text!r}: expected X,Y,W,H in 0-based pixels, e.g. --init 292,125,150,140")
    return np.asarray(values, dtype=np.float64)


def check_output_path(path: Path) -> None:
    if path.suffix.lower() not in VIDEO_CODECS:
        raise SiamtoolError(f"--output {path}: use a .mp4 (mp4v) or .avi (MJPG) file name")


def has_display() -> bool:
    """Whether a window can be opened. On Linux this needs an X or Wayland display that exists.

    Checked before touching the GUI because Qt aborts the whole process when it cannot connect.
    """
    if not sys.platform.startswith("linux"):
        return True
    if os.environ.get("WAYLAND_DISPLAY"):
        return True
    display = os.environ.get("DISPLAY", "")
    if not display:
        return False
    if display.startswith(":"):  # a local X server: its socket must exist
        number = display[1:].split(".")[0]
        return Path(f"/tmp/.X11-unix/X{number}").exists()
    return True  # remote (e.g. ssh -X): trust it


# ------------------------------------------------------------------------------------- drawing


def _label(img: np.ndarray, text: str, org: tuple[int, int], color: tuple[int, int, int] = WHITE,
           scale: float = 0.5) -> None:
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x, y = org
    cv2.rectangle(img, (x - 2, y - th - 4), (x + tw + 2, y + base), BLACK, -1)
    cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, color, 1, cv2.LINE_AA)


def _rect(img: np.ndarray, box_xywh: np.ndarray, color: tuple[int, int, int], thickness: int = 2) -> None:
    x, y, w, h = (float(v) for v in box_xywh)
    cv2.rectangle(img, (round(x), round(y)), (round(x + w), round(y + h)), color, thickness)


def annotate(frame: np.ndarray, box: np.ndarray, score: float, lost: bool, fps: float | None) -> np.ndarray:
    """The frame with the box (green, red while lost), the score and the tracking FPS."""
    out = frame.copy()
    color = RED if lost else GREEN
    _rect(out, box, color)
    text = f"score {score:.2f}" + ("  LOST" if lost else "") + (f"  {fps:.1f} FPS" if fps else "")
    _label(out, text, (6, 20), color if lost else WHITE)
    return out


def _to_bgr8(crop_rgb: np.ndarray) -> np.ndarray:
    """A tracker crop (float32 RGB, not rounded) as a uint8 BGR tile."""
    return cv2.cvtColor(np.clip(np.rint(crop_rgb), 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def side_panel(tracker: Tracker, result: TrackResult | None, height: int) -> np.ndarray:
    """Template crop, search crop with its box, heatmap over the search crop, stacked in one column."""
    tile = int(np.clip(height // 3, 96, 256))
    panel = np.zeros((max(height, 3 * tile), tile, 3), np.uint8)
    tiles: list[tuple[str, np.ndarray]] = []
    if tracker.template_crop is not None:
        tiles.append(("template", _to_bgr8(tracker.template_crop)))
    if result is not None:
        search = _to_bgr8(result.search_crop)
        boxed = search.copy()
        _rect(boxed, result.crop_box, RED if result.lost else GREEN)
        tiles.append((f"search x{result.growth:.2g}", boxed))
        heat = cv2.resize(np.clip(result.heatmap, 0, 1), search.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        color = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
        tiles.append((f"heatmap max {float(result.heatmap.max()):.2f}", cv2.addWeighted(search, 0.5, color, 0.5, 0)))
    for k, (name, img) in enumerate(tiles):
        y = k * tile
        panel[y:y + tile] = cv2.resize(img, (tile, tile), interpolation=cv2.INTER_AREA)
        _label(panel, name, (4, y + 14), scale=0.4)
    return panel


def blank_panel(height: int) -> np.ndarray:
    """An empty side panel of the size `side_panel` draws for a frame `height` pixels high."""
    tile = int(np.clip(height // 3, 96, 256))
    return np.zeros((max(height, 3 * tile), tile, 3), np.uint8)


def window_view(shown: np.ndarray, panel: np.ndarray, paused: bool = False, ended: bool = False) -> np.ndarray:
    """What the window shows: the annotated frame at full size beside the panel, the keys along the bottom,
    and a PAUSED (or end-of-video) mark. Kept apart from `annotate`: none of this goes into --output."""
    canvas = compose(shown, panel)
    height = shown.shape[0]
    _label(canvas, KEY_HELP, (6, height - 8), scale=0.45)
    if paused or ended:
        text = "PAUSED  (space: resume)" if paused else "end of video  (any key: close)"
        (tw, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
        _label(canvas, text, (max(6, (shown.shape[1] - tw) // 2), max(30, height // 2)), YELLOW, scale=0.8)
    return canvas


def compose(annotated: np.ndarray, panel: np.ndarray) -> np.ndarray:
    """Frame on the left, panel on the right, padded to a common height."""
    h = max(annotated.shape[0], panel.shape[0])
    canvas = np.zeros((h, annotated.shape[1] + panel.shape[1], 3), np.uint8)
    canvas[: annotated.shape[0], : annotated.shape[1]] = annotated
    canvas[: panel.shape[0], annotated.shape[1]:] = panel
    return canvas


# ---------------------------------------------------------------------------------------- window


class Window(Protocol):
    """The few GUI calls the app makes; `OpenCVWindow` in real use, a scripted fake in tests."""

    def show(self, image: np.ndarray) -> None: ...

    def wait_key(self, delay_ms: int) -> int: ...

    def set_mouse_callback(self, callback: Callable[[int, int, int, int, Any], None]) -> None: ...

    def closed(self) -> bool: ...

    def close(self) -> None: ...


class OpenCVWindow:
    """A resizable OpenCV HighGUI window (mouse coordinates stay in image pixels when it is scaled)."""

    def __init__(self, name: str = WINDOW_NAME) -> None:
        self.name = name
        self._shown = False
        self._size: tuple[int, int] | None = None
        cv2.namedWindow(name, cv2.WINDOW_NORMAL | cv2.WINDOW_KEEPRATIO | cv2.WINDOW_GUI_NORMAL)

    def show(self, image: np.ndarray) -> None:
        size = (image.shape[1], image.shape[0])
        if size != self._size:  # the window follows the picture: an image wider than it would be squeezed
            cv2.resizeWindow(self.name, *size)
            self._size = size
        cv2.imshow(self.name, image)
        self._shown = True

    def wait_key(self, delay_ms: int) -> int:
        key = cv2.waitKey(delay_ms)
        return -1 if key < 0 else key & 0xFF

    def set_mouse_callback(self, callback: Callable[[int, int, int, int, Any], None]) -> None:
        cv2.setMouseCallback(self.name, callback)

    def closed(self) -> bool:
        if not self._shown:
            return False
        try:
            return cv2.getWindowProperty(self.name, cv2.WND_PROP_VISIBLE) < 1
        except cv2.error:
            return True

    def close(self) -> None:
        with contextlib.suppress(cv2.error):
            cv2.destroyWindow(self.name)
            cv2.waitKey(1)


class BoxSelector:
    """Mouse-drag rectangle selection, clipped to the frame (the canvas also holds the side panel)."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.start: tuple[int, int] | None = None
        self.end: tuple[int, int] | None = None
        self.dragging = False

    def on_mouse(self, event: int, x: int, y: int, flags: int, param: Any = None) -> None:
        x, y = int(np.clip(x, 0, self.width)), int(np.clip(y, 0, self.height))
        if event == cv2.EVENT_LBUTTONDOWN:
            self.start = self.end = (x, y)
            self.dragging = True
        elif event == cv2.EVENT_MOUSEMOVE and self.dragging:
            self.end = (x, y)
        elif event == cv2.EVENT_LBUTTONUP and self.dragging:
            self.end = (x, y)
            self.dragging = False

    def box(self) -> np.ndarray | None:
        """The selected x, y, w, h, or None when nothing (or a click without a drag) was selected."""
        if self.start is None or self.end is None:
            return None
        (x0, y0), (x1, y1) = self.start, self.end
        box = np.array([min(x0, x1), min(y0, y1), abs(x1 - x0), abs(y1 - y0)], dtype=np.float64)
        return box if box[2] >= 2 and box[3] >= 2 else None


def select_box(window: Window, source: FrameSource, frame: np.ndarray,
               required: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """Let the user drag a box; returns (frame it was drawn on, box) or None when cancelled.

    A video (or folder) stays on `frame`; a live camera keeps updating under the selection. Enter or
    space confirms; confirming with nothing drawn is an error on the first selection (`required`) and a
    cancel on a re-selection.
    """
    height, width = frame.shape[:2]
    selector = BoxSelector(width, height)
    window.set_mouse_callback(selector.on_mouse)
    hint = "drag a box around the target, Enter/space: start, Esc: cancel"
    while True:
        if source.live:
            newer = source.read()
            if newer is None:
                return None
            frame = newer
        canvas = frame.copy()
        box = selector.box()
        if box is not None:
            _rect(canvas, box, GREEN)
        _label(canvas, hint, (6, 20))
        window.show(compose(canvas, blank_panel(height)))  # the tracking view's size: the window never rescales
        key = window.wait_key(15)
        if window.closed() or key in KEYS_QUIT or key == ord("c"):
            return None
        if key in KEYS_CONFIRM:
            if box is None:
                if required:
                    raise SiamtoolError("empty selection: drag a box around the target with the mouse, then "
                                        "press Enter or space (or pass --init X,Y,W,H)")
                return None
            return frame, box


# ------------------------------------------------------------------------------------- outputs


class VideoOutput:
    """An annotated-video writer that only appears under its final name once finished."""

    def __init__(self, path: Path, fps: float, size: tuple[int, int]) -> None:
        check_output_path(path)
        self.path = path
        # Keep the real extension on the temp name: OpenCV picks the container from it.
        self.tmp = temp_beside(path, suffix=f".partial{path.suffix}")
        fourcc = cv2.VideoWriter_fourcc(*VIDEO_CODECS[path.suffix.lower()])
        self.writer = cv2.VideoWriter(str(self.tmp), fourcc, fps, size)
        self.size = size
        if not self.writer.isOpened():
            self.tmp.unlink(missing_ok=True)
            raise SiamtoolError(f"--output {path}: OpenCV cannot write this video (is the folder writable?)")
        self.frames = 0

    def write(self, frame: np.ndarray) -> None:
        if frame.shape[1::-1] != self.size:  # a source whose frame size changes mid-stream
            frame = cv2.resize(frame, self.size)
        self.writer.write(frame)
        self.frames += 1

    def finish(self) -> None:
        self.writer.release()
        if self.frames:
            os.replace(self.tmp, self.path)
        self.tmp.unlink(missing_ok=True)


def box_line(box: np.ndarray, score: float, lost: bool) -> str:
    """One `--save-boxes` line: x,y,w,h,score,lost (0-based pixels)."""
    x, y, w, h = (float(v) for v in box)
    return f"{x:.2f},{y:.2f},{w:.2f},{h:.2f},{score:.4f},{int(lost)}"


# ---------------------------------------------------------------------------------------- the loop


@dataclass
class TrackSummary:
    frames: int = 0
    """Frames with a box (the first, initialised frame included)."""
    lost_frames: int = 0
    tracking_fps: float = 0.0
    """Frames per second of tracking alone (crop + forward + decode), excluding I/O and display."""
    skipped: int = 0
    """Frames the source could not decode."""
    interrupted: bool = False
    quit_before_start: bool = False
    outputs: list[Path] = field(default_factory=list)


class Pacer:
    """Plays a video file in the window at its own frame rate.

    Tracking is faster than most videos on this project's trackers: shown as fast as tracked, a 19 s clip
    was over in 5 s. The window's key wait before the next frame lasts until that frame is due (tracking
    time counts), so the key poll is the clock; a tracker slower than the video plays as fast as it
    tracks, never catching up in bursts. `fps` None (a camera, an image folder, --fast): no waiting.
    """

    def __init__(self, fps: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = 1.0 / fps if fps else 0.0
        self.clock = clock
        self.due: float | None = None

    def delay_ms(self) -> int:
        """Milliseconds to wait for keys before the next frame (at least 1: OpenCV's 0 waits forever)."""
        if not self.interval or self.due is None:
            return 1
        return max(1, round((self.due - self.clock()) * 1000))

    def shown(self) -> None:
        """A frame was just shown: the next one is due one frame interval after this one was."""
        now = self.clock()
        on_time = self.due is not None and self.due + self.interval > now
        self.due = self.due + self.interval if on_time else now + self.interval  # a frame behind: start afresh


class _Recording:
    """What `run_track` keeps of every frame: the boxes file lines, the annotated video, the window, the
    counts and the speed."""

    def __init__(self, source: FrameSource, tracker: Tracker, window: Window | None, output: Path | None,
                 reporter: Reporter, summary: TrackSummary, fast: bool = False) -> None:
        self.source, self.tracker, self.window, self.output = source, tracker, window, output
        self.reporter, self.summary = reporter, summary
        self.pacer = Pacer(None if fast or source.live else source.fps)
        self.view: tuple[np.ndarray, np.ndarray] | None = None
        self.lines: list[str] = []
        self.writer: VideoOutput | None = None
        self.fps_ema: float | None = None
        self.tracking_time = 0.0
        self.tracked = 0
        self.last_box: np.ndarray | None = None
        self.last_shown: np.ndarray | None = None
        self.unreadable_seen = 0

    def record(self, img: np.ndarray, b: np.ndarray, score: float, lost: bool, result: TrackResult | None) -> None:
        self.lines.append(box_line(b, score, lost))
        self.summary.frames += 1
        self.summary.lost_frames += int(lost)
        shown = annotate(img, b, score, lost, self.fps_ema)
        self.last_box, self.last_shown = np.asarray(b), shown
        if self.output is not None:
            if self.writer is None:
                self.writer = VideoOutput(self.output, self.source.fps or 30.0, (img.shape[1], img.shape[0]))
            self.writer.write(shown)
        self.show(shown, result)
        self.reporter.progress("frames", completed=self.summary.frames, total=self.source.frame_count)

    def show(self, shown: np.ndarray, result: TrackResult | None) -> None:
        """Put an annotated frame (and the panel for `result`) in the window, if there is one."""
        if self.window is not None:
            self.view = (shown, side_panel(self.tracker, result, shown.shape[0]))
            self.window.show(window_view(*self.view))
            self.pacer.shown()

    def redraw(self, paused: bool = False, ended: bool = False) -> None:
        """Show the last view again, with the PAUSED or end mark (or without, after a resume or a cancelled
        re-selection, whose "drag a box" text must not stay on screen)."""
        if self.window is not None and self.view is not None:
            self.window.show(window_view(*self.view, paused=paused, ended=ended))

    def catch_up(self) -> None:
        """One line (the previous box, score 0, lost 1) and one output frame (the previous one, marked) per
        frame the source skipped as unreadable, so line N of --save-boxes is always frame N, as in eval."""
        if self.source.live:  # a camera's failed grabs are not frames of a recording
            return
        while self.unreadable_seen < self.source.skipped and self.last_box is not None:
            self.unreadable_seen += 1
            self.lines.append(box_line(self.last_box, 0.0, True))
            if self.writer is not None and self.last_shown is not None:
                marked = self.last_shown.copy()
                _label(marked, "unreadable frame: previous one shown", (6, 44), RED)
                self.writer.write(marked)

    def track(self, frame: np.ndarray) -> None:
        result = self.tracker.track(frame)
        self.tracked += 1
        self.tracking_time += result.time_s
        inst = 1.0 / max(result.time_s, 1e-6)
        self.fps_ema = inst if self.fps_ema is None else 0.9 * self.fps_ema + 0.1 * inst
        self.record(frame, result.box, result.score, result.lost, result)

    def finish(self, save_boxes: Path | None) -> None:
        """Close the video, write the boxes file, close the window (also after Ctrl-C)."""
        if self.writer is not None:
            self.writer.finish()
            self.summary.outputs.append(self.output)  # type: ignore[arg-type]
        if save_boxes is not None and self.lines:
            write_text_atomic(save_boxes, "\n".join(self.lines) + "\n")
            self.summary.outputs.append(save_boxes)
        if self.window is not None:
            self.window.close()
        self.summary.tracking_fps = self.tracked / self.tracking_time if self.tracking_time > 0 else 0.0


def run_track(
    source: FrameSource,
    tracker: Tracker,
    init: np.ndarray | None = None,
    window: Window | None = None,
    output: Path | None = None,
    save_boxes: Path | None = None,
    reporter: Reporter = SILENT,
    fast: bool = False,
) -> TrackSummary:
    """Track until the source ends or the user quits; headless when `window` is None (needs `init`).

    Frames count on the progress task "frames" of `reporter`. In a window a video file plays at its own
    frame rate (`fast`: as fast as it tracks) and its last frame stays until a key is pressed.
    """
    summary = TrackSummary()
    start = _first_box(source, init, window)
    if start is None:
        summary.quit_before_start = True
        return summary
    frame, box = start
    rec = _Recording(source, tracker, window, output, reporter, summary, fast)
    try:
        tracker.initialize(frame, box)
        rec.record(frame, np.asarray(box), 1.0, False, None)
        rec.unreadable_seen = source.skipped  # frames before the first readable one have no box: no line
        _track_loop(rec, frame)
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        rec.finish(save_boxes)
    summary.skipped = source.skipped
    return summary


def _first_box(source: FrameSource, init: np.ndarray | None,
               window: Window | None) -> tuple[np.ndarray, np.ndarray] | None:
    """The first frame and the target's box in it: `init`, or drawn in the window (None: the user quit)."""
    frame = source.read()
    if frame is None:
        raise SiamtoolError(f"{source.name}: no frame could be read")
    if init is not None:
        check_init_box(init, frame.shape[1], frame.shape[0], what="--init")
        return frame, init
    if window is None:
        raise SiamtoolError("headless tracking needs the initial box: pass --init X,Y,W,H (0-based pixels)")
    return select_box(window, source, frame, required=True)


def _track_loop(rec: _Recording, frame: np.ndarray) -> None:
    """Read and track frames until the source ends or the user quits (keys: see `_poll_window`)."""
    paused = False
    while True:
        if rec.window is not None:
            action, paused, frame = _poll_window(rec, frame, paused)
            if action == "quit":
                break
            if action == "wait":
                continue
        nxt = rec.source.read()
        rec.catch_up()
        if nxt is None:
            if rec.window is not None:
                _hold_last_frame(rec.window, rec)
            break
        frame = nxt
        rec.track(frame)


def _hold_last_frame(window: Window, rec: _Recording) -> None:
    """The input ended: keep its last frame on screen (marked) until a key or the window closes; a
    window that vanished with the last frame showed nothing of how the track ended."""
    rec.redraw(ended=True)
    while window.wait_key(100) < 0 and not window.closed():
        pass


def _poll_window(rec: _Recording, frame: np.ndarray, paused: bool) -> tuple[str, bool, np.ndarray]:
    """One look at the window: ("quit" | "wait" | "track", paused, current frame).

    Space pauses, q/Esc or closing the window quits, r re-selects the target (on the shown frame, or on
    a new one from a live camera, which is then recorded).
    """
    window = rec.window
    assert window is not None
    key = window.wait_key(30 if paused else rec.pacer.delay_ms())
    if window.closed() or key in KEYS_QUIT:
        return "quit", paused, frame
    if key == KEY_SPACE:
        paused = not paused
        rec.redraw(paused)
    if key == ord("r"):
        picked = select_box(window, rec.source, frame, required=False)
        if picked is not None:
            new_frame, box = picked
            rec.tracker.initialize(new_frame, box)
            if new_frame is not frame:  # a live camera moved on: this is a new frame
                frame = new_frame
                rec.record(frame, np.asarray(box), 1.0, False, None)
            else:  # the same frame, the new box (no new line: this frame has one)
                rec.show(annotate(frame, np.asarray(box), 1.0, False, None), None)
        rec.redraw(paused)  # the selection's hint and drag box go
        return "wait", paused, frame
    return ("wait" if paused else "track"), paused, frame


def track_source(
    spec: str,
    cfg: Config,
    device: Any,
    checkpoint: Path | None = None,
    onnx: Path | None = None,
    init: str | None = None,
    no_show: bool = False,
    output: Path | None = None,
    save_boxes: Path | None = None,
    window_factory: Callable[[], Window] | None = None,
    reporter: Reporter = SILENT,
    fast: bool = False,
) -> TrackSummary:
    """What `siamtool track` does: check the arguments, open the source and the tracker, run the loop.

    Arguments are checked before the model loads so a typo fails in a second, not after loading weights.
    `reporter` hears the tracker loading and, headless, each frame (a window is its own progress);
    `window_factory` (default `OpenCVWindow`) is where tests plug in a scripted window.
    """
    require_tracker(checkpoint, onnx)
    init_box = parse_init(init) if init is not None else None
    if output is not None:
        check_output_path(output)
    headless = no_show or not has_display()
    if headless and init_box is None:
        why = "--no-show" if no_show else "no display available"
        raise SiamtoolError(f"{why}: pass --init X,Y,W,H (the target's box in the first frame, 0-based pixels)")
    with open_source(spec) as source:
        backend, run_cfg, _ = load_backend(checkpoint, onnx, device, cfg, reporter)
        tracker = Tracker(backend, run_cfg)
        window = None if headless else (window_factory or OpenCVWindow)()
        return run_track(source, tracker, init_box, window, output, save_boxes, reporter if headless else SILENT,
                         fast)

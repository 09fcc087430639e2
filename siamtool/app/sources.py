"""Frame sources for `siamtool track`: a camera index, a video file, an image folder or a glob.

Every source yields BGR frames through `read()` (None at the end) and fails at open time with one line
that says what is wrong (camera will not open, video cannot be decoded, folder has no images). A camera
is read in its own thread that keeps only the newest frame, so a tracker slower than the camera drops
frames instead of falling further and further behind the scene.
"""

from __future__ import annotations

import glob
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from siamtool.errors import SiamtoolError
from siamtool.images import quiet_native_stderr, quiet_opencv, read_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def natural_key(path: str | Path) -> list[Any]:
    """Sort key that puts frame2.jpg before frame10.jpg."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(path))]


class FrameSource:
    """Base class: iterate with `read()` until it returns None; `close()` releases the device or file."""

    name: str = ""
    live: bool = False
    """True for cameras: frames keep coming whether or not they are consumed."""
    fps: float | None = None
    """Nominal frame rate when the source knows it (used for the output video)."""
    frame_count: int | None = None
    """Number of frames when known in advance (progress bars)."""
    skipped: int = 0
    """Frames that could not be decoded and were skipped."""

    def read(self) -> np.ndarray | None:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources (idempotent)."""

    def __iter__(self) -> Iterator[np.ndarray]:
        while (frame := self.read()) is not None:
            yield frame

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ImageSequenceSource(FrameSource):
    """Image files in a given order; unreadable images are skipped and counted."""

    def __init__(self, paths: list[Path], name: str) -> None:
        self.paths = paths
        self.name = name
        self.frame_count = len(paths)
        self._next = 0
        self.skipped = 0
        first = self.read()
        if first is None:
            raise SiamtoolError(f"{name}: none of the {len(paths)} image(s) could be decoded")
        self._pending: np.ndarray | None = first

    def read(self) -> np.ndarray | None:
        if getattr(self, "_pending", None) is not None:
            frame, self._pending = self._pending, None
            return frame
        while self._next < len(self.paths):
            path = self.paths[self._next]
            self._next += 1
            frame = read_image(path)  # a truncated JPEG is skipped, not tracked half grey
            if frame is not None:
                return frame
            self.skipped += 1
        return None


class VideoSource(FrameSource):
    """A video file through OpenCV's FFmpeg backend."""

    MAX_CONSECUTIVE_FAILURES = 25

    def __init__(self, path: Path) -> None:
        self.name = str(path)
        with quiet_opencv(), quiet_native_stderr():
            self.cap = cv2.VideoCapture(str(path))
        if not self.cap.isOpened():
            raise SiamtoolError(f"{path}: cannot open this video (not a format OpenCV/FFmpeg can decode, or a "
                                "corrupt file)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        count = int(self.cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        self.frame_count = count if count > 0 else None
        self.skipped = 0
        ok, first = self.cap.read()
        if not ok or first is None:
            self.cap.release()
            raise SiamtoolError(f"{path}: the video opened but no frame could be decoded (corrupt or empty file)")
        self._pending: np.ndarray | None = first
        self._read = 1

    def read(self) -> np.ndarray | None:
        if self._pending is not None:
            frame, self._pending = self._pending, None
            return frame
        for failed in range(self.MAX_CONSECUTIVE_FAILURES):  # failed: decode errors before this read
            ok, frame = self.cap.read()
            if ok and frame is not None:
                self._read += 1
                self.skipped += failed  # failures followed by a good frame: unreadable frames mid-file
                return frame
            # A decode error mid-file: skip the frame if the container says more frames follow. Failures
            # at the end are not counted: a container often states one frame more than it holds.
            if self.frame_count is None or self._read + self.skipped + failed + 1 >= self.frame_count:
                return None
        return None

    def close(self) -> None:
        self.cap.release()


class CameraSource(FrameSource):
    """A camera read by a background thread; `read()` returns the newest frame not yet returned.

    `capture_factory` exists for tests (a fake camera); it defaults to `cv2.VideoCapture`.
    """

    live = True
    FIRST_FRAME_TIMEOUT_S = 5.0
    FRAME_TIMEOUT_S = 2.0
    MAX_CONSECUTIVE_FAILURES = 50

    def __init__(self, index: int, capture_factory: Callable[[int], Any] = cv2.VideoCapture) -> None:
        self.name = f"camera {index}"
        with quiet_opencv():
            self.cap = capture_factory(index)
        if not self.cap.isOpened():
            raise SiamtoolError(f"camera {index} could not be opened: is it connected and not used by another "
                                "program? (try another index, e.g. 1)")
        fps = self.cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        self.frame_count = None
        self.skipped = 0
        self.dropped = 0
        """Frames captured but never returned because a newer one arrived first (expected when slow)."""
        self._cond = threading.Condition()
        self._latest: np.ndarray | None = None
        self._seq = 0
        self._returned = 0
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name=f"camera-{index}", daemon=True)
        self._thread.start()
        with self._cond:
            self._cond.wait_for(lambda: self._seq > 0 or self._stopped, timeout=self.FIRST_FRAME_TIMEOUT_S)
            got = self._seq > 0
        if not got:
            self.close()
            raise SiamtoolError(f"camera {index} opened but delivered no frame within "
                                f"{self.FIRST_FRAME_TIMEOUT_S:g} s")

    def _run(self) -> None:
        failures = 0
        while True:
            with self._cond:
                if self._stopped:
                    return
            ok, frame = self.cap.read()
            with self._cond:
                if self._stopped:
                    return
                if not ok or frame is None:
                    failures += 1
                    self.skipped += 1
                    if failures >= self.MAX_CONSECUTIVE_FAILURES:
                        self._stopped = True
                        self._cond.notify_all()
                        return
                    continue
                failures = 0
                if self._latest is not None and self._seq > self._returned:
                    self.dropped += 1
                self._latest = frame
                self._seq += 1
                self._cond.notify_all()

    def read(self) -> np.ndarray | None:
        with self._cond:
            self._cond.wait_for(lambda: self._seq > self._returned or self._stopped, timeout=self.FRAME_TIMEOUT_S)
            if self._seq <= self._returned:
                return None  # stopped, or no new frame within the timeout: the camera is gone
            self._returned = self._seq
            return self._latest

    def close(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=2.0)
        self.cap.release()


def _is_glob(spec: str) -> bool:
    return any(c in spec for c in "*?[")


def open_source(spec: str, capture_factory: Callable[[int], Any] = cv2.VideoCapture) -> FrameSource:
    """Open SOURCE as given on the command line: camera index, image folder, glob, or video file."""
    spec = spec.strip()
    if not spec:
        raise SiamtoolError("SOURCE is empty: give a camera index (0), a video file, an image folder or a glob")
    if spec.isdigit():
        return CameraSource(int(spec), capture_factory)
    path = Path(spec).expanduser()
    if path.is_dir():
        images = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()),
                        key=natural_key)
        if not images:
            raise SiamtoolError(f"{path}: folder has no images ({', '.join(IMAGE_EXTENSIONS[:5])}, ...)")
        return ImageSequenceSource(images, str(path))
    if path.is_file():
        if path.suffix.lower() in IMAGE_EXTENSIONS:
            return ImageSequenceSource([path], str(path))
        return VideoSource(path)
    if _is_glob(spec):
        matches = sorted((Path(p) for p in glob.glob(str(path), recursive=True)
                          if Path(p).suffix.lower() in IMAGE_EXTENSIONS and Path(p).is_file()), key=natural_key)
        if not matches:
            raise SiamtoolError(f"{spec}: the pattern matches no image files")
        return ImageSequenceSource(matches, spec)
    raise SiamtoolError(f"{spec}: no such file or folder (SOURCE is a camera index, a video, an image folder "
                        "or a glob such as 'frames/*.jpg')")

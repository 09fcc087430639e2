"""Frame sources: video, folder, glob, camera (a fake capture device), and their one-line errors."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from siamtool.app.sources import CameraSource, ImageSequenceSource, VideoSource, natural_key, open_source
from siamtool.data.synthetic import write_video
from siamtool.errors import SiamtoolError


def numbered_frames(n: int, size=(64, 48)) -> list[np.ndarray]:
    """Frames whose mean brightness encodes their index (survives lossy codecs)."""
    return [np.full((size[1], size[0], 3), 10 + 20 * i, np.uint8) for i in range(n)]


def index_of(frame: np.ndarray) -> int:
    return round((float(frame.mean()) - 10) / 20)


def test_video_source_reads_every_frame_in_order(tmp_path):
    path = write_video(tmp_path / "v.avi", numbered_frames(8), fps=12)
    with open_source(str(path)) as src:
        assert isinstance(src, VideoSource) and not src.live
        assert src.fps == pytest.approx(12)
        assert src.frame_count == 8
        assert [index_of(f) for f in src] == list(range(8))


def test_folder_is_read_in_natural_order_and_corrupt_images_are_skipped(tmp_path):
    for i, f in enumerate(numbered_frames(11)):
        cv2.imwrite(str(tmp_path / f"frame{i}.png"), f)
    (tmp_path / "frame5.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    src = open_source(str(tmp_path))
    assert isinstance(src, ImageSequenceSource)
    assert [index_of(f) for f in src] == [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]  # frame10 after frame9
    assert src.skipped == 1


def test_glob_selects_matching_images(tmp_path):
    for i, f in enumerate(numbered_frames(4)):
        cv2.imwrite(str(tmp_path / f"a_{i}.jpg"), f)
        cv2.imwrite(str(tmp_path / f"b_{i}.jpg"), f)
    src = open_source(str(tmp_path / "a_*.jpg"))
    assert src.frame_count == 4
    assert [index_of(f) for f in src] == [0, 1, 2, 3]


def test_natural_key():
    assert sorted(["f10.jpg", "f9.jpg", "f100.jpg"], key=natural_key) == ["f9.jpg", "f10.jpg", "f100.jpg"]


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: str(d / "missing.mp4"), "no such file or folder"),
    (lambda d: (d / "empty").mkdir() or str(d / "empty"), "folder has no images"),
    (lambda d: str(d / "*.png"), "matches no image files"),
    (lambda d: (d / "junk.mp4").write_bytes(b"\0" * 100) and str(d / "junk.mp4"), "cannot open this video"),
    (lambda d: (d / "bad.jpg").write_bytes(b"xx") and str(d / "bad.jpg"), "could be decoded"),
    (lambda d: "", "SOURCE is empty"),
])
def test_bad_sources_are_one_line_errors(tmp_path, make, message):
    with pytest.raises(SiamtoolError, match=message) as e:
        open_source(make(tmp_path))
    assert "\n" not in str(e.value)


def test_real_video_from_shared_data():
    from tests.conftest import shared

    src = open_source(str(shared("videos", "bag.avi")))
    first = src.read()
    assert first.shape == (360, 480, 3)
    assert src.frame_count == 196
    src.close()


# ------------------------------------------------------------------------------------- camera


class FakeCamera:
    """A capture device producing numbered frames at `fps`; `opened=False` imitates a missing camera."""

    def __init__(self, fps: float = 200.0, opened: bool = True, frames: int | None = None) -> None:
        self.fps, self.opened, self.limit = fps, opened, frames
        self.produced = 0
        self.released = False
        self.reader_threads: set[str] = set()

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def get(self, prop: int) -> float:
        return self.fps if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        self.reader_threads.add(threading.current_thread().name)
        if self.limit is not None and self.produced >= self.limit:
            return False, None
        time.sleep(1.0 / self.fps)
        self.produced += 1
        return True, np.full((8, 8, 3), self.produced % 256, np.uint8)

    def release(self) -> None:
        self.released = True


def test_camera_that_will_not_open_is_a_one_line_error():
    with pytest.raises(SiamtoolError, match="camera 3 could not be opened"):
        open_source("3", capture_factory=lambda i: FakeCamera(opened=False))


class GatedCamera(FakeCamera):
    """A camera that sends a frame only when the test allows one (`allow(n)`): how many frames arrive while
    the consumer is busy is decided by the test, not by the scheduler (a sleep against a 200 fps thread
    was a race on a loaded machine)."""

    def __init__(self, frames: int | None = None) -> None:
        super().__init__(fps=1000.0, frames=frames)
        self.gate = threading.Semaphore(0)
        self.unplugged = threading.Event()

    def allow(self, n: int = 1) -> None:
        for _ in range(n):
            self.gate.release()

    def read(self):
        self.reader_threads.add(threading.current_thread().name)
        if self.limit is not None and self.produced >= self.limit:
            time.sleep(0.001)
            return False, None  # the camera has stopped: failed reads at once, as cv2.VideoCapture gives
        while not self.gate.acquire(timeout=0.01):
            if self.unplugged.is_set():
                return False, None
        self.produced += 1
        return True, np.full((8, 8, 3), self.produced % 256, np.uint8)


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "the camera thread did not take the frames"
        time.sleep(0.005)


def test_camera_is_read_in_its_own_thread_and_a_slow_consumer_gets_the_newest_frame():
    cam = GatedCamera()
    cam.allow(1)
    src = open_source("0", capture_factory=lambda i: cam)
    assert isinstance(src, CameraSource) and src.live
    assert int(src.read()[0, 0, 0]) == 1
    cam.allow(30)  # a slow tracker: 30 frames arrive before it reads again
    _wait_for(lambda: src.dropped == 29)
    # Not the next frame in line but the newest one: no lag builds up; the 29 in between are dropped.
    assert int(src.read()[0, 0, 0]) == 31 and src.dropped == 29
    assert all(name.startswith("camera-") for name in cam.reader_threads)
    # Every read returns a new frame, never the same one twice.
    cam.allow(1)
    assert int(src.read()[0, 0, 0]) == 32
    cam.allow(1)
    assert int(src.read()[0, 0, 0]) == 33
    cam.unplugged.set()
    src.close()
    assert cam.released


def test_camera_that_stops_ends_the_stream(monkeypatch):
    """A camera that sends exactly 5 frames, each read before the next comes: exactly those 5, then the end."""
    monkeypatch.setattr(CameraSource, "MAX_CONSECUTIVE_FAILURES", 3)
    cam = GatedCamera(frames=5)
    cam.allow(1)
    start = time.perf_counter()
    src = open_source("0", capture_factory=lambda i: cam)
    frames = []
    while (f := src.read()) is not None:
        frames.append(int(f[0, 0, 0]))
        cam.allow(1)
    assert frames == [1, 2, 3, 4, 5] and src.dropped == 0
    assert time.perf_counter() - start < CameraSource.FRAME_TIMEOUT_S  # ended by the failed reads, not a timeout
    src.close()


def test_camera_that_opens_but_sends_nothing(monkeypatch):
    monkeypatch.setattr(CameraSource, "FIRST_FRAME_TIMEOUT_S", 0.2)
    monkeypatch.setattr(CameraSource, "MAX_CONSECUTIVE_FAILURES", 10**9)
    with pytest.raises(SiamtoolError, match="delivered no frame"):
        open_source("1", capture_factory=lambda i: FakeCamera(frames=0))


def test_paths_are_not_mistaken_for_cameras(tmp_path):
    folder = tmp_path / "0"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), numbered_frames(1)[0])
    # "0" is a camera index even if a folder of that name exists; "./0" is the folder.
    src = open_source(str(Path(folder)))
    assert isinstance(src, ImageSequenceSource)

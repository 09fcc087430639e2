"""One way to read an image file, shared by prepare, eval and track, so a damaged frame is treated alike.

`cv2.imread` returns a truncated JPEG as a picture whose missing part is grey (libjpeg only warns,
"Premature end of JPEG file"), so a command using it tracks on half a frame without noticing.
`cv2.imdecode` on the file's bytes refuses the same file (measured: every cut from 2 bytes to most of
the file), and prints nothing. Every command therefore reads frames through `read_image` and skips and
counts the ones it returns None for.
"""

from __future__ import annotations

import contextlib
import os
import re
import struct
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from siamtool.geometry import REDUCED_FLAGS


@contextlib.contextmanager
def quiet_opencv() -> Iterator[None]:
    """Silence OpenCV's own log lines (device probes, ONNX importer fallbacks) for the block: library code
    prints nothing, and the caller's one-line error says it better."""
    log = getattr(getattr(cv2, "utils", None), "logging", None)
    if log is None:
        yield
        return
    old = log.getLogLevel()
    log.setLogLevel(log.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log.setLogLevel(old)


OPENCV_TESTED = ((5, 0, 0), (5, 1, 0))
"""The oldest and newest OpenCV releases siamtool is tested on, the bounds pyproject.toml declares for
opencv-python (tests/tracking/test_opencv_backend.py checks that the two agree). Outside them the DNN
importer may refuse a graph (4.14 cannot parse the ConvNeXt graphs' `Add` nodes) or a newer release may
change what the tests pin down, so the user is told (`opencv_untested`)."""


def _release(version: str) -> tuple[int, int, int]:
    """(major, minor, patch) of an OpenCV version string such as "5.1.0" or "4.14.0-dev"; (0, 0, 0) if
    it has none."""
    m = re.match(r"(\d+)\.(\d+)\.(\d+)", version)
    return (int(m[1]), int(m[2]), int(m[3])) if m else (0, 0, 0)


def opencv_untested(version: str | None = None) -> str | None:
    """A one-line warning when the installed OpenCV (or `version`) is outside `OPENCV_TESTED`, else None.

    Why a warning, not a refusal: a newer OpenCV usually works, and a user who installed it on purpose
    should not be blocked; but boxes from `track.backend=opencv`, the crops and video decoding are only
    known to match the tests inside the bounds, so the person should know which side they are on.
    """
    version = version or cv2.__version__
    low, high = OPENCV_TESTED
    if low <= _release(version) <= high:
        return None
    first, last = ".".join(map(str, low)), ".".join(map(str, high))
    upper = f"{high[0]}.{high[1]}.{high[2] + 1}"
    return (f"OpenCV {version} is installed, but siamtool is tested with OpenCV {first} to {last}: "
            f"results may differ; pip install \"opencv-python>={first},<{upper}\" installs a tested one")


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Send what native code writes to the stderr file descriptor to /dev/null for the block.

    FFmpeg logs through its own av_log, past OpenCV's log level: opening a damaged .mp4 printed
    "[mov,mp4,...] moov atom not found" before siamtool's one-line error. Only for short calls that
    print nothing the user needs (opening a video); Python's own sys.stderr is flushed first.
    """
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured stderr (tests): nothing native goes there
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def read_image(path: str | Path, flags: int = cv2.IMREAD_COLOR) -> np.ndarray | None:
    """Decode `path` (BGR for the default flags); None when it is missing, empty, truncated or not an image."""
    try:
        buf = np.fromfile(str(path), dtype=np.uint8)
    except OSError:
        return None
    if not buf.size:
        return None
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error:
        return None
    return img if img is not None and img.size else None


# ------------------------------------------------------------------------------- reduced JPEG decode

try:  # libjpeg-turbo built into a wheel (see decode_reduced); OpenCV does the same work where it is missing
    import simplejpeg
except ImportError:  # pragma: no cover - a dependency of siamtool, absent only in odd installs
    simplejpeg = None

DECODERS = ("auto", "opencv")
"""`decode_reduced`'s choices: auto (simplejpeg when it can decode the file, else OpenCV), opencv (always)."""


def _exif_orientation(data: bytes) -> int:
    """The Exif orientation tag of a JPEG's header: 1 (upright) without one, 0 when the header is not understood.

    OpenCV turns an image by this tag and simplejpeg does not, so only upright files go to simplejpeg.
    """
    i, n = 2, len(data)
    while i + 4 <= n:
        if data[i] != 0xFF:
            return 0
        marker, length = data[i + 1], data[i + 2] << 8 | data[i + 3]
        if marker == 0xDA:  # start of scan: no more header segments
            return 1
        if marker == 0xE1 and data[i + 4:i + 10] == b"Exif\0\0":
            return _tiff_orientation(data[i + 10:i + 2 + length])
        i += 2 + length
    return 0


def _tiff_orientation(tiff: bytes) -> int:
    """Tag 0x0112 of the first IFD of an Exif TIFF block (1 if absent, 0 if the block is malformed)."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 0
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 0
    (count,) = struct.unpack(order + "H", tiff[ifd:ifd + 2])
    for e in range(ifd + 2, min(ifd + 2 + 12 * count, len(tiff) - 11), 12):
        tag, kind, _, value = struct.unpack(order + "HHIH", tiff[e:e + 10])
        if tag == 0x0112:
            return value if kind == 3 else 0
    return 1


def decode_reduced(data: bytes, factor: int = 1, decoder: str = "auto") -> np.ndarray | None:
    """Decode an image file's bytes at 1/`factor` scale (1, 2, 4, 8); None when it is not a readable image.

    Returns BGRX (4 channels, the 4th 255) from simplejpeg, or BGR (3 channels) from OpenCV: both
    run libjpeg-turbo's DCT-domain scaled decode and give the same B, G, R values (tested), so callers
    take either. simplejpeg is used for JPEGs because it is faster (no BGR copy inside OpenCV; measured
    1.5 vs 1.8 ms for a 960x720 frame at 1/1, 1.14 vs 1.23 ms at 1/2) and writes the 4-channel pixels
    that warpAffine's SIMD path wants, so `prepare` needs no colour conversion. It runs in strict mode:
    files turned by an Exif orientation tag, recoverable errors (truncation, extraneous bytes) or anything else
    it refuses are decoded by OpenCV as before, so the pixels, and which frames are unreadable, do not
    depend on the decoder (`read_image` explains why OpenCV's imdecode is the reference).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {', '.join(DECODERS)}, got {decoder!r}")
    if not data:
        return None
    if decoder == "auto" and simplejpeg is not None and data[:2] == b"\xff\xd8" and _exif_orientation(data) == 1:
        try:
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            sh, sw = -(-h // factor), -(-w // factor)
            img = simplejpeg.decode_jpeg(data, "BGRX", min_height=sh, min_width=sw)
            if img.shape[:2] == (sh, sw):
                return img
        except ValueError:
            pass
    try:
        img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), REDUCED_FLAGS[factor])
    except cv2.error:
        return None
    return img if img is not None and img.size else None

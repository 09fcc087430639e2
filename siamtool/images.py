"""One way to read an image file, shared by prepare, eval and track, so a damaged frame is treated alike.

`cv2.imread` returns a truncated JPEG as a picture whose missing part is grey (libjpeg only warns,
"Premature end of JPEG file"), so a command using it tracks on half a frame without noticing.
`cv2.imdecode` on the file's bytes refuses the same file (measured: every cut from 2 bytes to most of
the file), and prints nothing. Every command therefore reads frames through `read_image` and skips and
counts the ones it returns None for.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


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

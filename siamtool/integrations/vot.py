"""`siamtool vot`: a TraX server, so the VOT toolkit runs siamtool like any tracker it evaluates.

The VOT toolkit starts the tracker's command and talks to it over the TraX protocol on stdin/stdout (or a
socket): a handshake, then ``initialize(image, region)``, ``frame(image)`` until ``quit``. This module uses
the protocol implementation of the ``vot-trax`` package (the optional extra ``siamtool[vot]``), not code of
its own, so it speaks whatever libtrax speaks. The handshake comes before the tracker is loaded: loading
(torch, and on a first CPU run the one-off ONNX export) takes longer than the toolkit waits for a hello.

Regions in: rectangles as they are, polygons as their axis-aligned bounding box, masks as the box of their
pixels (siamtool tracks boxes). Out: a rectangle, with the tracker's score as the ``confidence`` property.
Images arrive as file paths and are read with `siamtool.images.read_image` like every other command.
Stdout belongs to the protocol: nothing here prints.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from siamtool.api import load_tracker
from siamtool.config import parse_override
from siamtool.errors import SiamtoolError
from siamtool.images import read_image
from siamtool.reporting import SILENT, Reporter

TRACKER_NAME = "siamtool"


def _trax() -> Any:
    try:
        import trax
        import trax.image  # noqa: F401
        import trax.region  # noqa: F401
        import trax.server  # noqa: F401
    except ImportError:
        raise SiamtoolError("siamtool vot needs the TraX protocol library: pip install vot-trax (siamtool's "
                            "`vot` extra)") from None
    return trax


def region_box(region: Any) -> tuple[float, float, float, float]:
    """x, y, w, h (0-based pixels) of a TraX rectangle, polygon (its bounding box) or mask (the box of its
    pixels); one-line `SiamtoolError` for an empty region or another kind."""
    kind = region.type() if callable(region.type) else region.type
    if kind == "rectangle":
        x, y, w, h = region.bounds()
    elif kind == "polygon":
        points = np.array([region.get(i) for i in range(region.size())], dtype=np.float64)
        (x, y), (x1, y1) = points.min(axis=0), points.max(axis=0)
        w, h = x1 - x, y1 - y
    elif kind == "mask":
        ys, xs = np.nonzero(region.array())
        if not len(xs):
            raise SiamtoolError("TraX initialisation: the mask is empty; give the target's pixels")
        ox, oy = region.offset()
        x, y, w, h = ox + xs.min(), oy + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
    else:
        raise SiamtoolError(f"TraX initialisation: a {kind!r} region; siamtool takes rectangles, polygons or masks")
    return float(x), float(y), float(w), float(h)


def track_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """`--set track.KEY=VALUE` strings as `load_tracker` keywords; only the track section applies here."""
    out = {}
    for text in overrides:
        keys, value = parse_override(text)
        if len(keys) != 2 or keys[0] != "track":
            raise SiamtoolError(f"--set {text}: siamtool vot takes track.* keys only, e.g. track.window_influence=0.2")
        out[keys[1]] = value
    return out


def _image(request: Any) -> np.ndarray:
    """The BGR frame of a TraX request (a file path in the color channel)."""
    channel = request.image.get("color") if request.image else None
    path = channel.path() if channel is not None and hasattr(channel, "path") else None
    if path is None:
        raise SiamtoolError("TraX request without a color image path; siamtool vot takes path images")
    image = read_image(path)
    if image is None:
        raise SiamtoolError(f"{path}: missing or not a readable image")
    return image


def _reply(trax: Any, server: Any, box: Any, score: float) -> None:
    x, y, w, h = (float(v) for v in box)
    server.status([(trax.region.Rectangle.create(x, y, w, h), {"confidence": f"{score:.6f}"})])


def _serve_requests(trax: Any, server: Any, tracker: Any) -> int:
    """Answer requests until the client quits; returns the number of frames tracked."""
    frames = 0
    while True:
        request = server.wait()
        if request.type == trax.TraxStatus.QUIT:
            return frames
        image = _image(request)
        if request.type == trax.TraxStatus.INITIALIZE:
            if not request.objects:
                raise SiamtoolError("TraX initialisation without a region")
            box = region_box(request.objects[0][0])
            tracker.initialize(image, box)
            _reply(trax, server, box, 1.0)
        else:
            result = tracker.track(image)
            _reply(trax, server, result.box, result.score)
            frames += 1


def serve(checkpoint: Any = None, *, overrides: Sequence[str] = (), device: Any = "auto", runtime: str = "auto",
          reporter: Reporter = SILENT, log: str | bool = False) -> int:
    """Run the TraX server on stdin/stdout (or $TRAX_SOCKET) until the client quits; returns frames tracked.

    `checkpoint`, `device` and `runtime` are `load_tracker`'s, `overrides` ``track.KEY=VALUE`` strings; `log`
    is libtrax's protocol log (True: stderr, a path: that file). A `SiamtoolError` (bad region, unreadable
    image, bad tracker) ends the session with the reason sent to the client and is raised again.
    """
    trax = _trax()
    keywords = track_overrides(overrides)
    server = trax.server.Server([trax.region.Region.RECTANGLE, trax.region.Region.POLYGON, trax.region.Region.MASK],
                                [trax.image.Image.PATH], ["color"], tracker_name=TRACKER_NAME,
                                tracker_description="siamtool Siamese tracker", log=log)
    try:
        tracker = load_tracker(checkpoint, device=device, runtime=runtime, reporter=reporter, **keywords)
        frames = _serve_requests(trax, server, tracker)
    except SiamtoolError as e:
        server.quit(reason=str(e))
        raise
    server.quit()
    return frames

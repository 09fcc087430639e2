"""The got10k toolkit's tracker interface: `SiamtoolTracker`, for OTB, UAV123, NfS, DTB70, TColor128, GOT-10k.

The toolkit (PyPI ``got10k``, the optional extra ``siamtool[got10k]``) runs a tracker through
``init(image, box)`` and ``update(image) -> box`` with PIL RGB images and 0-based ``x, y, w, h`` boxes, and
repeats non-deterministic trackers three times; siamtool tracks deterministically (same frames, same
boxes), so it says so and runs once. Usage::

    from got10k.experiments import ExperimentOTB
    from siamtool.integrations.got10k import SiamtoolTracker
    ExperimentOTB("data/OTB", version=2015).run(SiamtoolTracker())
"""

from __future__ import annotations

from typing import Any

import numpy as np

from siamtool.api import load_tracker
from siamtool.errors import SiamtoolError

try:
    from got10k.trackers import Tracker as _ToolkitTracker
except ImportError:  # one line, not a traceback, for a missing optional extra
    raise SiamtoolError("the got10k adapter needs the got10k toolkit: pip install got10k six (siamtool's "
                        "`got10k` extra)") from None


class SiamtoolTracker(_ToolkitTracker):
    """A got10k `Tracker` named "siamtool" (deterministic) around `siamtool.load_tracker`.

    `checkpoint` and `kwargs` are `load_tracker`'s (None: the shipped tracker with its tuned settings;
    ``device="cpu"``, ``runtime="torch"``, track overrides such as ``window_influence=0.2``); `name` is the
    results folder the toolkit writes under.
    """

    def __init__(self, checkpoint: Any = None, name: str = "siamtool", **kwargs: Any) -> None:
        super().__init__(name=name, is_deterministic=True)
        self.tracker = load_tracker(checkpoint, **{"color": "rgb", **kwargs})

    def init(self, image: Any, box: Any) -> None:
        """Start on `image` (PIL, or an RGB array) at `box` (x, y, w, h)."""
        self.tracker.initialize(image, box)

    def update(self, image: Any) -> np.ndarray:
        """The box (x, y, w, h) on the next image; while the target is lost, the last confident box."""
        return np.asarray(self.tracker.track(image).box, dtype=np.float64).copy()

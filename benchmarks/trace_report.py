"""What `parity_trace.py` and `cpp_parity_trace.py` share: the chosen cells of a Python Tracker, and the
report of where two free-running tracks part. No heavy imports: the C++ trace does not need torch."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import siamtool.tracking.tracker as tracker_module


@contextlib.contextmanager
def recorded_choices() -> Iterator[list]:
    """Every `select_candidate` answer of the Trackers run inside, in order (the chosen cell is not part
    of `TrackResult`)."""
    chosen: list = []
    select = tracker_module.select_candidate

    def recording(*a, **k):
        chosen.append(select(*a, **k))
        return chosen[-1]

    tracker_module.select_candidate = recording
    try:
        yield chosen
    finally:
        tracker_module.select_candidate = select


def report_parting(steps: Iterable[tuple[int, float, bool, str]], what: str, px: float, stop: float,
                   number: str = "8.3f") -> int:
    """Print each frame (k, distance, decisions differ, detail) where a decision differs or the two are more
    than `px` apart; 1 at the first frame more than `stop` apart (the tracks parted), else 0."""
    k = 0
    for k, apart, differ, detail in steps:
        if differ or apart > px:
            print(f"frame {k:4d}  {what} {apart:{number}} px apart  {detail}")
        if apart > stop:
            print(f"parted at frame {k}")
            return 1
    print(f"together to the last frame ({k})")
    return 0

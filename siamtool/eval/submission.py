"""Evaluation-server submissions: GOT-10k test and TrackingNet TEST publish only the first box, so a
tracker's results are zipped in the layout each server accepts and the score comes back from it.

* GOT-10k (http://got-10k.aitestunion.com/submit_instructions): ``<seq>/<seq>_001.txt`` (x,y,w,h per
  frame, comma separated, the first repetition; a deterministic tracker needs only one) and
  ``<seq>/<seq>_time.txt`` (seconds per frame), as the got10k toolkit's ``report`` zips them;
* TrackingNet (https://eval.ai, the TrackingNet challenge): ``<seq>.txt``, one x,y,w,h line per frame.

The boxes are the runner's raw results unchanged (same pixel convention as the first box in the
annotation file, which the tracker was initialised with).
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from siamtool.data.lasot import Index
from siamtool.errors import SiamtoolError
from siamtool.fileio import atomic_path

SERVERS = {
    "got10k": "http://got-10k.aitestunion.com/submit_instructions",
    "trackingnet": "https://eval.ai/web/challenges/challenge-page/1805 (TrackingNet test)",
}


def submission_path(out: Path, tracker: str, kind: str, split: str) -> Path:
    return Path(out) / f"{tracker}-{kind}-{split}.zip"


def _times(frames_csv: Path) -> str:
    """Seconds per frame from the runner's per-frame file (frame 1: the initialisation time)."""
    rows = np.loadtxt(frames_csv, delimiter=",", skiprows=1, ndmin=2)
    return "".join(f"{t / 1e3:.8f}\n" for t in rows[:, 1])


def write_submission(index: Index, tracker_dir: Path, zip_path: Path) -> Path:
    """Zip the results in `tracker_dir` (``<seq>.txt`` and ``frames/<seq>.csv`` per sequence) for the
    server of `index.kind`; a one-line error naming the first sequence without results."""
    if index.kind not in SERVERS:
        raise SiamtoolError(f"{index.kind} has no evaluation server submission (GOT-10k test and TrackingNet TEST do)")
    missing = [s.name for s in index.sequences if not (tracker_dir / f"{s.name}.txt").is_file()]
    if missing:
        raise SiamtoolError(f"{tracker_dir}: no results for {len(missing)} of {len(index.sequences)} sequences "
                            f"(e.g. {missing[0]}); run the same command again to finish them")
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
        for s in index.sequences:
            boxes = (tracker_dir / f"{s.name}.txt").read_text()
            if index.kind == "got10k":
                z.writestr(f"{s.name}/{s.name}_001.txt", boxes)
                frames_csv = tracker_dir / "frames" / f"{s.name}.csv"
                if frames_csv.is_file():
                    z.writestr(f"{s.name}/{s.name}_time.txt", _times(frames_csv))
            else:
                z.writestr(f"{s.name}.txt", boxes)
    return zip_path

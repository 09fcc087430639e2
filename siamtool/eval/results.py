"""Raw result files: one ``<sequence>.txt`` per sequence, one ``x,y,w,h`` line per frame (1-based pixels).

A results folder may use any benchmark's layout: flat ``<seq>.txt`` (LaSOT, TrackingNet, OTB, UAV, NfS,
pytracking), GOT-10k's ``<seq>/<seq>_001.txt`` (the first repetition is read), and the names pytracking
gives some sequences (``uav_bike1``, ``nfs_Gymnastics``, ``Jogging_1`` for ``Jogging-1``).

The reading rules decide which published result sets score at all, so they follow the toolkits:

* comma or tab separated (spaces are accepted too); a file longer than the sequence is cut to its
  length (monkey-17 and a few others have extra lines in several published result sets);
* a shorter file is an error naming the file and the first missing line, in both conventions;
* ``pytracking``: NaN values or negative sizes are an error naming the file and line (pytracking
  refuses such result sets); a box with zero width or height is replaced by the previous box;
* ``official``: NaN rows and rows with a width or height <= 0 are replaced by the previous box, as the
  MATLAB toolkit does;
* frame 1 is scored as the GT, but a frame-1 box that is not the GT is reported, and a set whose frame-1
  boxes are the GT moved by one pixel is flagged as 0-based output (a real, costly mistake in published
  raw results: it quietly costs about half a point of AUC, 0.56 for ATOM on LaSOT).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from siamtool.data.lasot import LasotSequence, parse_boxes
from siamtool.errors import DatasetError
from siamtool.eval.metrics import check_convention

FRAME1_TOLERANCE = 0.01
"""Pixels: a frame-1 box within this of the GT counts as the GT (results are often written rounded)."""


def clean_boxes(boxes: np.ndarray, convention: str = "pytracking", gt: np.ndarray | None = None) -> np.ndarray:
    """Replace the rows the convention does not score as written by the previous (already fixed) row.

    pytracking replaces boxes with a zero width or height, except where the GT row is NaN (UAV's absent
    frames: there the zero box stays, and a zero box right after it is replaced by it, as pytracking's
    loop does); the official toolkit also replaces NaN rows and negative sizes. Frame 1 is never replaced
    here (it is replaced by the GT when scoring), so a bad frame 1 propagates to frame 2 exactly as in
    both toolkits. Vectorised as a forward fill.
    """
    boxes = np.array(boxes, dtype=np.float64)
    if check_convention(convention) == "pytracking":
        bad = (boxes[:, 2:] == 0).any(axis=1)
        if gt is not None:
            bad &= ~np.isnan(gt).any(axis=1)
    else:
        with np.errstate(invalid="ignore"):
            bad = np.isnan(boxes).any(axis=1) | (boxes[:, 2:] <= 0).any(axis=1)
    bad[0] = False
    if not bad.any():
        return boxes
    source = np.where(bad, 0, np.arange(len(boxes)))
    np.maximum.accumulate(source, out=source)
    return boxes[source]


def read_result_file(path: str | Path, n_frames: int, convention: str = "pytracking") -> np.ndarray:
    """Read one result file for a sequence of `n_frames` frames; return (n_frames, 4) cleaned boxes.

    Raises `DatasetError` (one line naming the file and line) for a short file and, in the pytracking
    convention, NaN values or negative sizes anywhere in the file (pytracking checks before cutting).
    Lines beyond `n_frames` are cut (`load_tracker_results` counts them: `TrackerResults.extra_lines`).
    """
    return clean_boxes(read_raw_result(path, n_frames, convention), convention)


def read_raw_result(path: str | Path, n_frames: int, convention: str = "pytracking") -> np.ndarray:
    """`read_result_file` without the cleaning: the (n_frames, 4) boxes as written, checked the same way."""
    return _checked_boxes(path, n_frames, convention)[:n_frames]


def _checked_boxes(path: str | Path, n_frames: int, convention: str) -> np.ndarray:
    """Every box of a result file, uncut and uncleaned, after the checks of `read_result_file`."""
    path = Path(path)
    boxes = parse_boxes(path)
    if check_convention(convention) == "pytracking":
        bad_nan = np.isnan(boxes).any(axis=1)
        if bad_nan.any():
            line = int(np.argmax(bad_nan)) + 1
            raise DatasetError(
                f"{path}:{line}: NaN in the box (pytracking refuses NaN results; fix the tracker output or "
                "use --convention official, which carries the previous box forward)"
            )
        bad_size = (boxes[:, 2:] < 0).any(axis=1)
        if bad_size.any():
            line = int(np.argmax(bad_size)) + 1
            w, h = boxes[line - 1, 2:]
            raise DatasetError(
                f"{path}:{line}: negative box size w={w:g} h={h:g} (pytracking refuses it; fix the tracker "
                "output or use --convention official, which carries the previous box forward)"
            )
    if len(boxes) < n_frames:
        raise DatasetError(
            f"{path}:{len(boxes) + 1}: file ends after {len(boxes)} lines but the sequence has {n_frames} frames "
            "(a result file needs one x,y,w,h line per frame; re-run the tracker on this sequence)"
        )
    return boxes


@dataclass
class TrackerResults:
    """One tracker's results for a list of sequences: cleaned boxes plus what the checks found."""

    name: str
    directory: Path
    boxes: dict[str, np.ndarray] = field(default_factory=dict)
    """Sequence name -> (N, 4) cleaned boxes, cut to the GT length, 1-based x,y,w,h as in the file."""
    missing: list[str] = field(default_factory=list)
    frame1: dict[str, np.ndarray] = field(default_factory=dict)
    """Sequence name -> frame-1 box minus GT frame-1 box, as written (before frame 1 is replaced)."""
    raw: dict[str, np.ndarray] = field(default_factory=dict)
    """Sequence name -> the boxes as written, cut to the GT length, not cleaned (the GOT-10k toolkit scores
    them so: a box without size has IoU 0 there)."""
    extra_lines: dict[str, int] = field(default_factory=dict)
    """Sequence name -> lines beyond the sequence's frames (cut before scoring; said in a warning)."""


def _names(sequence: str) -> list[str]:
    """The file names a sequence's results may have: its own, and pytracking's spellings of it."""
    out = [sequence, sequence.replace("-", "_"), f"uav_{sequence}", f"nfs_{sequence}"]
    return list(dict.fromkeys(out))


def result_path(directory: str | Path, sequence: str) -> Path:
    """The result file of `sequence` in `directory`, in whichever layout it is (see the module docstring);
    the flat ``<seq>.txt`` path when there is none (callers test `is_file`)."""
    directory = Path(directory)
    for name in _names(sequence):
        for p in (directory / f"{name}.txt", directory / name / f"{name}_001.txt"):
            if p.is_file():
                return p
    return directory / f"{sequence}.txt"


def check_results_dir(directory: str | Path) -> Path:
    """A results folder must exist and hold at least one .txt file; else a one-line error saying so."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DatasetError(f"{directory}: results folder not found (expected one <sequence>.txt per sequence)")
    if not any(p.suffix == ".txt" or (p.is_dir() and any(p.glob(f"{p.name}_[0-9]*.txt"))) for p in directory.iterdir()):
        raise DatasetError(f"{directory}: no .txt result files (expected {directory}/<sequence>.txt, e.g. airplane-1.txt)")
    return directory


def extra_lines_warning(results: TrackerResults) -> str | None:
    """Result files longer than their sequences are cut silently by pytracking: say so, with an example.

    Often harmless (a trailing line), but 50 extra lines usually mean results of another version of the
    sequence, whose boxes then belong to other frames."""
    if not results.extra_lines:
        return None
    name, extra = max(results.extra_lines.items(), key=lambda item: item[1])
    return (f"{results.name}: {len(results.extra_lines)} result file(s) have more lines than their sequence has "
            f"frames (e.g. {result_path(results.directory, name)}: {extra} more); only the first lines, one per "
            "frame, are scored: check they are results of these sequences")


def frame1_warnings(results: TrackerResults) -> list[str]:
    """Warnings about frame-1 boxes: a one-pixel shift across the set, or boxes that are not the GT.

    A set whose frame-1 boxes are the GT moved by exactly (-1, -1) or (+1, +1) in x, y with the GT size,
    in at least half of the sequences, is almost certainly written in 0-based (or doubly 1-based) pixels.
    """
    if not results.frame1:
        return []
    deltas = np.stack(list(results.frame1.values()))
    names = list(results.frame1)
    n = len(deltas)
    same_size = np.all(np.abs(deltas[:, 2:]) <= FRAME1_TOLERANCE, axis=1)
    out = []
    for shift, hint in ((-1.0, "0-based; LaSOT raw results are 1-based: add 1 to x and y"),
                        (1.0, "shifted by +1; LaSOT raw results are 1-based: subtract 1 from x and y")):
        shifted = same_size & np.all(np.abs(deltas[:, :2] - shift) <= FRAME1_TOLERANCE, axis=1)
        if shifted.sum() * 2 >= n:
            out.append(
                f"{results.name}: frame-1 boxes are the ground truth moved by {shift:+.0f} px in x and y in "
                f"{int(shifted.sum())} of {n} sequences: the results look {hint} (scored against 1-based "
                "ground truth, such a shift costs ATOM's LaSOT results 0.56 points of AUC)"
            )
            return out
    differs = ~np.all(np.abs(deltas) <= FRAME1_TOLERANCE, axis=1)
    if differs.any():
        first = names[int(np.argmax(differs))]
        d = results.frame1[first]
        out.append(
            f"{results.name}: the frame-1 box is not the ground truth in {int(differs.sum())} of {n} sequences "
            f"(e.g. {first}: off by {', '.join(f'{v:+g}' for v in d)} in x,y,w,h); frame 1 is scored as the "
            "ground truth, but check the tracker was initialised with the right box"
        )
    return out


def load_tracker_results(
    name: str,
    directory: str | Path,
    sequences: list[LasotSequence],
    convention: str = "pytracking",
    count_done: Callable[[int], None] | None = None,
) -> TrackerResults:
    """Read `directory/<sequence>.txt` for each `LasotSequence`; absent files go to `missing`, not an error.

    Whether missing sequences are an error is the caller's decision (`--skip-missing`). `count_done(1)`
    is called once per sequence (progress bars).
    """
    directory = check_results_dir(directory)
    out = TrackerResults(name=name, directory=directory)
    for seq in sequences:
        path = result_path(directory, seq.name)
        if not path.is_file():
            out.missing.append(seq.name)
        else:
            raw = _checked_boxes(path, seq.n_frames, convention)
            if len(raw) > seq.n_frames:
                out.extra_lines[seq.name] = len(raw) - seq.n_frames
            raw = raw[:seq.n_frames]
            boxes = clean_boxes(raw, convention, seq.gt)
            out.raw[seq.name] = raw
            out.boxes[seq.name] = boxes
            out.frame1[seq.name] = boxes[0] - seq.gt[0]  # cleaning never touches frame 1
        if count_done is not None:
            count_done(1)
    return out


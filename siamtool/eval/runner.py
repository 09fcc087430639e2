"""Run a tracker over a benchmark split and write raw results, then score them (`siamtool eval --checkpoint`).

Output, per tracker (`<out>/<tracker>/`):

* ``<seq>.txt``: the raw-results format (one ``x,y,w,h`` line per frame, 1-based pixels via
  `geometry.to_lasot`, comma separated; frame 1 is the ground truth the tracker was initialised with),
  readable by `eval --results`, pytracking and the official toolkit;
* ``frames/<seq>.csv``: ``frame,time_ms,score,lost`` per frame (frame 1: the initialisation time, score 1);
  ``time_ms`` is tracking time only: search crop + forward + decode + post-processing; reading and
  JPEG-decoding the frame is excluded, as in the pytracking/VOT convention;
* ``run.json``: what produced the results (checkpoint hash, config, device) and the timing summary;
  ``config.yaml``: the resolved config.

Every file is written atomically and the ``.txt`` last, so a sequence whose ``.txt`` has one line per
frame is finished: a resumed run skips it; anything else (missing, short) is tracked again. Results
made by a different checkpoint or tracking config are never mixed: the run refuses the folder.

Parallelism: ``workers`` processes on CPU (spawn; each builds its own model; torch threads split so the
cores are not oversubscribed), one process per visible GPU on CUDA. Longest sequences go first.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from siamtool import __version__
from siamtool.config import Config
from siamtool.data.datasets import SERVER_SPLITS, index_dataset
from siamtool.data.lasot import Index, LasotSequence
from siamtool.device import available_cores
from siamtool.errors import DatasetError, SiamtoolError
from siamtool.eval.report import REPORT_FILE, check_annotations, evaluate_results
from siamtool.eval.submission import submission_path, write_submission
from siamtool.fileio import write_json_atomic, write_text_atomic
from siamtool.geometry import from_lasot, to_lasot
from siamtool.images import read_image
from siamtool.models.checkpoint import checkpoint_config, load_checkpoint
from siamtool.pool import report_progress, run_in_pool
from siamtool.provenance import differences, file_digest, state_digest
from siamtool.reporting import SILENT, Reporter
from siamtool.tracking.backends import (
    load_backend,
    merge_tracking_config,
    require_tracker,
    resolved_runtime,
    tracker_name,
)
from siamtool.tracking.cache import cached_onnx_backend, use_onnx
from siamtool.tracking.tracker import Tracker

FRAMES_DIR = "frames"
RUN_FILE = "run.json"
TIMED = ("tracking time only: search crop + forward + decode + post-processing per frame; "
         "frame reading and JPEG decoding excluded; first frames (initialisation) excluded")


# --------------------------------------------------------------------------------------- files


def result_file(tracker_dir: Path, seq: str) -> Path:
    return tracker_dir / f"{seq}.txt"


def frames_file(tracker_dir: Path, seq: str) -> Path:
    return tracker_dir / FRAMES_DIR / f"{seq}.csv"


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return -1


def is_finished(tracker_dir: Path, seq: LasotSequence) -> bool:
    """A sequence is done when its raw result has one line per frame and its per-frame file exists."""
    return (_count_lines(result_file(tracker_dir, seq.name)) == seq.n_frames
            and _count_lines(frames_file(tracker_dir, seq.name)) == seq.n_frames + 1)


def format_results(boxes_lasot: np.ndarray) -> str:
    return "".join(f"{x:.3f},{y:.3f},{w:.3f},{h:.3f}\n" for x, y, w, h in boxes_lasot)


def read_frames_file(path: Path) -> np.ndarray:
    """(N, 4) frame, time_ms, score, lost from a per-frame file."""
    return np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)


# ------------------------------------------------------------------------------ one sequence


@dataclass
class SequenceOutcome:
    name: str
    frames: int = 0
    tracked: int = 0
    """Frames after the first that were tracked (corrupt frames excluded)."""
    track_time: float = 0.0
    corrupt: list[int] = field(default_factory=list)
    """1-based numbers of frames that could not be decoded, truncated JPEGs included (`images.read_image`):
    previous box kept, lost=1, score 0."""
    lost: int = 0
    error: str | None = None
    """Why the sequence produced no result (e.g. an unreadable first frame)."""


def track_sequence(tracker: Any, seq: LasotSequence, tracker_dir: Path,
                   count_done: Callable[[int], None] | None = None) -> SequenceOutcome:
    """Track one sequence from its frame-1 ground truth and write its files (atomic, .txt last)."""
    out = SequenceOutcome(seq.name, frames=seq.n_frames)
    init = from_lasot(seq.gt[0])
    if not (init[2] > 0 and init[3] > 0):
        out.error = f"{seq.annotation_file}:1: the first box has no size, cannot initialise"
        return out
    first = read_image(seq.frame_path(0))
    if first is None:
        out.error = f"{seq.frame_path(0)}: first frame unreadable, cannot initialise"
        return out
    tracker.initialize(first, init)
    boxes = np.empty((seq.n_frames, 4))
    rows = np.empty((seq.n_frames, 4))
    boxes[0] = seq.gt[0]
    rows[0] = (1, tracker.init_time_s * 1e3, 1.0, 0)
    box = init
    for i in range(1, seq.n_frames):
        frame = read_image(seq.frame_path(i))
        if frame is None:
            out.corrupt.append(i + 1)
            rows[i] = (i + 1, 0.0, 0.0, 1)
        else:
            r = tracker.track(frame)
            box = r.box
            out.tracked += 1
            out.track_time += r.time_s
            out.lost += int(r.lost)
            rows[i] = (i + 1, r.time_s * 1e3, r.score, int(r.lost))
        boxes[i] = to_lasot(box)
        if count_done is not None:
            count_done(1)
    csv = "frame,time_ms,score,lost\n" + "".join(
        f"{int(f)},{t:.3f},{s:.4f},{int(lost)}\n" for f, t, s, lost in rows)
    write_text_atomic(frames_file(tracker_dir, seq.name), csv)
    write_text_atomic(result_file(tracker_dir, seq.name), format_results(boxes))
    return out


# ------------------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class TrackerSpec:
    """Everything a worker process needs to build the same tracker (picklable)."""

    checkpoint: Path | None
    onnx: Path | None
    cfg: Config
    """The user's config (its `track` section is used; data/model come from the checkpoint)."""

    def build(self, device: torch.device, reporter: Reporter = SILENT) -> tuple[Any, Config, str]:
        backend, cfg, name = load_backend(self.checkpoint, self.onnx, device, self.cfg, reporter)
        return Tracker(backend, cfg), cfg, name

    def export_once(self, device: str, reporter: Reporter = SILENT) -> None:
        """Make the cached ONNX export of a checkpoint here, before worker processes need it: they find it
        in the cache, and its one-off announcement reaches `reporter` instead of a worker's stderr."""
        runtime = self.cfg.track.backend
        if self.checkpoint is not None and use_onnx(runtime, torch.device(device).type):
            cached_onnx_backend(self.checkpoint, device, reporter, runtime)


_worker: dict[str, Any] = {}


def _init_worker(spec: TrackerSpec, devices: Any, threads: int) -> None:
    """Pool initializer: take a device, set the thread count, build this process's tracker once.

    A failure is kept and raised by the first task, so the main process sees the real one-line error
    instead of a "broken process pool".
    """
    _worker.update(pending=0, error=None)
    try:
        device = devices.get()
        torch.set_num_threads(threads)
        cv2.setNumThreads(1)
        _worker["tracker"], _, _ = spec.build(torch.device(device))
    except Exception as e:  # noqa: BLE001 - re-raised in _run_in_worker
        _worker["error"] = e


def _flush_progress(force: bool = False) -> None:
    if _worker["pending"] and (force or _worker["pending"] >= 25):
        report_progress(_worker["pending"])
        _worker["pending"] = 0


def _count_worker_frames(n: int) -> None:
    _worker["pending"] += n
    _flush_progress()


def _run_in_worker(job: tuple[LasotSequence, Path]) -> SequenceOutcome:
    seq, tracker_dir = job
    if _worker["error"] is not None:
        raise _worker["error"]
    try:
        return track_sequence(_worker["tracker"], seq, tracker_dir, _count_worker_frames)
    finally:
        _flush_progress(force=True)


# ---------------------------------------------------------------------------------- the runner


@dataclass
class RunSummary:
    tracker: str
    directory: Path
    sequences: int = 0
    resumed: int = 0
    """Sequences found finished and skipped."""
    failed: list[str] = field(default_factory=list)
    corrupt_frames: int = 0
    frames: int = 0
    tracked_frames: int = 0
    track_seconds: float = 0.0
    lost_frames: int = 0
    processes: int = 1
    threads: int = 1
    device: str = "cpu"
    wall_seconds: float = 0.0
    submission: Path | None = None
    """The zip written for the benchmark's evaluation server (GOT-10k test, TrackingNet TEST), else None."""

    @property
    def fps(self) -> float:
        """Tracking FPS of one process (see TIMED), over every finished sequence of the run."""
        return self.tracked_frames / self.track_seconds if self.track_seconds > 0 else 0.0

    def timing(self) -> dict[str, Any]:
        return {"fps": round(self.fps, 3), "tracked_frames": self.tracked_frames,
                "track_seconds": round(self.track_seconds, 3), "timed": TIMED, "device": self.device,
                "processes": self.processes, "threads_per_process": self.threads}


def _describe(spec: TrackerSpec, device_type: str = "cpu") -> tuple[str, Config, dict[str, Any]]:
    """Name, merged config and fingerprint of the tracker, without building the model (fast, main process).

    The fingerprint is what must match for results to be resumed: the trained weights, the crop
    geometry, the tracking knobs and the runtime resolved for `device_type` (`track.backend: auto`
    is onnxruntime on CPU and PyTorch on CUDA, which do not give bit-identical tracks).
    """
    require_tracker(spec.checkpoint, spec.onnx)
    if spec.checkpoint is not None:
        ckpt = load_checkpoint(spec.checkpoint)  # one-line error for a missing or foreign file
        cfg = merge_tracking_config(checkpoint_config(ckpt, source=f"{spec.checkpoint} (config)"), spec.cfg)
        weights = {"checkpoint": str(Path(spec.checkpoint).resolve()), "weights_sha256": state_digest(ckpt["model"])}
    else:
        _, cfg, _ = spec.build(torch.device("cpu"))
        onnx = Path(spec.onnx)  # type: ignore[arg-type]
        weights = {"onnx": str(onnx.resolve()), "weights_sha256": file_digest(sorted(onnx.glob("*.onnx")))}
    d = cfg.to_dict()
    runtime = resolved_runtime(spec.checkpoint, spec.onnx, spec.cfg.track.backend, device_type)
    fingerprint = {**weights, "runtime": runtime, "data": d["data"], "model": d["model"], "track": d["track"]}
    return tracker_name(spec.checkpoint, spec.onnx), cfg, fingerprint


def _check_run_folder(tracker_dir: Path, fingerprint: dict[str, Any]) -> None:
    path = tracker_dir / RUN_FILE
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        previous = None
    changed = [d.key for d in differences(previous, fingerprint, depth=1, sort=False)] if previous is not None else []
    if changed:
        raise SiamtoolError(
            f"{tracker_dir}: holds results of a different tracker setup (changed: {', '.join(changed)}); "
            "pass --name NEW or another --out, or delete the folder to start over"
        )


def _devices(device: torch.device, requested: str, workers: int) -> tuple[list[str], int]:
    """(one device string per process, torch threads per process)."""
    if device.type == "cuda":
        if device.index is None and requested in ("auto", "cuda"):
            return [f"cuda:{i}" for i in range(torch.cuda.device_count())], 1
        return [str(device)], 1
    cores = available_cores()
    if workers < 1:
        raise SiamtoolError(f"--workers must be >= 1, got {workers}")
    return ["cpu"] * workers, max(1, cores // workers)


def run_tracker(
    index: Index,
    out: Path,
    spec: TrackerSpec,
    device: torch.device,
    requested_device: str = "auto",
    workers: int = 1,
    name: str | None = None,
    reporter: Reporter = SILENT,
) -> RunSummary:
    """Track every sequence of `index` that is not finished yet; returns what was done and the timing.

    Frames count on the progress task "frames" as they complete; resumed sequences, unreadable frames
    and the first export of a checkpoint (`siamtool.tracking.cache`) are reported too.
    """
    default_name, cfg, fingerprint = _describe(spec, torch.device(device).type)
    name = name or default_name
    tracker_dir = Path(out) / name
    _check_run_folder(tracker_dir, fingerprint)
    tracker_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(tracker_dir / "config.yaml")

    devices, threads = _devices(device, requested_device, workers)
    seqs = sorted(index.sequences, key=lambda s: -s.n_frames)
    todo = [s for s in seqs if not is_finished(tracker_dir, s)]
    devices = devices[: max(1, len(todo))]
    summary = RunSummary(name, tracker_dir, sequences=len(seqs), resumed=len(seqs) - len(todo),
                         processes=len(devices), threads=threads, device=devices[0])
    if summary.resumed:
        reporter.status(f"resuming: {summary.resumed} of {len(seqs)} sequences already tracked in {tracker_dir}")
    start = time.perf_counter()
    outcomes = _track_all(spec, todo, tracker_dir, devices, threads, summary, reporter)
    summary.wall_seconds = time.perf_counter() - start
    _count_outcomes(summary, outcomes, reporter)
    _count_finished(summary, seqs, tracker_dir)
    write_json_atomic(tracker_dir / RUN_FILE, {
        "tracker": name, "siamtool_version": __version__, "fingerprint": fingerprint,
        "timing": summary.timing(), "sequences": summary.sequences, "failed": summary.failed,
        "corrupt_frames": summary.corrupt_frames,
    })
    return summary


def _track_all(spec: TrackerSpec, todo: list[LasotSequence], tracker_dir: Path, devices: list[str], threads: int,
               summary: RunSummary, reporter: Reporter) -> list[SequenceOutcome]:
    """Track the unfinished sequences, in this process (one device) or one process per device."""
    total = sum(s.n_frames for s in todo)
    done = 0

    def count_done(n: int) -> None:
        nonlocal done
        done += n
        reporter.progress("frames", completed=done, total=total)

    outcomes: list[SequenceOutcome] = []
    if todo and len(devices) == 1:
        # In this process: leave torch's thread count as the caller set it (all cores by default).
        summary.threads = torch.get_num_threads()
        tracker, _, _ = spec.build(torch.device(devices[0]), reporter)
        for seq in todo:
            outcomes.append(track_sequence(tracker, seq, tracker_dir, count_done))
            count_done(1 if outcomes[-1].error is None else seq.n_frames)  # the first frame, or all
    elif todo:
        spec.export_once(devices[0], reporter)
        outcomes = _run_pool(spec, todo, tracker_dir, devices, threads, count_done)
    return outcomes


def _count_outcomes(summary: RunSummary, outcomes: list[SequenceOutcome], reporter: Reporter) -> None:
    for o in outcomes:
        if o.error:
            summary.failed.append(o.error)
        summary.corrupt_frames += len(o.corrupt)
        if o.corrupt:
            shown = ", ".join(map(str, o.corrupt[:5])) + (" ..." if len(o.corrupt) > 5 else "")
            reporter.status(f"{o.name}: {len(o.corrupt)} unreadable frame(s) ({shown}): previous box kept, "
                            "counted lost")


def _count_finished(summary: RunSummary, seqs: list[LasotSequence], tracker_dir: Path) -> None:
    """Timing and loss over every finished sequence, including those of earlier (resumed) runs."""
    for s in seqs:
        if not is_finished(tracker_dir, s):
            continue
        rows = read_frames_file(frames_file(tracker_dir, s.name))
        tracked = rows[1:][rows[1:, 1] > 0]
        summary.frames += len(rows)
        summary.tracked_frames += len(tracked)
        summary.track_seconds += float(tracked[:, 1].sum()) / 1e3
        summary.lost_frames += int(rows[1:, 3].sum())


def _run_pool(spec: TrackerSpec, todo: list[LasotSequence], tracker_dir: Path, devices: list[str], threads: int,
              count_done: Callable[[int], None]) -> list[SequenceOutcome]:
    """One spawned process per device (see the module docstring), each with its own tracker."""
    device_q = mp.get_context("spawn").Queue()
    for d in devices:
        device_q.put(d)
    outcomes: list[SequenceOutcome] = []
    jobs = [(seq, tracker_dir) for seq in todo]
    with contextlib.closing(run_in_pool(_run_in_worker, jobs, len(devices), count_done, initializer=_init_worker,
                                        initargs=(spec, device_q, threads))) as results:
        for outcome in results:
            outcomes.append(outcome)
            count_done(1 if outcome.error is None else outcome.frames)
    return outcomes


# ------------------------------------------------------------------------------- run + score


def evaluate_tracker(
    lasot: Path,
    split: str,
    out: Path,
    spec: TrackerSpec,
    device: torch.device,
    requested_device: str = "auto",
    workers: int = 1,
    name: str | None = None,
    others: dict[str, Path] | None = None,
    report_json: Path | None = None,
    reporter: Reporter = SILENT,
    kind: str = "lasot",
) -> tuple[RunSummary, dict[str, Any]]:
    """`eval --checkpoint`: track the split of the `kind` benchmark under `lasot` (its root; resumable),
    then score it with `evaluate_results`.

    `others` are existing results folders ({name: folder}) scored alongside, e.g. published baselines.
    The JSON report gets a "tracking" entry with the FPS and what was timed. A split scored by the
    benchmark's server (GOT-10k test, TrackingNet TEST) also gets its submission zip (`summary.submission`);
    as published it has only the first box, so nothing is scored here and the report is {}.
    """
    ecfg = spec.cfg.eval
    index = index_dataset(kind, lasot, split, require_images=True)
    _check_images(index, lasot, split)
    # Refuse an incomplete split before hours of tracking, with the same rule and words as scoring.
    check_annotations(index, index.split, ecfg.skip_missing, reporter)
    summary = run_tracker(index, out, spec, device, requested_device, workers, name, reporter)
    for line in summary.failed:
        reporter.warning(line)
    if index.split.lower() in (s.lower() for s in SERVER_SPLITS.get(index.kind, ())):
        summary.submission = write_submission(index, summary.directory,
                                              submission_path(out, summary.tracker, index.kind, index.split))
    if any(s.gt_frames is not None for s in index.sequences):
        return summary, {}
    results = {summary.tracker: summary.directory, **(others or {})}
    report = evaluate_results(results, index, out_dir=out, report_path=report_json, convention=ecfg.convention,
                              skip_missing=ecfg.skip_missing, split=index.split, plots=ecfg.plots, reporter=reporter,
                              annotations_checked=True)
    add_timing_to_report(Path(report_json) if report_json else Path(out) / REPORT_FILE, summary)
    return summary, report


def _check_images(index: Index, lasot: Path, split: str) -> None:
    """A root of annotations only (LaSOT's test annotations, without frames) cannot be tracked: say that,
    not "280 of 280 sequences have no usable annotations"."""
    # A skipped line reads "<file in the sequence folder>[:line]: why"; image problems name the img folder.
    if index.sequences or not index.skipped:
        return
    if all(Path(line.split(":", 1)[0]).name == "img" for line in index.skipped):
        raise DatasetError(f"{lasot}: no images: the {len(index.skipped)} sequence(s) of split {split!r} have "
                           f"annotations but no frames (first: {index.skipped[0]}); a tracker needs the img/ "
                           "folders; to score existing results use --results DIR")


def add_timing_to_report(report_path: Path, summary: RunSummary) -> None:
    """Record the tracking speed (and what was timed) next to the scores in the JSON report."""
    report = json.loads(report_path.read_text())
    report.setdefault("tracking", {})[summary.tracker] = {
        **summary.timing(), "lost_frames": summary.lost_frames, "corrupt_frames": summary.corrupt_frames}
    write_json_atomic(report_path, report)

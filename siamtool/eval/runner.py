"""Run a tracker over a LaSOT split and write raw results, then score them (`siamtool eval --checkpoint`).

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
import hashlib
import json
import multiprocessing as mp
import queue as queue_mod
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from siamtool import __version__
from siamtool.config import Config
from siamtool.data.lasot import Index, Sequence
from siamtool.device import available_cores
from siamtool.errors import SiamtoolError
from siamtool.fileio import write_json_atomic, write_text_atomic
from siamtool.geometry import from_lasot, to_lasot
from siamtool.images import read_image

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


def is_finished(tracker_dir: Path, seq: Sequence) -> bool:
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


def track_sequence(tracker: Any, seq: Sequence, tracker_dir: Path,
                   on_frame: Callable[[], None] | None = None) -> SequenceOutcome:
    """Track one sequence from its frame-1 ground truth and write its files (atomic, .txt last)."""
    out = SequenceOutcome(seq.name, frames=seq.n_frames)
    init = from_lasot(seq.gt[0])
    if not (init[2] > 0 and init[3] > 0):
        out.error = f"{seq.path / 'groundtruth.txt'}:1: the first box has no size, cannot initialise"
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
        if on_frame is not None:
            on_frame()
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

    def build(self, device: torch.device) -> tuple[Any, Config, str]:
        from siamtool.tracking.backends import load_backend
        from siamtool.tracking.tracker import Tracker

        backend, cfg, name = load_backend(self.checkpoint, self.onnx, device, self.cfg)
        return Tracker(backend, cfg), cfg, name


_worker: dict[str, Any] = {}


def _init_worker(spec: TrackerSpec, devices: Any, threads: int, progress: Any) -> None:
    """Pool initializer: take a device, set the thread count, build this process's tracker once.

    A failure is kept and raised by the first task, so the main process sees the real one-line error
    instead of a "broken process pool".
    """
    _worker.update(progress=progress, pending=0, error=None)
    try:
        device = devices.get()
        torch.set_num_threads(threads)
        cv2.setNumThreads(1)
        _worker["tracker"], _, _ = spec.build(torch.device(device))
    except Exception as e:  # noqa: BLE001 - re-raised in _run_in_worker
        _worker["error"] = e


def _flush_progress(force: bool = False) -> None:
    if _worker["pending"] and (force or _worker["pending"] >= 25):
        _worker["progress"].put(_worker["pending"])
        _worker["pending"] = 0


def _on_worker_frame() -> None:
    _worker["pending"] += 1
    _flush_progress()


def _run_in_worker(seq: Sequence, tracker_dir: Path) -> SequenceOutcome:
    if _worker["error"] is not None:
        raise _worker["error"]
    try:
        return track_sequence(_worker["tracker"], seq, tracker_dir, _on_worker_frame)
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

    @property
    def fps(self) -> float:
        """Tracking FPS of one process (see TIMED), over every finished sequence of the run."""
        return self.tracked_frames / self.track_seconds if self.track_seconds > 0 else 0.0

    def timing(self) -> dict[str, Any]:
        return {"fps": round(self.fps, 3), "tracked_frames": self.tracked_frames,
                "track_seconds": round(self.track_seconds, 3), "timed": TIMED, "device": self.device,
                "processes": self.processes, "threads_per_process": self.threads}


def _sha256_files(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as f:
            for chunk in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _describe(spec: TrackerSpec) -> tuple[str, Config, dict[str, Any]]:
    """Name, merged config and fingerprint of the tracker, without building the model (fast, main process).

    The fingerprint is what must match for results to be resumed: the trained weights, the crop
    geometry and the tracking knobs.
    """
    from siamtool.tracking.backends import merge_tracking_config, require_tracker, tracker_name

    require_tracker(spec.checkpoint, spec.onnx)
    if spec.checkpoint is not None:
        from siamtool.engine.checkpoint import checkpoint_config, load_checkpoint

        ckpt = load_checkpoint(spec.checkpoint)  # one-line error for a missing or foreign file
        cfg = merge_tracking_config(checkpoint_config(ckpt, source=f"{spec.checkpoint} (config)"), spec.cfg)
        h = hashlib.sha256()
        for key, tensor in sorted(ckpt["model"].items()):
            h.update(key.encode())
            h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
        weights = {"checkpoint": str(Path(spec.checkpoint).resolve()), "weights_sha256": h.hexdigest()}
    else:
        _, cfg, _ = spec.build(torch.device("cpu"))
        onnx = Path(spec.onnx)  # type: ignore[arg-type]
        weights = {"onnx": str(onnx.resolve()), "weights_sha256": _sha256_files(sorted(onnx.glob("*.onnx")))}
    d = cfg.to_dict()
    fingerprint = {**weights, "data": d["data"], "model": d["model"], "track": d["track"]}
    return tracker_name(spec.checkpoint, spec.onnx), cfg, fingerprint


def _check_run_folder(tracker_dir: Path, fingerprint: dict[str, Any]) -> None:
    path = tracker_dir / RUN_FILE
    if not path.is_file():
        return
    try:
        previous = json.loads(path.read_text()).get("fingerprint")
    except (OSError, json.JSONDecodeError):
        previous = None
    if previous is not None and previous != fingerprint:
        changed = [k for k in fingerprint if previous.get(k) != fingerprint[k]]
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
    progress: Callable[[int, int], None] | None = None,
    status: Callable[[str], None] | None = None,
) -> RunSummary:
    """Track every sequence of `index` that is not finished yet; returns what was done and the timing.

    `progress(done_frames, total_frames)` is called as frames complete; `status(line)` gets one-line notes.
    """
    default_name, cfg, fingerprint = _describe(spec)
    name = name or default_name
    tracker_dir = Path(out) / name
    _check_run_folder(tracker_dir, fingerprint)
    tracker_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(tracker_dir / "config.yaml")

    devices, threads = _devices(device, requested_device, workers)
    seqs = sorted(index.sequences, key=lambda s: -s.n_frames)
    done = [s for s in seqs if is_finished(tracker_dir, s)]
    todo = [s for s in seqs if not is_finished(tracker_dir, s)]
    devices = devices[: max(1, len(todo))]
    summary = RunSummary(name, tracker_dir, sequences=len(seqs), resumed=len(done), processes=len(devices),
                         threads=threads, device=devices[0])
    if done and status is not None:
        status(f"resuming: {len(done)} of {len(seqs)} sequences already tracked in {tracker_dir}")
    total = sum(s.n_frames for s in todo)
    count = 0

    def advance(n: int = 1) -> None:
        nonlocal count
        count += n
        if progress is not None:
            progress(count, total)

    start = time.perf_counter()
    outcomes: list[SequenceOutcome] = []
    if todo and len(devices) == 1:
        # In this process: leave torch's thread count as the caller set it (all cores by default).
        summary.threads = torch.get_num_threads()
        tracker, _, _ = spec.build(torch.device(devices[0]))
        for seq in todo:
            outcomes.append(track_sequence(tracker, seq, tracker_dir, advance))
            advance(1 if outcomes[-1].error is None else seq.n_frames)  # the first frame, or all
    elif todo:
        outcomes = _run_pool(spec, todo, tracker_dir, devices, threads, advance)
    summary.wall_seconds = time.perf_counter() - start

    for o in outcomes:
        if o.error:
            summary.failed.append(o.error)
        summary.corrupt_frames += len(o.corrupt)
        if o.corrupt and status is not None:
            shown = ", ".join(map(str, o.corrupt[:5])) + (" ..." if len(o.corrupt) > 5 else "")
            status(f"{o.name}: {len(o.corrupt)} unreadable frame(s) ({shown}): previous box kept, counted lost")
    # Timing and loss over every finished sequence, including those of earlier (resumed) runs.
    for s in seqs:
        if not is_finished(tracker_dir, s):
            continue
        rows = read_frames_file(frames_file(tracker_dir, s.name))
        tracked = rows[1:][rows[1:, 1] > 0]
        summary.frames += len(rows)
        summary.tracked_frames += len(tracked)
        summary.track_seconds += float(tracked[:, 1].sum()) / 1e3
        summary.lost_frames += int(rows[1:, 3].sum())
    write_json_atomic(tracker_dir / RUN_FILE, {
        "tracker": name, "siamtool_version": __version__, "fingerprint": fingerprint,
        "timing": summary.timing(), "sequences": summary.sequences, "failed": summary.failed,
        "corrupt_frames": summary.corrupt_frames,
    })
    return summary


def _run_pool(spec: TrackerSpec, todo: list[Sequence], tracker_dir: Path, devices: list[str], threads: int,
              advance: Callable[[int], None]) -> list[SequenceOutcome]:
    ctx = mp.get_context("spawn")
    progress_q = ctx.Queue()
    device_q = ctx.Queue()
    for d in devices:
        device_q.put(d)
    outcomes: list[SequenceOutcome] = []

    def drain() -> None:
        with contextlib.suppress(queue_mod.Empty):
            while True:
                advance(progress_q.get_nowait())

    pool = ProcessPoolExecutor(len(devices), mp_context=ctx, initializer=_init_worker,
                               initargs=(spec, device_q, threads, progress_q))
    try:
        pending = {pool.submit(_run_in_worker, seq, tracker_dir) for seq in todo}
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            drain()
            for fut in finished:
                outcomes.append(fut.result())
                advance(1 if outcomes[-1].error is None else outcomes[-1].frames)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    drain()
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
    console: Console | None = None,
) -> tuple[RunSummary, dict[str, Any]]:
    """`eval --checkpoint`: track the split (resumable), then score it with `evaluate_results`.

    `others` are existing results folders ({name: folder}) scored alongside, e.g. published baselines.
    The JSON report gets a "tracking" entry with the FPS and what was timed.
    """
    from siamtool.data.lasot import index_lasot
    from siamtool.eval.report import REPORT_FILE, check_annotations, evaluate_results

    console = console or Console(quiet=True)
    ecfg = spec.cfg.eval
    index = index_lasot(lasot, split, require_images=True)

    def note(line: str) -> None:
        console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)

    # Refuse an incomplete split before hours of tracking, with the same rule and words as scoring.
    check_annotations(index, split, ecfg.skip_missing, note)
    columns = (TextColumn("tracking"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
               TimeRemainingColumn())
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("frames", total=None)
        summary = run_tracker(
            index, out, spec, device, requested_device, workers, name,
            progress=lambda done, total: bar.update(task, completed=done, total=total),
            status=lambda line: console.print(line, highlight=False, soft_wrap=True),
        )
    for line in summary.failed:
        note(line)
    results = {summary.tracker: summary.directory, **(others or {})}
    report = evaluate_results(results, index, out_dir=out, report_path=report_json, convention=ecfg.convention,
                              skip_missing=ecfg.skip_missing, split=split, plots=ecfg.plots, console=console)
    add_timing_to_report(Path(report_json) if report_json else Path(out) / REPORT_FILE, summary)
    return summary, report


def add_timing_to_report(report_path: Path, summary: RunSummary) -> None:
    """Record the tracking speed (and what was timed) next to the scores in the JSON report."""
    report = json.loads(report_path.read_text())
    report.setdefault("tracking", {})[summary.tracker] = {
        **summary.timing(), "lost_frames": summary.lost_frames, "corrupt_frames": summary.corrupt_frames}
    write_json_atomic(report_path, report)

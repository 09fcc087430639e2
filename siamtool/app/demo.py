"""`siamtool demo`: the shipped tracker on a clip any fresh install can make, scored against its ground truth.

Without network and without a dataset, the one footage a new machine is guaranteed to have is what it
can render: `synthetic.render_sequence` moves a target cut from the photos bundled with matplotlib (a
dependency, so always installed; never the optional extras' photos, so every install renders the same
clip and gets the same score) over a photo
background under a drifting camera, past look-alike distractors, behind an occluder and out of the
frame and back. The frames are rendered from the boxes, so the ground truth is exact and the demo can
say how well the tracker did, with the same LaSOT metrics as `siamtool eval`.

The tracking itself is `siamtool track` (`app.track.track_source`): the same Tracker, backend choice
(onnxruntime on CPU by default), annotated video and box file, so what the demo shows is what `track`
does. Outputs in ``--out`` (default ``siamtool-demo/``): ``clip.avi`` (the rendered input, MJPG),
``groundtruth.txt`` (LaSOT format: 1-based x,y,w,h, ``0,0,0,0`` where the target is hidden),
``demo.mp4`` (annotated), ``boxes.txt`` (``x,y,w,h,score,lost`` per frame, 0-based) and
``summary.json``. With ``--video FILE --init X,Y,W,H`` it tracks that video instead (no score).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from siamtool.app.track import TrackSummary, VideoOutput, check_output_path, parse_init, track_source
from siamtool.config import Config
from siamtool.data import photos as bundled
from siamtool.data.synthetic import render_sequence
from siamtool.errors import SiamtoolError
from siamtool.eval.metrics import sequence_curves
from siamtool.fileio import write_json_atomic, write_text_atomic
from siamtool.geometry import to_lasot
from siamtool.reporting import SILENT, Reporter
from siamtool.tracking.cache import use_onnx
from siamtool.weights import is_default, resolve_checkpoint

CLIP_FRAMES = 300
"""Default clip length: 10 s at 30 fps, long enough for the occlusion and the exit and re-entry."""
CLIP_SIZE = (640, 360)
CLIP_FPS = 30.0
MAX_FRAMES = 18000
"""Longest rendered clip, 10 minutes: on disk about 28 kB a frame for the MJPG clip and 9 kB for the annotated
.mp4 (measured on the default clip: 8.5 MB and 2.7 MB for 300 frames), some 670 MB in all."""
CLIP_SEED = 0
"""Fixed, so every install renders and scores the same clip (one clip is one sample: README, "demo")."""
CLIP_FILE, GT_FILE, VIDEO_FILE, BOXES_FILE, SUMMARY_FILE = (
    "clip.avi", "groundtruth.txt", "demo.mp4", "boxes.txt", "summary.json")


@dataclass
class DemoClip:
    """A rendered clip on disk and what is known about it."""

    path: Path
    gt: np.ndarray
    """(N, 4) x, y, w, h, 0-based frame pixels (also where the target is hidden)."""
    absent: np.ndarray
    """(N,) True where the target is fully occluded or out of the frame."""
    textures: list[str]
    """Names of the photos the textures came from (empty: noise textures)."""
    size: tuple[int, int]
    fps: float

    @property
    def init(self) -> np.ndarray:
        return self.gt[0]

    def describe(self) -> str:
        occluded = int(self.absent.sum())
        photos = "photo" if len(self.textures) == 1 else "photos"
        source = (f"{len(self.textures)} {photos} bundled with installed packages ({', '.join(self.textures[:3])}"
                  f"{', ...' if len(self.textures) > 3 else ''})" if self.textures else "noise textures")
        return (f"rendered a {len(self.gt)}-frame {self.size[0]}x{self.size[1]} clip from {source}: a target "
                f"moving under a drifting camera, past look-alike distractors, hidden (occluded or out of "
                f"the frame) in {occluded} frames")


def generate_clip(path: Path, frames: int = CLIP_FRAMES, size: tuple[int, int] = CLIP_SIZE,
                  seed: int = CLIP_SEED, fps: float = CLIP_FPS) -> DemoClip:
    """Render the demo clip with `synthetic.render_sequence` and write it as an MJPG .avi (atomically)."""
    if not 2 <= frames <= MAX_FRAMES:
        raise SiamtoolError(f"--frames {frames}: a clip needs at least 2 frames and at most {MAX_FRAMES} "
                            f"({MAX_FRAMES / fps / 60:g} minutes at {fps:g} FPS; the clip takes about 28 kB of "
                            "disk a frame)")
    photos = bundled.bundled_photos(bundled.ALWAYS_INSTALLED)  # not the extras': the same clip on every install
    # The target and its look-alikes are cut from the photo of Grace Hopper, the background is the
    # gift-box picture: a target cut from its own background would be camouflaged, not tracked.
    objects = [img for name, img in photos.items() if "grace_hopper" in name]
    scenes = [img for name, img in photos.items() if "grace_hopper" not in name]
    writer = VideoOutput(Path(path), fps, size)
    try:  # each frame goes to the file as it is rendered: memory does not grow with --frames
        _, boxes, occluded, out_of_view = render_sequence(np.random.default_rng(seed), frames, size, objects or None,
                                                          scenes or None, sink=writer.write)
    finally:
        writer.finish()
    return DemoClip(Path(path), np.asarray(boxes, np.float64), occluded | out_of_view, sorted(photos), size, fps)


def lasot_lines(gt: np.ndarray, absent: np.ndarray) -> str:
    """Ground truth in LaSOT's groundtruth.txt format (1-based; hidden frames are 0,0,0,0 as in LaSOT)."""
    return "".join("0,0,0,0\n" if hidden else "{:.3f},{:.3f},{:.3f},{:.3f}\n".format(*to_lasot(b))
                   for b, hidden in zip(gt, absent))


def read_boxes(path: Path) -> np.ndarray:
    """The x, y, w, h columns of a `track --save-boxes` file."""
    return np.loadtxt(path, delimiter=",", ndmin=2)[:, :4]


def score_boxes(pred: np.ndarray, gt: np.ndarray, absent: np.ndarray) -> dict[str, float]:
    """LaSOT one-pass scores in percent (the metrics and convention of `siamtool eval`)."""
    if len(pred) != len(gt):
        raise SiamtoolError(f"the tracker returned {len(pred)} boxes for a {len(gt)}-frame clip: cannot score it")
    curves = sequence_curves(pred, gt, absent)
    return {"success_auc": 100 * float(curves.auc), "precision_20": 100 * float(curves.precision_20),
            "norm_precision_20": 100 * float(curves.norm_precision_20)}


@dataclass
class DemoSummary:
    """What `run_demo` did, for the CLI to print."""

    source: str
    """One line on the input (the rendered clip, or the video given)."""
    checkpoint: Path | None
    onnx: Path | None
    runtime: str
    """"onnxruntime", "OpenCV DNN" or "PyTorch": what `track.backend` selects for this device."""
    track: TrackSummary
    scores: dict[str, float] | None
    """success_auc, precision_20, norm_precision_20 (percent) when the ground truth is known."""
    seconds: float = 0.0
    """Wall time of the whole demo (rendering, model loading, first-run ONNX export, tracking, writing)."""
    outputs: list[Path] = field(default_factory=list)
    command: str = ""
    """The `siamtool track` command that repeats the tracking part."""


def _runtime(cfg: Config, device: Any, onnx: Path | None) -> str:
    if cfg.track.backend == "opencv":
        return "OpenCV DNN"
    if onnx is not None or use_onnx(cfg.track.backend, getattr(device, "type", str(device))):
        return "onnxruntime"
    return "PyTorch"


def run_demo(
    cfg: Config,
    device: Any,
    out: Path = Path("siamtool-demo"),
    checkpoint: Path | None = None,
    onnx: Path | None = None,
    video: Path | None = None,
    init: str | None = None,
    frames: int = CLIP_FRAMES,
    seed: int = CLIP_SEED,
    avi: bool = False,
    reporter: Reporter = SILENT,
) -> DemoSummary:
    """Render (or take) a clip, track it headless with the given or shipped tracker, score it, write outputs.

    Arguments are checked before anything is rendered or loaded, so a typo fails at once. Each step and
    every tracked frame (progress task "frames") is reported to `reporter`.
    """
    start = time.perf_counter()
    _check_demo_args(video, init)
    checkpoint = resolve_checkpoint(checkpoint, onnx)
    out = Path(out)
    video_out = out / (Path(VIDEO_FILE).stem + (".avi" if avi else ".mp4"))
    check_output_path(video_out)
    boxes_out = out / BOXES_FILE

    clip: DemoClip | None = None
    if video is None:
        reporter.status("rendering the demo clip")
        clip = generate_clip(out / CLIP_FILE, frames, seed=seed)
        write_text_atomic(out / GT_FILE, lasot_lines(clip.gt, clip.absent))
        init = ",".join(f"{v:.3f}" for v in clip.init)
        source_path, source_line = clip.path, clip.describe()
    else:
        source_path, source_line = Path(video), f"tracking {video} from the box {init}"

    reporter.status("loading the tracker")
    track = track_source(str(source_path), cfg, device, checkpoint=checkpoint, onnx=onnx, init=init,
                         no_show=True, output=video_out, save_boxes=boxes_out, reporter=reporter)
    scores = None
    if clip is not None and not track.interrupted:  # a Ctrl-C run has fewer boxes than frames
        scores = score_boxes(read_boxes(boxes_out), clip.gt, clip.absent)
    tracker_arg = (f"--onnx {onnx} " if onnx is not None else
                   "" if is_default(checkpoint) else f"--checkpoint {checkpoint} ")
    summary = DemoSummary(
        source=source_line, checkpoint=checkpoint, onnx=onnx, runtime=_runtime(cfg, device, onnx), track=track,
        scores=scores, outputs=([clip.path, out / GT_FILE] if clip is not None else []) + list(track.outputs),
        command=f"siamtool track {source_path} {tracker_arg}--init {init} --no-show --output {video_out}",
    )
    summary.seconds = time.perf_counter() - start
    _write_summary(out, summary)
    return summary


def _check_demo_args(video: Path | None, init: str | None) -> None:
    if (video is None) != (init is None):
        raise SiamtoolError("--video FILE and --init X,Y,W,H go together (the initial box of the target in the "
                            "video's first frame, 0-based pixels); without both the demo renders its own clip")
    if init is not None:
        parse_init(init)
    if video is not None and not Path(video).is_file():
        raise SiamtoolError(f"--video {video}: no such file")


def _write_summary(out: Path, summary: DemoSummary) -> None:
    """summary.json: what was tracked, with what, how fast and how well (then listed among the outputs)."""
    track = summary.track
    write_json_atomic(out / SUMMARY_FILE, {
        "source": summary.source, "checkpoint": str(summary.checkpoint) if summary.checkpoint else None,
        "onnx": str(summary.onnx) if summary.onnx else None, "runtime": summary.runtime, "frames": track.frames,
        "lost_frames": track.lost_frames, "tracking_fps": round(track.tracking_fps, 2),
        "scores": summary.scores, "convention": "pytracking (LaSOT one-pass, as `siamtool eval`)",
        "seconds": round(summary.seconds, 2), "outputs": [str(p) for p in summary.outputs],
    })
    summary.outputs.append(out / SUMMARY_FILE)

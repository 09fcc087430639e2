"""siamtool's default tracker against trackers people already use, on the same real sequences, in one command.

Trackers (all one-pass from the frame-1 ground truth, on every sequence of ``../shared/data/real_lasot``):

* siamtool's tracker (default: the shipped checkpoint) with the PyTorch and the onnxruntime backends,
  in this process, through `siamtool.eval.runner.run_tracker` (the exact code of `siamtool eval`);
* OpenCV's CSRT and KCF, and the pretrained NanoTrack v2 (``cv2.TrackerNano``) and VitTrack
  (``cv2.TrackerVit``) with the models in ``../shared/data/peer_models/``, run by
  ``benchmarks/peers_opencv.py`` in the interpreter given by ``--peers-python`` (an environment with
  opencv-contrib-python-headless, which conflicts with siamtool's opencv-python in one environment).

With the onnxruntime backend, two more siamtool trackers show what the speed work of issue 14 gave, in
the same run: "siamtool before #14" is the same tracker with the per-frame path and search graph it
replaced (the whole-frame resize before the crop, the reversed-view BGR->RGB copy, timm's runtime-padded
convolutions: `track_profile.LEGACY` and `track_profile.legacy_export`), and
``--int8 DIR`` adds an int8 export (`siamtool export --int8`, DIR = OUT/int8). The "Speed" table gives
every siamtool tracker's FPS against the old path and against NanoTrack v2.

Every tracker writes raw results in the LaSOT format (1-based x,y,w,h; frame 1 = GT) and per-frame
tracking times; everything is scored by `siamtool.eval.report.evaluate_results` (success AUC, precision
at 20 px, normalized precision at 0.20, pytracking convention), on all sequences and on the ones held
out of the default model's training (bag-1 and toy-1 were seen in training: see MODEL_CARD.md), and by
GOT-10k's average overlap (AO, `average_overlap`), issue 20's second measure.
FPS = tracked frames / summed tracking time (frame 1 excluded; image reading and JPEG decoding
excluded for every tracker). Threads: ``--threads`` for torch, onnxruntime and OpenCV alike.

The machine is shared, so the trackers are interleaved per sequence (every tracker tracks sequence 1,
then every tracker sequence 2, ...): load changes hit all of them alike. Ratios are against CSRT in
the same run.

    python benchmarks/peers.py --peers-python /work/venv_peers/bin/python
    python benchmarks/peers.py --peers-python PY --checkpoint runs/lite0/best.pt --sequences person-1
    python benchmarks/peers.py --peers-python PY --int8 export/default/int8

Outputs in ``--out``: ``raw/<tracker>/`` (results + per-frame times), ``all/`` and ``held_out/``
(report.json and the success / precision plots of `siamtool eval`), ``peers.md`` (the tables) and
``peers.json``. ``--plot FILE`` copies the held-out success plot there (for the README).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siamtool.data.lasot import Index, LasotSequence, index_lasot  # noqa: E402
from siamtool.errors import SiamtoolError  # noqa: E402
from siamtool.reporting import SilentReporter  # noqa: E402


class StderrLines(SilentReporter):
    """The runner's warnings (a first ONNX export, an export that fails its check) as lines on stderr."""

    def warning(self, text: str, label: str | None = "warning") -> None:
        print(f"{label}: {text}" if label else text, file=sys.stderr, flush=True)

SHARED = REPO.parent / "shared" / "data"
HELD_OUT = ("face-3", "motorcycle-2", "person-1")
"""real_lasot sequences kept out of the default model's training (MODEL_CARD.md)."""
SEEN = ("bag-1", "toy-1")
"""real_lasot sequences the default model was trained on: reported, marked, never the headline."""
OURS = {"torch": "siamtool (PyTorch)", "onnx": "siamtool (onnxruntime)"}
PEERS = {"csrt": "OpenCV-CSRT", "kcf": "OpenCV-KCF", "nano": "NanoTrack-v2", "vit": "VitTrack"}
"""Keys of benchmarks/peers_opencv.py and the folder names it writes."""
BASELINE = "OpenCV-CSRT"
OLD_PATH = "siamtool before #14 (onnxruntime)"
"""The onnxruntime tracker with the pre-issue-14 per-frame functions: the base of the speed ratios."""
RUNNER = Path(__file__).resolve().with_name("peers_opencv.py")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peers-python", type=Path, help="python of an environment with "
                    "opencv-contrib-python-headless (required unless --peers none)")
    ap.add_argument("--checkpoint", type=Path, help="siamtool checkpoint (default: the shipped one)")
    ap.add_argument("--lasot", type=Path, default=SHARED / "real_lasot", help="LaSOT-layout root")
    ap.add_argument("--models", type=Path, default=SHARED / "peer_models", help="NanoTrack/VitTrack models")
    ap.add_argument("--out", type=Path, default=Path("/tmp/siamtool_peers"), help="output folder (its raw/ "
                    "subfolder is replaced: timings are only comparable within one run)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every tracker (default 2)")
    ap.add_argument("--backends", default="torch,onnx", help="siamtool backends: torch,onnx (default both)")
    ap.add_argument("--peers", default="csrt,kcf,nano,vit", help="OpenCV trackers, or 'none'")
    ap.add_argument("--sequences", nargs="*", help="only these sequences (quick checks; default: all)")
    ap.add_argument("--variants", nargs="*", default=[], metavar="NAME:KEY=V[,KEY=V]",
                    help="extra siamtool trackers on onnxruntime with these `--set` overrides, e.g. "
                         "offline:track.online=false online:track.online_weight=1 (ablations; default: none)")
    ap.add_argument("--plot", type=Path, help="also copy the held-out success plot here")
    ap.add_argument("--int8", type=Path, help="also track with this int8 export folder (OUT/int8 of `siamtool export "
                    "--int8`) on onnxruntime (default: none)")
    ap.add_argument("--no-old-path", action="store_true", help="skip 'siamtool before #14' (the per-frame path "
                    "before the speed work, onnxruntime; default: run it when --backends has onnx)")
    return ap.parse_args(argv)


def _choices(text: str, valid: dict[str, str], what: str) -> list[str]:
    keys = [] if text.strip() == "none" else [k.strip() for k in text.split(",") if k.strip()]
    for k in keys:
        if k not in valid:
            raise SiamtoolError(f"--{what}: unknown {k!r}; choose from {', '.join(valid)} (comma-separated)")
    return keys


def select(index: Index, names: list[str] | None) -> Index:
    """The sequences asked for (all when `names` is None), in the index's order."""
    if not names:
        return index
    known = {s.name for s in index.sequences}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SiamtoolError(f"--sequences: {', '.join(unknown)} not in the index (have: {', '.join(sorted(known))})")
    return Index([s for s in index.sequences if s.name in names], [], [])


def manifest(seq: LasotSequence) -> dict:
    """What peers_opencv.py needs of a sequence: frame paths and the frame-1 ground truth (1-based)."""
    return {"name": seq.name, "frames": [str(seq.frame_path(i)) for i in range(seq.n_frames)],
            "init": [float(v) for v in seq.gt[0]]}


def run_peers(python: Path, seq: LasotSequence, raw: Path, models: Path, threads: int, keys: list[str]) -> None:
    """One sequence through the OpenCV trackers, in the other interpreter."""
    path = raw / ".manifests" / f"{seq.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"sequences": [manifest(seq)]}))
    cmd = [str(python), str(RUNNER), str(path), str(raw), "--models", str(models), "--threads", str(threads),
           "--trackers", ",".join(keys)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    for line in done.stderr.splitlines():
        print(f"  {line}", flush=True)
    if done.returncode != 0:
        raise SiamtoolError(f"the OpenCV runner failed (exit {done.returncode}) on {seq.name}: {shlex.join(cmd)}")


def timing(directory: Path, sequences: list[LasotSequence]) -> dict[str, float]:
    """FPS and median ms over the tracked frames (frame 1 and unreadable frames excluded) of a results folder."""
    from siamtool.eval.runner import frames_file, read_frames_file

    times = np.concatenate([read_frames_file(frames_file(directory, s.name))[1:, 1] for s in sequences])
    times = times[times > 0]
    return {"fps": len(times) / (times.sum() / 1e3), "median_ms": float(np.median(times)), "frames": len(times)}


def versions(python: Path | None) -> dict[str, str]:
    import onnxruntime

    out = {"python": platform.python_version(), "torch": torch.__version__, "onnxruntime": onnxruntime.__version__,
           "opencv (siamtool)": cv2.__version__, "cpu": platform.processor() or platform.machine()}
    if python is not None:
        got = subprocess.run([str(python), "-c", "import cv2; print(cv2.__version__)"], capture_output=True, text=True)
        out["opencv-contrib (peers)"] = got.stdout.strip() or "?"
    return out


def markdown(names: list[str], all_rep: dict, held_rep: dict | None, speed: dict[str, dict], seqs: list[LasotSequence],
             runtime: dict[str, str], ao: dict[str, dict[str, float]]) -> str:
    """The README tables: held-out scores first (the fair comparison), all sequences, FPS, per sequence."""
    base = speed.get(BASELINE, {}).get("fps")
    held_names = ", ".join(s.name for s in seqs if s.name in HELD_OUT)
    head = "| tracker | runtime |"
    sep = "| --- | --- |"
    if held_rep is not None:
        head += " held-out AUC | P | P_norm | AO |"
        sep += " ---: | ---: | ---: | ---: |"
    head += f" all {len(seqs)}: AUC | P | P_norm | AO | FPS |" + (f" FPS / {BASELINE} |" if base else "")
    sep += " ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if base else "")
    key = held_rep if held_rep is not None else all_rep
    order = sorted(names, key=lambda n: -key["trackers"][n]["success_auc"])
    rows = [head, sep]
    for n in order:
        row = f"| {n} | {runtime[n]} |"
        if held_rep is not None:
            t = held_rep["trackers"][n]
            row += (f" {t['success_auc']:.1f} | {t['precision_20']:.1f} | {t['norm_precision_20']:.1f} |"
                    f" {ao['held_out'][n]:.1f} |")
        t = all_rep["trackers"][n]
        row += (f" {t['success_auc']:.1f} | {t['precision_20']:.1f} | {t['norm_precision_20']:.1f} |"
                f" {ao['all'][n]:.1f} | {speed[n]['fps']:.1f} |" + (f" {speed[n]['fps'] / base:.2f}x |" if base else ""))
        rows.append(row)
    per = ["", "Success AUC per sequence (* = seen in the default model's training):", "",
           "| tracker | " + " | ".join(s.name + ("*" if s.name in SEEN else "") for s in seqs) + " |",
           "| --- |" + " ---: |" * len(seqs)]
    for n in order:
        ps = all_rep["trackers"][n]["per_sequence"]
        per.append(f"| {n} | " + " | ".join(f"{ps[s.name]['success_auc']:.1f}" for s in seqs) + " |")
    note = (f"Held out of training: {held_names}. " if held_rep is not None else "") + \
        "Scores in percent (pytracking convention; AO = GOT-10k's average overlap, pooled over frames); FPS = tracking call only, frame 1 and JPEG decoding excluded."
    return "\n".join([*rows, "", note + " " + footage_note(seqs), *per]) + "\n"


def footage_note(seqs: list[LasotSequence]) -> str:
    """The frames' and the targets' sizes in pixels, medians and ranges over the sequences: the FPS ratios
    depend on the targets' (CSRT's cost grows with the region around the target, siamtool's crop hardly),
    not on the frames' (docs/benchmarks.md, "Speed against target size and frame size")."""
    def spread(values: list[float]) -> str:
        values = sorted(values)
        return f"{values[len(values) // 2]:.0f} px (median; {values[0]:.0f}-{values[-1]:.0f})"

    targets = [float(np.sqrt(max(s.gt[0, 2] * s.gt[0, 3], 0.0))) for s in seqs]
    return (f"Frames: long side {spread([max(size) for size in frame_sizes(seqs).values()])}; targets in the first "
            f"frame: sqrt(w h) {spread(targets)}, which CSRT's speed, and so the FPS ratios, depend on.")


def frame_sizes(seqs: list[LasotSequence]) -> dict[str, tuple[int, int]]:
    """(width, height) of each sequence's first frame: AO clips boxes to it, and the tables report it."""
    return {s.name: _image_size(s.frame_path(0)) for s in seqs}


@functools.cache
def _image_size(path: Path) -> tuple[int, int]:
    """Decoded once per run, though the AO columns (all, held out) and the tables each ask."""
    frame = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if frame is None:
        raise SiamtoolError(f"{path}: unreadable image; AO needs each sequence's frame size")
    return frame.shape[1], frame.shape[0]


def average_overlap(dirs: dict[str, Path], seqs: list[LasotSequence]) -> dict[str, float]:
    """GOT-10k's AO (percent) of each tracker: IoU pooled over every frame after the first where the target
    is visible, boxes clipped to the image, as the ``got10k`` toolkit scores (absent frames play its cover 0).

    Pooled over frames, not averaged per sequence as success AUC is: a long failure weighs by its length,
    which is why issue 20 asks for it next to AUC.
    """
    from siamtool.eval.metrics import got10k_scores, got10k_sequence_ious
    from siamtool.eval.results import load_tracker_results

    sizes = frame_sizes(seqs)
    out = {}
    for name, directory in dirs.items():
        raw = load_tracker_results(name, directory, seqs).raw
        ious = [got10k_sequence_ious(raw[s.name], s.gt, s.visible.astype(np.int8), sizes[s.name]) for s in seqs]
        out[name] = got10k_scores(np.concatenate(ious))["ao"]
    return out


def _track_profile():
    """benchmarks/track_profile.py, which holds the pre-issue-14 functions and export."""
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:
        sys.path.insert(0, here)
    import track_profile

    return track_profile


@contextlib.contextmanager
def old_path():
    """The Tracker's per-frame functions as they were before issue 14 (`track_profile.LEGACY`)."""
    from siamtool.tracking import tracker as tracker_module

    profile = _track_profile()
    with profile.patched(tracker_module, **profile.LEGACY):
        yield


def speed_ratios(ours: list[str], speed: dict[str, dict]) -> dict[str, dict[str, float]]:
    """Each siamtool tracker's FPS against the old path and against NanoTrack v2 (where they ran)."""
    out = {}
    for n in ours:
        row = {"fps": speed[n]["fps"]}
        for key, base in (("vs_old_path", OLD_PATH), ("vs_nanotrack_v2", PEERS["nano"])):
            if base in speed and base != n:
                row[key] = speed[n]["fps"] / speed[base]["fps"]
        out[n] = row
    return out


def ratio_table(ratios: dict[str, dict[str, float]]) -> str:
    rows = ["Speed (same run): FPS of each siamtool tracker, against the pre-#14 per-frame path and NanoTrack v2:", "",
            f"| tracker | FPS | / {OLD_PATH} | / {PEERS['nano']} |", "| --- | ---: | ---: | ---: |"]
    for n, r in ratios.items():
        cells = [f"{r[k]:.2f}x" if k in r else "-" for k in ("vs_old_path", "vs_nanotrack_v2")]
        rows.append(f"| {n} | {r['fps']:.1f} | {cells[0]} | {cells[1]} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args, argv if argv is not None else sys.argv[1:])
    except SiamtoolError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace, argv: list[str]) -> int:
    from siamtool.cli_render import summary_table
    from siamtool.config import load_config
    from siamtool.eval.report import PLOT_FILES, evaluate_results
    from siamtool.eval.runner import TrackerSpec, run_tracker
    from siamtool.weights import default_checkpoint

    backends = _choices(args.backends, OURS, "backends")
    peers = _choices(args.peers, PEERS, "peers")
    if peers and (args.peers_python is None or not args.peers_python.is_file()):
        raise SiamtoolError(f"--peers-python {args.peers_python}: give the python of an environment with "
                            "opencv-contrib-python-headless (or --peers none)")
    if args.threads < 1:
        raise SiamtoolError(f"--threads must be >= 1, got {args.threads}")
    checkpoint = args.checkpoint if args.checkpoint is not None else default_checkpoint()
    if not checkpoint.exists():
        raise SiamtoolError(f"--checkpoint {checkpoint}: not found")
    torch.set_num_threads(args.threads)  # the onnxruntime backend takes torch's thread count too
    cv2.setNumThreads(args.threads)
    index = select(index_lasot(args.lasot, "all", require_images=True), args.sequences)
    seqs = list(index.sequences)
    raw = args.out / "raw"
    if raw.exists():
        shutil.rmtree(raw)  # per-frame times of an earlier run (other load) must not mix with this one
    raw.mkdir(parents=True)
    command = "python benchmarks/peers.py " + shlex.join(argv)
    load_before = os.getloadavg()
    print(f"{len(seqs)} sequences, {sum(s.n_frames for s in seqs)} frames; checkpoint {checkpoint}; "
          f"{args.threads} threads; load average {load_before[0]:.1f}", flush=True)

    import onnxruntime

    # display name -> (spec, results folder name, runtime)
    ours = {OURS[b]: (TrackerSpec(checkpoint, None, load_config(None, [f"track.backend={b}"])), f"siamtool-{b}",
                      f"PyTorch {torch.__version__.split('+')[0]}" if b == "torch"
                      else f"onnxruntime {onnxruntime.__version__}") for b in backends}
    for text in args.variants:
        label, _, sets = text.partition(":")
        if not label or not sets:
            raise SiamtoolError(f"--variants {text!r}: expected NAME:KEY=V[,KEY=V], e.g. offline:track.online=false")
        cfg = load_config(None, ["track.backend=onnx", *sets.split(",")])
        ours[f"siamtool {label} (onnxruntime)"] = (TrackerSpec(checkpoint, None, cfg), f"siamtool-{label}",
                                                   f"onnxruntime {onnxruntime.__version__}, {sets}")
    if "onnx" in backends and not args.no_old_path:
        before = args.out / "before-14-export"
        shutil.rmtree(before, ignore_errors=True)
        _track_profile().legacy_export(checkpoint, before)
        ours[OLD_PATH] = (TrackerSpec(None, before, load_config(None, ["track.backend=onnx"])), "siamtool-before-14",
                          f"onnxruntime {onnxruntime.__version__}, pre-#14 per-frame path and search graph")
    if args.int8 is not None:
        if not args.int8.is_dir():
            raise SiamtoolError(f"--int8 {args.int8}: folder not found (write it with `siamtool export --int8`)")
        ours["siamtool int8 (onnxruntime)"] = (TrackerSpec(None, args.int8, load_config(None, ["track.backend=onnx"])),
                                               "siamtool-int8", f"onnxruntime {onnxruntime.__version__}, int8")
    start = time.perf_counter()
    for seq in seqs:  # interleaved per sequence: every tracker sees the machine's load of the moment
        for display, (spec, folder, _) in ours.items():
            with old_path() if display == OLD_PATH else contextlib.nullcontext():
                run_tracker(Index([seq], [], []), raw, spec, torch.device("cpu"), "cpu", workers=1, name=folder,
                            reporter=StderrLines())
            t = timing(raw / folder, [seq])
            print(f"{display} {seq.name}: {t['frames']} frames, {t['fps']:.1f} FPS", flush=True)
        if peers:
            run_peers(args.peers_python, seq, raw, args.models, args.threads, peers)
    wall = time.perf_counter() - start
    load_after = os.getloadavg()

    dirs = {**{n: raw / folder for n, (_, folder, _) in ours.items()}, **{PEERS[k]: raw / PEERS[k] for k in peers}}
    names = list(dirs)
    all_rep = evaluate_results(dirs, index, out_dir=args.out / "all", split="real_lasot, all")
    held = [s for s in seqs if s.name in HELD_OUT]
    held_rep = (evaluate_results(dirs, Index(held, [], []), out_dir=args.out / "held_out",
                                 split="real_lasot, held out of training") if held else None)
    speed = {n: timing(dirs[n], seqs) for n in names}
    ao = {"all": average_overlap(dirs, seqs), **({"held_out": average_overlap(dirs, held)} if held else {})}
    runtime = {**{n: rt for n, (_, _, rt) in ours.items()},
               **{PEERS[k]: "OpenCV" + (" DNN" if k in ("nano", "vit") else "") for k in peers}}
    table = markdown(names, all_rep, held_rep, speed, seqs, runtime, ao)
    ratios = speed_ratios([n for n in ours], speed)
    table += "\n" + ratio_table(ratios)

    from rich.console import Console

    console = Console()
    for rep in (held_rep, all_rep):
        if rep is not None:
            console.print(summary_table(rep))
    print(table)
    info = {"command": command, "checkpoint": str(checkpoint), "threads": args.threads, "wall_seconds": wall,
            "load_average_before": load_before, "load_average_after": load_after, "versions": versions(
                args.peers_python if peers else None), "speed": speed, "sequences": [s.name for s in seqs],
            "held_out": [s.name for s in held], "seen_in_training": [s.name for s in seqs if s.name in SEEN],
            "speed_ratios": ratios, "average_overlap": ao}
    footer = (f"\nCommand: `{command}` ({args.threads} threads per tracker; load average {load_before[0]:.1f} "
              f"before, {load_after[0]:.1f} after; {wall:.0f} s).\n")
    (args.out / "peers.md").write_text(table + footer)
    (args.out / "peers.json").write_text(json.dumps(info, indent=2) + "\n")
    plot = (args.out / ("held_out" if held_rep is not None else "all")) / PLOT_FILES["success"]
    if args.plot is not None:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot, args.plot)
        plot = args.plot
    print(f"tables: {args.out / 'peers.md'}; success plot: {plot}; details: {args.out / 'peers.json'}")
    print(f"command: {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

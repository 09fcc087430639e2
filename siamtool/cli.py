"""The `siamtool` command line: Typer commands that parse, resolve the config and call one function.

Known errors (`SiamtoolError`) print as one line and exit 2; anything unexpected prints one line and
exits 1; `-v` shows the traceback. Ctrl-C exits 130 after the job has saved what it can.
"""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup

from siamtool import __version__
from siamtool.errors import SiamtoolError

if TYPE_CHECKING:  # the commands import what they use when they run: `siamtool --help` stays fast
    from siamtool.config import Config


def _plain_help(params: list) -> list:
    """Flags take no value: show none (Typer would print `<bool>` in the value column)."""
    for p in params:
        if getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
    return params


class _Command(TyperCommand):
    """Help as a person reads it: `train [OPTIONS] CONFIG`, not `{config}`; no `<bool>` on flags."""

    def collect_usage_pieces(self, ctx) -> list[str]:
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in super().collect_usage_pieces(ctx)]

    def get_params(self, ctx) -> list:
        return _plain_help(super().get_params(ctx))


class _Group(TyperGroup):
    def get_params(self, ctx) -> list:
        return _plain_help(super().get_params(ctx))

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoist_global_options(args, set(self.commands)))


_GLOBAL_FLAGS = ("-v", "--verbose")
_GLOBAL_VALUED = ("--device",)


def hoist_global_options(args: list[str], commands: set[str]) -> list[str]:
    """`siamtool eval -v ...` as `siamtool -v eval ...`: global options given after the command move before it.

    Users type `-v` where the error appeared, at the end of the command they just ran; Click only accepts
    a group's options before the command name. Nothing after `--` moves, and no command has an option of
    these names, so the move never changes what a command receives.
    """
    start = next((i for i, a in enumerate(args) if a in commands), None)
    if start is None:
        return list(args)
    head, tail, moved = list(args[:start + 1]), [], []
    rest = iter(args[start + 1:])
    for a in rest:
        if a == "--":
            tail += [a, *rest]
            break
        if a in _GLOBAL_FLAGS or a.startswith(tuple(f"{o}=" for o in _GLOBAL_VALUED)):
            moved.append(a)
        elif a in _GLOBAL_VALUED:
            moved += [a, next(rest, "")]
        else:
            tail.append(a)
    return head[:start] + moved + head[start:] + tail


app = typer.Typer(
    name="siamtool",
    help="Siamese single-object tracking: prepare LaSOT shards, train, evaluate, track, export to ONNX.",
    epilog="The workflow, in one folder: siamtool prepare --lasot /data/LaSOT; siamtool train configs/base.yaml; "
           "siamtool eval --split test; siamtool track 0. No dataset yet? siamtool demo.",
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _examples(*lines: str) -> str:
    """A command's epilog: one example command per paragraph (Typer joins single lines)."""
    return "Examples:\n\n" + "\n\n".join(lines)


err = Console(stderr=True)


class State:
    verbose: bool = False
    device: str = "auto"


state = State()


_RESUMABLE = {"prepare", "train", "eval_"}
"""The commands whose Ctrl-C keeps the work done (shards, checkpoints, per-sequence results) and resumes it."""


def handle_errors(fn):
    """Turn user errors into one line and a trustworthy exit code; keep tracebacks for -v."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except SiamtoolError as e:
            if state.verbose:
                raise
            # escape(): a message may quote text in brackets (KIND:ROOT[:SPLIT][@WEIGHT]) that rich would eat.
            err.print(f"[bold red]error:[/] {escape(one_line(str(e)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            if fn.__name__ in _RESUMABLE:
                err.print("[yellow]interrupted[/]: progress so far is saved; run the same command again to resume")
            else:
                err.print(f"[yellow]interrupted[/]: {fn.__name__.rstrip('_')} keeps no partial work; run it again to "
                          "start over")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - the last line of defence for a CLI
            if state.verbose:
                raise
            from siamtool.fileio import io_error_message

            io_line = io_error_message(e)
            if io_line is not None:  # disk full, read-only, permissions: the user's to fix (exit 2)
                err.print(f"[bold red]error:[/] {io_line}", highlight=False, soft_wrap=True)
                raise typer.Exit(2) from None
            err.print(f"[bold red]error:[/] {type(e).__name__}: {one_line(str(e))} (run with -v for the traceback)",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def one_line(message: str) -> str:
    """The line of an error message that says what is wrong.

    An error raised in a DataLoader worker (or a process pool) comes back as "Caught DatasetError in
    DataLoader worker process 0. Original Traceback ... siamtool.errors.DatasetError: <message>": the
    user needs the last line, without the traceback and the class path.
    """
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if len(lines) <= 1:
        return lines[0] if lines else message
    last = lines[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.replace(".", "").replace("_", "").isalnum() and head[:1].isalpha() else last


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Python's warnings as one rendered line (the default format adds the file and the source line)."""
    where = f" ({filename}:{lineno})" if state.verbose else ""
    err.print(f"[yellow]warning:[/] {message}{where}", highlight=False, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"siamtool {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and where warnings come from. "
                                          "Default: off.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")]
    = "auto",
) -> None:
    state.verbose = verbose
    state.device = device
    import warnings

    warnings.showwarning = _show_warning


def _set_option(example: str, what: str = "") -> typer.models.OptionInfo:
    return typer.Option("--set", metavar="KEY=VALUE", help=f"Override a config key{what} (repeatable), e.g. --set "
                        f"{example}. Default: none.")


ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML config over the defaults. Default: built-in defaults.")
]


def _check_out_folder(option: str, path: Path | None) -> None:
    """An output folder that is an existing file is a usage error (exit 2), caught before any work."""
    if path is not None and path.exists() and not path.is_dir():
        raise SiamtoolError(f"{option} {path}: exists and is not a folder; choose a folder (it is created if missing)")
    if path is not None:
        _check_writable(option, path)


def _check_writable(option: str, path: Path) -> None:
    """Files can be created in `path` (or where it will be created): checked before any long work."""
    from siamtool.fileio import check_writable, io_error_message

    try:
        check_writable(path)
    except OSError as e:
        raise SiamtoolError(f"{option} {path}: cannot write in {e.filename} "
                            f"({io_error_message(e, name_file=False) or e.strerror})") \
            from None


# ------------------------------------------------------------------------------------------ prepare


@app.command(cls=_Command, epilog=_examples(
    "siamtool prepare --lasot /data/LaSOT   (the LaSOT training split into ./shards)",
    "siamtool prepare --data lasot:/data/LaSOT:train --data got10k:/data/GOT-10k:train@2 --data stills:/data/coco   "
    "(three sources; GOT-10k gets half the pairs, LaSOT and the still images a quarter each)",
    "siamtool prepare --config configs/got10k.yaml   (GOT-10k's protocol: its train split only)",
    "siamtool prepare --lasot my_videos --split all --out my_shards   (every sequence of a LaSOT-layout folder)",
    "siamtool prepare --show shards   (a PNG grid of stored pairs)"))
@handle_errors
def prepare(
    lasot: Annotated[Path | None, typer.Option("--lasot", help="LaSOT root (ROOT/<class>/<seq>/img/...): the same "
                                               "as --data lasot:DIR; recorded in --out, where `eval` finds it. "
                                               "Default: none (then --data or data.sources).")]
    = None,
    data: Annotated[list[str] | None, typer.Option(
        "--data", metavar="KIND:ROOT[:SPLIT][@WEIGHT]",
        help="A dataset to sample from (repeatable): KIND lasot, got10k, trackingnet, lasot_ext, ... or stills "
             "(COCO-like JSON of still images); SPLIT defaults to --split; WEIGHT (default 1) is the source's "
             "share of the pairs. See docs/data.md for roots with ':'. Default: data.sources of the --config.")]
    = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder for the HDF5 shards.")] = Path("shards"),
    split: Annotated[str, typer.Option("--split", help="The split of a source that names none: train, test or "
                                       "extension (LaSOT's official lists), all (every sequence under the root), "
                                       "or a file of sequence names.")]
    = "train",
    pairs_per_sequence: Annotated[int | None, typer.Option(
        "--pairs-per-sequence", help="Pairs per sequence (on average over the sources: weights move pairs "
                                     "between them). Default: data.pairs_per_sequence (180).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Parallel writer processes. Default: CPU cores.")]
    = None,
    config: ConfigOpt = None,
    set_: Annotated[list[str] | None, _set_option("data.pairs_per_shard=256", " of the data section")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete existing shards in --out and start over. "
                                            "Default: off (resume what is there).")] = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first malformed sequence instead of "
                                         "skipping it. Default: off (skip and list it).")] = False,
    show: Annotated[Path | None, typer.Option("--show", help="Instead of preparing, draw a PNG grid of random "
                                              "pairs from the shards in this folder. Default: off.")] = None,
) -> None:
    """Sample template/search pairs from one or several datasets, pre-crop them and write HDF5 shards (resumable)."""
    from siamtool.cli_render import RichReporter, print_prepare
    from siamtool.data.prepare import prepare_shards
    from siamtool.device import available_cores

    console = Console()
    if show is not None:
        from siamtool.data.preview import write_preview

        console.print(f"wrote {write_preview(show)}", highlight=False)
        return
    cfg = _prepare_config(config, set_ or [], lasot, data or [], pairs_per_sequence)
    _check_writable("--out", out)
    n_workers = available_cores() if workers is None else workers
    if n_workers < 1:
        raise SiamtoolError(f"--workers must be >= 1, got {n_workers}")
    with RichReporter(console) as reporter:
        summary = prepare_shards(None, out, cfg, split=split, workers=n_workers, overwrite=overwrite, strict=strict,
                                 reporter=reporter)
    print_prepare(summary, console)


def _prepare_config(config: Path | None, sets: list[str], lasot: Path | None, data: list[str],
                    pairs_per_sequence: int | None) -> Config:
    """prepare's config: --lasot and --data (in that order) replace data.sources when given."""
    from siamtool.config import SourceSpec, load_config, parse_source

    cfg = load_config(config, sets, sections=("data",), command="prepare")
    given = ([SourceSpec("lasot", str(lasot))] if lasot is not None else []) + [parse_source(d) for d in data]
    if given:
        cfg.data.sources = given
    if not cfg.data.sources:
        raise SiamtoolError("--lasot DIR or --data KIND:ROOT[:SPLIT][@WEIGHT] is required (or data.sources in the "
                            "--config); --show DIR previews shards instead")
    if pairs_per_sequence is not None:
        if pairs_per_sequence <= 0:
            raise SiamtoolError(f"--pairs-per-sequence must be > 0, got {pairs_per_sequence}")
        cfg.data.pairs_per_sequence = pairs_per_sequence
    return cfg


# -------------------------------------------------------------------------------------------- train


@app.command(cls=_Command, epilog=_examples(
    "siamtool train configs/cpu-small.yaml   (a small recipe that trains on a laptop CPU in minutes)",
    "siamtool train configs/base.yaml --shards /data/shards --out runs/vits16   (the GPU recipe, DINOv3 ViT-S/16)",
    "torchrun --nproc_per_node 4 -m siamtool train configs/base.yaml   (4 GPUs)"))
@handle_errors
def train(
    config: Annotated[Path, typer.Argument(metavar="CONFIG", help="Experiment YAML, e.g. configs/cpu-small.yaml; "
                                           "its name names the run folder.")],
    shards: Annotated[Path, typer.Option("--shards", help="Folder of shards written by prepare.")] = Path("shards"),
    out: Annotated[Path | None, typer.Option("--out", help="Run folder. Default: runs/<config name>.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint in --out "
                                         "(--no-resume starts over, replacing its checkpoints and log).")]
    = True,
    set_: Annotated[list[str] | None, _set_option("train.lr=3e-4", " of the data, model, train, track or "
                                                                    "export section")] = None,
) -> None:
    """Train the tracker heads on prepared shards; checkpoints and resumes (multi-GPU: launch with torchrun)."""
    from siamtool.cli_render import RichReporter, print_train
    from siamtool.config import explicit_keys, load_config
    from siamtool.data.shards import load_shard_index, verify_shards
    from siamtool.data.stream import check_compatible
    from siamtool.engine.trainer import train as run_training
    from siamtool.models.backbones import check_weights_available, get_spec

    cfg = load_config(config, set_ or [], sections=("data", "model", "train", "track", "export"), command="train")
    run_dir = out if out is not None else Path("runs") / config.stem
    _check_out_folder("--out", run_dir)
    # Refuse what would fail later, before the run folder exists: an unknown backbone, damaged shards
    # (they would fail in a DataLoader worker, with its traceback) and hub weights this machine cannot
    # get (30 s of retries).
    get_spec(cfg.model.backbone)
    index = load_shard_index(shards)
    verify_shards(index)
    check_weights_available(cfg.model, "model.backbone" in explicit_keys(cfg))
    check_compatible(index, cfg)
    console = Console()
    existed = run_dir.exists()
    try:
        with RichReporter(console) as reporter:
            r = run_training(cfg, shards, run_dir, device=state.device, resume=resume, reporter=reporter)
    except BaseException:
        if not existed:
            _remove_unstarted_run(run_dir)
        raise
    if os.environ.get("RANK", "0") == "0":
        print_train(r, console)


def _remove_unstarted_run(run_dir: Path) -> None:
    """Delete a run folder this command created when the run failed before its first checkpoint.

    Nothing in it could be resumed (config.yaml, the untrained validation, an empty tb/), and an empty
    run folder beside real ones only misleads; a folder with any checkpoint is always kept.
    """
    import shutil

    if os.environ.get("RANK", "0") != "0" or not run_dir.is_dir():
        return
    if (run_dir / "best.pt").exists() or any((run_dir / "checkpoints").glob("*.pt")):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------------- eval


@app.command("eval", cls=_Command, epilog=_examples(
    "siamtool eval --split test   (after prepare and train in this folder: their LaSOT root and newest run)",
    "siamtool eval --lasot /data/LaSOT --checkpoint runs/base/best.pt --workers 2",
    "siamtool eval --lasot /data/LaSOT --results results/ATOM --results results/mine   (score raw results)",
    "siamtool eval --benchmark got10k --root /data/GOT-10k --split val --results results/ATOM   (AO, SR0.50, SR0.75)",
    "siamtool eval --benchmark trackingnet --root /data/TrackingNet --split TEST   (writes the server's zip)",
    "siamtool eval --root /data/OTB100 --results results/ATOM   (the layout is detected)"))
@handle_errors
def eval_(
    lasot: Annotated[Path | None, typer.Option("--lasot", help="LaSOT root (annotations; images only to run a "
                                               "tracker); means --benchmark lasot --root DIR. Default: the root "
                                               "`prepare` recorded in ./shards, else $SIAMTOOL_LASOT, else "
                                               "eval.lasot.")] = None,
    benchmark: Annotated[str | None, typer.Option("--benchmark", metavar="NAME", help="lasot, lasot_ext, got10k, "
                                                  "trackingnet, otb (otb100, otb2013, otb50), uav (uav123, uav20l, "
                                                  "uav123_10fps), nfs or vot. Default: detected from --root, else "
                                                  "lasot.")] = None,
    root: Annotated[Path | None, typer.Option("--root", help="The benchmark's folder as its download unpacks "
                                              "(docs/data.md). Default: the LaSOT root, as for --lasot.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="The benchmark's split (LaSOT: test, train, extension, "
                                              "all; GOT-10k: val, test, train; TrackingNet: TEST, TRAIN_0..11, train; "
                                              "OTB: otb100, otb2013, otb50; UAV: UAV123, UAV20L, UAV123_10fps) or a "
                                              "file of sequence names. Default: its evaluation split.")] = None,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Run this trained tracker (a .pt or a run "
                                                    "folder), then score it. Default: the newest run in ./runs, "
                                                    "else the shipped tracker (when no --onnx/--results).")]
    = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Run an exported tracker (folder from export). "
                                              "Default: none.")] = None,
    results: Annotated[list[Path] | None, typer.Option("--results", metavar="DIR", help="Score existing raw "
                                                       "results: one folder per tracker (repeatable), <seq>.txt or "
                                                       "GOT-10k's <seq>/<seq>_001.txt. Default: none.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder for results, plots and reports.")]
    = Path("results"),
    workers: Annotated[int, typer.Option("--workers", help="Parallel tracking processes on CPU (on CUDA: one "
                                         "process per GPU).")] = 1,
    name: Annotated[str | None, typer.Option("--name", help="Results folder name of the tracker run with "
                                             "--checkpoint/--onnx. Default: <run folder>-<checkpoint stem> "
                                             "(siamtool-default for the shipped tracker).")]
    = None,
    report_json: Annotated[Path | None, typer.Option("--report-json", help="Write the JSON report here. Default: "
                                                     "<out>/report.json.")] = None,
    convention: Annotated[str | None, typer.Option("--convention", help="pytracking or official. Default: "
                                                   "eval.convention (pytracking).")] = None,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Score only the sequences that have "
                                               "annotations and results, and say how many. Default: off (refuse "
                                               "an incomplete split).")] = False,
    config: ConfigOpt = None,
    set_: Annotated[list[str] | None, _set_option("eval.plots=false", " of the eval or track section")] = None,
) -> None:
    """Score trackers on a benchmark: success AUC, precision, normalized precision (GOT-10k: AO, SR), per
    attribute, with plots; GOT-10k test and TrackingNet TEST: the evaluation server's zip."""
    _check_out_folder("--out", out)
    cfg = _eval_config(config, set_, convention, skip_missing)
    if not results and checkpoint is None and onnx is None:
        checkpoint, implied = _default_eval_tracker()
    else:
        implied = []
    kind, root, split = _eval_benchmark(benchmark, root, lasot, split, cfg, implied)
    if checkpoint is not None or onnx is not None:
        _eval_tracker(kind, root, split, out, checkpoint, onnx, cfg, workers, name, results, report_json)
    else:
        _eval_results(kind, root, split, out, cfg, results, report_json)


def _eval_config(config: Path | None, set_: list[str] | None, convention: str | None, skip_missing: bool) -> Config:
    """The config `eval` runs with: --convention and --skip-missing are eval.* keys set from the command line."""
    from siamtool.config import load_config
    from siamtool.eval.metrics import check_convention

    overrides = list(set_ or [])
    if convention is not None:
        check_convention(convention)
        overrides.append(f"eval.convention={convention}")
    if skip_missing:
        overrides.append("eval.skip_missing=true")
    return load_config(config, overrides, sections=("track", "eval"), command="eval")


def _default_eval_tracker() -> tuple[Path, list[str]]:
    """No tracker and no results given: the newest run in ./runs, else the shipped tracker (and why)."""
    from siamtool.weights import default_checkpoint
    from siamtool.workspace import newest_trained_checkpoint

    checkpoint = newest_trained_checkpoint()
    if checkpoint is not None:
        return checkpoint, [f"checkpoint {checkpoint} (the newest run in ./runs; --checkpoint to choose)"]
    return default_checkpoint(), ["the shipped default tracker (no trained run in ./runs)"]


def _eval_benchmark(benchmark: str | None, root: Path | None, lasot: Path | None, split: str | None, cfg: Config,
                    implied: list[str]) -> tuple[str, Path, str]:
    """(kind, root, split) from --benchmark/--root/--lasot/--split; says in one line what `eval` chose itself.

    `--lasot DIR` means `--benchmark lasot --root DIR`; without a root a LaSOT-family benchmark finds its root
    as before (`siamtool.workspace.resolve_lasot`); any other benchmark needs --root.
    """
    from siamtool.data.datasets import default_split, detect_kind, resolve_kind
    from siamtool.workspace import resolve_lasot

    if root is not None and lasot is not None:
        raise SiamtoolError("--lasot DIR and --root DIR both given: --lasot DIR means --benchmark lasot --root DIR; "
                            "pass one of them")
    kind, implied_split = resolve_kind(benchmark) if benchmark else ("lasot", None)
    if root is None and kind in ("lasot", "lasot_ext"):
        root, source = resolve_lasot(lasot, cfg.eval.lasot)
        if source != "--lasot":
            implied.insert(0, f"LaSOT root {root} ({source})")
    elif root is None:
        raise SiamtoolError(f"--benchmark {benchmark} needs --root DIR: the folder its download unpacks to "
                            "(docs/data.md lists each layout)")
    elif benchmark is None:
        kind = detect_kind(root)
        implied.insert(0, f"benchmark {kind} (the layout of {root}; --benchmark to choose)")
    if implied:
        Console().print(f"eval: {'; '.join(implied)}", highlight=False, soft_wrap=True)
    return kind, Path(root), split or implied_split or default_split(kind)


def _eval_tracker(kind: str, root: Path, split: str, out: Path, checkpoint: Path | None, onnx: Path | None,
                  cfg: Config, workers: int, name: str | None, results: list[Path] | None,
                  report_json: Path | None) -> None:
    """`eval --checkpoint/--onnx`: track the split, score it (with any --results beside it), print both; a
    server-scored test split gets its submission zip instead of scores."""
    from siamtool.cli_render import RichReporter, print_lines, print_report
    from siamtool.device import resolve_device
    from siamtool.eval.report import REPORT_FILE, tracker_dirs
    from siamtool.eval.runner import TIMED, TrackerSpec, evaluate_tracker

    with RichReporter(err) as reporter:
        run, report = evaluate_tracker(
            root, split, out, TrackerSpec(checkpoint, onnx, cfg), resolve_device(state.device), state.device,
            workers, name, tracker_dirs(results) if results else None, report_json, reporter=reporter, kind=kind)
    console = Console()
    lines = [f"results: {run.directory} ({run.sequences} sequences, {run.resumed} resumed, "
             f"{run.corrupt_frames} unreadable frames, {run.lost_frames} frames reported lost)",
             f"speed: {run.fps:.1f} FPS per process on {run.device} ({run.processes} process(es) x "
             f"{run.threads} thread(s)); {TIMED}"]
    if run.submission is not None:
        from siamtool.eval.submission import SERVERS

        lines += [f"submission: {run.submission}", f"the {split} split is scored by the benchmark's server: upload "
                  f"the zip at {SERVERS[kind]}; the score comes from the server"]
    if not report:
        print_lines(console, *lines)
        return
    print_report(report, console, kind)
    print_lines(console, *lines, f"report: {report_json or out / REPORT_FILE}")


def _eval_results(kind: str, root: Path, split: str, out: Path, cfg: Config, results: list[Path] | None,
                  report_json: Path | None) -> None:
    """`eval --results`: score existing raw results and print the tables."""
    from siamtool.cli_render import RichReporter, print_lines, print_report
    from siamtool.data.datasets import index_dataset
    from siamtool.eval.report import PLOT_FILES, REPORT_FILE, evaluate_results, tracker_dirs

    index = index_dataset(kind, root, split, require_images=False)
    with RichReporter(err) as reporter:
        report = evaluate_results(
            tracker_dirs(results), index, out_dir=out, report_path=report_json, convention=cfg.eval.convention,
            skip_missing=cfg.eval.skip_missing, split=split, plots=cfg.eval.plots, reporter=reporter,
        )
    console = Console()
    print_report(report, console, kind)
    print_lines(console, f"report: {report_json or out / REPORT_FILE}")
    if cfg.eval.plots:
        print_lines(console, f"plots: {', '.join(str(out / f) for f in PLOT_FILES.values())}")


# -------------------------------------------------------------------------------------------- track


@app.command(cls=_Command, epilog=_examples(
    "siamtool track 0   (webcam: drag a box around the target, Enter to start)",
    "siamtool track video.mp4 --checkpoint runs/base/best.pt",
    "siamtool track video.mp4 --init 198,110,70,178 --no-show --output tracked.mp4 --save-boxes boxes.txt"))
@handle_errors
def track(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Camera index (0), video file, image folder or "
                                          "glob ('frames/*.jpg').")],
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Trained tracker: a .pt written by "
                                                    "`siamtool train` (or its run folder). Default: the "
                                                    "shipped tracker (see `siamtool demo`).")] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Exported tracker folder (onnxruntime backend). "
                                              "Default: none.")] = None,
    init: Annotated[str | None, typer.Option("--init", help="Initial box X,Y,W,H in pixels (0-based). Required "
                                             "headless; default: draw it with the mouse.")] = None,
    no_show: Annotated[bool, typer.Option("--no-show", help="Run headless (no window; needs --init). Default: off "
                                          "(a window when a display exists).")] = False,
    output: Annotated[Path | None, typer.Option("--output", help="Write the annotated video here (.mp4: mp4v, "
                                                ".avi: MJPG). Default: none.")] = None,
    save_boxes: Annotated[Path | None, typer.Option("--save-boxes", help="Write one line per frame here: "
                                                    "x,y,w,h,score,lost (0-based pixels; lost is 0 or 1). "
                                                    "Default: none.")] = None,
    fast: Annotated[bool, typer.Option("--fast", help="In the window, play a video file as fast as it tracks. "
                                       "Default: off (at the video's own frame rate).")] = False,
    config: ConfigOpt = None,
    set_: Annotated[list[str] | None, _set_option("track.window_influence=0.2", " of the track section")] = None,
) -> None:
    """Track an object interactively (draw a box; space pause, r re-select, q quit) or headless (--init)."""
    from siamtool.app.track import track_source
    from siamtool.cli_render import RichReporter, print_lines
    from siamtool.config import load_config
    from siamtool.device import resolve_device
    from siamtool.weights import resolve_checkpoint

    cfg = load_config(config, set_ or [], sections=("track",), command="track")
    for option, path in (("--output", output), ("--save-boxes", save_boxes)):
        if path is not None:
            _check_writable(option, path.parent)
    checkpoint = resolve_checkpoint(checkpoint, onnx)
    with RichReporter(err) as reporter:
        summary = track_source(source, cfg, resolve_device(state.device), checkpoint=checkpoint, onnx=onnx,
                               init=init, no_show=no_show, output=output, save_boxes=save_boxes, reporter=reporter,
                               fast=fast)
    console = Console()
    if summary.quit_before_start:
        console.print("no box selected: nothing tracked")
        return
    print_lines(console, f"tracked {summary.frames} frames ({summary.lost_frames} lost, {summary.skipped} "
                         f"unreadable skipped) at {summary.tracking_fps:.1f} FPS (tracking only: crop + forward + "
                         "decode)", *(f"wrote {path}" for path in summary.outputs))
    if summary.interrupted:
        err.print("[yellow]stopped by Ctrl-C[/]: the outputs above hold every frame tracked so far")
        raise typer.Exit(130)


# ------------------------------------------------------------------------------------------- export


@app.command(cls=_Command, epilog=_examples(
    "siamtool export runs/base/best.pt --out export/base",
    "siamtool export runs/vits16 --fp16 --set model.weights=/models/dinov3-vits16   (backbone weights on this "
    "machine)",
    "siamtool export --out export/default --int8 --calibration ../shared/data/train_real   (then: siamtool track "
    "--onnx export/default/int8 ...)",
    "siamtool export runs/vits16 --out export/vits16 --int8   (dynamic int8 for a ViT backbone)"))
@handle_errors
def export(
    checkpoint: Annotated[Path | None, typer.Argument(metavar="CHECKPOINT", help="Trained tracker: a .pt written "
                                                      "by `siamtool train` (or its run folder). Default: the shipped "
                                                      "tracker.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder for template.onnx and search.onnx.")]
    = Path("export"),
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (17..20). Default: export.opset (17).")]
    = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write fp16 graphs (in OUT/fp16/) for GPU runtimes. "
                                       "Default: off.")] = False,
    tolerance: Annotated[float | None, typer.Option("--tolerance", help="Largest onnxruntime - PyTorch difference "
                                                    "allowed: scores absolute, boxes relative to the box size, "
                                                    "features relative to their scale. Default: export.tolerance "
                                                    "(1e-4).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write OUT/int8/: the search graph quantized to int8 "
                                       "by onnxruntime, for the CPU: static with --calibration (convolutional "
                                       "backbones; layers finer than stride 8 stay float32), dynamic without "
                                       "(the matrix products of ViT backbones). Faster, less accurate; track with "
                                       "it by --onnx OUT/int8 (docs/export.md). Default: off.")] = False,
    calibration: Annotated[Path | None, typer.Option("--calibration", help="With --int8: a LaSOT-layout folder "
                                                     "whose sequences give the calibration crops of static "
                                                     "quantization (the model's validation sequences are "
                                                     "skipped). Default: none (dynamic quantization).")] = None,
    set_: Annotated[list[str] | None, _set_option("model.weights=/models/dinov3-vits16",
                                                  " of the checkpoint's config")] = None,
) -> None:
    """Export the tracker to two ONNX graphs and check them against onnxruntime (exit 1 above --tolerance).

    --set applies to the checkpoint's config, e.g. --set model.weights=/models/dinov3-vits16 to find the
    backbone weights on this machine.
    """
    from siamtool.cli_render import RichReporter, print_export
    from siamtool.export.onnx import export_checkpoint
    from siamtool.weights import default_checkpoint

    _check_out_folder("--out", out)
    if calibration is not None and not int8:
        raise SiamtoolError("--calibration is only used with --int8")
    if calibration is not None and not calibration.is_dir():
        raise SiamtoolError(f"--calibration {calibration}: folder not found")
    if checkpoint is None:
        checkpoint = default_checkpoint()
    with err.status("exporting") as spinner, RichReporter(err, spinner) as reporter:
        result = export_checkpoint(checkpoint, out, opset=opset, fp16=fp16 or None, tolerance=tolerance,
                                   overrides=set_ or [], reporter=reporter)
    print_export(result, Console())
    if not result.passed:
        worst = max(result.pairs, key=lambda p: p.max_diff - p.tolerance)
        err.print(f"[bold red]error:[/] onnxruntime differs from PyTorch by {worst.max_diff:.3g} > tolerance "
                  f"{worst.tolerance:g} ({worst.precision}); graphs kept for inspection in "
                  f"{out / 'rejected'} (graphs already in {out}, if any, are untouched)", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    if int8:
        _export_int8(out, calibration)


def _export_int8(out: Path, calibration: Path | None) -> None:
    """`export --int8`: quantize the export in `out` (static with `calibration`, else dynamic); exit 1 when
    the int8 graph is too far from fp32."""
    from siamtool.cli_render import RichReporter
    from siamtool.export.quantize import quantize_export

    with err.status("quantizing") as spinner, RichReporter(err, spinner) as reporter:
        q = quantize_export(out, calibration, reporter=reporter)
    d = q.diffs
    how = (f"calibrated on {q.calibration_crops} crops of {len(q.sequences)} sequences" if q.mode == "static"
           else "dynamic: activations quantized at run time")
    line = (f"int8 search graph ({q.quantized_nodes} layers int8, {how}); vs fp32: score {d['score']:.2g}, "
            f"boxes {d['boxes']:.2g} of the crop, score peak moved on {d['peak_moved']:.0%} of the crops")
    if not q.passed:
        err.print(f"[bold red]error:[/] {line}: score difference above {q.tolerance:g}, int8 graphs not "
                  "written", highlight=False, soft_wrap=True)
        raise typer.Exit(1)
    Console().print(f"{q.folder}: {line}", highlight=False, soft_wrap=True)


# --------------------------------------------------------------------------------------------- demo


@app.command(cls=_Command, epilog=_examples(
    "siamtool demo   (render a clip, track it with the shipped tracker, score it)",
    "siamtool demo --seed 3 --frames 600 --out demo3",
    "siamtool demo --video walk.mp4 --init 198,110,70,178"))
@handle_errors
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder: clip.avi, groundtruth.txt, demo.mp4, "
                                      "boxes.txt, summary.json.")] = Path("siamtool-demo"),
    video: Annotated[Path | None, typer.Option("--video", help="Track this video instead of the rendered clip "
                                               "(needs --init; no score). Default: none.")] = None,
    init: Annotated[str | None, typer.Option("--init", help="With --video: the target's box X,Y,W,H in the first "
                                             "frame (0-based pixels). Default: none.")] = None,
    frames: Annotated[int, typer.Option("--frames", help="Length of the rendered clip.")] = 300,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the rendered clip (another seed, another clip).")]
    = 0,
    avi: Annotated[bool, typer.Option("--avi", help="Write demo.avi (MJPG) instead of demo.mp4 (mp4v). "
                                      "Default: off.")] = False,
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Trained tracker .pt. Default: the "
                                                    "shipped tracker.")] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Exported tracker folder instead of a checkpoint. "
                                              "Default: none.")] = None,
    config: ConfigOpt = None,
    set_: Annotated[list[str] | None, _set_option("track.backend=torch", " of the track section")] = None,
) -> None:
    """Run the shipped tracker headless on a rendered clip (or --video), write an annotated video, print the score."""
    from siamtool.app.demo import run_demo
    from siamtool.cli_render import RichReporter, print_demo
    from siamtool.config import load_config
    from siamtool.device import resolve_device

    if seed < 0:
        raise SiamtoolError(f"--seed must be >= 0, got {seed} (each seed renders another clip)")
    _check_out_folder("--out", out)
    cfg = load_config(config, set_ or [], sections=("track",), command="demo")
    with err.status("starting") as spinner, RichReporter(err, spinner) as reporter:
        summary = run_demo(cfg, resolve_device(state.device), out, checkpoint=checkpoint, onnx=onnx, video=video,
                           init=init, frames=frames, seed=seed, avi=avi, reporter=reporter)
    print_demo(summary, Console())
    if summary.track.interrupted:
        err.print("[yellow]stopped by Ctrl-C[/]: the outputs above hold every frame tracked so far")
        raise typer.Exit(130)


# ---------------------------------------------------------------------------------------------- vot


@app.command(cls=_Command, epilog=_examples(
    "trackers.ini:  [siamtool]  label = siamtool  protocol = trax  command = siamtool vot",
    "vot test siamtool   (in the folder of trackers.ini: the toolkit's dummy sequence)",
    "command = siamtool vot --checkpoint runs/base/best.pt --set track.window_influence=0.2"))
@handle_errors
def vot(
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Tracker: a .pt written by `siamtool train`, "
                                                    "its run folder, or a folder written by `siamtool export`. "
                                                    "Default: the shipped tracker.")] = None,
    runtime: Annotated[str, typer.Option("--runtime", help="auto (onnxruntime on CPU, PyTorch on CUDA), torch, onnx "
                                         "or opencv.")] = "auto",
    set_: Annotated[list[str] | None, _set_option("track.window_influence=0.2", " of the track section")] = None,
    log: Annotated[Path | None, typer.Option("--log", help="Write libtrax's protocol log here. Default: none.")]
    = None,
) -> None:
    """Serve the tracker over TraX for the VOT toolkit (started by it; stdin/stdout are the protocol)."""
    from siamtool.cli_render import RichReporter
    from siamtool.integrations.vot import serve

    with RichReporter(err) as reporter:
        serve(checkpoint, overrides=set_ or [], device=state.device, runtime=runtime, reporter=reporter,
              log=str(log) if log else False)


def act_on_ctrl_c() -> None:
    """Make Ctrl-C (SIGINT) raise KeyboardInterrupt even when this process inherited it as ignored.

    A process started in the background by a non-interactive shell (`siamtool prepare ... &` in a script,
    a CI step or a tool that backgrounds its commands) inherits SIGINT as ignored, and Python then never
    installs its KeyboardInterrupt handler: Ctrl-C or `kill -INT` was silently ignored and the run went on
    (issue 23: the prepare Ctrl-C test failed whenever the test suite itself ran in the background, whose
    subprocesses inherit the same). Every siamtool command stops cleanly on Ctrl-C, saving what it did
    (exit 130, the same command resumes), so interrupting is always safe and is honoured here. Worker
    processes still ignore SIGINT on purpose (the main process owns Ctrl-C and cleans up).
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def main() -> None:
    """Console-script entry point."""
    act_on_ctrl_c()
    app(prog_name="siamtool")


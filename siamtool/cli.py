"""The `siamtool` command line: Typer commands that parse, resolve the config and call one function.

Known errors (`SiamtoolError`) print as one line and exit 2; anything unexpected prints one line and
exits 1; `-v` shows the traceback. Ctrl-C exits 130 after the job has saved what it can.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from siamtool import __version__
from siamtool.errors import NotImplementedYet, SiamtoolError

app = typer.Typer(
    name="siamtool",
    help="Siamese single-object tracking: prepare LaSOT shards, train, evaluate, track, export to ONNX.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
err = Console(stderr=True)


class State:
    verbose: bool = False
    device: str = "auto"


state = State()


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
            err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(e.exit_code) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/]: progress so far is saved; run the same command again to resume")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - the last line of defence for a CLI
            if state.verbose:
                raise
            err.print(f"[bold red]error:[/] {type(e).__name__}: {e} (run with -v for the traceback)",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _version(value: bool) -> None:
    if value:
        typer.echo(f"siamtool {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show tracebacks and debug output.")] = False,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")]
    = "auto",
) -> None:
    state.verbose = verbose
    state.device = device


SetOpt = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set train.lr=3e-4 (repeatable). Default: none."),
]
ConfigOpt = Annotated[
    Path | None, typer.Option("--config", help="YAML config over the defaults. Default: built-in defaults.")
]


def _default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------ prepare


@app.command()
@handle_errors
def prepare(
    lasot: Annotated[Path | None, typer.Option("--lasot", help="LaSOT root (ROOT/<class>/<seq>/img/...). Required "
                                               "unless --show.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder for the HDF5 shards.")] = Path("shards"),
    split: Annotated[str, typer.Option("--split", help="train, test, extension, all, or a file of sequence names.")]
    = "train",
    pairs_per_sequence: Annotated[int | None, typer.Option(
        "--pairs-per-sequence", help="Pairs per sequence. Default: data.pairs_per_sequence (180).")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Parallel writer processes. Default: CPU cores.")]
    = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete existing shards in --out and start over.")]
    = False,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first malformed sequence instead of "
                                         "skipping it.")] = False,
    show: Annotated[Path | None, typer.Option("--show", help="Instead of preparing, draw a PNG grid of random "
                                              "pairs from the shards in this folder.")] = None,
) -> None:
    """Sample template/search pairs from LaSOT, pre-crop them and write HDF5 shards (resumable)."""
    raise NotImplementedYet("siamtool prepare: not implemented yet")


# -------------------------------------------------------------------------------------------- train


@app.command()
@handle_errors
def train(
    config: Annotated[Path, typer.Argument(help="Experiment YAML, e.g. configs/base.yaml.")],
    shards: Annotated[Path, typer.Option("--shards", help="Folder of shards written by prepare.")] = Path("shards"),
    out: Annotated[Path | None, typer.Option("--out", help="Run folder. Default: runs/<config name>.")] = None,
    resume: Annotated[bool, typer.Option("--resume/--no-resume", help="Continue from the last checkpoint in --out.")]
    = True,
    set_: SetOpt = None,
) -> None:
    """Train the tracker heads on prepared shards; checkpoints and resumes."""
    raise NotImplementedYet("siamtool train: not implemented yet")


# --------------------------------------------------------------------------------------------- eval


@app.command("eval")
@handle_errors
def eval_(
    lasot: Annotated[Path | None, typer.Option("--lasot", help="LaSOT root (annotations; images only for "
                                               "--checkpoint/--onnx).")] = None,
    split: Annotated[str, typer.Option("--split", help="test, train, extension, all, or a file of sequence names.")]
    = "test",
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Run this trained tracker, then score it.")]
    = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Run an exported tracker (folder from export).")]
    = None,
    results: Annotated[list[Path] | None, typer.Option("--results", help="Score existing raw results: one folder "
                                                       "per tracker (repeatable).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder for results, plots and reports.")]
    = Path("results"),
    workers: Annotated[int, typer.Option("--workers", help="Parallel tracking processes (CPU).")] = 1,
    report_json: Annotated[Path | None, typer.Option("--report-json", help="Write the JSON report here. Default: "
                                                     "<out>/report.json.")] = None,
    convention: Annotated[str | None, typer.Option("--convention", help="pytracking or official. Default: "
                                                   "eval.convention (pytracking).")] = None,
    skip_missing: Annotated[bool, typer.Option("--skip-missing", help="Score only the sequences that have results.")]
    = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Score trackers on LaSOT: success AUC, precision, normalized precision, per attribute, with plots."""
    raise NotImplementedYet("siamtool eval: not implemented yet")


# -------------------------------------------------------------------------------------------- track


@app.command()
@handle_errors
def track(
    source: Annotated[str, typer.Argument(help="Camera index (0), video file, image folder or glob.")],
    checkpoint: Annotated[Path | None, typer.Option("--checkpoint", help="Trained tracker. Default: the model "
                                                    "shipped with siamtool.")] = None,
    onnx: Annotated[Path | None, typer.Option("--onnx", help="Exported tracker folder (onnxruntime backend).")]
    = None,
    init: Annotated[str | None, typer.Option("--init", help="Initial box X,Y,W,H in pixels (0-based). Required "
                                             "headless; default: draw it with the mouse.")] = None,
    no_show: Annotated[bool, typer.Option("--no-show", help="Run headless (no window).")] = False,
    output: Annotated[Path | None, typer.Option("--output", help="Write the annotated video here (.mp4/.avi).")]
    = None,
    save_boxes: Annotated[Path | None, typer.Option("--save-boxes", help="Write x,y,w,h,score per frame here.")]
    = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Track an object interactively (draw a box) or headless (--init)."""
    raise NotImplementedYet("siamtool track: not implemented yet")


# ------------------------------------------------------------------------------------------- export


@app.command()
@handle_errors
def export(
    checkpoint: Annotated[Path | None, typer.Argument(help="Trained tracker. Default: the shipped model.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder for template.onnx and search.onnx.")]
    = Path("export"),
    opset: Annotated[int | None, typer.Option("--opset", help="ONNX opset (>= 17). Default: export.opset (17).")]
    = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write fp16 graphs for GPU runtimes.")] = False,
    tolerance: Annotated[float | None, typer.Option("--tolerance", help="Max |onnxruntime - PyTorch| allowed. "
                                                    "Default: export.tolerance (1e-4).")] = None,
) -> None:
    """Export the tracker to two ONNX graphs and check them against onnxruntime."""
    raise NotImplementedYet("siamtool export: not implemented yet")


def main() -> None:
    """Console-script entry point."""
    app(prog_name="siamtool")


"""Everything the command line draws: the rich `Reporter` the jobs report through, and the summary tables.

The library reports through `siamtool.reporting.Reporter` and returns summaries; this module is the one
place that turns them into text on a terminal, so prepare, train, eval, track and export look alike: a
status is a plain line (or the text of a spinner), a warning is a yellow line, and each progress task
has one bar whose columns are chosen here (`BARS`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
)
from rich.status import Status
from rich.table import Table
from rich.text import Text

from siamtool.app.demo import DemoSummary
from siamtool.data.prepare import PrepareSummary
from siamtool.engine.trainer import TrainResult
from siamtool.eval.report import BENCHMARK_TITLES, attribute_note
from siamtool.export.onnx import ExportResult
from siamtool.weights import is_default

# ------------------------------------------------------------------------------------------ reporter


class _Speed(ProgressColumn):
    def render(self, task) -> Text:  # type: ignore[no-untyped-def]
        return Text(f"{task.speed or 0:,.0f} pairs/s", style="progress.data.speed")


@dataclass(frozen=True)
class Bar:
    """How one progress task is drawn: its columns, whether it vanishes when done, and whether it is
    drawn on a console that is not a terminal (a log file gets no bar)."""

    columns: Callable[[], tuple[ProgressColumn, ...]]
    transient: bool = True
    terminal_only: bool = False


BARS: dict[str, Bar] = {
    "pairs": Bar(lambda: (TextColumn("[progress.description]{task.description}"), BarColumn(),
                          MofNCompleteColumn(), _Speed(), TextColumn("eta"), TimeRemainingColumn()), transient=False),
    "train": Bar(lambda: (TextColumn("[bold]train[/]"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          TextColumn("{task.fields[detail]}")), transient=False),
    "feature cache": Bar(lambda: (TextColumn("[bold]feature cache[/]"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn()), transient=False),
    "frames": Bar(lambda: (TextColumn("tracking"), BarColumn(), MofNCompleteColumn(), TextColumn("frames"),
                           TimeRemainingColumn())),
    "results": Bar(lambda: (TextColumn("reading {task.fields[detail]}"), BarColumn(), MofNCompleteColumn(),
                            TimeRemainingColumn()), terminal_only=True),
}
"""The bar of each progress task the jobs report (`Reporter.progress(task, ...)`)."""


LOG_EVERY_S = 30.0
"""On a console that is not a terminal (a log file, CI), a progress line at most this often per task."""


@dataclass
class _Count:
    """A task's progress as a log file sees it: counted here because a rich bar on a non-terminal
    console draws only once, when it stops (a 20-minute feature cache showed nothing until its end)."""

    start: float
    last: float
    done: float = 0.0
    total: float | None = None
    detail: str = ""
    shown: float = -1.0
    """`done` when the last line was printed."""

    def line(self, task: str, now: float) -> str:
        elapsed = now - self.start
        text = f"{task}: {self.done:,.0f}"
        if self.total:
            text += f"/{self.total:,.0f} ({100 * self.done / self.total:.0f} %)"
        text += f", {_duration(elapsed)}"
        if self.total and 0 < self.done < self.total:
            text += f", about {_duration(elapsed * (self.total - self.done) / self.done)} left"
        return text + (f"  {self.detail}" if self.detail else "")


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


class RichReporter:
    """A `Reporter` drawn on a rich console; use it as a context manager so its bars are closed.

    Statuses print as lines, or update `spinner` when one is given (until the first bar replaces it).
    Bars follow `BARS`; a task not listed there gets a plain bar. On a console that is not a terminal
    the bars become plain lines: one every `LOG_EVERY_S` per task and one when it completes.
    """

    def __init__(self, console: Console, spinner: Status | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.console = console
        self.spinner = spinner
        self.clock = clock
        self._bars: dict[str, tuple[Progress, TaskID] | None] = {}
        self._counts: dict[str, _Count] = {}

    def status(self, text: str) -> None:
        if self.spinner is not None:
            self.spinner.update(text)
        else:
            self.console.print(text, highlight=False, soft_wrap=True)

    def warning(self, text: str, label: str | None = "warning") -> None:
        line = f"[yellow]{label}:[/] {text}" if label else f"[yellow]{text}[/]"
        self.console.print(line, highlight=False, soft_wrap=True)

    def progress(self, task: str, *, advance: int = 0, completed: int | None = None, total: int | None = None,
                 detail: str | None = None) -> None:
        if not self.console.is_terminal:
            self._log(task, advance, completed, total, detail)
            return
        bar = self._bars[task] if task in self._bars else self._start(task)
        if bar is None:
            return
        progress, task_id = bar
        fields: dict[str, Any] = {} if detail is None else {"detail": detail}
        progress.update(task_id, advance=advance or None, completed=completed, total=total, **fields)

    def _log(self, task: str, advance: int, completed: int | None, total: int | None, detail: str | None) -> None:
        if task in BARS and BARS[task].terminal_only:
            return
        now = self.clock()
        count = self._counts.setdefault(task, _Count(start=now, last=now))
        count.done = count.done + advance if completed is None else completed
        count.total = count.total if total is None else total
        count.detail = count.detail if detail is None else detail
        complete = bool(count.total) and count.done >= count.total  # type: ignore[operator]
        if (complete and count.shown != count.done) or (not complete and now - count.last >= LOG_EVERY_S):
            count.last, count.shown = now, count.done
            print_lines(self.console, count.line(task, now))

    def _start(self, task: str) -> tuple[Progress, TaskID] | None:
        style = BARS.get(task, Bar(lambda: (TextColumn(task), BarColumn(), MofNCompleteColumn())))
        if style.terminal_only and not self.console.is_terminal:
            self._bars[task] = None
            return None
        if self.spinner is not None:
            self.spinner.stop()
        self._stop_bars()  # one live display at a time: a new task ends the previous bar
        progress = Progress(*style.columns(), console=self.console, transient=style.transient)
        progress.start()
        self._bars[task] = (progress, progress.add_task(task, total=None, detail=""))
        return self._bars[task]

    def _stop_bars(self) -> None:
        for task, bar in self._bars.items():
            if bar is not None:
                bar[0].stop()
                self._bars[task] = None

    def close(self) -> None:
        """Stop every bar (a transient bar vanishes, the others stay as their last frame); on a log, the
        last line of each task that did not complete (interrupted, or its total was never known)."""
        self._stop_bars()
        self._bars.clear()
        now = self.clock()
        for task, count in self._counts.items():
            if count.done and count.shown != count.done:
                print_lines(self.console, count.line(task, now))
        self._counts.clear()

    def __enter__(self) -> RichReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def print_lines(console: Console, *lines: str) -> None:
    """Lines of a command's summary, as written (no highlighting, no wrapping inside paths)."""
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


# ------------------------------------------------------------------------------------- summaries


def _key_value_table(rows: list[tuple[str, str]]) -> Table:
    table = Table(show_header=False, box=None, pad_edge=False)
    for key, value in rows:
        table.add_row(key, value)
    return table


def print_prepare(s: PrepareSummary, console: Console) -> None:
    """What `prepare` wrote, what it resumed and what it skipped."""
    rows = [("shards", f"{s.out} ({s.shards} files, {s.resumed} resumed)"),
            ("pairs", f"{s.pairs:,} ({s.pairs_made:,} written now, {s.pairs_per_second:,.0f} pairs/s)")]
    rows += [(f"  {kind}", f"{n:,}") for kind, n in s.kinds.items()]
    if len(s.sources) > 1:
        rows += [(f"  from {src['label']}", f"{src['pairs']:,} (weight {src['weight']:g}, {src['share']:.0%} of the "
                  f"pairs; {src['root']}{':' + src['split'] if src['split'] else ''})") for src in s.sources]
    rows += [("bytes", f"{s.bytes / 1e6:,.1f} MB ({s.bytes_per_pair / 1e3:.1f} kB/pair)"),
             ("skipped frames", f"{len(s.skipped_frames)} unreadable images, {len(s.boxless_frames)} visible "
                                "frames without a usable box"),
             ("skipped sequences", f"{len(s.skipped_sequences)}"),
             ("validation sequences", f"{len(s.val_sequences)} (own shards)" if s.val_sequences
              else "none (train holds out the last shards)"),
             ("time", f"{s.seconds:.1f} s")]
    console.print(_key_value_table(rows))
    for line in s.skipped_frames:
        console.print(f"[yellow]skipped frame:[/] {line}", highlight=False, soft_wrap=True)
    for line in s.skipped_sequences:
        console.print(f"[yellow]skipped sequence:[/] {line}", highlight=False, soft_wrap=True)


def print_train(r: TrainResult, console: Console) -> None:
    """Where the run is, how far it got and how good its best checkpoint is."""
    rows = [("run", str(r.out_dir)),
            ("steps", f"{r.step}/{r.total_steps} ({r.epochs_done} epochs)"
             + (f", resumed at {r.resumed_from}" if r.resumed_from is not None else ""))]
    if r.baseline is not None:
        rows.append(("untrained", f"val IoU {r.baseline['val_iou']:.3f}, centre error "
                                  f"{r.baseline['val_center_err']:.1f} px"))
    if r.last_val is not None:
        rows.append(("last epoch", f"val loss {r.last_val['val_loss']:.4f}, IoU {r.last_val['val_iou']:.3f}, "
                                   f"centre error {r.last_val['val_center_err']:.1f} px"))
    elif r.resumed_from is not None:
        rows.append(("note", "already trained to train.epochs; raise it or pass --no-resume to start over"))
    rows.append(("best", f"{r.best_path} (val IoU {r.best_val_iou:.3f})" if r.best_path else "-"))
    rows.append(("checkpoint", str(r.last_checkpoint)))
    console.print(_key_value_table(rows))


def summary_table(report: dict[str, Any], benchmark: str = "lasot") -> Table:
    """Tracker, AUC, P_norm, P, sequences: best AUC first, four decimals (the toolkits' numbers exactly).

    GOT-10k adds its official AO, SR0.50 and SR0.75 (and sorts by AO)."""
    bench = BENCHMARK_TITLES.get(benchmark, benchmark)
    table = Table(title=f"{bench} {report['split']} ({report['convention']} convention)")
    table.add_column("tracker")
    trackers = report["trackers"]
    got10k = all("ao" in t for t in trackers.values())
    columns = (("ao", "AO"), ("sr50", "SR0.50"), ("sr75", "SR0.75")) if got10k else ()
    columns += (("success_auc", "AUC"), ("norm_precision_20", "P_norm"), ("precision_20", "P"))
    for _, title in columns:
        table.add_column(title, justify="right")
    table.add_column("sequences", justify="right")
    for name in sorted(trackers, key=lambda n: -trackers[n][columns[0][0]]):
        t = trackers[name]
        table.add_row(name, *(f"{t[key]:.4f}" for key, _ in columns), str(t["sequences"]))
    return table


def attribute_table(report: dict[str, Any]) -> Table | None:
    """Success AUC per attribute (LaSOT, OTB or UAV) and tracker (None when the sequences carry none)."""
    trackers = report["trackers"]
    first = next(iter(trackers.values()))["per_attribute"]
    if not first:
        return None
    table = Table(title="Success AUC per attribute")
    table.add_column("attribute")
    table.add_column("seqs", justify="right")
    names = sorted(trackers, key=lambda n: -trackers[n]["success_auc"])
    for name in names:
        table.add_column(name, justify="right")
    for code, entry in first.items():
        if not entry["sequences"]:
            continue
        row = [f"{code} {entry['name']}", str(entry["sequences"])]
        row += [f"{trackers[n]['per_attribute'][code]['success_auc']:.2f}" for n in names]
        table.add_row(*row)
    return table


def print_report(report: dict[str, Any], console: Console, benchmark: str = "lasot") -> None:
    """The summary table, then the per-attribute table (`benchmark`: a `siamtool.data.datasets` kind)."""
    console.print(summary_table(report, benchmark))
    attrs = attribute_table(report)
    if attrs is not None:
        console.print(attrs)
    note = attribute_note(report, benchmark)
    if note:
        console.print(f"[yellow]note:[/] {note}", highlight=False, soft_wrap=True)


def print_export(result: ExportResult, console: Console) -> None:
    """Where the graphs are, their size, and how far onnxruntime is from PyTorch."""
    for p in result.pairs:
        unit = ("boxes as a fraction of the crop" if p.precision == "fp16" else
                "score absolute, boxes relative to the box size, features relative to their scale")
        diffs = ", ".join(f"{k} {v:.2g}" for k, v in sorted(p.diffs.items()))
        verdict = "[green]ok[/]" if p.passed else "[bold red]FAILED[/]"
        console.print(f"{p.precision}: {p.template_path} + {p.search_path.name} ({p.bytes / 1e6:.1f} MB); max "
                      f"|onnxruntime - PyTorch|: {diffs} ({unit}); tolerance {p.tolerance:g}: {verdict}",
                      highlight=False, soft_wrap=True)
    console.print(f"opset {result.opset}, export id {result.export_id[:12]}, checked at batch 2 on {result.sample} "
                  f"with {result.provider} in {result.seconds:.1f} s", highlight=False, soft_wrap=True)


def print_demo(s: DemoSummary, console: Console) -> None:
    """What the demo tracked, how fast, how well, what it wrote and how to do it by hand."""
    tracker = ("the shipped default tracker" if is_default(s.checkpoint)
               else str(s.onnx if s.onnx is not None else s.checkpoint))
    lines = [f"demo: {s.source}",
             f"tracked {s.track.frames} frames with {tracker} on {s.runtime}: {s.track.tracking_fps:.1f} FPS "
             f"(tracking only), {s.track.lost_frames} frames reported lost; {s.seconds:.1f} s in all"]
    if s.scores is not None:
        lines.append(f"score against the known ground truth: success AUC {s.scores['success_auc']:.1f}, "
                     f"precision@20px {s.scores['precision_20']:.1f}, normalized precision@0.2 "
                     f"{s.scores['norm_precision_20']:.1f} (percent, LaSOT one-pass metrics as in `siamtool "
                     "eval`; hidden frames count as failures)")
    lines += [f"wrote {path}" for path in s.outputs]
    lines.append(f"same tracking, by hand: {s.command}")
    print_lines(console, *lines)

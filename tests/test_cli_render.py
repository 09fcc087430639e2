"""The command line's reporter on a console that is not a terminal: a log file must see progress."""

from __future__ import annotations

import io

from rich.console import Console

from siamtool.cli_render import LOG_EVERY_S, RichReporter


def _reporter(now: list[float]) -> tuple[RichReporter, io.StringIO]:
    out = io.StringIO()
    return RichReporter(Console(file=out, force_terminal=False, width=200), clock=lambda: now[0]), out


def test_a_log_gets_a_line_every_interval_and_one_at_completion():
    now = [0.0]
    reporter, out = _reporter(now)
    with reporter:
        reporter.progress("feature cache", total=100, advance=10)
        assert out.getvalue() == ""  # not yet LOG_EVERY_S since the start
        now[0] = LOG_EVERY_S + 1
        reporter.progress("feature cache", advance=10)
        now[0] += 1
        reporter.progress("feature cache", advance=10)  # within the interval of the last line: silent
        now[0] = 2 * LOG_EVERY_S + 10
        reporter.progress("feature cache", completed=100)
    lines = out.getvalue().splitlines()
    assert lines == ["feature cache: 20/100 (20 %), 31 s, about 2 min 04 s left", "feature cache: 100/100 (100 %), 1 min 10 s"]


def test_an_interrupted_task_leaves_its_last_count_and_terminal_only_bars_stay_silent():
    now = [0.0]
    reporter, out = _reporter(now)
    with reporter:
        reporter.progress("results", total=10, advance=10, detail="a.txt")  # terminal-only bar
        reporter.progress("train", total=3125, advance=40, detail="loss 2.1")
        now[0] = 5.0
    assert out.getvalue().splitlines() == ["train: 40/3,125 (1 %), 5 s, about 6 min 26 s left  loss 2.1"]

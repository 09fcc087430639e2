"""How library code tells a person what it is doing, without drawing anything itself.

Long jobs (prepare, train, eval, track, export) take a `Reporter` and call three methods on it:

* `status(text)`: one line about what is happening now or what was decided ("resumed: 4/6 shards");
* `progress(task, ...)`: count work on the bar named `task` (pairs, frames, steps);
* `warning(text)`: something the person should know about the result (skipped sequences, a shift).

The library never prints: the command line renders these calls with rich (`siamtool.cli_render`),
tests record them, and a script that passes nothing gets `SILENT`. Keeping the interface this small
is deliberate: every job reports the same way, so the CLI draws every bar and every warning the same
way too.
"""

from __future__ import annotations

import warnings
from typing import Protocol, runtime_checkable


@runtime_checkable
class Reporter(Protocol):
    """What long jobs report through (see the module docstring)."""

    def status(self, text: str) -> None:
        """One line about what is happening now."""

    def progress(self, task: str, *, advance: int = 0, completed: int | None = None, total: int | None = None,
                 detail: str | None = None) -> None:
        """Work done on the bar `task`: `advance` more units, or `completed` in all, of `total` (None:
        unknown or unchanged); `detail` is the bar's changing text (the sequence, the loss)."""

    def warning(self, text: str, label: str | None = "warning") -> None:
        """Something the person should know; `label` says what kind (None: the text says it)."""


class SilentReporter:
    """Reports nothing: the default for library calls that have no one to report to."""

    def status(self, text: str) -> None:
        pass

    def progress(self, task: str, *, advance: int = 0, completed: int | None = None, total: int | None = None,
                 detail: str | None = None) -> None:
        pass

    def warning(self, text: str, label: str | None = "warning") -> None:
        pass


SILENT: Reporter = SilentReporter()


class WarningsReporter(SilentReporter):
    """Silent, except that warnings become Python warnings of `category` (what a script sees by default)."""

    def __init__(self, category: type[Warning] = UserWarning) -> None:
        self.category = category

    def warning(self, text: str, label: str | None = "warning") -> None:
        warnings.warn(text, self.category, stacklevel=3)

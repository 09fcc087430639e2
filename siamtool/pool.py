"""One process pool for the jobs that fan out over processes and count their progress as they go.

`prepare` writes shards and `eval` tracks sequences in worker processes; both need the same things from
a pool: results as they finish (not in submission order), progress counted *inside* a task (frames of
a long sequence, pairs of a shard) and sent home through a queue, and, on Ctrl-C or an error, workers
killed before the caller cleans up their temp files. `run_in_pool` is that pool; a task reports its
progress with `report_progress(n)`, which does nothing outside a pool worker.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import queue
from collections.abc import Callable, Iterable, Iterator
from typing import Any

_progress_queue: Any = None
"""In a pool worker: the queue its progress counts go home through."""


def report_progress(n: int) -> None:
    """In a task run by `run_in_pool`: `n` more units of work are done (no-op elsewhere)."""
    if _progress_queue is not None and n:
        _progress_queue.put(n)


def _init_worker(progress_queue: Any, initializer: Callable[..., None] | None, initargs: tuple[Any, ...]) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    if initializer is not None:
        initializer(*initargs)


def run_in_pool(fn: Callable[[Any], Any], items: Iterable[Any], processes: int, count_done: Callable[[int], None],
                *, start_method: str = "spawn", preload: tuple[str, ...] = (),
                initializer: Callable[..., None] | None = None, initargs: tuple[Any, ...] = ()) -> Iterator[Any]:
    """Run ``fn(item)`` for every item in `processes` worker processes; yield the results as they finish.

    `count_done(n)` receives, in this process, every count a task reports with `report_progress`.
    `start_method` "forkserver" (falling back to "spawn" where it does not exist) starts workers in
    milliseconds from a clean server that imports the `preload` modules once. Use the generator under
    ``contextlib.closing`` so that an interrupted caller terminates the workers at once.
    """
    if start_method == "forkserver" and "forkserver" not in mp.get_all_start_methods():
        start_method = "spawn"
    ctx = mp.get_context(start_method)
    if start_method == "forkserver" and preload:
        ctx.set_forkserver_preload(list(preload))
    progress: Any = ctx.Queue()

    def drain(timeout: float | None) -> None:
        with contextlib.suppress(queue.Empty):
            if timeout is not None:
                count_done(progress.get(timeout=timeout))
            while True:
                count_done(progress.get_nowait())

    pool = ctx.Pool(processes, initializer=_init_worker, initargs=(progress, initializer, initargs))
    try:
        pending = [pool.apply_async(fn, (item,)) for item in items]
        while pending:
            drain(0.1)
            still = []
            for result in pending:
                if result.ready():
                    yield result.get()
                else:
                    still.append(result)
            pending = still
        pool.close()
        pool.join()  # workers flush their queue on exit: every count is home after this
        drain(None)
    finally:
        pool.terminate()
        pool.join()

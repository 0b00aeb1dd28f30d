"""Many evidence fits, spread over the machine's cores by forking.

The fits of one incident are independent and each is a few hundred calls of an already
compiled function, so the cheapest way to use both cores is to compile every role in the
parent and fork: the children inherit the compiled functions and compile nothing. Each fit
seeds its own generator from its task, so the result does not depend on how the tasks were
split. Forking is skipped where it is unsafe or useless: one worker, few tasks, a daemonic
process (a multiprocessing pool's worker may not have children), or not the main thread
(a Dask worker's task thread).
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["default_workers", "map_tasks"]

T = TypeVar("T")
R = TypeVar("R")

#: Fewer tasks than this are not worth a fork.
_MIN_TASKS = 16

# The function and tasks of the current map, inherited by forked children.
_STATE: dict[str, object] = {}


def default_workers() -> int:
    """Workers for one analysis: ``LATENTCAUSE_WORKERS`` if set, else the usable cores (<= 4)."""
    env = os.environ.get("LATENTCAUSE_WORKERS")
    if env:
        return max(1, int(env))
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def _can_fork() -> bool:
    return ("fork" in multiprocessing.get_all_start_methods()
            and not multiprocessing.current_process().daemon
            and threading.current_thread() is threading.main_thread())


def _run_chunk(index: int) -> list[object]:
    fn = _STATE["fn"]
    chunks = _STATE["chunks"]
    assert callable(fn) and isinstance(chunks, list)
    return [fn(task) for task in chunks[index]]


def map_tasks(fn: Callable[[T], R], tasks: Sequence[T], workers: int,
              min_tasks: int = _MIN_TASKS) -> list[R]:
    """``[fn(t) for t in tasks]``, in order, over up to ``workers`` forked processes.

    ``min_tasks`` is the least number of tasks worth a fork: lower it for a few long tasks
    (NUTS chains of seconds each), keep the default for many short ones.
    """
    if workers <= 1 or len(tasks) < max(min_tasks, 2) or not _can_fork():
        return [fn(t) for t in tasks]
    n = min(workers, len(tasks))
    # Interleaved chunks: neighbouring tasks (same role, similar cost) go to different workers.
    chunks = [list(tasks[i::n]) for i in range(n)]
    _STATE.update(fn=fn, chunks=chunks)
    try:
        with multiprocessing.get_context("fork").Pool(n) as pool:
            parts = pool.map(_run_chunk, range(n))
    finally:
        _STATE.clear()
    out: list[R] = [None] * len(tasks)  # type: ignore[list-item]
    for i, part in enumerate(parts):
        out[i::n] = part  # type: ignore[assignment]
    return out

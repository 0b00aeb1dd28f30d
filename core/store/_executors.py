"""Where incidents are analysed: a local process pool, this process, or a Dask cluster.

All three take the same unit of work (``run_incident`` with its arguments) and report each
task as it finishes, so the coordinator commits results in completion order whatever runs
them. The local pool uses the ``spawn`` start method: PyMC/PyTensor state does not survive
``fork`` safely, and spawn behaves the same on Linux, macOS and Windows.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from latentcause.errors import InputError, SourceUnreachable

__all__ = ["DEFAULT_LOCAL_WORKERS", "Executor", "open_executor"]

log = logging.getLogger(__name__)

#: Pool size of the local executor when ``--workers`` is not given.
DEFAULT_LOCAL_WORKERS = 2

#: One finished task: its key, its return value (None on error) and its error (None on success).
Done = tuple[str, Any, BaseException | None]


class Executor(ABC):
    """Runs keyed tasks and yields them as they finish."""

    description: str = ""

    @abstractmethod
    def submit(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue ``fn(*args, **kwargs)`` under ``key`` (unique per run)."""

    @abstractmethod
    def completed(self) -> Iterator[Done]:
        """Yield every submitted task once, as it finishes."""

    @abstractmethod
    def abort(self) -> None:
        """Stop: cancel queued tasks and stop running ones where the executor can."""

    @abstractmethod
    def close(self) -> None:
        """Release the executor's resources after a normal end."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


class InlineExecutor(Executor):
    """Runs each task in this process, one after the other (debugging, tiny stores)."""

    description = "inline (this process)"

    def __init__(self) -> None:
        self._queue: list[tuple[str, Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = []

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue a task; it runs when ``completed`` reaches it."""
        self._queue.append((key, fn, args, kwargs))

    def completed(self) -> Iterator[Done]:
        """Run the queued tasks in order, yielding each as it ends."""
        while self._queue:
            key, fn, args, kwargs = self._queue.pop(0)
            try:
                value = fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - one incident's failure must not stop others
                yield key, None, exc
            else:
                yield key, value, None

    def abort(self) -> None:
        """Drop the queued tasks."""
        self._queue.clear()

    def close(self) -> None:
        """Nothing to release: tasks ran in this process."""


class LocalExecutor(Executor):
    """A ``ProcessPoolExecutor`` with the spawn start method."""

    def __init__(self, max_workers: int) -> None:
        self.max_workers = max_workers
        self.description = f"local process pool of {max_workers}"
        self._pool = cf.ProcessPoolExecutor(
            max_workers=max_workers, mp_context=multiprocessing.get_context("spawn"))
        self._futures: dict[cf.Future[Any], str] = {}

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue a task on the pool."""
        self._futures[self._pool.submit(fn, *args, **kwargs)] = key

    def completed(self) -> Iterator[Done]:
        """Yield tasks in completion order."""
        for fut in cf.as_completed(list(self._futures)):
            key = self._futures.pop(fut)
            exc = fut.exception()
            yield key, (None if exc is not None else fut.result()), exc

    def abort(self) -> None:
        """Cancel queued tasks, terminate the workers (their staging is cleaned up later)."""
        for fut in self._futures:
            fut.cancel()
        # The pool has no public way to stop running tasks before Python 3.14; terminating
        # its processes is what shutdown would do to a broken pool.
        processes = dict(getattr(self._pool, "_processes", None) or {})
        for proc in processes.values():
            with contextlib.suppress(Exception):
                proc.terminate()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for proc in processes.values():
            with contextlib.suppress(Exception):
                proc.join(timeout=5)

    def close(self) -> None:
        """Wait for the workers to exit."""
        self._pool.shutdown(wait=True)


class DaskExecutor(Executor):
    """Tasks on a ``dask.distributed`` cluster, by scheduler address or scheduler file."""

    def __init__(self, address: str | None = None, scheduler_file: Path | None = None,
                 timeout_s: float = 10.0) -> None:
        try:
            from distributed import Client
        except ImportError as exc:
            raise InputError(
                "--executor dask needs dask.distributed: pip install 'latentcause[dask]'"
            ) from exc
        where = address if address is not None else f"scheduler file {scheduler_file}"
        try:
            if address is not None:
                self._client = Client(address, timeout=timeout_s)
            else:
                self._client = Client(scheduler_file=str(scheduler_file), timeout=timeout_s)
        except (OSError, TimeoutError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise SourceUnreachable(f"cannot reach the Dask scheduler at {where}: {first}") from exc
        n = len(self._client.scheduler_info().get("workers", {}))
        self.description = f"Dask cluster at {where} ({n} workers now)"
        self._futures: dict[str, Any] = {}
        self._keys: dict[str, str] = {}

    def submit(self, key: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Send a task to the scheduler (no retries: a failure is reported, not hidden)."""
        task_key = f"latentcause-reanalyze-{key}-{uuid.uuid4().hex[:8]}"
        fut = self._client.submit(fn, *args, key=task_key, pure=False, retries=0, **kwargs)
        self._futures[task_key] = fut
        self._keys[task_key] = key

    def completed(self) -> Iterator[Done]:
        """Yield tasks in completion order."""
        from distributed import as_completed

        for fut in as_completed(list(self._futures.values())):
            key = self._keys.pop(fut.key)
            self._futures.pop(fut.key, None)
            if fut.status == "error":
                exc = fut.exception()
                yield key, None, exc if isinstance(exc, BaseException) else RuntimeError(str(exc))
            elif fut.status == "cancelled":
                yield key, None, RuntimeError("cancelled by the Dask scheduler")
            else:
                try:
                    yield key, fut.result(), None
                except Exception as exc:  # noqa: BLE001 - e.g. lost worker: report, go on
                    yield key, None, exc

    def abort(self) -> None:
        """Cancel the tasks on the cluster and disconnect."""
        with contextlib.suppress(Exception):
            self._client.cancel(list(self._futures.values()))
        with contextlib.suppress(Exception):
            self._client.close()

    def close(self) -> None:
        """Disconnect from the scheduler (the cluster keeps running)."""
        self._client.close()


def open_executor(spec: str, n_tasks: int, workers: int | None = None) -> Executor:
    """Return the executor named by ``--executor``.

    Parameters
    ----------
    spec
        ``local`` (process pool), ``inline`` (this process), ``dask://HOST:PORT`` (or a
        ``tcp://``/``tls://`` address), or the path of a Dask scheduler file.
    n_tasks
        Number of incidents to run: the local pool never starts more workers than tasks.
    workers
        Local pool size (default 2); a Dask cluster's size is its own, so it is ignored there.
    """
    text = spec.strip()
    if workers is not None and workers < 1:
        raise InputError(f"--workers {workers}: must be at least 1")
    if text == "local":
        return LocalExecutor(max(1, min(workers or DEFAULT_LOCAL_WORKERS, n_tasks)))
    if text == "inline":
        return InlineExecutor()
    if text.startswith(("dask://", "tcp://", "tls://")):
        if workers is not None:
            log.info("--workers is ignored with a Dask cluster: it runs on its own workers")
        address = "tcp://" + text[len("dask://"):] if text.startswith("dask://") else text
        return DaskExecutor(address=address)
    path = Path(text).expanduser()
    if path.is_file():
        return DaskExecutor(scheduler_file=path)
    raise InputError(
        f"--executor {spec!r}: use local, inline, dask://HOST:PORT or a Dask scheduler file"
    )

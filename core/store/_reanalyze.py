"""Scheduled reanalysis: rerun the incidents whose result no longer stands, safely and in parallel.

One run: choose the incidents (stale ones by default, or ``--all``, ``--since``, ``--id``),
lock each (another run holding it is skipped, or waited for), send each to the executor as one
task, and commit each result as it arrives: the rename into ``results/`` and the ``latest``
pointer are atomic, so an interrupted run loses nothing it finished and leaves the rest as it
was. Each incident processed becomes one JSON line in ``<store>/reanalysis.log``; one failing
incident does not stop the others, it makes the run's exit status 1.
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from filelock import FileLock, Timeout

from latentcause.errors import InputError, LatentCauseError, StoreError
from latentcause.store._changes import DEFAULT_THRESHOLD
from latentcause.store._executors import open_executor
from latentcause.store._layout import Store, StoredResult
from latentcause.store._spec import IncidentSpec, PrometheusSource
from latentcause.store._stamp import IdentitySource, current_identity, stale_reasons, utc_now
from latentcause.store._worker import run_incident

__all__ = [
    "Outcome",
    "PlanItem",
    "ReanalysisSummary",
    "Reporter",
    "incident_stale_reasons",
    "incident_time",
    "parse_since",
    "plan",
    "reanalyze",
]

log = logging.getLogger(__name__)

#: Test hook: after this many committed results the run sleeps, so a test can kill it at a
#: known point. Not for production use.
PAUSE_ENV = "LATENTCAUSE_TEST_PAUSE_AFTER"


@dataclass(frozen=True)
class PlanItem:
    """An incident chosen for this run and why."""

    incident: str
    reasons: tuple[str, ...]
    spec: IncidentSpec | None = None
    forced: bool = False


@dataclass
class Outcome:
    """What happened to one incident in a run.

    ``status`` is ``done`` (new result committed), ``failed`` (no new result), ``skipped``
    (another run holds its lock) or ``fresh`` (another run brought it up to date meanwhile).
    ``error`` is set when something failed, including an attach after a committed result.
    """

    incident: str
    status: str
    reasons: list[str] = field(default_factory=list)
    result: str | None = None
    changes: dict[str, Any] | None = None
    error: str | None = None
    attached: bool | None = None
    seconds: float | None = None
    note: str | None = None

    @property
    def ok(self) -> bool:
        """Return True unless the incident failed (skipped and fresh ones are fine)."""
        return self.status != "failed" and self.error is None


@dataclass
class ReanalysisSummary:
    """The outcome of one ``reanalyze`` run."""

    run_id: str
    planned: list[PlanItem]
    outcomes: list[Outcome]
    executor: str | None = None
    interrupted: bool = False

    @property
    def failed(self) -> list[Outcome]:
        """Return the incidents that failed."""
        return [o for o in self.outcomes if not o.ok]

    @property
    def exit_status(self) -> int:
        """Return 0 when nothing failed, 1 when some incident failed."""
        return 1 if self.failed else 0

    def count(self, status: str) -> int:
        """Return the number of incidents with ``status``."""
        return sum(o.status == status for o in self.outcomes)


class Reporter(Protocol):
    """Receives a run's progress (the CLI draws a progress bar or logs lines)."""

    def planned(self, items: Sequence[PlanItem], forced: bool) -> None:
        """Call once with the incidents chosen for the run."""

    def finished(self, outcome: Outcome) -> None:
        """Call once per incident as its outcome is known."""


class _Silent:
    def planned(self, items: Sequence[PlanItem], forced: bool) -> None:
        pass

    def finished(self, outcome: Outcome) -> None:
        pass


def parse_since(text: str) -> float:
    """Return unix seconds for ``--since``: a date (UTC midnight) or anything --start takes."""
    from latentcause.timeparse import parse_time

    s = text.strip()
    try:
        day = datetime.strptime(s, "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        return parse_time(s)
    return day.timestamp()


def incident_time(spec: IncidentSpec, latest: StoredResult | None) -> float | None:
    """Return when the incident happened: its onset, its window start, or its last result's.

    None when nothing tells (a file source never analysed and without an onset).
    """
    from latentcause.timeparse import parse_time

    if spec.onset is not None:
        return parse_time(spec.onset)
    if isinstance(spec.source, PrometheusSource):
        return parse_time(spec.source.start)
    if latest is not None:
        try:
            start = (latest.report().get("window") or {}).get("start")
        except StoreError:
            return None
        return float(start) if start is not None else None
    return None


def plan(
    store: Store,
    *,
    identity: IdentitySource,
    select_all: bool = False,
    since: float | None = None,
    ids: Sequence[str] = (),
) -> tuple[list[PlanItem], list[Outcome]]:
    """Choose the incidents to rerun; return them and the outcomes of invalid specs.

    Without a selector only stale incidents are chosen. ``select_all``, ``since`` and ``ids``
    choose incidents whatever their state (a stale one still records why it was stale).
    """
    if sum([bool(select_all), since is not None, bool(ids)]) > 1:
        raise InputError("give at most one of --all, --since and --id")
    forced = bool(select_all or since is not None or ids)
    if ids:
        for incident_id in ids:
            if not store.spec_path(incident_id).is_file():
                raise StoreError(f"no incident {incident_id!r} in store {store.root}")
        candidates = list(dict.fromkeys(ids))
    else:
        candidates = store.ids()
    items: list[PlanItem] = []
    invalid: list[Outcome] = []
    for incident_id in candidates:
        try:
            spec = store.load(incident_id)
        except StoreError as exc:
            invalid.append(Outcome(incident_id, "failed", ["invalid spec"], error=str(exc)))
            continue
        latest = store.latest(incident_id)
        reasons = incident_stale_reasons(spec, latest, identity)
        if since is not None:
            when = incident_time(spec, latest)
            if when is not None and when < since:
                continue
        if forced or reasons:
            items.append(PlanItem(incident_id, tuple(reasons) or ("forced",), spec, forced))
    return items, invalid


def reanalyze(
    store: Store,
    *,
    select_all: bool = False,
    since: float | None = None,
    ids: Sequence[str] = (),
    executor: str = "local",
    workers: int | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    attach: bool = False,
    wait: bool = False,
    return_artefacts: bool = False,
    reporter: Reporter | None = None,
) -> ReanalysisSummary:
    """Rerun the chosen incidents of ``store`` and commit their results.

    Parameters
    ----------
    store
        The incident store.
    select_all, since, ids
        Choose every incident, those that happened since a time (unix s), or these ids;
        without any, only stale incidents run.
    executor
        ``local``, ``inline``, ``dask://HOST:PORT`` or a Dask scheduler file.
    workers
        Size of the local pool (default 2, never more than the incidents to run).
    threshold
        Move of the leader's probability that counts as a change in ``changes.json``.
    attach
        Refresh the report in each rerun incident's postmortem (``attach_report``).
    wait
        Wait for an incident locked by another run instead of skipping it.
    return_artefacts
        Workers return the result files' bytes instead of writing into the store (for workers
        that do not share the store's file system).
    reporter
        Receives the plan and each outcome.
    """
    if not 0.0 <= threshold <= 1.0:
        raise InputError(f"--threshold {threshold}: must be between 0 and 1")
    reporter = reporter or _Silent()
    run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{uuid.uuid4().hex[:6]}"
    t0 = time.monotonic()
    identity = functools.cache(current_identity)  # imports the engine: only if a result exists
    items, invalid = plan(store, identity=identity, select_all=select_all, since=since, ids=ids)
    forced = bool(select_all or since is not None or ids)
    summary = ReanalysisSummary(run_id, items, [])
    mode = "all" if select_all else "since" if since is not None else "id" if ids else "stale"
    for outcome in invalid:
        _record(store, summary, reporter, outcome, run_id, None)
    reporter.planned(items, forced)
    if items:
        run = _Run(store, summary, reporter, identity, run_id, threshold, attach, wait,
                   return_artefacts)
        try:
            with _terminate_as_interrupt(), open_executor(executor, len(items), workers) as ex:
                summary.executor = ex.description
                log.info("reanalysing %d incidents on %s", len(items), ex.description)
                run.execute(ex, items)
        except KeyboardInterrupt:
            summary.interrupted = True
            raise
        finally:
            run.release_all()
            _log_run(store, summary, run_id, mode, time.monotonic() - t0)
    else:
        _log_run(store, summary, run_id, mode, time.monotonic() - t0)
    return summary


class _Run:
    """State of one run: the locks it holds and how to commit what comes back."""

    def __init__(self, store: Store, summary: ReanalysisSummary, reporter: Reporter,
                 identity: IdentitySource, run_id: str, threshold: float, attach: bool,
                 wait: bool, return_artefacts: bool) -> None:
        self.store, self.summary, self.reporter = store, summary, reporter
        self.identity, self.run_id, self.threshold = identity, run_id, threshold
        self.attach, self.wait, self.return_artefacts = attach, wait, return_artefacts
        self.locks: dict[str, FileLock] = {}
        self.items: dict[str, PlanItem] = {}
        self.started: dict[str, float] = {}

    def execute(self, ex: Any, items: Sequence[PlanItem]) -> None:
        for item in items:
            if self._lock(item):
                assert item.spec is not None
                self.items[item.incident] = item
                self.started[item.incident] = time.monotonic()
                # absolute paths: a worker's working folder is not ours
                ex.submit(item.incident, run_incident, str(item.spec.path.resolve()),
                          str(self.store.results_dir(item.incident).resolve()),
                          item.spec.seed, return_artefacts=self.return_artefacts)
        if not self.items:
            return
        pause_after = int(os.environ.get(PAUSE_ENV, "0") or 0)
        done = 0
        for key, value, exc in ex.completed():
            outcome = self._finish(key, value, exc)
            done += outcome.status == "done"
            if pause_after and done == pause_after:
                log.warning("%s=%d: pausing (test hook)", PAUSE_ENV, pause_after)
                time.sleep(3600)

    def _lock(self, item: PlanItem) -> bool:
        """Take the incident's lock; False (with an outcome) when it is skipped."""
        lock = self.store.lock(item.incident)
        try:
            if self.wait:
                log.info("%s: waiting for its lock", item.incident)
            lock.acquire(timeout=-1 if self.wait else 0)
        except Timeout:
            self._outcome(Outcome(item.incident, "skipped", list(item.reasons)),
                          note="locked by another run")
            return False
        self.locks[item.incident] = lock
        self.store.clean_staging(item.incident)
        if not item.forced:
            assert item.spec is not None
            latest = self.store.latest(item.incident)
            reasons = incident_stale_reasons(item.spec, latest, self.identity)
            if not reasons:
                self._release(item.incident)
                self._outcome(Outcome(item.incident, "fresh", list(item.reasons)),
                              note="brought up to date by another run")
                return False
        return True

    def _finish(self, key: str, value: Any, exc: BaseException | None) -> Outcome:
        item = self.items[key]
        seconds = time.monotonic() - self.started[key]
        outcome = Outcome(key, "failed", list(item.reasons), seconds=seconds)
        try:
            if exc is not None:
                outcome.error = _one_line(exc)
            else:
                result, changes = self._commit(key, value, item)
                outcome.status, outcome.result, outcome.changes = "done", result.name, changes
                if self.attach:
                    self._attach(item, result, outcome)
        except LatentCauseError as err:
            outcome.error = _one_line(err)
        except OSError as err:
            outcome.error = f"cannot commit the result: {_one_line(err)}"
        finally:
            self._release(key)
        self._outcome(outcome)
        return outcome

    def _commit(self, key: str, value: dict[str, Any], item: PlanItem
                ) -> tuple[StoredResult, dict[str, Any]]:
        results = self.store.results_dir(key)
        if "artefacts" in value:
            staged = self.store.new_staging_dir(key)
            staged.mkdir()
            for name, data in value["artefacts"].items():
                if Path(name).name != name:
                    raise StoreError(f"{key}: worker returned a bad artefact name {name!r}")
                (staged / name).write_bytes(data)
        else:
            staged = results / str(value["staged"])
        return self.store.commit(key, staged, threshold=self.threshold, reasons=item.reasons)

    def _attach(self, item: PlanItem, result: StoredResult, outcome: Outcome) -> None:
        assert item.spec is not None
        postmortem = item.spec.postmortem_path
        if postmortem is None:
            return
        try:
            attach_report = _attach_function()
            attach_report(postmortem, result.path)
        except (LatentCauseError, OSError) as exc:
            outcome.attached = False
            outcome.error = f"attach to {postmortem}: {_one_line(exc)}"
        else:
            outcome.attached = True

    def _outcome(self, outcome: Outcome, note: str | None = None) -> None:
        outcome.note = note or outcome.note
        _record(self.store, self.summary, self.reporter, outcome, self.run_id,
                self.summary.executor)

    def _release(self, key: str) -> None:
        lock = self.locks.pop(key, None)
        if lock is not None:
            lock.release()

    def release_all(self) -> None:
        for key in list(self.locks):
            self._release(key)


def _attach_function() -> Any:
    """Return the reports package's ``attach_report`` (imported late: it is optional here)."""
    try:
        from latentcause.reports import attach_report
    except ImportError:
        try:
            from latentcause.reports._attach import attach_report
        except ImportError as exc:
            raise StoreError("--attach: this latentcause has no attach_report") from exc
    return attach_report


def incident_stale_reasons(spec: IncidentSpec, latest: StoredResult | None,
                           identity: IdentitySource) -> list[str]:
    """Return why an incident's latest result no longer stands (empty: it is fresh)."""
    stamp: dict[str, Any] | None = None
    if latest is not None:
        try:
            stamp = latest.stamp()
        except StoreError as exc:
            return [f"latest result unreadable: {exc}"]
    return stale_reasons(spec, stamp, identity)


def _record(store: Store, summary: ReanalysisSummary, reporter: Reporter, outcome: Outcome,
            run_id: str, executor: str | None) -> None:
    summary.outcomes.append(outcome)
    changes = outcome.changes or {}
    entry = {
        "event": "incident",
        "time": utc_now(),
        "run": run_id,
        "incident": outcome.incident,
        "status": outcome.status,
        "reasons": outcome.reasons,
        "result": outcome.result,
        "error": outcome.error,
        "note": outcome.note,
        "executor": executor,
        "seconds": None if outcome.seconds is None else round(outcome.seconds, 3),
        "attached": outcome.attached,
        "changes": {k: changes.get(k) for k in (
            "leader", "previous_leader", "leader_changed", "leader_probability_delta",
            "probability_moved", "ambiguity_changed", "adequacy_changed", "changed",
            "first_result")} if changes else None,
    }
    try:
        store.append_log(entry)
    except OSError as exc:
        log.error("cannot append to %s: %s", store.log_path, exc)
    log.info("%s: %s%s", outcome.incident, outcome.status,
             f": {outcome.error}" if outcome.error else f" ({outcome.note})" if outcome.note
             else "")
    reporter.finished(outcome)


def _log_run(store: Store, summary: ReanalysisSummary, run_id: str, mode: str,
             seconds: float) -> None:
    entry = {
        "event": "run", "time": utc_now(), "run": run_id, "mode": mode,
        "executor": summary.executor, "selected": len(summary.planned),
        "done": summary.count("done"), "failed": len(summary.failed),
        "skipped": summary.count("skipped"), "fresh": summary.count("fresh"),
        "interrupted": summary.interrupted, "seconds": round(seconds, 3),
    }
    try:
        store.append_log(entry)
    except OSError as exc:
        log.error("cannot append to %s: %s", store.log_path, exc)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(exc, LatentCauseError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM (cron timeouts, Kubernetes) like Ctrl-C: stop cleanly, keep what is done."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

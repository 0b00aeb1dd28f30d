"""Metrics of one incident from the Prometheus HTTP API (``/api/v1/query_range``).

One range query per signal: rates, ratios and quantiles are computed by the server in PromQL
(``rate()`` absorbs counter resets, ``histogram_quantile()`` reads histograms), so what comes
back is already one value per (component, signal, step). Each result series is put on the
window's step grid, a missing step being NaN. Windows holding more than ``max_points`` steps
(Prometheus refuses more than 11,000 per series) are split into consecutive chunks on the same
grid and joined.

Which PromQL is sent comes from ``--signals FILE`` or from the presets detected on the server
(see ``latentcause.connectors.presets``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import requests

from latentcause.connectors._promapi import PromApi
from latentcause.connectors.http import HttpOptions
from latentcause.connectors.presets import SignalMap, detect_presets, load_signal_file
from latentcause.errors import InputError, QueryError
from latentcause.observations import Observations, validate_frame

__all__ = [
    "MAX_POINTS",
    "QueryPlan",
    "default_step",
    "describe_prometheus",
    "plan_prometheus",
    "read_prometheus",
]

log = logging.getLogger(__name__)

#: Most points per series Prometheus returns for one range query.
MAX_POINTS = 11_000
#: Points per series the default step aims at: enough to see an onset, little to download.
TARGET_POINTS = 400
#: Steps the default is rounded up to (seconds); consecutive ratios stay at or below 2.
_NICE_STEPS = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 240, 300, 450, 600, 900,
               1200, 1800, 2700, 3600)


@dataclass(frozen=True)
class QueryPlan:
    """What will be asked of the server: window, step and the PromQL per signal."""

    url: str
    start: float
    end: float
    step: float
    signals: SignalMap

    @property
    def points(self) -> int:
        """Steps in the window, both ends included."""
        return _grid(self.start, self.end, self.step).size

    def describe(self) -> list[str]:
        """Human-readable lines for ``latentcause signals``."""
        return [
            f"prometheus: {self.url}",
            f"window: {_iso(self.start)} .. {_iso(self.end)} ({self.start:.0f} .. {self.end:.0f}, "
            f"{self.end - self.start:g} s), step {self.step:g} s, {self.points} points per series",
            *self.signals.describe(),
        ]


def default_step(start: float, end: float) -> float:
    """Return a step giving about ``TARGET_POINTS`` points, rounded up to a round value.

    Never below 1 s; beyond an hour, whole hours.
    """
    raw = max(1.0, (end - start) / TARGET_POINTS)
    for nice in _NICE_STEPS:
        if nice >= raw:
            return float(nice)
    return float(3600 * math.ceil(raw / 3600))


def plan_prometheus(
    url: str,
    start: float,
    end: float,
    *,
    step: float | None,
    signals_file: Path | None,
    http: HttpOptions,
    session: requests.Session | None = None,
) -> QueryPlan:
    """Decide the step and the PromQL per signal (detecting presets unless a file is given)."""
    with _api(url, http, session) as api:
        return _plan(api, start, end, step, signals_file)


def read_prometheus(
    url: str,
    start: float,
    end: float,
    *,
    step: float | None,
    signals_file: Path | None,
    http: HttpOptions,
    session: requests.Session | None = None,
    max_points: int = MAX_POINTS,
) -> Observations:
    """Read one incident window from Prometheus.

    Parameters
    ----------
    url
        Prometheus base URL (credentials in it are redacted wherever it is shown).
    start, end
        The window in unix seconds.
    step
        Resolution in seconds; None chooses ``default_step``.
    signals_file
        A TOML signal map; None detects the built-in presets on the server.
    http
        Credentials, TLS, timeout and retries.
    session
        A configured session to use instead of ``http.session()``.
    max_points
        Most steps per range query; longer windows are split into chunks.

    Returns
    -------
    Observations
        Columns ``(component, signal)`` on the step grid, NaN where the server had no value;
        ``queries`` holds the PromQL sent, ``window`` is ``(start, end)``.

    Raises
    ------
    SourceUnreachable
        The server cannot be reached or keeps answering 5xx.
    QueryError
        HTTP 4xx, a PromQL error, or no data for any query.
    InputError
        A bad window, step or signal file.
    """
    if max_points < 2:
        raise InputError(f"max_points must be at least 2, got {max_points}")
    with _api(url, http, session) as api:
        plan = _plan(api, start, end, step, signals_file)
        frame, notes = _fetch(api, plan, max_points)
    what = f"prometheus {plan.url}"
    frame = validate_frame(frame, what)
    return Observations(
        frame=frame,
        source=f"prometheus:{plan.url}",
        queries=tuple(plan.signals.queries.values()),
        window=(float(start), float(end)),
        notes=tuple(notes) + plan.signals.notes,
    )


def describe_prometheus(
    url: str,
    start: float,
    end: float,
    *,
    step: float | None,
    signals_file: Path | None,
    http: HttpOptions,
    session: requests.Session | None = None,
) -> list[str]:
    """Describe the plan, then what reading it gives: components and their signals (for the CLI)."""
    with _api(url, http, session) as api:
        plan = _plan(api, start, end, step, signals_file)
        frame, notes = _fetch(api, plan, MAX_POINTS)
    lines = plan.describe()
    lines.append("data:")
    for component in dict.fromkeys(frame.columns.get_level_values(0)):
        sub = frame[component]
        parts = [f"{s} ({int(sub[s].notna().sum())}/{len(sub)})" for s in sub.columns]
        lines.append(f"  {component}: " + ", ".join(parts))
    lines.extend(f"note: {n}" for n in notes)
    return lines


@contextmanager
def _api(url: str, http: HttpOptions, session: requests.Session | None) -> Iterator[PromApi]:
    api = PromApi(url, http, session)
    try:
        yield api
    finally:
        if session is None:  # a caller's session is the caller's to close
            api.close()


def _plan(
    api: PromApi, start: float, end: float, step: float | None, signals_file: Path | None
) -> QueryPlan:
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise InputError(f"the window [{start}, {end}] is empty")
    if step is not None and not step > 0:
        raise InputError(f"--step must be positive, got {step}")
    chosen = float(step) if step is not None else default_step(start, end)
    if chosen < 0.001:
        raise InputError("--step must be at least 1ms")
    signals = (
        load_signal_file(signals_file)
        if signals_file is not None
        else detect_presets(api, start, end, chosen)
    )
    return QueryPlan(url=api.shown, start=start, end=end, step=chosen, signals=signals)


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _grid(start: float, end: float, step: float) -> np.ndarray:
    """Return the evaluation times in integer milliseconds: start, start + step, ... <= end."""
    s, e, d = _ms(start), _ms(end), max(1, _ms(step))
    return s + d * np.arange((e - s) // d + 1, dtype=np.int64)


def _fetch(api: PromApi, plan: QueryPlan, max_points: int) -> tuple[pd.DataFrame, list[str]]:
    """Run every query; return the wide frame on the step grid and notes on what was odd."""
    grid = _grid(plan.start, plan.end, plan.step)
    label = plan.signals.component_label
    columns: dict[tuple[str, str], pd.Series] = {}
    notes: list[str] = []
    empty: list[str] = []
    for signal, promql in plan.signals.queries.items():
        result = _query_chunked(api, promql, grid, plan.step, max_points)
        if not result:
            empty.append(signal)
            continue
        unlabelled = 0
        for labels, times, values in result:
            component = labels.get(label)
            if not component:
                unlabelled += 1
                continue
            key = (component, signal)
            if key in columns:
                raise QueryError(
                    f"{api.shown}: the query for {signal} returns several series for "
                    f"{label}={component!r}; aggregate it, e.g. sum by ({label}) (...)"
                )
            columns[key] = pd.Series(values, index=times)
        if unlabelled:
            msg = f"{signal}: {unlabelled} result series without label {label!r} ignored"
            log.warning("%s", msg)
            notes.append(msg)
    if not columns:
        raise QueryError(
            f"{api.shown}: no data in the window for any query ("
            + ", ".join(plan.signals.queries)
            + f") with label {label!r}"
        )
    if empty:
        msg = "no data for " + ", ".join(empty)
        log.warning("%s: %s", api.shown, msg)
        notes.append(msg)
    frame = pd.DataFrame(columns).reindex(grid)
    infinite = np.isinf(frame.to_numpy())
    if infinite.any():
        msg = f"{int(infinite.sum())} infinite values (a quantile in the +Inf bucket?) set to NaN"
        log.warning("%s", msg)
        notes.append(msg)
        frame = frame.mask(np.isinf(frame))
    frame.index = pd.Index(grid / 1000.0, name="time")
    # Component by component (sorted), signals in the plan's order: a stable layout.
    order = {s: i for i, s in enumerate(plan.signals.queries)}
    keys = sorted(columns, key=lambda k: (k[0], order[k[1]]))
    frame = frame.loc[:, keys]
    frame.columns = pd.MultiIndex.from_tuples(keys, names=["component", "signal"])
    return frame, notes


def _query_chunked(
    api: PromApi, promql: str, grid: np.ndarray, step: float, max_points: int
) -> list[tuple[dict[str, str], np.ndarray, np.ndarray]]:
    """Range-query ``promql`` over ``grid`` in chunks of at most ``max_points`` steps.

    Chunks are consecutive slices of one grid, so joining them is a concatenation; a time
    that comes back twice (a server rounding a chunk's edge) is kept once.
    """
    merged: dict[tuple[tuple[str, str], ...], tuple[dict[str, str], list[Any]]] = {}
    for i in range(0, grid.size, max_points):
        chunk = grid[i : i + max_points]
        result = api.query_range(promql, chunk[0] / 1000.0, chunk[-1] / 1000.0, step)
        for row in result:
            labels = {str(k): str(v) for k, v in row.get("metric", {}).items()}
            key = tuple(sorted(labels.items()))
            merged.setdefault(key, (labels, []))[1].extend(row.get("values", []))
    out = []
    for labels, pairs in merged.values():
        if not pairs:
            continue
        times = np.array([_ms(float(t)) for t, _ in pairs], dtype=np.int64)
        values = np.array([float(v) for _, v in pairs], dtype=float)
        times, first = np.unique(times, return_index=True)
        out.append((labels, times, values[first]))
    return out

"""The observation data model: what every connector produces and inference consumes.

Connectors turn a source (files, Prometheus, spans) into one ``Observations``; nothing
downstream knows where it came from. The frame is wide: a float index of unix seconds, sorted
and unique, and one column per (component, canonical signal) with NaN where a sample is
missing. Values stay in the source's units; models are scale-free.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from latentcause.errors import InputError, LayoutError, WindowError
from latentcause.signals import is_latency

__all__ = ["MIN_POINTS", "Observations", "validate_frame"]

log = logging.getLogger(__name__)

#: Fewest distinct time points an incident may have: below this no baseline and no change
#: can both be estimated.
MIN_POINTS = 12


@dataclass(frozen=True)
class Observations:
    """Metrics of one incident, independent of their source.

    Attributes
    ----------
    frame
        Index: unix seconds (float, sorted, unique). Columns: a MultiIndex
        ``(component, signal)`` with canonical signal names.
    onset
        Known onset in unix seconds (from ``--onset`` or the layout), or None to infer it.
    onset_source
        ``"given"``, ``"layout"`` or None.
    source
        Human-readable origin, e.g. ``file:/path/incident`` or ``prometheus:http://...``.
    queries
        The queries or files that produced the data, for provenance.
    call_graph
        Caller -> callees, when known (traces or configuration); None when unknown.
    window
        (start, end) of the incident window in unix seconds as the source defined it.
    """

    frame: pd.DataFrame
    onset: float | None = None
    onset_source: str | None = None
    source: str = "unknown"
    queries: tuple[str, ...] = ()
    call_graph: Mapping[str, frozenset[str]] | None = None
    window: tuple[float, float] | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def components(self) -> list[str]:
        """Components in the order of their first column."""
        return list(dict.fromkeys(self.frame.columns.get_level_values(0)))

    def signals(self, component: str) -> list[str]:
        """Signals observed for ``component``."""
        cols = self.frame.columns
        pairs = zip(cols.get_level_values(0), cols.get_level_values(1), strict=True)
        return [str(s) for c, s in pairs if c == component]

    @property
    def times(self) -> np.ndarray:
        """Sample times as float unix seconds."""
        return self.frame.index.to_numpy(dtype=float)

    @property
    def bounds(self) -> tuple[float, float]:
        """(start, end) of the window: the source's if it gave one, else the data's."""
        if self.window is not None:
            return self.window
        t = self.times
        return float(t[0]), float(t[-1])

    @property
    def step_s(self) -> float:
        """Median spacing of the samples in seconds."""
        t = self.times
        return float(np.median(np.diff(t))) if len(t) > 1 else 0.0

    def data_sha256(self) -> str:
        """Hash of the values and their labels: the same data gives the same hash."""
        h = hashlib.sha256()
        h.update(repr([tuple(c) for c in self.frame.columns]).encode())
        h.update(np.ascontiguousarray(self.frame.index.to_numpy(dtype=np.float64)).tobytes())
        h.update(np.ascontiguousarray(self.frame.to_numpy(dtype=np.float64)).tobytes())
        if self.onset is not None:
            h.update(repr(float(self.onset)).encode())
        return h.hexdigest()

    def restrict(self, components: Iterable[str]) -> Observations:
        """Keep only ``components``; raise InputError for names not present."""
        wanted = list(components)
        unknown = [c for c in wanted if c not in self.components]
        if unknown:
            raise InputError(
                f"--component {unknown[0]!r} is not in the data; components are: "
                + ", ".join(self.components)
            )
        cols = [c for c in self.frame.columns if c[0] in wanted]
        return replace(self, frame=self.frame.loc[:, cols])

    def with_onset(self, onset: float, source: str = "given") -> Observations:
        """Return a copy with a known onset, checked against the window."""
        start, end = float(self.times[0]), float(self.times[-1])
        if not start < onset < end:
            raise WindowError(
                f"onset {onset:.0f} is outside the data window [{start:.0f}, {end:.0f}]"
            )
        return replace(self, onset=float(onset), onset_source=source)

    def merged(self, other: Observations) -> Observations:
        """Join another source's series (e.g. from traces) onto this one's time axis.

        This source's series win. A component's latency comes from one source: the other's
        latency columns are added only for components this one has no latency for, since a
        centre from one (sampled spans) and a tail from the other (a histogram over every
        request) would not describe the same requests.
        """
        right = other.frame.reindex(self.frame.index, method="nearest", tolerance=self.step_s)
        timed = {col[0] for col in self.frame.columns if is_latency(col[1])}
        new = [col for col in right.columns if col not in self.frame.columns
               and not (is_latency(col[1]) and col[0] in timed)]
        frame = pd.concat([self.frame, right.loc[:, new]], axis=1)
        graph = other.call_graph if other.call_graph is not None else self.call_graph
        return replace(self, frame=frame, call_graph=graph, queries=self.queries + other.queries)


def validate_frame(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    """Check and clean a wide frame; raise a one-line InputError on what cannot be used.

    Unsorted timestamps are sorted and duplicated ones merged (mean) with a warning, since
    that loses nothing a scraper meant to say; all-NaN series are dropped with a warning;
    too few points or nothing but constant series are errors.
    """
    if frame.shape[1] == 0:
        raise LayoutError(f"{what}: no column names a known signal")
    index = pd.Index(frame.index.to_numpy(dtype=float), name="time")
    if not np.all(np.isfinite(index.to_numpy())):
        raise LayoutError(f"{what}: the time column holds values that are not numbers")
    frame = frame.set_axis(index, axis=0)
    if not index.is_monotonic_increasing:
        log.warning("%s: timestamps were not sorted; sorted them", what)
        frame = frame.sort_index(kind="stable")
    if frame.index.has_duplicates:
        n = int(frame.index.duplicated().sum())
        log.warning("%s: %d duplicated timestamps merged by their mean", what, n)
        frame = frame.groupby(level=0, sort=True).mean()
    frame = frame.apply(pd.to_numeric, errors="coerce").astype(float)
    empty = [c for c in frame.columns if frame[c].isna().all()]
    if len(empty) == frame.shape[1]:
        raise InputError(f"{what}: every series is empty (all NaN)")
    if empty:
        log.warning("%s: dropped %d series with no values", what, len(empty))
        frame = frame.drop(columns=empty)
    # Rows where every series is missing (scrape gaps) carry no information.
    points = int(frame.notna().any(axis=1).sum())
    if points < MIN_POINTS:
        raise WindowError(f"{what}: {points} time points with values; at least {MIN_POINTS} "
                          "are needed")
    varying = [c for c in frame.columns if frame[c].nunique(dropna=True) > 1]
    if not varying:
        raise InputError(f"{what}: every series is constant; there is nothing to explain")
    return frame

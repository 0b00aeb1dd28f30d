"""Spans of a simulated run: head-sampled traces, written as OTLP JSON like a collector's.

Real systems that export metrics usually trace too, and traces carry what metrics cannot:
who calls whom (the call graph) and how much of a request's time was its own work versus
waiting on callees. So a simulated incident comes with spans, and the engine is measured on
the evidence a traced system gives, through the same reader real traces go through.

A share of the requests entering the graph (end users at the front-end, an outside client's
surge at its component) is sampled at the head, as a tracer's ratio sampler does, and each
sampled request walks the graph with the draws ``observe`` makes for a latency sample: the
state of the second it arrived in (down, failed fast, backlog, queueing wait, service time,
injected delay), then each call the edge's probability makes, one child span per attempt,
cut at the caller's timeout and retried as the policy and budget allow. A request's own time
comes first and its calls follow one after another, so the span tree adds up to the latency
the metrics' histograms are filled with.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from latentcause.simulate.engine import Trace
from latentcause.simulate.observe import own_latency
from latentcause.simulate.system import COMPONENTS, System

__all__ = ["SAMPLE_SHARE", "SimulatedSpan", "entry_rate", "otlp_lines", "sample_spans"]

#: Share of the requests entering the graph that are traced (a ratio head sampler). At the
#: suite's 25-45 users/s this gives a few thousand traces in 25 minutes: enough for the
#: call graph and for per-minute means of every service, a few MB of JSON before gzip.
SAMPLE_SHARE = 0.05
#: Traces per OTLP document (one JSON line, one export batch of the collector).
_BATCH = 200
_SERVER = 2
_STATUS_ERROR = 2


@dataclass(frozen=True, slots=True)
class SimulatedSpan:
    """One server span: a request to ``component``; times are unix seconds."""

    trace_id: str
    span_id: str
    parent_id: str | None
    component: str
    start_s: float
    end_s: float
    error: bool


def sample_spans(
    system: System,
    trace: Trace,
    entry_rate: np.ndarray,
    rng: np.random.Generator,
    *,
    first_s: int,
    last_s: int,
    start_unix: float,
    share: float = SAMPLE_SHARE,
) -> list[SimulatedSpan]:
    """Trace a ``share`` of the requests entering the graph in run seconds [first_s, last_s).

    ``entry_rate`` (seconds, components) is the expected rate of requests arriving from
    outside the graph; run second ``s`` starts at unix time ``start_unix + s``. Spans are
    returned in the order of their traces' starts.
    """
    walker = _Walker(system, trace, rng)
    counts = rng.poisson(np.maximum(entry_rate[first_s:last_s], 0.0) * share)
    for k, i in zip(*np.nonzero(counts), strict=True):
        s = first_s + int(k)
        for at in np.sort(rng.uniform(0.0, 1.0, size=int(counts[k, i]))):
            walker.request(int(i), s, start_unix + s + float(at), None, rng.bytes(16).hex())
    walker.spans.sort(key=lambda sp: (walker.trace_start[sp.trace_id], sp.start_s))
    return walker.spans


class _Walker:
    """Walks sampled requests down the graph, collecting their spans."""

    def __init__(self, system: System, trace: Trace, rng: np.random.Generator) -> None:
        self.system, self.trace, self.rng = system, trace, rng
        self.spans: list[SimulatedSpan] = []
        self.trace_start: dict[str, float] = {}
        self.calls = {i: np.flatnonzero(system.edge_src == i) for i in range(system.n)}

    def request(self, i: int, s: int, start: float, parent: str | None,
                trace_id: str) -> tuple[float, bool]:
        """One request to component ``i`` arriving in run second ``s``: (duration, failed)."""
        tr, rng = self.trace, self.rng
        self.trace_start.setdefault(trace_id, start)
        span_id = rng.bytes(8).hex()
        if not tr.up[s, i]:
            self._add(trace_id, span_id, parent, i, start, 0.001, True)
            return 0.001, True
        own, fast = own_latency(
            tr.backlog_wait[s, i], tr.p_wait[s, i], tr.queue_wait[s, i], tr.service[s, i],
            tr.delay[s, i], tr.fast_share[s, i], rng)
        elapsed, failed = float(own), bool(fast) or bool(rng.random() < tr.late_error[s, i])
        if not fast:
            for k in self.calls[i]:
                if rng.random() >= self.system.edge_calls[k]:
                    continue
                taken, call_failed = self._call(int(k), s, start + elapsed, span_id,
                                                trace_id)
                elapsed += taken
                if call_failed and rng.random() < self.system.edge_propagate[k]:
                    failed = True
        self._add(trace_id, span_id, parent, i, start, elapsed, failed)
        return elapsed, failed

    def _call(self, k: int, s: int, start: float, parent: str,
              trace_id: str) -> tuple[float, bool]:
        """Attempts of one call along edge ``k``: the caller's time and whether it failed."""
        tr, rng = self.trace, self.rng
        j, tau = int(self.system.edge_dst[k]), float(self.system.edge_timeout[k])
        taken = 0.0
        for attempt in range(int(tr.edge_retries[k]) + 1):
            y, err = self.request(j, s, start + taken, parent, trace_id)
            y = min(y, tau)
            taken += y
            if not (err or y >= tau):
                return taken, False
            if attempt == int(tr.edge_retries[k]) or rng.random() >= tr.retry_share[s, k]:
                break
        return taken, True

    def _add(self, trace_id: str, span_id: str, parent: str | None, i: int, start: float,
             duration: float, error: bool) -> None:
        self.spans.append(SimulatedSpan(trace_id, span_id, parent, COMPONENTS[i], start,
                                        start + duration, error))


def otlp_lines(spans: list[SimulatedSpan]) -> bytes:
    """OTLP JSON Lines, gzip-compressed and byte-identical for the same spans.

    One ``{"resourceSpans": ...}`` document per batch of traces, one resource per service,
    as the collector's file exporter writes them (ids in hex, enums as numbers, times as
    decimal strings of nanoseconds).
    """
    lines: list[str] = []
    batch: list[SimulatedSpan] = []
    traces: set[str] = set()
    for sp in spans:
        if sp.trace_id not in traces and len(traces) == _BATCH:
            lines.append(json.dumps(_document(batch), separators=(",", ":")))
            batch, traces = [], set()
        traces.add(sp.trace_id)
        batch.append(sp)
    if batch:
        lines.append(json.dumps(_document(batch), separators=(",", ":")))
    return gzip.compress(("\n".join(lines) + "\n").encode(), mtime=0)


def _document(spans: list[SimulatedSpan]) -> dict[str, Any]:
    by_service: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for sp in spans:
        out: dict[str, Any] = {
            "traceId": sp.trace_id,
            "spanId": sp.span_id,
            "name": f"{sp.component} request",
            "kind": _SERVER,
            "startTimeUnixNano": str(round(sp.start_s * 1e9)),
            "endTimeUnixNano": str(round(sp.end_s * 1e9)),
            "status": {"code": _STATUS_ERROR} if sp.error else {},
        }
        if sp.parent_id is not None:
            out["parentSpanId"] = sp.parent_id
        by_service[sp.component].append(out)
    return {"resourceSpans": [
        {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": c}}]},
         "scopeSpans": [{"scope": {"name": "latentcause.simulate"}, "spans": by_service[c]}]}
        for c in COMPONENTS if c in by_service
    ]}


def entry_rate(system: System, users: np.ndarray, extra_rate: np.ndarray) -> np.ndarray:
    """Expected rate of requests entering the graph, per second and component.

    End users arrive along the edges from the outside world (source index ``system.n``),
    an outside client's surge as ``extra_rate``.
    """
    rate = np.array(extra_rate, dtype=float, copy=True)
    outside = np.flatnonzero(system.edge_src == system.n)
    for k in outside:
        rate[:, int(system.edge_dst[k])] += users * float(system.edge_calls[k])
    return rate


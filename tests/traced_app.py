"""A small instrumented program: frontend -> cart -> db, traced with the OpenTelemetry SDK.

Three services, each its own ``TracerProvider`` with a ``service.name`` resource, as three
processes would be. A request to ``frontend`` (SERVER span) calls ``cart`` through a CLIENT
span; the W3C ``traceparent`` header carries the context across, as over HTTP; ``cart``
calls ``db`` the same way. Time is simulated: every span gets explicit start and end times
in nanoseconds (whole microseconds, so a Jaeger export loses nothing), so a ten-minute
incident takes no wall time. After ``onset`` the database is slower and fails more often;
``cart`` and ``frontend`` only wait on it and pass its errors on.

Exports: ``otlp_json_lines`` (the SDK's OTLP encoder, then protobuf's JSON mapping, one
request per line, as the collector's file exporter appends them; ``spec_exact=True`` turns
ids into hex and enums into integers as the OTLP/JSON spec asks), and ``jaeger_json`` (the
Jaeger query API response ``{"data": [trace, ...]}``, built from the SDK's ``ReadableSpan``
objects: the Jaeger exporter was removed from the SDK).
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["Incident", "Params", "jaeger_json", "otlp_json_lines", "run"]

SERVICES = ("frontend", "cart", "db")
_PROPAGATOR = TraceContextTextMapPropagator()


@dataclass(frozen=True)
class Params:
    """What the simulated incident is made of; times in seconds, medians of lognormals."""

    start: float = 1_700_000_000.0
    duration: float = 600.0
    onset: float = 300.0
    rate: float = 8.0
    net: float = 0.0003
    frontend_pre: float = 0.002
    frontend_post: float = 0.001
    cart_pre: float = 0.003
    cart_post: float = 0.002
    db_before: float = 0.004
    db_after: float = 0.040
    sigma: float = 0.35
    db_err_before: float = 0.02
    db_err_after: float = 0.10
    frontend_err: float = 0.01


@dataclass(frozen=True)
class Incident:
    """The finished spans and, per request, what was generated (ground truth, seconds)."""

    params: Params
    spans: tuple[ReadableSpan, ...]
    truth: pd.DataFrame


class SeededIds(IdGenerator):
    """Trace and span ids from a seeded generator, so the same seed gives the same files."""

    def __init__(self, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311 - ids, not secrets

    def generate_span_id(self) -> int:
        return self._rng.getrandbits(64) or 1

    def generate_trace_id(self) -> int:
        return self._rng.getrandbits(128) or 1


def run(params: Params | None = None, seed: int = 0) -> Incident:
    """Simulate the incident: Poisson arrivals at ``frontend``, db slow after the onset."""
    p = params or Params()
    rng = np.random.default_rng(seed)
    exporter = InMemorySpanExporter()
    ids = SeededIds(seed)
    tracers = {}
    for name in SERVICES:
        provider = TracerProvider(resource=Resource.create({"service.name": name}),
                                  id_generator=ids)
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracers[name] = provider.get_tracer(f"traced_app.{name}")
    n = int(rng.poisson(p.rate * p.duration))
    arrivals = np.sort(rng.uniform(0.0, p.duration, n))

    def draw(median: float) -> int:
        return int(round(median * float(rng.lognormal(0.0, p.sigma)) * 1e6))

    rows = []
    for t in arrivals:
        after = t >= p.onset
        us = {
            "fe_pre": draw(p.frontend_pre), "fe_post": draw(p.frontend_post),
            "cart_pre": draw(p.cart_pre), "cart_post": draw(p.cart_post),
            "db": draw(p.db_after if after else p.db_before),
            "net": int(round(p.net * 1e6)),
        }
        db_err = bool(rng.random() < (p.db_err_after if after else p.db_err_before))
        fe_own_err = bool(rng.random() < p.frontend_err)
        t0 = int(round((p.start + t) * 1e6))
        row = _request(tracers, t0, us, db_err, fe_own_err)
        rows.append({"arrival": t0 / 1e6, "after_onset": after, **row})
    return Incident(params=p, spans=tuple(exporter.get_finished_spans()),
                    truth=pd.DataFrame(rows))


def _request(tracers: dict[str, Any], t0: int, us: dict[str, int], db_err: bool,
             fe_own_err: bool) -> dict[str, Any]:
    """Emit the five spans of one request; return its generated latencies and errors."""
    net = us["net"]
    db_start = t0 + us["fe_pre"] + net + us["cart_pre"] + net
    db_end = db_start + us["db"]
    cart_start = t0 + us["fe_pre"] + net
    cart_end = db_end + net + us["cart_post"]
    fe_end = cart_end + net + us["fe_post"]
    fe_err = db_err or fe_own_err

    frontend, cart, db = (tracers[s] for s in SERVICES)
    root = frontend.start_span("GET /cart", kind=SpanKind.SERVER, start_time=t0 * 1000,
                               attributes={"http.request.method": "GET"})
    out = frontend.start_span("GET cart", context=trace.set_span_in_context(root),
                              kind=SpanKind.CLIENT, start_time=(cart_start - net) * 1000)
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(out))
    served = cart.start_span("GetCart", context=_PROPAGATOR.extract(carrier),
                             kind=SpanKind.SERVER, start_time=cart_start * 1000)
    query = cart.start_span("SELECT carts", context=trace.set_span_in_context(served),
                            kind=SpanKind.CLIENT, start_time=(db_start - net) * 1000)
    carrier = {}
    _PROPAGATOR.inject(carrier, context=trace.set_span_in_context(query))
    stmt = db.start_span("SELECT carts", context=_PROPAGATOR.extract(carrier),
                         kind=SpanKind.SERVER, start_time=db_start * 1000)
    if db_err:
        for span in (stmt, query, served, out):
            span.set_status(Status(StatusCode.ERROR, "db: deadlock detected"))
    stmt.end(end_time=db_end * 1000)
    query.end(end_time=(db_end + net) * 1000)
    served.end(end_time=cart_end * 1000)
    out.end(end_time=(cart_end + net) * 1000)
    if fe_err:
        root.set_attribute("http.response.status_code", 500)
        root.set_status(Status(StatusCode.ERROR))
    else:
        root.set_attribute("http.response.status_code", 200)
    root.end(end_time=fe_end * 1000)
    return {
        "frontend_latency": (fe_end - t0) / 1e6,
        "cart_latency": (cart_end - cart_start) / 1e6,
        "db_latency": us["db"] / 1e6,
        "cart_self": (cart_end - cart_start - us["db"]) / 1e6,
        "cart_callee": us["db"] / 1e6,
        "frontend_start": t0 / 1e6,
        "cart_start": cart_start / 1e6,
        "db_start": db_start / 1e6,
        "frontend_error": fe_err,
        "cart_error": db_err,
        "db_error": db_err,
    }


def otlp_json_lines(spans: tuple[ReadableSpan, ...], path: Path, *, batch: int = 512,
                    spec_exact: bool = False) -> Path:
    """Write spans as the collector's file exporter does: one ExportTraceServiceRequest per
    line, in batches (the SDK's OTLP encoder, then protobuf's JSON mapping)."""
    from google.protobuf.json_format import MessageToDict, MessageToJson
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    with path.open("w", encoding="utf-8") as fh:
        for i in range(0, len(spans), batch):
            request = encode_spans(spans[i:i + batch])
            if spec_exact:
                doc = MessageToDict(request, use_integers_for_enums=True)
                _hex_ids(doc)
                fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
            else:
                fh.write(MessageToJson(request, indent=None) + "\n")
    return path


def _hex_ids(doc: dict[str, Any]) -> None:
    """Base64 ids of the protobuf JSON mapping -> the hex the OTLP/JSON spec asks for."""
    import base64

    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for sp in ss["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in sp:
                        sp[key] = base64.b64decode(sp[key]).hex()


def jaeger_json(spans: tuple[ReadableSpan, ...], path: Path) -> Path:
    """Write spans as a Jaeger query API response (``GET /api/traces``), one entry per trace.

    Follows the API's JSON schema (jaeger ``model/json``): ids in hex without leading zeros,
    microsecond ``startTime`` and ``duration``, CHILD_OF references, one process per service
    and trace (``p1``, ``p2``, ...), span kind and OpenTelemetry status as tags, plus
    ``error=true`` on failed spans, as Jaeger's OTLP translator writes them.
    """
    traces: dict[int, list[ReadableSpan]] = {}
    for span in spans:
        assert span.context is not None
        traces.setdefault(span.context.trace_id, []).append(span)
    data = []
    for trace_id, members in traces.items():
        pids: dict[str, str] = {}
        out = []
        for span in members:
            assert span.context is not None and span.start_time and span.end_time
            service = str(span.resource.attributes["service.name"])
            pid = pids.setdefault(service, f"p{len(pids) + 1}")
            refs = []
            if span.parent is not None:
                refs.append({"refType": "CHILD_OF", "traceID": _jaeger_trace_id(trace_id),
                             "spanID": f"{span.parent.span_id:016x}"})
            tags = [_tag(k, v) for k, v in (span.attributes or {}).items()]
            tags.append(_tag("span.kind", span.kind.name.lower()))
            if span.status.status_code is StatusCode.ERROR:
                tags += [_tag("otel.status_code", "ERROR"), _tag("error", True)]
            out.append({
                "traceID": _jaeger_trace_id(trace_id),
                "spanID": f"{span.context.span_id:016x}",
                "operationName": span.name,
                "references": refs,
                "startTime": span.start_time // 1000,
                "duration": (span.end_time - span.start_time) // 1000,
                "tags": tags,
                "logs": [],
                "processID": pid,
                "warnings": None,
                "flags": 1,
            })
        processes = {pid: {"serviceName": svc, "tags": []} for svc, pid in pids.items()}
        data.append({"traceID": _jaeger_trace_id(trace_id), "spans": out,
                     "processes": processes, "warnings": None})
    doc = {"data": data, "total": 0, "limit": 0, "offset": 0, "errors": None}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def _jaeger_trace_id(trace_id: int) -> str:
    """Jaeger's TraceID.String(): high and low halves, the high one without leading zeros."""
    high, low = trace_id >> 64, trace_id & ((1 << 64) - 1)
    return f"{high:x}{low:016x}" if high else f"{low:016x}"


def _tag(key: str, value: object) -> dict[str, object]:
    kind = ("bool" if isinstance(value, bool) else "int64" if isinstance(value, int)
            else "float64" if isinstance(value, float) else "string")
    return {"key": key, "type": kind, "value": value}

"""Jaeger JSON: the query API response and UI export, ``{"data": [trace, ...]}``.

A trace is ``{"traceID", "spans": [...], "processes": {pid: {"serviceName", "tags"}}}``; a
span has ``traceID``, ``spanID``, ``operationName``, ``references`` (``refType`` CHILD_OF or
FOLLOWS_FROM, ``traceID``, ``spanID``), ``startTime`` (unix microseconds), ``duration``
(microseconds), ``tags`` (``{"key", "type", "value"}``) and ``processID``. Jaeger prints
ids in hex without leading zeros; they are padded here. A bare list of traces, or one trace
object, is read as well (both are what people save from the API by hand).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentcause.connectors._spans import KINDS, Span, http_error, normalise_id
from latentcause.errors import TraceFormatError

__all__ = ["is_jaeger", "jaeger_errors", "parse_jaeger"]


def jaeger_errors(doc: object) -> str | None:
    """Return the message of a Jaeger API error response (``"errors"`` and no data), if any."""
    if not (isinstance(doc, Mapping) and doc.get("errors") and not doc.get("data")):
        return None
    errors = doc["errors"]
    first = errors[0] if isinstance(errors, list) and errors else errors
    if isinstance(first, Mapping):
        return str(first.get("msg") or first.get("message") or first)
    return str(first)


def is_jaeger(doc: object) -> bool:
    """Tell whether ``doc`` is a Jaeger query API response, a list of traces or one trace."""
    if isinstance(doc, Mapping) and isinstance(doc.get("data"), list):
        return all(isinstance(t, Mapping) and "spans" in t for t in doc["data"])
    if isinstance(doc, list):
        return bool(doc) and all(isinstance(t, Mapping) and "spans" in t for t in doc)
    return isinstance(doc, Mapping) and isinstance(doc.get("spans"), list) and (
        "processes" in doc or "traceID" in doc
    )


def parse_jaeger(doc: Any, where: str) -> list[Span]:
    """All spans of one Jaeger document; ``where`` prefixes every error message."""
    if isinstance(doc, Mapping) and "data" in doc:
        traces, key = doc["data"], "data"
    elif isinstance(doc, list):
        traces, key = doc, ""
    else:
        traces, key = [doc], None
    spans: list[Span] = []
    for i, trace in enumerate(traces):
        loc = where if key is None else f"{where}: {key}[{i}]"
        processes = trace.get("processes") or {}
        if not isinstance(processes, Mapping):
            raise TraceFormatError(f"{loc}.processes: expected an object")
        raw = trace.get("spans")
        if not isinstance(raw, list):
            raise TraceFormatError(f"{loc}.spans: expected a list")
        for k, sp in enumerate(raw):
            spans.append(_span(sp, processes, f"{loc}.spans[{k}]"))
    return spans


def _span(sp: object, processes: Mapping[str, Any], where: str) -> Span:
    if not isinstance(sp, Mapping):
        raise TraceFormatError(f"{where}: expected an object")
    trace_id = normalise_id(sp.get("traceID"), 16, "traceID", where)
    span_id = normalise_id(sp.get("spanID"), 8, "spanID", where)
    start = _micros(sp.get("startTime"), "startTime", where, allow_zero=False)
    duration = _micros(sp.get("duration"), "duration", where, allow_zero=True)
    tags = _tags(sp.get("tags"), where)
    kind = str(tags.get("span.kind", "unspecified")).lower()
    return Span(
        trace_id=trace_id, span_id=span_id, parent_id=_parent(sp, trace_id, where),
        service=_service(sp, processes, where), name=str(sp.get("operationName", "")),
        start_s=start / 10**6, end_s=(start + duration) / 10**6, error=_error(tags),
        kind=kind if kind in KINDS else "unspecified",
    )


def _parent(sp: Mapping[str, Any], trace_id: str, where: str) -> str | None:
    """Return the CHILD_OF parent within the trace, else FOLLOWS_FROM (as the Jaeger UI)."""
    refs = sp.get("references") or []
    if not isinstance(refs, list):
        raise TraceFormatError(f"{where}: references is not a list")
    ranked = sorted(
        (r for r in refs if isinstance(r, Mapping)),
        key=lambda r: 0 if str(r.get("refType", "")).upper() == "CHILD_OF" else 1,
    )
    for ref in ranked:
        ref_trace = ref.get("traceID")
        if ref_trace and normalise_id(ref_trace, 16, "references.traceID", where) != trace_id:
            continue  # a link to another trace, not a parent
        parent = normalise_id(ref.get("spanID"), 8, "references.spanID", where)
        return parent if parent.strip("0") else None
    legacy = sp.get("parentSpanID")
    if legacy:
        parent = normalise_id(legacy, 8, "parentSpanID", where)
        return parent if parent.strip("0") else None
    return None


def _service(sp: Mapping[str, Any], processes: Mapping[str, Any], where: str) -> str:
    pid = sp.get("processID")
    process = processes.get(str(pid)) if pid is not None else sp.get("process")
    if not isinstance(process, Mapping):
        if pid is not None:
            raise TraceFormatError(f"{where}: processID {pid!r} is not in the trace's processes")
        raise TraceFormatError(f"{where}: no processID")
    name = process.get("serviceName")
    if not name:
        raise TraceFormatError(f"{where}: process {pid!r} has no serviceName")
    return str(name)


def _micros(value: object, field: str, where: str, *, allow_zero: bool) -> int:
    if value is None or isinstance(value, bool):
        raise TraceFormatError(f"{where}: no {field}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if not isinstance(value, int) or value < 0 or (value == 0 and not allow_zero):
        raise TraceFormatError(f"{where}: {field} is not microseconds: {str(value)[:40]!r}")
    return value


def _tags(raw: object, where: str) -> dict[str, object]:
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise TraceFormatError(f"{where}: tags is not a list")
    return {str(t["key"]): t.get("value") for t in raw if isinstance(t, Mapping) and "key" in t}


def _error(tags: Mapping[str, object]) -> bool:
    """Jaeger's ``error`` tag, OpenTelemetry's ``otel.status_code`` or an HTTP 5xx."""
    flag = tags.get("error")
    if flag is True or (isinstance(flag, str) and flag.lower() == "true"):
        return True
    if str(tags.get("otel.status_code", "")).upper() == "ERROR":
        return True
    return http_error(tags)

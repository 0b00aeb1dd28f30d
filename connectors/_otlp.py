"""OTLP JSON: ``{"resourceSpans": [...]}`` documents, as the collector's file exporter writes.

The OTLP/JSON encoding (opentelemetry-proto ``docs/specification.md``, "JSON Protobuf
Encoding") is the protobuf JSON mapping with three changes: trace and span ids are hex, not
base64; enums are integers, not names; keys are lowerCamelCase only. Files in the wild are
written by both the collector (spec-exact) and by code that runs the SDK's OTLP encoder
through protobuf's ``MessageToJson`` (base64 ids, enum names), so both are read: ids by
``normalise_id``, enums by number or name, keys in lowerCamelCase or the proto's snake_case.
Times are ``fixed64`` nanoseconds, written as decimal strings (numbers are accepted too).
The older ``instrumentationLibrarySpans`` and Tempo's ``batches`` carry the same spans.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentcause.connectors._spans import KINDS, Span, http_error, normalise_id
from latentcause.errors import TraceFormatError

__all__ = ["is_otlp", "parse_otlp"]

_RESOURCE_SPANS = ("resourceSpans", "resource_spans", "batches")
_SCOPE_SPANS = (
    "scopeSpans", "scope_spans", "instrumentationLibrarySpans", "instrumentation_library_spans",
)
_STATUS_ERROR = 2
#: What a span of a resource without ``service.name`` belongs to (the SDK's default).
UNKNOWN_SERVICE = "unknown_service"


def is_otlp(doc: object) -> bool:
    """Tell whether ``doc`` is an OTLP traces document (or Jaeger v3's ``{"result": ...}``)."""
    if not isinstance(doc, Mapping):
        return False
    inner = doc.get("result")
    if isinstance(inner, Mapping):
        doc = inner
    return any(isinstance(doc.get(k), list) for k in _RESOURCE_SPANS)


def parse_otlp(doc: Mapping[str, Any], where: str) -> list[Span]:
    """All spans of one OTLP traces document; ``where`` prefixes every error message."""
    if isinstance(doc.get("result"), Mapping):
        doc = doc["result"]
    key = next(k for k in _RESOURCE_SPANS if isinstance(doc.get(k), list))
    spans: list[Span] = []
    for i, rs in enumerate(doc[key]):
        loc = f"{where}: {key}[{i}]"
        if not isinstance(rs, Mapping):
            raise TraceFormatError(f"{loc}: expected an object")
        resource = rs.get("resource") or {}
        service = str(_attributes(resource, loc).get("service.name") or UNKNOWN_SERVICE)
        scopes_key = next((k for k in _SCOPE_SPANS if k in rs), None)
        scopes = rs.get(scopes_key, []) if scopes_key else []
        if not isinstance(scopes, list):
            raise TraceFormatError(f"{loc}.{scopes_key}: expected a list")
        for j, ss in enumerate(scopes):
            raw = ss.get("spans", []) if isinstance(ss, Mapping) else None
            if not isinstance(raw, list):
                raise TraceFormatError(f"{loc}.{scopes_key}[{j}]: expected an object with spans")
            for k, sp in enumerate(raw):
                spans.append(_span(sp, service, f"{loc}.{scopes_key}[{j}].spans[{k}]"))
    return spans


def _span(sp: object, service: str, where: str) -> Span:
    if not isinstance(sp, Mapping):
        raise TraceFormatError(f"{where}: expected an object")
    trace_id = normalise_id(_get(sp, "traceId", "trace_id"), 16, "traceId", where)
    span_id = normalise_id(_get(sp, "spanId", "span_id"), 8, "spanId", where)
    parent = _get(sp, "parentSpanId", "parent_span_id")
    parent_id = normalise_id(parent, 8, "parentSpanId", where) if parent else None
    if parent_id is not None and not parent_id.strip("0"):
        parent_id = None  # all-zero: the invalid span id, i.e. no parent
    start = _nanos(_get(sp, "startTimeUnixNano", "start_time_unix_nano"), "startTimeUnixNano",
                   where)
    end = _nanos(_get(sp, "endTimeUnixNano", "end_time_unix_nano"), "endTimeUnixNano", where)
    if end < start:
        raise TraceFormatError(f"{where}: endTimeUnixNano is before startTimeUnixNano")
    status = sp.get("status") or {}
    code = status.get("code") if isinstance(status, Mapping) else None
    error = code in (_STATUS_ERROR, "STATUS_CODE_ERROR") or http_error(_attributes(sp, where))
    return Span(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, service=service,
        name=str(sp.get("name", "")), start_s=start / 10**9, end_s=end / 10**9,
        error=bool(error), kind=_kind(sp.get("kind"), where),
    )


def _get(obj: Mapping[str, Any], camel: str, snake: str) -> Any:
    return obj[camel] if camel in obj else obj.get(snake)


def _nanos(value: object, field: str, where: str) -> int:
    """Read a fixed64 nanosecond time: a decimal string per OTLP/JSON, or an integer."""
    if value is None or value == "" or value == 0 or value == "0":
        raise TraceFormatError(f"{where}: no {field}")
    if isinstance(value, bool):
        raise TraceFormatError(f"{where}: {field} is not a time: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise TraceFormatError(f"{where}: {field} is not nanoseconds: {str(value)[:40]!r}")


def _kind(value: object, where: str) -> str:
    """SpanKind as an integer (OTLP/JSON) or a name such as ``SPAN_KIND_SERVER``."""
    if value is None:
        return "unspecified"
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(KINDS):
        return KINDS[value]
    if isinstance(value, str):
        name = value.lower().removeprefix("span_kind_")
        if name in KINDS:
            return name
    raise TraceFormatError(f"{where}: unknown span kind {value!r}")


def _attributes(obj: Mapping[str, Any], where: str) -> dict[str, object]:
    """``[{"key": k, "value": {"stringValue": v}}, ...]`` as a plain dict of scalars."""
    raw = obj.get("attributes") or []
    if not isinstance(raw, list):
        raise TraceFormatError(f"{where}: attributes is not a list")
    out: dict[str, object] = {}
    for kv in raw:
        if not isinstance(kv, Mapping) or "key" not in kv:
            continue
        value = kv.get("value")
        if isinstance(value, Mapping) and value:
            out[str(kv["key"])] = next(iter(value.values()))
    return out

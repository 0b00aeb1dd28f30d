"""The span model shared by the trace readers, and what a set of spans says about requests.

Both trace formats (OTLP JSON, Jaeger JSON) are parsed into the same small ``Span``; the
request analysis here (which span is a request to its service, how long that request spent
in its own code versus waiting on other services, who calls whom) knows nothing of either
format.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from latentcause.errors import TraceFormatError

__all__ = [
    "KINDS",
    "Request",
    "Span",
    "call_graph",
    "http_error",
    "normalise_id",
    "requests_of",
]

#: Span kinds, as OpenTelemetry names them (lower case).
KINDS: tuple[str, ...] = ("unspecified", "internal", "server", "client", "producer", "consumer")

_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True, slots=True)
class Span:
    """One span, independent of the format it was read from.

    Attributes
    ----------
    trace_id, span_id
        Lower-case hex, zero-padded to 32 and 16 digits.
    parent_id
        The parent's span id, or None for a root span (or a span whose parent is unknown).
    service
        The service that recorded the span (OTLP ``service.name``, Jaeger process).
    name
        Operation name.
    start_s, end_s
        Unix seconds.
    error
        Whether the span failed (status, ``error`` tag or an HTTP 5xx status).
    kind
        One of ``KINDS``.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    service: str
    name: str
    start_s: float
    end_s: float
    error: bool
    kind: str = "unspecified"

    @property
    def duration_s(self) -> float:
        """Length of the span in seconds."""
        return self.end_s - self.start_s


@dataclass(frozen=True, slots=True)
class Request:
    """A request to a service: a span whose parent is in another service, or has none.

    ``callee_s`` is the time, within the request, during which at least one call to another
    service was in progress (the union of those calls' intervals, so parallel calls count
    once); ``self_s`` is the rest. A slow service has a large ``self_s``; a service waiting
    on a slow dependency has a large ``callee_s`` and an unchanged ``self_s``.
    """

    service: str
    start_s: float
    duration_s: float
    error: bool
    self_s: float
    callee_s: float
    calls_out: bool


def normalise_id(value: object, nbytes: int, field: str, where: str) -> str:
    """Return a trace or span id as lower-case hex of ``2 * nbytes`` digits.

    OTLP/JSON writes ids as hex; the generic protobuf JSON mapping (protobuf's
    ``MessageToJson``, which the SDK's OTLP encoder output goes through) writes bytes fields
    as base64; Jaeger writes hex without leading zeros. A base64 id of 8 or 16 bytes always
    ends in ``=``, so the two encodings cannot be confused.
    """
    if not isinstance(value, str) or not value:
        raise TraceFormatError(f"{where}: no {field}")
    if len(value) <= 2 * nbytes and _HEX.fullmatch(value):
        return value.lower().rjust(2 * nbytes, "0")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != nbytes:
        raise TraceFormatError(
            f"{where}: {field} {value[:40]!r} is neither {2 * nbytes} hex digits nor "
            f"base64 of {nbytes} bytes"
        )
    return raw.hex()


def http_error(attributes: Mapping[str, object]) -> bool:
    """Tell whether an HTTP status attribute (old or new semantic conventions) is 5xx."""
    for key in ("http.status_code", "http.response.status_code"):
        value = attributes.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            code = int(str(value))
        except ValueError:
            continue
        if code >= 500:
            return True
    return False


def call_graph(spans: Iterable[Span]) -> dict[str, frozenset[str]]:
    """Caller service -> callee services, from parent links that cross a service boundary.

    Every service appears as a key, with an empty set when it was not seen calling another:
    a leaf is known to call nothing, which is different from not being known at all.
    """
    spans = list(spans)
    index = {(s.trace_id, s.span_id): s for s in spans}
    edges: dict[str, set[str]] = {s.service: set() for s in spans}
    for s in spans:
        parent = index.get((s.trace_id, s.parent_id)) if s.parent_id else None
        if parent is not None and parent.service != s.service:
            edges[parent.service].add(s.service)
    return {service: frozenset(callees) for service, callees in sorted(edges.items())}


def requests_of(spans: Sequence[Span]) -> list[Request]:
    """List the requests each service served, with their self and callee time.

    A span is a request to its service when its parent is in another service or absent
    from the data (a root, or a parent that was not recorded). The request's own work is
    the subtree of spans of the same service under it; the spans of other services hanging
    off that subtree are its calls out.
    """
    index = {(s.trace_id, s.span_id): s for s in spans}
    children: dict[tuple[str, str], list[Span]] = defaultdict(list)
    for s in spans:
        if s.parent_id and s.parent_id != s.span_id:
            children[(s.trace_id, s.parent_id)].append(s)
    out: list[Request] = []
    for s in spans:
        parent = index.get((s.trace_id, s.parent_id)) if s.parent_id else None
        if parent is not None and parent.service == s.service:
            continue
        calls = _calls_out(s, children)
        callee = _covered(calls, s.start_s, s.end_s)
        duration = s.duration_s
        out.append(Request(
            service=s.service, start_s=s.start_s, duration_s=duration, error=s.error,
            self_s=max(duration - callee, 0.0), callee_s=callee, calls_out=bool(calls),
        ))
    return out


def _calls_out(root: Span, children: Mapping[tuple[str, str], list[Span]]) -> list[Span]:
    """Spans of other services whose parent is in ``root``'s same-service subtree."""
    calls: list[Span] = []
    stack = [root]
    seen = {root.span_id}
    while stack:
        node = stack.pop()
        for child in children.get((node.trace_id, node.span_id), ()):
            if child.span_id in seen:
                continue  # a parent cycle in broken data: visit each span once
            seen.add(child.span_id)
            if child.service == root.service:
                stack.append(child)
            else:
                calls.append(child)
    return calls


def _covered(calls: Sequence[Span], lo: float, hi: float) -> float:
    """Length of the union of the calls' intervals, clipped to [lo, hi]."""
    intervals = sorted(
        (max(c.start_s, lo), min(c.end_s, hi)) for c in calls if c.end_s > lo and c.start_s < hi
    )
    total = 0.0
    cur_lo, cur_hi = None, None
    for a, b in intervals:
        if cur_hi is None or a > cur_hi:
            if cur_hi is not None and cur_lo is not None:
                total += cur_hi - cur_lo
            cur_lo, cur_hi = a, b
        else:
            cur_hi = max(cur_hi, b)
    if cur_hi is not None and cur_lo is not None:
        total += cur_hi - cur_lo
    return total

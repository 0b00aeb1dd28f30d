"""Spans (OTLP JSON or Jaeger JSON) as Observations: call graph, rate, errors, latency.

The format is recognised from the content, not the file name: a ``resourceSpans`` document
is OTLP, a ``data`` list of traces with ``spans`` is Jaeger. A file is either one JSON
document or JSON Lines (one document per line, as the collector's file exporter appends
them). A JSON Lines file whose last line is cut off, as when the exporter was stopped
mid-write, keeps its complete lines with a warning; any other damage is a one-line
``TraceFormatError`` naming the file, the line and the span.

From the spans, per service and time bin: ``rps`` (requests per second), ``err`` (their
error ratio), ``lat_avg``, ``lat_p50``, ``lat_p90``, ``lat_p99`` (seconds), and for services
that call others ``self_time`` and ``callee_time`` (seconds, mean per request): these keep a
slow service apart from one waiting on a slow dependency. A span is a request to its
service when its parent is in another service or absent. Requests are binned by their
start, so a request's latency belongs to the conditions it arrived into.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentcause.connectors._jaeger import is_jaeger, jaeger_errors, parse_jaeger
from latentcause.connectors._otlp import is_otlp, parse_otlp
from latentcause.connectors._spans import Request, Span, call_graph, requests_of
from latentcause.errors import InputError, TraceFormatError, WindowError
from latentcause.observations import MIN_POINTS, Observations, validate_frame

__all__ = ["Span", "call_graph", "choose_bin_s", "read_spans", "read_traces", "span_frame"]

log = logging.getLogger(__name__)

#: Requests a bin of a typical (median) service should hold: enough for a stable median
#: and a p90 that is not just the largest value.
TARGET_PER_BIN = 50
#: Bin widths offered, seconds: round numbers that line up with scrape intervals.
NICE_BINS_S: tuple[float, ...] = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
#: Fewest bins the window is cut into, so onset inference has a baseline and an after.
MIN_BINS = 4 * MIN_POINTS
#: At most this share of the window is cut at its end for requests still running there.
MAX_TAIL_SHARE = 0.25
QUANTILES: tuple[tuple[str, float], ...] = (("lat_p50", 0.5), ("lat_p90", 0.9), ("lat_p99", 0.99))


def read_spans(path: Path) -> list[Span]:
    """Read every span of an OTLP JSON or Jaeger JSON file (single document or JSON Lines).

    Spans recorded twice (the same trace and span id) are kept once.

    Raises
    ------
    InputError
        The file does not exist or cannot be read.
    TraceFormatError
        Empty file, not JSON, an unknown format, or a span without ids or times.
    """
    path = Path(path)
    documents = _documents(_text(path), path)
    spans: list[Span] = []
    first: str | None = None
    for where, doc in documents:
        fmt = "otlp" if is_otlp(doc) else "jaeger" if is_jaeger(doc) else None
        failure = jaeger_errors(doc) if fmt is None else None
        if failure is not None:
            raise TraceFormatError(f"{where}: a Jaeger error response, not traces: {failure}")
        if fmt is None:
            raise TraceFormatError(
                f"{where}: unknown trace format: neither OTLP JSON ({{\"resourceSpans\": ...}}) "
                "nor Jaeger JSON ({\"data\": [{\"spans\": ...}]})"
            )
        if first is not None and fmt != first:
            raise TraceFormatError(f"{where}: {fmt} document in a file of {first} documents")
        first = fmt
        spans.extend(parse_otlp(doc, where) if fmt == "otlp" else parse_jaeger(doc, where))
    unique = list({(s.trace_id, s.span_id): s for s in spans}.values())
    if len(unique) < len(spans):
        log.info("%s: %d spans recorded twice were kept once", path, len(spans) - len(unique))
    if not unique:
        raise TraceFormatError(f"{path}: the file holds no spans")
    return unique


def read_traces(path: Path, bin_s: float | None = None) -> Observations:
    """Read spans and turn them into Observations on a regular time grid.

    Parameters
    ----------
    path
        OTLP JSON or Jaeger JSON file.
    bin_s
        Bin width in seconds; default: chosen from the span density (``choose_bin_s``).
        Pass the metrics' step to merge the two on the same grid.

    Returns
    -------
    Observations
        Columns ``(service, signal)``, index the bin ends (unix seconds, multiples of the bin
        width, like a scraper's sample over the interval before it), ``call_graph`` from
        the spans, ``source="traces:<path>"``.
    """
    path = Path(path)
    spans = read_spans(path)
    frame, width = span_frame(spans, bin_s=bin_s, what=str(path))
    frame = validate_frame(frame, f"traces:{path}")
    graph = call_graph(spans)
    start, end = float(frame.index[0]) - width, float(frame.index[-1])
    note = (f"traces: {len(spans)} spans of {len(graph)} services in {width:g} s bins; rates "
            "count recorded requests (a constant share of all under head sampling)")
    return Observations(
        frame=frame, source=f"traces:{path}", queries=(str(path),), call_graph=graph,
        window=(start, end), notes=(note,),
    )


def span_frame(
    spans: Sequence[Span], *, bin_s: float | None = None, what: str = "spans"
) -> tuple[pd.DataFrame, float]:
    """Per-service signals over time bins; returns the wide frame and the bin width.

    Only bins wholly inside the recording are kept: it starts at the first span's end
    (spans are exported when they end, so requests starting later are all there) and is
    trusted up to the last span's end less the 99th percentile request duration (requests
    arriving later may still have been running when the recording stopped, and only the
    fast ones would be seen).
    """
    requests = requests_of(spans)
    first_end = min(s.end_s for s in spans)
    last_end = max(s.end_s for s in spans)
    durations = np.array([r.duration_s for r in requests])
    tail = min(float(np.quantile(durations, 0.99)), MAX_TAIL_SHARE * (last_end - first_end))
    width = _bin_width(bin_s, requests, last_end - first_end, what)
    k0 = math.ceil(first_end / width)
    k1 = math.floor((last_end - tail) / width)  # bins k0 .. k1 - 1
    if k1 - k0 < 1:
        raise WindowError(
            f"{what}: the spans cover {last_end - first_end:.1f} s, not one whole "
            f"{width:g} s bin"
        )
    grid = np.arange(k0, k1)
    table = pd.DataFrame({
        "service": [r.service for r in requests],
        "bin": np.floor(np.array([r.start_s for r in requests]) / width).astype(np.int64),
        "latency": durations,
        "error": np.array([r.error for r in requests], dtype=float),
        "self": np.array([r.self_s for r in requests]),
        "callee": np.array([r.callee_s for r in requests]),
    })
    table = table[(table["bin"] >= k0) & (table["bin"] < k1)]
    callers = {r.service for r in requests if r.calls_out}
    columns: dict[tuple[str, str], np.ndarray] = {}
    for service in sorted({r.service for r in requests}):
        group = table[table["service"] == service].groupby("bin")
        columns.update(_service_columns(service, group, grid, width, service in callers))
    frame = pd.DataFrame(columns, index=pd.Index((grid + 1) * width, name="time", dtype=float))
    frame.columns = pd.MultiIndex.from_tuples(list(columns), names=["component", "signal"])
    return frame, width


def choose_bin_s(requests: Sequence[Request], span_s: float) -> float:
    """Pick a round bin width giving a typical service ~``TARGET_PER_BIN`` requests a bin.

    The typical service is the median by request count, so one rarely called service does
    not widen every bin; the width is at least 1 s and leaves at least ``MIN_BINS`` bins
    when the window allows it.
    """
    counts = pd.Series([r.service for r in requests]).value_counts()
    rate = float(np.median(counts.to_numpy())) / max(span_s, 1e-9)
    raw = TARGET_PER_BIN / rate if rate > 0 else span_s
    cap = span_s / MIN_BINS
    fits = [b for b in NICE_BINS_S if b >= raw]
    width = fits[0] if fits else NICE_BINS_S[-1]
    if width > cap:
        below = [b for b in NICE_BINS_S if b <= cap]
        width = below[-1] if below else NICE_BINS_S[0]
    return float(width)


def _bin_width(bin_s: float | None, requests: Sequence[Request], span_s: float,
               what: str) -> float:
    if bin_s is None:
        return choose_bin_s(requests, span_s)
    if not (math.isfinite(bin_s) and bin_s > 0):
        raise InputError(f"{what}: bin width must be a positive number of seconds, not {bin_s}")
    return float(bin_s)


def _service_columns(
    service: str, group: Any, grid: np.ndarray, width: float, calls_out: bool
) -> dict[tuple[str, str], np.ndarray]:
    """Compute the signals of one service on ``grid``.

    A bin where no request arrived has rate zero and NaN error ratio and latencies
    (undefined, not zero).
    """
    count = group.size().reindex(grid, fill_value=0).to_numpy(dtype=float)
    out: dict[tuple[str, str], np.ndarray] = {
        (service, "rps"): count / width,
        (service, "err"): group["error"].mean().reindex(grid).to_numpy(dtype=float),
        (service, "lat_avg"): group["latency"].mean().reindex(grid).to_numpy(dtype=float),
    }
    for name, q in QUANTILES:
        out[(service, name)] = group["latency"].quantile(q).reindex(grid).to_numpy(dtype=float)
    if calls_out:
        out[(service, "self_time")] = group["self"].mean().reindex(grid).to_numpy(dtype=float)
        out[(service, "callee_time")] = group["callee"].mean().reindex(grid).to_numpy(
            dtype=float)
    return out


def _text(path: Path) -> str:
    """Read the file as text, undoing gzip (collectors and people compress span dumps)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot be read: {exc.strerror or exc}") from exc
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise TraceFormatError(f"{path}: gzip data is damaged or truncated") from exc
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        raise TraceFormatError(f"{path}: zstd-compressed; decompress it first (zstd -d)")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TraceFormatError(
            f"{path}: not UTF-8 text (binary OTLP protobuf?); export spans as OTLP JSON "
            "or Jaeger JSON"
        ) from exc


def _documents(text: str, path: Path) -> list[tuple[str, Any]]:
    """One document, or JSON Lines; each with the prefix its error messages start with."""
    body = text.strip()
    if not body:
        raise TraceFormatError(f"{path}: the file is empty")
    try:
        return [(str(path), json.loads(body))]
    except json.JSONDecodeError as whole:
        lines = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
        if len(lines) < 2 or not _parses(lines[0][1]):
            ends = " (the document ends early: truncated?)" if whole.pos >= len(body) - 1 else ""
            raise TraceFormatError(
                f"{path}: not valid JSON: {whole.msg} at line {whole.lineno} column "
                f"{whole.colno}{ends}"
            ) from None
    docs: list[tuple[str, Any]] = []
    for i, (n, line) in enumerate(lines):
        try:
            docs.append((f"{path}: line {n}", json.loads(line)))
        except json.JSONDecodeError as exc:
            if i == len(lines) - 1:
                log.warning("%s: line %d is cut off (truncated file); read the %d complete "
                            "lines before it", path, n, len(docs))
                break
            raise TraceFormatError(
                f"{path}: line {n}: not valid JSON: {exc.msg} at column {exc.colno}"
            ) from None
    return docs


def _parses(line: str) -> bool:
    try:
        json.loads(line)
    except json.JSONDecodeError:
        return False
    return True

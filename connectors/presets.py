"""Which PromQL gives which signal: built-in presets detected on the server, or a TOML file.

Presets
-------
Without ``--signals`` the server is asked what it has (``/api/v1/label/__name__/values``,
``/api/v1/series`` and, when scrape targets declare them, ``/api/v1/metadata``) and the first
preset that fits gives each signal:

- ``prometheus-client`` (client-library conventions): ``http_requests_total`` with a ``code`` or
  ``status`` label gives ``rps`` and ``err`` (the 5xx share); the histogram
  ``http_request_duration_seconds`` gives ``lat_p50``, ``lat_p90``, ``lat_p99``
  (``histogram_quantile``) and ``lat_avg`` (``_sum / _count``); ``process_cpu_seconds_total``
  gives ``cpu`` (cores) and ``process_resident_memory_bytes`` gives ``mem``.
- ``otel-semconv`` (OpenTelemetry HTTP semantic conventions exported to Prometheus):
  ``http_server_request_duration_seconds`` gives ``rps``, ``err`` (label
  ``http_response_status_code``) and the latencies.
- ``cadvisor``: ``container_cpu_usage_seconds_total`` (``cpu``) and
  ``container_memory_working_set_bytes`` (``mem``), without the pod-level ``container=""`` and
  ``POD`` series.
- ``kube-state-metrics``: ``kube_pod_container_status_restarts_total`` gives ``restarts``.

Counters go through ``rate()`` over a window of ``max(4 scrape intervals, step + 1 scrape
interval)`` so counter resets are absorbed and every step sees at least two samples; ratios are
formed in PromQL. The component label is the first of ``service``, ``service_name``, ``job``,
``container``, ``app`` that takes more than one value on the detected series (a single-valued
one is used only when none splits); presets whose series lack it are skipped and reported.

Signal file
-----------
``--signals FILE`` replaces the presets with a TOML map::

    # which label of every result series names the component
    component_label = "service"

    [signals]
    # canonical signal or alias = PromQL; every result series must carry component_label
    cpu = 'sum by (service) (rate(process_cpu_seconds_total[1m]))'
    rps = 'sum by (service) (rate(http_requests_total[1m]))'
    lat_p99 = '''histogram_quantile(0.99,
        sum by (service, le) (rate(http_request_duration_seconds_bucket[1m])))'''

Keys are canonical signals or their aliases (``load``, ``latency-99``, ...; see
``latentcause.signals``); queries are sent exactly as written. A malformed file, an unknown key,
two keys for the same signal or a missing ``component_label`` is an ``InputError`` naming the
file.
"""

from __future__ import annotations

import logging
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from latentcause.errors import InputError, QueryError
from latentcause.signals import canonical_signal

if TYPE_CHECKING:
    from latentcause.connectors._promapi import PromApi

__all__ = [
    "COMPONENT_LABELS",
    "PRESETS",
    "Preset",
    "SignalMap",
    "detect_presets",
    "load_signal_file",
    "rate_window",
]

log = logging.getLogger(__name__)

#: Labels that may name the component, in order of preference.
COMPONENT_LABELS: tuple[str, ...] = ("service", "service_name", "job", "container", "app")

#: Scrape interval assumed when it cannot be measured: long enough not to leave rate() empty.
DEFAULT_SCRAPE_S = 60.0

_CADVISOR = 'container!="",container!="POD"'


@dataclass(frozen=True)
class Preset:
    """One way of computing a signal from a well-known metric.

    Attributes
    ----------
    family
        The exporter convention it belongs to, e.g. ``prometheus-client``.
    signal
        Canonical signal it yields.
    metric
        Metric that must exist on the server (the one the query reads).
    probe
        Series selector whose series are inspected for labels (``_count`` rather than
        ``_bucket``: same labels, a fraction of the series; cAdvisor without its pod-level
        series).
    template
        PromQL with ``{L}`` (component label), ``{w}`` (rate window) and ``{status}``
        (status-code label) placeholders; literal braces doubled.
    kind
        Metric type it expects (``counter``, ``gauge``, ``histogram``); a server declaring
        another type in its metadata makes the preset inapplicable.
    requires
        Further metrics that must exist (``_sum`` and ``_count`` for an average).
    status_labels
        For error ratios: status-code labels, one of which the probe series must carry.
    """

    family: str
    signal: str
    metric: str
    probe: str
    template: str
    kind: str
    requires: tuple[str, ...] = ()
    status_labels: tuple[str, ...] = ()

    def render(self, label: str, window: str, status: str | None) -> str:
        """Return the PromQL for component label ``label`` and rate window ``window``."""
        return self.template.format(L=label, w=window, status=status or "")


def _rate(metric: str, selector: str = "") -> str:
    sel = "{{" + selector + "}}" if selector else ""
    return f"sum by ({{L}}) (rate({metric}{sel}[{{w}}]))"


def _err(metric: str) -> str:
    # Services that never failed have no 5xx series; "or 0 * total" keeps them at 0, not absent.
    five = _rate(metric, '{status}=~"5.."')
    total = _rate(metric)
    return f"({five} or 0 * {total}) / {total}"


def _quantile(q: float, bucket: str) -> str:
    return f"histogram_quantile({q}, sum by ({{L}}, le) (rate({bucket}[{{w}}])))"


def _http_histogram(family: str, base: str, status: tuple[str, ...]) -> list[Preset]:
    bucket, count, total = f"{base}_bucket", f"{base}_count", f"{base}_sum"
    out = [
        Preset(family, "rps", count, count, _rate(count), "histogram"),
        Preset(family, "err", count, count, _err(count), "histogram", status_labels=status),
    ]
    for q, sig in ((0.5, "lat_p50"), (0.9, "lat_p90"), (0.99, "lat_p99")):
        out.append(Preset(family, sig, bucket, count, _quantile(q, bucket), "histogram"))
    out.append(
        Preset(
            family, "lat_avg", total, count, f"{_rate(total)} / {_rate(count)}", "histogram",
            requires=(count,),
        )
    )
    return out


_CLIENT_STATUS = ("code", "status", "status_code")
_OTEL_STATUS = ("http_response_status_code", "http_status_code")

#: Every preset, in order of preference: the first applicable one gives its signal.
PRESETS: tuple[Preset, ...] = (
    Preset("prometheus-client", "rps", "http_requests_total", "http_requests_total",
           _rate("http_requests_total"), "counter"),
    Preset("prometheus-client", "err", "http_requests_total", "http_requests_total",
           _err("http_requests_total"), "counter", status_labels=_CLIENT_STATUS),
    *_http_histogram("prometheus-client", "http_request_duration_seconds", _CLIENT_STATUS),
    Preset("prometheus-client", "cpu", "process_cpu_seconds_total", "process_cpu_seconds_total",
           _rate("process_cpu_seconds_total"), "counter"),
    Preset("prometheus-client", "mem", "process_resident_memory_bytes",
           "process_resident_memory_bytes", "sum by ({L}) (process_resident_memory_bytes)",
           "gauge"),
    *_http_histogram("otel-semconv", "http_server_request_duration_seconds", _OTEL_STATUS),
    Preset("cadvisor", "cpu", "container_cpu_usage_seconds_total",
           f"container_cpu_usage_seconds_total{{{_CADVISOR}}}",
           _rate("container_cpu_usage_seconds_total", _CADVISOR), "counter"),
    Preset("cadvisor", "mem", "container_memory_working_set_bytes",
           f"container_memory_working_set_bytes{{{_CADVISOR}}}",
           f"sum by ({{L}}) (container_memory_working_set_bytes{{{{{_CADVISOR}}}}})", "gauge"),
    Preset("kube-state-metrics", "restarts", "kube_pod_container_status_restarts_total",
           "kube_pod_container_status_restarts_total",
           "sum by ({L}) (kube_pod_container_status_restarts_total)", "counter"),
)


@dataclass(frozen=True)
class SignalMap:
    """The PromQL to send per canonical signal and the label that names the component.

    Attributes
    ----------
    component_label
        Label of each result series that names its component.
    queries
        Canonical signal -> PromQL, in a stable order.
    origin
        ``presets`` or the signal file's path.
    families, metrics
        Preset families and metrics the queries read (empty for a signal file).
    components
        Component names seen on the detected series (empty for a signal file: known only
        once the queries run).
    rate_window
        The ``rate()`` window the presets use, e.g. ``60s`` (None for a signal file).
    notes
        What was found but not used, and why.
    """

    component_label: str
    queries: Mapping[str, str]
    origin: str = "presets"
    families: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    components: tuple[str, ...] = ()
    rate_window: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> list[str]:
        """Human-readable lines: where the map comes from, the label, the query per signal."""
        lines = [f"signals from: {self.origin}"]
        if self.families:
            lines.append("detected families: " + ", ".join(self.families))
            lines.append("metrics: " + ", ".join(self.metrics))
        lines.append(f"component label: {self.component_label}")
        if self.components:
            lines.append(f"components ({len(self.components)}): " + ", ".join(self.components))
        if self.rate_window:
            lines.append(f"rate window: {self.rate_window}")
        width = max((len(s) for s in self.queries), default=0)
        lines.append("queries:")
        lines.extend(f"  {s:<{width}}  {q}" for s, q in self.queries.items())
        lines.extend(f"note: {n}" for n in self.notes)
        return lines


def load_signal_file(path: Path) -> SignalMap:
    """Read a ``--signals`` TOML file (format in the module docstring).

    Raises
    ------
    InputError
        Unreadable or malformed TOML, missing ``component_label`` or ``[signals]``, an unknown
        signal key, two keys naming one signal, or a query that is not a non-empty string.
    """
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"--signals {path}: no such file") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"--signals {path}: not valid TOML ({exc})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--signals {path}: cannot be read ({type(exc).__name__})") from None
    unknown = sorted(set(doc) - {"component_label", "signals"})
    if unknown:
        raise InputError(
            f"--signals {path}: unknown key {unknown[0]!r}; expected component_label and [signals]"
        )
    label = doc.get("component_label")
    if not isinstance(label, str) or not label.strip():
        raise InputError(f"--signals {path}: component_label = \"<label>\" is missing")
    table = doc.get("signals")
    if not isinstance(table, dict) or not table:
        raise InputError(f"--signals {path}: a non-empty [signals] table is missing")
    queries: dict[str, str] = {}
    keys: dict[str, str] = {}
    for key, promql in table.items():
        signal = canonical_signal(str(key))
        if signal is None:
            raise InputError(
                f"--signals {path}: {key!r} is not a known signal (e.g. cpu, mem, rps, err, "
                "lat_avg, lat_p99, restarts)"
            )
        if signal in queries:
            raise InputError(f"--signals {path}: {keys[signal]!r} and {key!r} both give {signal}")
        if not isinstance(promql, str) or not promql.strip():
            raise InputError(f"--signals {path}: {key!r} must be a PromQL string")
        queries[signal] = promql.strip()
        keys[signal] = str(key)
    return SignalMap(component_label=label.strip(), queries=queries, origin=str(path))


def rate_window(step: float, scrape_s: float) -> str:
    """Return the ``rate()`` window: at least 4 scrapes, and a step plus a scrape."""
    return f"{math.ceil(max(4.0 * scrape_s, step + scrape_s))}s"


def detect_presets(api: PromApi, start: float, end: float, step: float) -> SignalMap:
    """Find which presets the server can serve in ``[start, end]`` and render their PromQL.

    Raises
    ------
    QueryError
        No preset metric exists in the window, or none of their series carries a component
        label; the message suggests ``--signals``.
    """
    names = set(api.metric_names(start, end))
    present = [p for p in PRESETS if p.metric in names and all(r in names for r in p.requires)]
    if not present:
        raise QueryError(
            f"{api.shown}: none of the preset metrics (http_requests_total, "
            "http_request_duration_seconds, process_cpu_seconds_total, cAdvisor, "
            "kube-state-metrics, OpenTelemetry http_server_request_duration_seconds) has data "
            "in the window; give a --signals FILE"
        )
    types = api.metadata()
    notes: list[str] = []
    usable = []
    for p in present:
        declared = _declared_type(types, p.metric)
        if declared not in (None, "unknown", p.kind):
            notes.append(f"{p.metric} is declared {declared}, not {p.kind}: no {p.signal} from it")
        else:
            usable.append(p)
    probes = dict.fromkeys(p.probe for p in usable)
    series = {probe: api.series(probe, start, end) for probe in probes}
    label = _choose_label(series)
    if label is None:
        raise QueryError(
            f"{api.shown}: no series of the preset metrics carries a component label "
            f"({', '.join(COMPONENT_LABELS)}); give a --signals FILE with component_label"
        )
    chosen: dict[str, tuple[Preset, str | None]] = {}
    for p in usable:
        if p.signal in chosen:
            continue
        rows = series[p.probe]
        if not any(r.get(label) for r in rows):
            notes.append(f"{p.family}: {p.probe} has no {label!r} label; no {p.signal} from it")
            continue
        status = None
        if p.status_labels:
            status = next((s for s in p.status_labels if any(s in r for r in rows)), None)
            if status is None:
                notes.append(f"{p.family}: {p.probe} has no status-code label; no {p.signal}")
                continue
        chosen[p.signal] = (p, status)
    window = rate_window(step, _scrape_interval(api, chosen, end, start))
    queries = {s: p.render(label, window, st) for s, (p, st) in chosen.items()}
    used = [p for p, _ in chosen.values()]
    components = sorted({r[label] for p in used for r in series[p.probe] if r.get(label)})
    log.info("presets: label %s, %d signals, %d components", label, len(queries), len(components))
    return SignalMap(
        component_label=label,
        queries=queries,
        origin="presets",
        families=tuple(dict.fromkeys(p.family for p in used)),
        metrics=tuple(dict.fromkeys(m for p in used for m in (p.metric, *p.requires))),
        components=tuple(components),
        rate_window=window,
        notes=tuple(notes),
    )


def _declared_type(types: Mapping[str, str], metric: str) -> str | None:
    """Return the metadata type of ``metric``'s family, trying the names exporters use for it."""
    candidates = [metric]
    for suffix in ("_total", "_bucket", "_count", "_sum"):
        if metric.endswith(suffix):
            candidates.append(metric[: -len(suffix)])
    for name in candidates:
        if name in types:
            return types[name]
    return None


def _choose_label(series: Mapping[str, list[dict[str, str]]]) -> str | None:
    """First candidate label with more than one value; else the first with exactly one."""
    values = {
        lab: {r[lab] for rows in series.values() for r in rows if r.get(lab)}
        for lab in COMPONENT_LABELS
    }
    for lab in COMPONENT_LABELS:
        if len(values[lab]) > 1:
            return lab
    for lab in COMPONENT_LABELS:
        if values[lab]:
            return lab
    return None


def _scrape_interval(
    api: PromApi, chosen: Mapping[str, tuple[Preset, str | None]], end: float, start: float
) -> float:
    """Estimate the scrape interval: span / samples of the densest series.

    Counted over the last 20 minutes of the window (or all of it if shorter); falls back to
    ``DEFAULT_SCRAPE_S`` when there are too few samples to tell.
    """
    counters = [p for p, _ in chosen.values() if p.kind in ("counter", "histogram")]
    probe = counters[0].probe if counters else next(iter(chosen.values()))[0].probe
    span = int(max(60.0, min(1200.0, end - start)))
    result = api.query(f"max(count_over_time({probe}[{span}s]))", end)
    try:
        count = float(result[0]["value"][1])
    except (IndexError, KeyError, TypeError, ValueError):
        count = 0.0
    if count < 3:
        log.info("scrape interval of %s unknown; assuming %gs", probe, DEFAULT_SCRAPE_S)
        return DEFAULT_SCRAPE_S
    interval = span / count
    log.info("scrape interval of %s is about %.1fs", probe, interval)
    return interval

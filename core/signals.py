"""The canonical signal vocabulary and the aliases real exporters and data sets use.

A column of the wide layout is ``<component>_<signal>``: the signal is the longest known name
or alias at the end of the column, everything before the separating underscore is the
component (which may hold any character). Quantile latencies are normalised to ``lat_pNN``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "CANONICAL_SIGNALS",
    "SignalKind",
    "canonical_signal",
    "signal_kind",
    "split_column",
]

#: The canonical signals of INTERFACE.md (``lat_pNN`` stands for every quantile).
CANONICAL_SIGNALS: tuple[str, ...] = (
    "cpu",
    "mem",
    "rps",
    "err",
    "lat_avg",
    "lat_p50",
    "lat_p90",
    "lat_p95",
    "lat_p99",
    "restarts",
    "retries",
    "self_time",
    "callee_time",
)

# Plain aliases, matched case-insensitively as whole suffixes.
_ALIASES: dict[str, str] = {
    "cpu": "cpu",
    "cpu_usage": "cpu",
    "mem": "mem",
    "memory": "mem",
    "rss": "mem",
    "rps": "rps",
    "lod": "rps",
    "load": "rps",
    "workload": "rps",
    "qps": "rps",
    "throughput": "rps",
    "requests": "rps",
    "err": "err",
    "error": "err",
    "errors": "err",
    "error_rate": "err",
    "error_ratio": "err",
    "lat_avg": "lat_avg",
    "lat_mean": "lat_avg",
    "latency": "lat_avg",
    "latency_avg": "lat_avg",
    "latency-avg": "lat_avg",
    "restarts": "restarts",
    "restart": "restarts",
    # Share of requests that were retries (0..1), as a mesh counts attempts: what separates
    # a retry storm from a surge past saturation, whose other signals are alike.
    "retries": "retries",
    "retry_ratio": "retries",
    "retry_share": "retries",
    # From traces: mean time per request in the service's own spans, and waiting on callees.
    "self_time": "self_time",
    "callee_time": "callee_time",
}

# Quantile aliases: lat_p99, lat_99, latency-99, latency_p99, latency99, p99.
_QUANTILE = re.compile(r"(?:lat|latency)[-_]?p?(\d{1,3}(?:\.\d+)?)$", re.IGNORECASE)


@dataclass(frozen=True)
class SignalKind:
    """How a signal is put on an unbounded, scale-free axis.

    ``log`` for positive quantities (rates, latencies, cpu, memory), ``logit`` for ratios in
    [0, 1] (errors, retries), ``count`` for monotone counters whose increments matter (restarts).
    """

    name: str
    transform: str


def canonical_signal(alias: str) -> str | None:
    """Return the canonical name of a signal alias, or None if it is not one."""
    key = alias.strip().lower()
    if key in _ALIASES:
        return _ALIASES[key]
    m = _QUANTILE.fullmatch(key)
    if m:
        q = m.group(1).rstrip("0").rstrip(".") if "." in m.group(1) else m.group(1)
        return f"lat_p{q}"
    return None


def split_column(column: str) -> tuple[str, str] | None:
    """Split a wide-layout column into (component, canonical signal), or None.

    The signal is the longest known alias at the end of the column, preceded by ``_``; the
    component is everything before and must not be empty.
    """
    best: tuple[str, str] | None = None
    for i, ch in enumerate(column):
        if ch != "_" or i == 0:
            continue
        signal = canonical_signal(column[i + 1 :])
        if signal is not None:
            # The first underscore that yields a known suffix gives the longest suffix.
            best = (column[:i], signal)
            break
    return best


def signal_kind(signal: str) -> SignalKind:
    """Return how ``signal`` is transformed before modelling."""
    if signal in ("err", "retries"):
        return SignalKind(signal, "logit")
    if signal == "restarts":
        return SignalKind(signal, "count")
    return SignalKind(signal, "log")


def is_latency(signal: str) -> bool:
    """True for ``lat_avg`` and every ``lat_pNN``."""
    return signal.startswith("lat_")

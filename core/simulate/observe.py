"""From the simulated process to what exporters report: counters, rates and histogram quantiles.

Exporters do not see the process; they count. So, per component and second:

- the number of answered requests is a Poisson draw around the fluid rate, the number of
  errors a binomial draw among them; ``rps`` and ``err`` are ``rate(...[30s])`` of these
  counters at each scrape, as PromQL computes them (``err`` is NaN when nothing was answered);
- latency: individual requests are drawn (as many as were answered, up to 48 a second, the
  rest weighted), each with its own queueing wait (Kingman's waiting probability, exponential
  wait), log-normal service time, injected delay, and, for each call it makes, a latency drawn
  from the callee's requests of the same second, cut at the caller's timeout and retried as
  the caller's policy and budget allow. They fill a request-duration histogram with geometric
  buckets, and ``lat_p50/p90/p99`` are ``histogram_quantile`` over the 30 s window, with
  Prometheus' linear interpolation inside a bucket;
- ``cpu`` is ``rate(container_cpu_usage_seconds_total[30s]) * 100`` (percent of one core),
  ``mem`` the working-set gauge in bytes (page-rounded, a little jitter), ``restarts`` the
  container restart counter;
- ``retries`` is the share of a component's requests that were retries, as a mesh's proxy
  counts them from the attempt header (Envoy's ``x-envoy-attempt-count``, Linkerd's retry
  metrics): a binomial draw among the answered requests, ``rate`` over ``rate`` like ``err``.
  It is drawn last, so adding it left every other series of a seed as it was.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from latentcause.errors import InputError
from latentcause.simulate.engine import Trace
from latentcause.simulate.system import COMPONENTS, LEAVES_FIRST, System

__all__ = ["BUCKETS", "SIGNALS", "histogram_quantile", "observe", "own_latency"]

#: Signals written per component, in column order.
SIGNALS: tuple[str, ...] = (
    "cpu", "mem", "rps", "err", "lat_p50", "lat_p90", "lat_p99", "restarts", "retries")
#: Upper bounds (s) of the request-duration histogram: 0.5 ms x 1.5^k, up to about a minute.
BUCKETS: np.ndarray = 0.0005 * 1.5 ** np.arange(30)
_QUANTILES = {"lat_p50": 0.5, "lat_p90": 0.9, "lat_p99": 0.99}
_SAMPLES = 48
_SERVICE_SIGMA = float(np.sqrt(np.log(1.25)))  # log-normal service time with cv 0.5


def histogram_quantile(q: float, buckets: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Prometheus' ``histogram_quantile`` over rows of per-bucket counts.

    ``counts`` has one column per bucket of ``buckets`` plus a last one for ``+Inf``. The
    quantile is interpolated linearly inside its bucket (from 0 in the first); a quantile in
    the ``+Inf`` bucket is the highest finite bound; a row with no observations gives NaN.
    """
    cum = np.cumsum(counts, axis=1)
    total = cum[:, -1]
    rank = q * total
    k = np.argmax(cum >= rank[:, None] - 1e-12 * np.maximum(total[:, None], 1.0), axis=1)
    rows = np.arange(len(k))
    below = np.where(k > 0, cum[rows, np.maximum(k - 1, 0)], 0.0)
    inside = cum[rows, k] - below
    lower = np.where(k > 0, buckets[np.clip(k - 1, 0, len(buckets) - 1)], 0.0)
    upper = buckets[np.minimum(k, len(buckets) - 1)]
    frac = np.where(inside > 0, (rank - below) / np.maximum(inside, 1e-300), 1.0)
    value = lower + (upper - lower) * np.clip(frac, 0.0, 1.0)
    value = np.where(k >= len(buckets), buckets[-1], value)
    return np.where(total > 0, value, np.nan)


def observe(
    system: System,
    trace: Trace,
    rng: np.random.Generator,
    *,
    warmup: int,
    window_s: int,
    step_s: int,
    start_unix: int,
    rate_window_s: int = 30,
) -> pd.DataFrame:
    """Scrape the trace every ``step_s`` over the observed window: the wide frame."""
    first = warmup - rate_window_s
    if first < 0:
        raise InputError(f"the warm-up ({warmup} s) must cover the {rate_window_s} s rate window")
    sl = slice(first, warmup + window_s)
    seconds = warmup + window_s - first
    scrape = np.arange(rate_window_s, seconds, step_s)  # index into the sliced seconds
    n = system.n

    counts = rng.poisson(np.maximum(trace.completed[sl], 0.0)).astype(float)
    ratio = np.clip(trace.errors[sl] / np.maximum(trace.completed[sl], 1e-12), 0.0, 1.0)
    errors = rng.binomial(counts.astype(np.int64), ratio).astype(float)
    hist = _latency_histograms(system, trace, sl, counts, rng)

    def window_sum(x: np.ndarray) -> np.ndarray:
        c = np.concatenate([np.zeros((1,) + x.shape[1:]), np.cumsum(x, axis=0)])
        return c[scrape + 1] - c[scrape + 1 - rate_window_s]

    n_req = window_sum(counts)
    n_err = window_sum(errors)
    cpu = window_sum(trace.cpu[sl]) / rate_window_s * 100.0
    cpu *= rng.lognormal(0.0, 0.01, size=cpu.shape)
    mem = trace.mem[sl][scrape] * rng.lognormal(0.0, 0.002, size=(len(scrape), n))
    mem = np.round(mem / 4096.0) * 4096.0
    restarts = trace.restarts[sl][scrape]
    retry_ratio = np.clip(trace.retried[sl] / np.maximum(trace.arrivals[sl], 1e-12), 0.0, 1.0)
    n_retry = window_sum(rng.binomial(counts.astype(np.int64), retry_ratio).astype(float))

    columns: dict[str, np.ndarray] = {
        "time": (start_unix + scrape - rate_window_s).astype(np.int64)
    }
    for i, c in enumerate(COMPONENTS):
        win = window_sum(hist[i])
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.where(n_req[:, i] > 0, n_err[:, i] / np.maximum(n_req[:, i], 1.0), np.nan)
            retries = np.where(n_req[:, i] > 0, n_retry[:, i] / np.maximum(n_req[:, i], 1.0),
                               np.nan)
        values = {
            "cpu": cpu[:, i],
            "mem": mem[:, i],
            "rps": n_req[:, i] / rate_window_s,
            "err": err,
            "restarts": restarts[:, i],
            "retries": retries,
        }
        for name, q in _QUANTILES.items():
            values[name] = histogram_quantile(q, BUCKETS, win)
        for s in SIGNALS:
            columns[f"{c}_{s}"] = values[s]
    return pd.DataFrame(columns)


def own_latency(
    backlog_wait: Any,
    p_wait: Any,
    queue_wait: Any,
    service: Any,
    delay: Any,
    fast_share: Any,
    rng: np.random.Generator,
    size: int | tuple[int, ...] | None = None,
) -> tuple[Any, Any]:
    """Draw requests' own time at a component (before any call) and whether they failed fast.

    The state arguments are a second's values (scalars, or arrays broadcast to ``size``):
    the request waits in the queue with Kingman's probability (an exponential wait with the
    queue's mean), is served in a log-normal time, and holds for the injected delay; a fast
    failure costs a fifth of the work and makes no calls. Shared by the metrics' histograms
    and the spans, so both describe the same requests.
    """
    waits = rng.random(size) < p_wait
    wait = np.where(waits, rng.exponential(1.0, size) * queue_wait / np.maximum(p_wait, 1e-12),
                    0.0)
    work = service * rng.lognormal(-0.5 * _SERVICE_SIGMA**2, _SERVICE_SIGMA, size)
    fast = rng.random(size) < fast_share
    return np.where(fast, 0.2 * work, backlog_wait + wait + work + delay), fast


def _latency_histograms(
    system: System,
    trace: Trace,
    sl: slice,
    counts: np.ndarray,
    rng: np.random.Generator,
) -> list[np.ndarray]:
    """Per component, per second, the weighted request-duration histogram (seconds, buckets+1)."""
    n = system.n
    seconds = counts.shape[0]
    size = (seconds, _SAMPLES)
    rows = np.arange(seconds)[:, None]
    lat: list[np.ndarray] = [np.empty(0)] * n
    err: list[np.ndarray] = [np.empty(0)] * n
    hist: list[np.ndarray] = [np.empty(0)] * n
    src, dst = system.edge_src, system.edge_dst
    share = trace.retry_share[sl]
    for i in LEAVES_FIRST:
        col = (slice(None), i)
        bw = trace.backlog_wait[sl][col][:, None]
        pw = trace.p_wait[sl][col][:, None]
        qw = trace.queue_wait[sl][col][:, None]
        service = trace.service[sl][col][:, None]
        delay = trace.delay[sl][col][:, None]
        fast_share = trace.fast_share[sl][col][:, None]
        up = trace.up[sl][col][:, None]

        x, fast = own_latency(bw, pw, qw, service, delay, fast_share, rng, size)
        late = trace.late_error[sl][col][:, None]
        e = fast | (rng.random(size) < late)
        for k in np.flatnonzero(src == i):
            j = int(dst[k])
            tau = float(system.edge_timeout[k])
            n_retries = int(trace.edge_retries[k])
            pending = ~fast & (rng.random(size) < system.edge_calls[k])
            final = np.zeros(size, dtype=bool)
            for attempt in range(n_retries + 1):
                if not pending.any():
                    break
                pick = rng.integers(0, _SAMPLES, size)
                y = np.minimum(lat[j][rows, pick], tau)
                failed = pending & (err[j][rows, pick] | (y >= tau))
                x = x + np.where(pending, y, 0.0)
                if attempt < n_retries:
                    retry = failed & (rng.random(size) < share[:, k][:, None])
                    final |= failed & ~retry
                    pending = retry
                else:
                    final |= failed
            e |= final & (rng.random(size) < system.edge_propagate[k])
        # A component that is down refuses connections at once.
        lat[i] = np.where(up, x, 0.001)
        err[i] = np.where(up, e, True)

        used = np.minimum(counts[:, i], _SAMPLES)
        weight = np.where(
            np.arange(_SAMPLES)[None, :] < used[:, None],
            (counts[:, i] / np.maximum(used, 1.0))[:, None],
            0.0,
        )
        nb = len(BUCKETS) + 1
        b = np.searchsorted(BUCKETS, lat[i])
        flat = (np.arange(seconds)[:, None] * nb + b).ravel()
        hist[i] = np.bincount(flat, weights=weight.ravel(), minlength=seconds * nb).reshape(
            seconds, nb
        )
    return hist

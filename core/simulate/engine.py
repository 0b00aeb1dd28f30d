"""The process simulation: a fluid queueing model of the service graph at 1-second resolution.

Per second and per component (all components at once, as numpy vectors):

- arrivals = external users (Poisson, with a daily-like slow variation and a slower random
  wobble) + calls from the callers' requests served in the previous second, times the
  callers' attempts per call (1 + retries);
- retries at the caller: a call fails when the callee fails it (fast error, rejection, a
  propagated error, or the callee is down) or when the callee's latency passes the caller's
  timeout; with failure share f and at most R retries, a caller sends f + f^2 + ... + f^R
  retries per call, capped by its retry budget (a share of first attempts) unless it has none;
- capacity mu = available cores / (CPU work per request x GC factor); the backlog of a FIFO
  queue grows by arrivals - mu once utilisation passes 1 (the fluid limit), and beyond a
  queue limit requests are rejected as fast errors;
- waiting: the backlog's wait B/mu plus the Kingman (G/G/c) waiting time at the smoothed
  utilisation below saturation, which grows like rho/(1-rho);
- latency = wait + service time + injected delay + the callees' latencies (with retries);
- errors = fast failures (injected, rejections) + served requests whose failed calls fail
  them with the edge's propagation probability;
- memory = non-heap + live heap (baseline + leak + in-flight requests) + garbage, collected
  when it reaches the live heap (GOGC-like); GC CPU per request rises as the live heap
  approaches the limit, and past the limit the container is OOM-killed, unavailable for its
  restart time, and comes back with an empty heap and queue;
- CPU = served x work x GC factor + fast failures' small work + idle + a hog's use, capped at
  the container's cores.

Nothing here knows the observed signals: ``observe`` turns this trace into exporter metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from latentcause.simulate.injection import Profiles
from latentcause.simulate.system import System

__all__ = ["Trace", "run"]

#: GC overhead: CPU per request x (1 + GC_COST x live/(heap - live)); about +5 % at a third
#: of the heap, x 2 at 92 %, capped at x 6 (a GC death spiral just before the OOM kill).
GC_COST = 0.09
_GC_CAP = 6.0
#: Smoothing of the arrival rate that sets the Kingman waiting time (seconds): about the
#: relaxation time of a queue at the utilisations of interest, so the mean wait follows load
#: changes without turning one second's Poisson excess into a jump along the convex curve.
_RHO_SMOOTHING_S = 20.0
#: Smoothing of the flow into the fluid queue (seconds): the fluid backlog stands for
#: sustained overload; the short-term Poisson excess is what the Kingman term describes.
_FLOW_SMOOTHING_S = 3.0
#: CPU a fast failure costs, as a share of a served request's work.
_FAIL_WORK = 0.2


@dataclass(frozen=True)
class Trace:
    """Per-second state of one run; arrays (seconds, components) unless noted.

    ``completed`` counts requests a component answered (served, rejected or failed fast),
    ``errors`` those answered with an error; ``fast_share`` is the share of completions that
    failed fast (no queueing, no calls). ``backlog_wait``, ``p_wait``, ``queue_wait``,
    ``service`` and ``delay`` describe a request's own latency; ``retry_share`` (seconds,
    edges) is the share of wanted retries the caller's budget allowed.
    """

    completed: np.ndarray
    errors: np.ndarray
    arrivals: np.ndarray
    cpu: np.ndarray
    mem: np.ndarray
    restarts: np.ndarray
    up: np.ndarray
    fast_share: np.ndarray
    backlog_wait: np.ndarray
    p_wait: np.ndarray
    queue_wait: np.ndarray
    service: np.ndarray
    delay: np.ndarray
    latency: np.ndarray
    retry_share: np.ndarray
    edge_retries: np.ndarray


def user_rate(
    system: System,
    start_unix: float,
    seconds: int,
    rng: np.random.Generator,
    *,
    baseline_s: int | None = None,
) -> np.ndarray:
    """Return the expected end-user arrival rate per second: daily cycle x slow wobble.

    The rate is scaled so that its mean over the first ``baseline_s`` seconds (the time before
    the onset) is the system's user rate: the drawn utilisations are then the pre-onset ones,
    the headroom a mechanism's magnitude is measured from.

    The daily cycle (+-25 %, lowest at 04:00 UTC) barely moves in half an hour, as in a real
    incident window; the wobble is an Ornstein-Uhlenbeck process on the log rate with a
    five-minute memory and 3 % spread, the slow drift real traffic shows.
    """
    t = start_unix + np.arange(seconds)
    daily = 1.0 + 0.25 * np.sin(2.0 * np.pi * ((t % 86400.0) / 86400.0 - 10.0 / 24.0))
    tau, sigma = 300.0, 0.03
    a = np.exp(-1.0 / tau)
    shocks = rng.normal(0.0, sigma * np.sqrt(1.0 - a * a), size=seconds)
    wobble = np.empty(seconds)
    x = rng.normal(0.0, sigma)
    for k in range(seconds):
        x = a * x + shocks[k]
        wobble[k] = x
    shape = daily * np.exp(wobble)
    return system.user_rate * shape / shape[: baseline_s or seconds].mean()


def run(
    system: System,
    prof: Profiles,
    users: np.ndarray,
    rng: np.random.Generator,
) -> Trace:
    """Simulate ``len(users)`` seconds; ``users`` is the expected end-user rate per second."""
    n = system.n
    seconds = len(users)
    src, dst = system.edge_src, system.edge_dst
    n_edges = len(src)
    internal = src < n
    # Incidence: sums over the edges a component calls (internal callers only).
    by_src = np.zeros((n, n_edges))
    by_src[src[internal], np.flatnonzero(internal)] = 1.0
    by_dst = np.zeros((n, n_edges))
    by_dst[dst, np.arange(n_edges)] = 1.0
    p, q, tau = system.edge_calls, system.edge_propagate, system.edge_timeout
    retries, budget = prof.edge_retries, prof.edge_budget
    has_budget = np.isfinite(budget)
    cores, work = system.cores, system.work
    heap = system.limit - system.nonheap
    stretch_exp = np.sqrt(2.0 * (cores + 1.0)) - 1.0
    smooth = 1.0 / _RHO_SMOOTHING_S
    smooth_flow = 1.0 / _FLOW_SMOOTHING_S

    user_counts = rng.poisson(users).astype(float)
    extra_counts = rng.poisson(prof.extra_rate).astype(float)
    cpu_jitter = rng.lognormal(-0.5 * 0.04**2, 0.04, size=(seconds, n))

    out = {k: np.zeros((seconds, n)) for k in (
        "completed", "errors", "arrivals", "cpu", "mem", "restarts", "fast_share",
        "backlog_wait", "p_wait", "queue_wait", "service", "delay", "latency")}
    up_out = np.ones((seconds, n), dtype=bool)
    share_out = np.ones((seconds, n_edges))

    backlog = np.zeros(n)
    leak = np.zeros(n)
    garbage = np.zeros(n)
    down = np.zeros(n)
    restarts = np.zeros(n)
    served_prev = np.append(system.rate0, system.user_rate)
    fail_prev = np.zeros(n)
    lat_prev = system.latency0.copy()
    fixed_prev = np.zeros(n)  # deterministic part of latency: backlog wait + delay
    spread_prev = system.latency0.copy()  # mean of the random part
    rate_ema = system.rate0.copy()
    flow = system.rate0.copy()

    for t in range(seconds):
        # Calls along every edge, with the retries the last second's failures provoke.
        served_prev[n] = user_counts[t]
        margin = tau - fixed_prev[dst]
        timed_out = np.where(
            margin <= 0.0, 1.0, np.exp(-np.maximum(margin, 0.0) / spread_prev[dst])
        )
        fail = 1.0 - (1.0 - fail_prev[dst]) * (1.0 - timed_out)
        f_r = fail**retries
        wanted = np.where(fail < 1.0, fail * (1.0 - f_r) / np.maximum(1.0 - fail, 1e-12), retries)
        allowed = np.where(has_budget, np.minimum(wanted, budget), wanted)
        share = np.where(wanted > 0.0, allowed / np.maximum(wanted, 1e-300), 1.0)
        final_fail = fail * (1.0 - share * (1.0 - f_r))
        attempts = served_prev[src] * p * (1.0 + allowed)
        arrivals = by_dst @ attempts + extra_counts[t]

        # Own capacity and queue.
        live = system.live0 + leak + rate_ema * lat_prev * system.inflight_bytes
        frac = np.minimum(live / heap, 0.995)
        gc = np.minimum(1.0 + GC_COST * frac / (1.0 - frac), _GC_CAP)
        avail = cores * prof.capacity[t]
        mu = avail / (work * gc)
        service = work * gc * cores / avail
        fast = arrivals * prof.error[t]
        admitted = arrivals - fast
        flow += (admitted - flow) * smooth_flow
        total = backlog + flow
        served = np.minimum(total, mu)
        backlog = total - served
        rejected = np.maximum(backlog - system.queue_limit, 0.0)
        backlog -= rejected
        is_up = down <= 0.0
        served[~is_up] = 0.0
        fast[~is_up] = 0.0
        rejected[~is_up] = 0.0
        backlog[~is_up] = 0.0

        # Errors the callees pass on, and what callers of this component will see.
        prop = 1.0 - np.exp(by_src @ np.log1p(-np.minimum(p * final_fail * q, 1.0 - 1e-12)))
        failed_fast = fast + rejected
        completed = served + failed_fast
        errors = failed_fast + served * prop
        fast_share = failed_fast / np.maximum(arrivals, 1e-9)
        fail_now = np.where(is_up, np.clip(fast_share + (1.0 - fast_share) * prop, 0.0, 1.0), 1.0)

        # Waiting and latency.
        rate_ema += (admitted - rate_ema) * smooth
        rho = np.clip(rate_ema / mu, 0.0, 0.98)
        p_wait = rho**stretch_exp
        queue_wait = p_wait * service / (cores * (1.0 - rho)) * 0.625
        backlog_wait = backlog / mu
        delay = prof.delay[t]
        callee_part = by_src @ (p * (1.0 + allowed) * np.minimum(lat_prev[dst], tau))
        latency = backlog_wait + queue_wait + service + delay + callee_part

        # Memory, garbage collection, OOM kills and restarts.
        leak += np.where(is_up, prof.leak[t], 0.0)
        garbage += served * system.alloc_bytes
        live = system.live0 + leak + admitted * latency * system.inflight_bytes  # Little's law
        garbage[live + garbage > np.minimum(2.0 * live, heap)] = 0.0
        mem = system.nonheap + live + garbage
        oom = is_up & (live >= 0.98 * heap)
        if oom.any():
            restarts[oom] += 1.0
            down[oom] = system.restart_s[oom]
            leak[oom] = 0.0
            garbage[oom] = 0.0
            backlog[oom] = 0.0
        mem = np.where(is_up & ~oom, mem, 0.6 * system.nonheap)
        cpu = served * work * gc * cpu_jitter[t] + fast * work * _FAIL_WORK + system.idle_cpu
        cpu = np.where(is_up, cpu, 0.1 * cores)
        cpu = np.minimum(cpu + prof.hog[t] * cores, cores)
        down = np.maximum(down - 1.0, 0.0)

        row = out
        row["completed"][t] = completed
        row["errors"][t] = errors
        row["arrivals"][t] = arrivals
        row["cpu"][t] = cpu
        row["mem"][t] = mem
        row["restarts"][t] = restarts
        row["fast_share"][t] = np.where(
            completed > 0, failed_fast / np.maximum(completed, 1e-9), 0.0
        )
        row["backlog_wait"][t] = backlog_wait
        row["p_wait"][t] = p_wait
        row["queue_wait"][t] = queue_wait
        row["service"][t] = service
        row["delay"][t] = delay
        row["latency"][t] = latency
        up_out[t] = is_up
        share_out[t] = share

        served_prev[:n] = served
        fail_prev = fail_now
        lat_prev = latency
        fixed_prev = backlog_wait + delay
        spread_prev = queue_wait + service + callee_part

    return Trace(
        up=up_out, retry_share=share_out, edge_retries=retries.copy(), **out
    )

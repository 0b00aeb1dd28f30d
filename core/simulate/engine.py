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
  them with the edge's propagation probability, or that fail after their work (a retry
  storm's error trigger);
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
    edges) is the share of wanted retries the caller's budget allowed; ``retried`` counts
    the arrivals that are retries (the attempt header a mesh's proxy counts).
    """

    completed: np.ndarray
    errors: np.ndarray
    late_error: np.ndarray
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
    retried: np.ndarray


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
    """Simulate ``len(users)`` seconds; ``users`` is the expected end-user rate per second.

    Only what feeds back (queues, retries, heap, restarts) is computed second by second;
    counts, CPU and memory follow from the recorded state after the loop, vectorised.
    """
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
    p, tau = system.edge_calls, system.edge_timeout
    pq = p * system.edge_propagate
    retries, budget = prof.edge_retries, prof.edge_budget
    cores, work = system.cores, system.work
    base_mu = cores / work
    heap = system.limit - system.nonheap
    oom_at = 0.98 * heap
    live0, inflight, alloc = system.live0, system.inflight_bytes, system.alloc_bytes
    queue_limit = system.queue_limit
    stretch_exp = np.sqrt(2.0 * (cores + 1.0)) - 1.0
    kingman = 0.625 / cores  # (ca^2 + cs^2) / 2 over c servers
    smooth = 1.0 / _RHO_SMOOTHING_S
    smooth_flow = 1.0 / _FLOW_SMOOTHING_S
    capacity, error, late_error = prof.capacity, prof.error, prof.late_error
    delay, leak_rate = prof.delay, prof.leak

    user_counts = rng.poisson(users).astype(float)
    extra_counts = rng.poisson(prof.extra_rate).astype(float)
    cpu_jitter = rng.lognormal(-0.5 * 0.04**2, 0.04, size=(seconds, n))

    def record() -> np.ndarray:
        return np.empty((seconds, n))

    r_served, r_fast, r_rejected, r_prop, r_gc = (record() for _ in range(5))
    r_arrivals, r_bw, r_pw, r_qw, r_service, r_latency = (record() for _ in range(6))
    r_live, r_garbage, r_restarts, r_retried = record(), record(), record(), record()
    r_up = np.empty((seconds, n), dtype=bool)
    r_oom = np.zeros((seconds, n), dtype=bool)
    r_share = np.empty((seconds, n_edges))

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
        # Calls along every edge, with the retries the last second's failures provoke. A
        # negative margin (the wait alone passes the timeout) gives exp(0): all time out.
        served_prev[n] = user_counts[t]
        timed_out = np.exp(-np.maximum(tau - fixed_prev[dst], 0.0) / spread_prev[dst])
        fail = np.minimum(1.0 - (1.0 - fail_prev[dst]) * (1.0 - timed_out), 1.0 - 1e-9)
        f_r = fail**retries
        wanted = fail * (1.0 - f_r) / (1.0 - fail)  # f + f^2 + ... + f^R
        allowed = np.minimum(wanted, budget)
        share = (allowed + 1e-300) / (wanted + 1e-300)
        final_fail = fail * (1.0 - share * (1.0 - f_r))
        attempts = served_prev[src] * p * (1.0 + allowed)
        arrivals = by_dst @ attempts + extra_counts[t]
        r_retried[t] = by_dst @ (served_prev[src] * p * allowed)

        # Own capacity and queue.
        live = live0 + leak + rate_ema * lat_prev * inflight
        frac = np.minimum(live / heap, 0.995)
        gc = np.minimum(1.0 + GC_COST * frac / (1.0 - frac), _GC_CAP)
        mu = base_mu * capacity[t] / gc
        service = work * gc / capacity[t]  # per request on one worker (a hog stretches it)
        fast = arrivals * error[t]
        admitted = arrivals - fast
        flow += (admitted - flow) * smooth_flow
        total = backlog + flow
        served = np.minimum(total, mu)
        backlog = np.minimum(total - served, queue_limit)
        rejected = total - served - backlog
        is_up = down <= 0.0
        served *= is_up
        fast *= is_up
        rejected *= is_up
        backlog *= is_up

        # Errors the callees pass on, and what callers of this component will see.
        prop = 1.0 - np.exp(by_src @ np.log1p(-np.minimum(pq * final_fail, 1.0 - 1e-12)))
        prop = 1.0 - (1.0 - prop) * (1.0 - late_error[t])
        fast_share = (fast + rejected) / np.maximum(arrivals, 1e-9)
        fail_now = np.where(is_up, np.minimum(fast_share + (1.0 - fast_share) * prop, 1.0), 1.0)

        # Waiting and latency.
        rate_ema += (admitted - rate_ema) * smooth
        rho = np.minimum(rate_ema / mu, 0.98)
        p_wait = rho**stretch_exp
        queue_wait = p_wait * service * kingman / (1.0 - rho)
        backlog_wait = backlog / mu
        callee_part = by_src @ (p * (1.0 + allowed) * np.minimum(lat_prev[dst], tau))
        latency = backlog_wait + queue_wait + service + delay[t] + callee_part

        # Memory, garbage collection, OOM kills and restarts.
        leak += leak_rate[t] * is_up
        live = live0 + leak + admitted * latency * inflight  # Little's law
        garbage += served * alloc
        garbage *= live + garbage <= np.minimum(2.0 * live, heap)
        r_live[t] = live
        r_garbage[t] = garbage
        oom = is_up & (live >= oom_at)
        if oom.any():
            r_oom[t] = oom
            restarts[oom] += 1.0
            down[oom] = system.restart_s[oom]
            leak[oom] = 0.0
            garbage[oom] = 0.0
            backlog[oom] = 0.0
        down = np.maximum(down - 1.0, 0.0)

        r_served[t] = served
        r_fast[t] = fast
        r_rejected[t] = rejected
        r_prop[t] = prop
        r_gc[t] = gc
        r_arrivals[t] = arrivals
        r_bw[t] = backlog_wait
        r_pw[t] = p_wait
        r_qw[t] = queue_wait
        r_service[t] = service
        r_latency[t] = latency
        r_restarts[t] = restarts
        r_up[t] = is_up
        r_share[t] = share

        served_prev[:n] = served
        fail_prev = fail_now
        lat_prev = latency
        fixed_prev = backlog_wait + delay[t]
        spread_prev = queue_wait + service + callee_part

    failed_fast = r_fast + r_rejected
    completed = r_served + failed_fast
    cpu = r_served * work * r_gc * cpu_jitter + r_fast * work * _FAIL_WORK + system.idle_cpu
    cpu = np.where(r_up, cpu, 0.1 * cores)
    cpu = np.minimum(cpu + prof.hog * cores, cores)
    mem = np.where(r_up & ~r_oom, system.nonheap + r_live + r_garbage, 0.6 * system.nonheap)
    with np.errstate(invalid="ignore", divide="ignore"):
        fast_share = np.where(completed > 0, failed_fast / completed, 0.0)
    return Trace(
        completed=completed,
        errors=failed_fast + r_served * r_prop,
        late_error=late_error,
        arrivals=r_arrivals,
        cpu=cpu,
        mem=mem,
        restarts=r_restarts,
        up=r_up,
        fast_share=fast_share,
        backlog_wait=r_bw,
        p_wait=r_pw,
        queue_wait=r_qw,
        service=r_service,
        delay=delay,
        latency=r_latency,
        retry_share=r_share,
        edge_retries=retries.copy(),
        retried=r_retried,
    )

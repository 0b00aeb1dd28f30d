"""The mechanism library: one class per mechanism of the INTERFACE.md vocabulary.

Besides the seven, ``propagated`` is the role of a non-root component that feels the root,
and ``none`` doubles as the role of an unaffected component.

Every effect is a log-ratio relative to the component's own baseline (logit difference for
errors), so one prior serves a service at 5 rps and one at 5,000. Each physical quantity is
computed at time t and at the baseline and differenced, so nothing moves before the onset.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytensor.tensor as pt

from latentcause.models import physics as ph
from latentcause.models._base import Drivers, Effects, Mechanism, Prior, register

__all__ = [
    "CapacityLoss",
    "ErrorFault",
    "Loaded",
    "MemoryLeak",
    "NoChange",
    "Propagated",
    "RetryStorm",
    "ServiceSlowdown",
    "SurgeThroughCallees",
    "TrafficSurge",
]

P = Mapping[str, pt.TensorVariable]

_RHO0 = Prior("Beta", {"alpha": 2.0, "beta": 4.0}, "utilisation before the onset")
_SAT_ERR = Prior("HalfNormal", {"sigma": 3.0}, "logit rise of errors once saturated (timeouts)")
_CEILING = Prior("Gamma", {"alpha": 4.0, "beta": 0.7},
                 "log of the timeout (or top histogram bucket) over baseline latency")
#: Requests in flight hold memory (buffers, sessions, queued payloads): a few KiB to MiB each
#: against a heap of hundreds of MiB, so a share of about 1e-3 of the baseline's memory, which
#: only a queue hundreds of latencies deep makes visible. Median 0.0025, 95 % within 5e-5
#: and 0.1. A normal on the log-odds rather than PyMC's LogitNormal, whose value is not
#: transformed: the optimiser stepped out of (0, 1) at its first step and stopped there.
_INFLIGHT = Prior("Normal", {"mu": -6.0, "sigma": 2.0},
                  "log-odds of the share of the baseline memory held by requests in flight")
#: What a component's callees do to it: the time it waits on them and the errors they pass
#: on. The ``propagated`` role and the surge's variant through its callees carry them.
_CALLEE_PRIORS = {
    "lat_rise": Prior("HalfNormal", {"sigma": 3.0},
                      "log rise of the time spent waiting on callees (up to a timeout)"),
    "err_rise": Prior("HalfNormal", {"sigma": 3.0}, "logit error rise from callees"),
}
#: The parameters ``_queueing`` reads: every mechanism built on it carries them.
_QUEUE_PRIORS = {"rho0": _RHO0, "sat_err": _SAT_ERR, "lat_ceiling": _CEILING,
                 "inflight": _INFLIGHT}


def _logit_ratio(d: Drivers, logit_delta: pt.TensorVariable) -> pt.TensorVariable:
    """Error ratio after a logit change from the baseline ratio."""
    return pt.sigmoid(pt.log(d.err_base) - pt.log1p(-d.err_base) + logit_delta)


def _diluted(log_ratio: pt.TensorVariable, share: pt.TensorVariable | float,
             ) -> pt.TensorVariable:
    """Log ratio of a whole whose ``share`` changes by ``log_ratio`` and the rest stays.

    A share of 1 gives ``log_ratio`` itself, the same graph value and gradient as before
    shares were known, so data without spans is modelled exactly as it was.
    """
    return pt.switch(pt.lt(share, 1.0), pt.log1p(share * pt.expm1(log_ratio)), log_ratio)


def _queueing(params: P, d: Drivers, log_load: pt.TensorVariable,
              log_capacity: pt.TensorVariable) -> tuple[dict[str, pt.TensorVariable],
                                                        dict[str, pt.TensorVariable]]:
    """Rows and hidden state of a queue whose load and capacity change at the onset.

    ``rps`` is the rate of responses, failures and timeouts included (what request counters
    and histograms count), so it follows the arrivals even past saturation; the work served,
    which cpu follows, is capped at the capacity (``cpu_served``). Memory follows the
    requests in flight, arrivals times latency (Little's law), in the share ``inflight`` of
    the baseline's memory they held (model version 8): a saturated queue hundreds of
    latencies deep holds several times the service's memory. Without it that rise had to
    pass for normal variation, and only a capacity loss (whose memory may step) could absorb
    it: simulated surges and retry storms past saturation went to capacity losses at p 0.94
    to 1.00.

    The term counts only where the latency is measured (``Drivers.lat_seen``). Where it is
    not, nothing bounds it: a latency nobody saw, at a timeout hundreds of times the
    baseline, let every queueing mechanism produce any memory rise, and sock-shop's user
    and payment (cpu and memory only) went from their leaks and CPU hogs to retry storms
    (20 of 50 incidents). What would rule that out is the callers' latency, which such a
    queue would raise, but each component's evidence is weighed on its own.

    The queue stretches the component's own time (``self_time``); its latency also holds the
    time spent waiting on callees, which the queue leaves as it was, so the latency rows rise
    by the own share of the baseline (``Drivers.own_share``) of that stretch (model version
    10). Before, a capacity loss in a service that spends most of its time in calls had to
    stretch its latency and its self time by the same ratio, and with spans showing self time
    x4.7 under latency x1.7 a slowdown (which adds seconds, not a ratio) won at p 1.00.
    """
    rho0 = params["rho0"]
    one = pt.ones_like(d.step)
    load, capacity = pt.exp(log_load), pt.exp(log_capacity)
    rho = ph.utilisation(rho0, load, capacity)
    raw = ph.latency_log_ratio(rho0, rho, capacity, d.elapsed) - ph.latency_log_ratio(
        rho0, rho0 * one, one, 0.0 * one)
    lat = ph.ceiling(raw, params["lat_ceiling"]) - ph.ceiling(0.0 * one, params["lat_ceiling"])
    served = ph.served_log_ratio(rho0, load, capacity) - ph.served_log_ratio(rho0, one, one)
    err = params["sat_err"] * (ph.saturation(rho) - ph.saturation(rho0 * one))
    own, lat = lat, _diluted(lat, d.own_share)
    mem = d.lat_seen * pt.log1p(pt.sigmoid(params["inflight"]) * pt.expm1(log_load + lat))
    rows = {"rps": log_load, "cpu_served": served, "lat": lat, "lat_tail": lat,
            "self_time": own, "err": err, "mem": mem}
    hidden = {
        "utilisation": rho,
        "arrival_ratio": load,
        "capacity_ratio": capacity,
        "latency_ratio": pt.exp(lat),
        "error_ratio": _logit_ratio(d, err),
    }
    return rows, hidden


@register
class NoChange(Mechanism):
    """Nothing beyond normal variation: also the role of an unaffected component."""

    name = "none"
    summary = "nothing beyond normal variation"
    hidden_state = ()
    signature = {r: "0" for r in ("cpu", "mem", "rps", "err", "lat", "lat_tail", "restarts",
                                   "retries")}
    priors: Mapping[str, Prior] = {}

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        return Effects(rows={}, hidden={})


@register
class TrafficSurge(Mechanism):
    """Arrivals rose past the headroom: queueing delay from saturation.

    The response rate follows the arrivals (failures and timeouts are responses too) and cpu
    follows the work served, up to capacity; latency follows the queueing curve from the
    pre-onset utilisation up to the timeout ceiling; errors appear only once saturated, and
    memory with the requests the queue holds.
    """

    name = "traffic_surge"
    summary = "arrivals rose past the headroom: queueing delay from saturation"
    # A surge need not use up the headroom (simulated 091: utilisation 21 % -> 26 %).
    summary_below_saturation = "arrivals rose into the headroom, short of saturation"
    hidden_state = ("utilisation", "arrival_ratio", "latency_ratio", "error_ratio")
    signature = {"rps": "+", "cpu": "+", "lat": "+", "lat_tail": "+", "err": "~", "mem": "+",
                 "self_time": "+", "retries": "0"}
    priors = {
        # Log-normal, not half-normal: a surge of a few percent is what load_drift (normal
        # variation) already covers, and a half-normal's mass at zero made the two trade
        # places in a long tail that the evidence's importance sampler under-weighted (SBC
        # ranks piled at the ends). Median 0.5 (x1.65 arrivals), 95 % within x1.1 to x11.
        "log_load": Prior("LogNormal", {"mu": -0.7, "sigma": 0.8},
                          "log of arrivals after / before"),
        **_QUEUE_PRIORS,
    }

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        log_load = params["log_load"] * d.step
        rows, hidden = _queueing(params, d, log_load, 0.0 * d.step)
        rows["cpu"] = rows.pop("cpu_served")  # cpu follows the work actually served
        return Effects(rows, hidden)


@register
class SurgeThroughCallees(TrafficSurge):
    """A traffic surge whose load, passed on to the root's callees, saturates one of them.

    A variant of ``traffic_surge``, not a mechanism of its own: its hypothesis is still a
    surge at the root. The root forwards its extra arrivals, so a callee near its capacity
    queues, the root waits on it (``callee_time`` and the callees' share of its latency
    rise) and passes its timeouts on as errors, on top of its own queue. The plain surge
    leaves the callees' share of the latency as it was, so when a callee did saturate the
    root's own data looked like a surge plus a propagated slowdown, which no single role
    of the root could be, and the blame went to the callee (simulated 086: a surge entering
    carts saturated carts-db, and carts-db/traffic_surge came out at p 1.00). The engine
    mixes the two with the prior share ``VARIANT_SHARE`` where the call graph shows callees.
    """

    name = "traffic_surge_via_callees"
    variant_of = "traffic_surge"
    summary = "arrivals rose past the headroom and, passed on, saturated a callee"
    summary_below_saturation = "arrivals rose into the headroom and, passed on, saturated a callee"
    signature = {**TrafficSurge.signature, "err": "+", "callee_time": "+"}
    priors = {**TrafficSurge.priors, **_CALLEE_PRIORS}

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        surge = super().effects(params, d)
        rows, hidden = dict(surge.rows), dict(surge.hidden)
        waits = params["lat_rise"] * d.step
        own = rows["self_time"]
        # The whole latency is own time plus callee time, each stretched by its own ratio;
        # with the split unknown (own_share 1) the callees' part is not seen in it.
        share = d.own_share
        lat = pt.switch(pt.lt(share, 1.0),
                        pt.log(share * pt.exp(own) + (1.0 - share) * pt.exp(waits)), own)
        err = rows["err"] + params["err_rise"] * d.step
        rows.update({"lat": lat, "lat_tail": lat, "callee_time": waits, "err": err})
        hidden.update({"latency_ratio": pt.exp(lat), "error_ratio": _logit_ratio(d, err)})
        return Effects(rows, hidden)


@register
class CapacityLoss(Mechanism):
    """The service rate fell (CPU hog, throttling, lost replicas) at unchanged load.

    Latency climbs the same queueing curve from a smaller capacity, up to the timeout
    ceiling; the response rate is unchanged (arrivals are); cpu rises with a hog sharing the
    cores and falls when a throttle saturates the service. A hog in the container
    brings its own memory, a lost replica or a throttle can shed some, so memory may step
    by a modest amount either way (model version 6): before, the memory that came with a
    cpu hog had to pass for normal variation, and sock-shop's user-cpu incidents (memory
    x1.7 with the hog) went to memory_leak at p 1.00. The cpu falls only as far as the
    work served does, i.e. past saturation (model version 7): with the fall free, a
    60-fold cpu drop at flat load and falling latency (a hog ending: sock-shop
    payment-mem/4 and /5, where catalogue recovers) passed for a capacity loss at p 1.00.
    """

    name = "capacity_loss"
    summary = "the service rate fell (cpu contention or hog, throttling, lost replicas)"
    hidden_state = ("utilisation", "capacity_ratio", "latency_ratio", "error_ratio")
    signature = {"rps": "0", "cpu": "~", "lat": "+", "lat_tail": "+", "err": "~", "mem": "~",
                 "self_time": "+", "retries": "0"}
    priors = {
        "log_capacity_loss": Prior("HalfNormal", {"sigma": 1.0}, "log of capacity before / after"),
        "cpu_shift": Prior("Normal", {"mu": 0.0, "sigma": 2.0},
                           "log cpu change, floored at the work served (hog +)"),
        "mem_shift": Prior("Normal", {"mu": 0.0, "sigma": 0.5},
                           "log memory step (a hog's own memory +, a lost replica -)"),
        **_QUEUE_PRIORS,
    }

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        log_cap = -params["log_capacity_loss"] * d.step
        rows, hidden = _queueing(params, d, 0.0 * d.step, log_cap)
        # The cpu used is the work served (a throttle caps it at the capacity left, so it
        # falls only past saturation) plus whatever a hog burns: never below the work
        # served. A deeper fall is work that went away (a hog that ended), not a loss.
        served = rows.pop("cpu_served")
        rows["cpu"] = ph.soft_floor(params["cpu_shift"], served) * d.step
        rows["mem"] = rows["mem"] + params["mem_shift"] * d.step
        return Effects(rows, hidden)


@register
class ServiceSlowdown(Mechanism):
    """Each request takes longer (sleep, I/O wait, lock, slow call) without more CPU.

    The wait is added, not multiplied: every quantile grows by the same seconds, so the low
    quantiles grow most in ratio (p50 x3 while p99 x1.3), where queueing (a capacity loss)
    stretches every quantile by the same ratio. Rate and cpu stay flat; worker occupancy
    (utilisation) rises with the time each request holds a worker.
    """

    name = "service_slowdown"
    summary = "each request takes longer (sleep, I/O, lock, slow call) without more CPU"
    hidden_state = ("utilisation", "latency_ratio")
    signature = {"rps": "0", "cpu": "0", "lat": "+", "lat_tail": "+", "err": "0", "mem": "0",
                 "self_time": "+", "retries": "0"}
    priors = {
        # Log-normal like the surge's load: a wait of a few percent is normal variation.
        # Median 0.74 of the baseline latency, 95 % within 0.05 to 11.5 times it.
        "delay": Prior("LogNormal", {"mu": -0.3, "sigma": 1.4},
                       "added wait per request over the baseline (centre) latency"),
        "rho0": _RHO0,
    }

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        wait = params["delay"] * d.step
        rows = {r: pt.log1p(wait / d.level(r)) for r in ("lat", "lat_tail", "self_time")}
        ratio = 1.0 + wait
        hidden = {"utilisation": params["rho0"] * ratio, "latency_ratio": ratio}
        return Effects(rows, hidden)


@register
class ErrorFault(Mechanism):
    """Requests fail (bad deploy or config, failing call) without a load or latency cause.

    Errors rise; failures are fast, so latency stays flat or falls, cpu slightly down.
    """

    name = "error_fault"
    summary = "requests fail (bad deploy, config, failing call) without load or latency cause"
    hidden_state = ("error_ratio",)
    signature = {"rps": "0", "cpu": "~", "lat": "-", "lat_tail": "-", "err": "+", "mem": "0",
                 "retries": "0"}
    priors = {
        "err_rise": Prior("HalfNormal", {"sigma": 4.0}, "logit rise of the error ratio"),
        "fast_fail": Prior("HalfNormal", {"sigma": 1.5},
                           "log of a success's latency over a failure's"),
        "cpu_shift": Prior("Normal", {"mu": 0.0, "sigma": 0.2}, "small log cpu change"),
    }

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        err = params["err_rise"] * d.step
        # Latency is the mix of successes (unchanged) and failures (faster by fast_fail): it
        # can fall only as far as the share of failing requests allows.
        p_err, p0 = _logit_ratio(d, err), d.err_base
        fast = pt.exp(-params["fast_fail"])
        lat = pt.log1p(-p_err * (1 - fast)) - pt.log1p(-p0 * (1 - fast))
        rows = {"err": err, "lat": lat, "lat_tail": lat, "self_time": lat,
                "cpu": params["cpu_shift"] * d.step}
        return Effects(rows, {"error_ratio": _logit_ratio(d, err)})


@register
class MemoryLeak(Mechanism):
    """Memory climbs beyond its normal range, as a ramp (leak) or a step (pressure).

    Garbage collection then costs cpu and latency; restarts may follow. Under memory
    pressure, allocation churn and GC sawtooth make memory volatile as well as higher, which
    a cpu hog's fixed footprint does not: the ``churn`` term lets the noise of the memory row
    grow after the onset.
    """

    name = "memory_leak"
    summary = "memory climbs beyond its normal range (ramp or step); GC, cpu, restarts follow"
    hidden_state = ("memory_ratio",)
    signature = {"mem": "+", "cpu": "~", "lat": "~", "lat_tail": "~", "restarts": "+",
                 "rps": "0", "err": "0", "retries": "0"}
    priors = {
        "mem_step": Prior("HalfNormal", {"sigma": 1.0}, "log memory jump at the onset"),
        "mem_slope": Prior("HalfNormal", {"sigma": 1.0}, "log memory growth over the window"),
        "gc_gain": Prior("HalfNormal", {"sigma": 3.0},
                         "log cpu rise per log memory rise (GC work grows with the heap)"),
        "gc_latency": Prior("HalfNormal", {"sigma": 0.3}, "log latency rise from GC pauses"),
        "restart_rate": Prior("HalfNormal", {"sigma": 1.0}, "restarts over the window"),
        "churn": Prior("HalfNormal", {"sigma": 2.0}, "log rise of memory volatility (GC, churn)"),
    }

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        mem = params["mem_step"] * d.step + params["mem_slope"] * d.elapsed
        lat = params["gc_latency"] * d.step
        rows = {"mem": mem, "cpu": params["gc_gain"] * mem, "lat": lat, "lat_tail": lat,
                "restarts": params["restart_rate"] * d.elapsed}
        return Effects(rows, {"memory_ratio": pt.exp(mem)},
                       noise={"mem": params["churn"] * d.step})


@register
class RetryStorm(Mechanism):
    """A trigger set off retries whose extra load keeps the overload going (metastable).

    What the window shows is the sustained state: arrivals held past the capacity by the
    retries of the requests that time out, after the trigger has ended. So the utilisation
    after the onset is above 1 by construction (``log_overload``), the arrivals are
    ``exp(log_overload) / rho0`` of the baseline's, cpu is pinned at the capacity, latency
    sits at the timeout ceiling and the errors are the saturated queue's. The amplification
    (share of the arrivals that are retries, offered load unchanged) is ``1 - 1 / arrivals``.

    Model version 5: up to version 4 the storm was errors (a free rise) times a retry count,
    with no requirement of overload, so a few percent of failures plus their retries, which
    is an error fault behind a client that retries, passed for a storm (simulated subtle
    error faults went to retry_storm at p 0.73). In its saturated state a storm predicts
    exactly what a traffic surge past saturation predicts (same queue, load
    ``exp(log_overload) / rho0``): from these signals the two differ only in their priors,
    and the posterior says so instead of picking one by many nats of modelling detail. The
    trigger itself is not modelled either: a decaying burst with a free length (version 3)
    fitted the slow wander of quiet components' load.

    Model version 9: what does separate them is the share of requests that are retries,
    which a mesh counts (``retries``): a storm's extra arrivals are retries, a surge's are new
    requests, and every other mechanism's failures draw retries only within the clients'
    budget, below which the share is read as none (``RETRY_FLOOR``).
    """

    name = "retry_storm"
    summary = "a trigger set off retries whose load keeps the overload going (metastable)"
    hidden_state = ("utilisation", "arrival_ratio", "latency_ratio", "error_ratio",
                    "amplification")
    signature = {"rps": "+", "cpu": "+", "lat": "+", "lat_tail": "+", "err": "+", "mem": "+",
                 "self_time": "+", "retries": "+"}
    priors = {
        # Log-normal, so no mass at the edge of saturation where a storm is not sustained:
        # median utilisation x1.25 of the capacity, 95 % within x1.05 and x2.9.
        "log_overload": Prior("LogNormal", {"mu": -1.5, "sigma": 0.8},
                              "log of the sustained utilisation (arrivals over capacity)"),
        **_QUEUE_PRIORS,
    }

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        log_load = (params["log_overload"] - pt.log(params["rho0"])) * d.step
        rows, hidden = _queueing(params, d, log_load, 0.0 * d.step)
        rows["cpu"] = rows.pop("cpu_served")
        hidden["amplification"] = -pt.expm1(-log_load)
        # The share of requests that are retries goes from the baseline b to 1 - (1 - b) / L
        # at L times the arrivals (the extra arrivals are retries): a logit change of
        # log(1 + (L - 1) / b).
        rows["retries"] = pt.log1p(pt.expm1(log_load) / d.retry_base)
        return Effects(rows, hidden)


@register
class Propagated(Mechanism):
    """Role of a non-root component that feels the root: latency and errors, not resources.

    A caller's latency includes its callees', so its latency (and callee time) rise and errors
    may pass through, while its own cpu, memory and rate barely move and its self time is flat.
    """

    name = "propagated"
    summary = "not a root: latency and errors from a callee, own resources unchanged"
    hidden_state = ("latency_ratio", "error_ratio")
    signature = {"lat": "+", "lat_tail": "+", "err": "~", "callee_time": "+", "self_time": "0",
                 "cpu": "0", "mem": "0", "rps": "0"}
    is_root = False
    priors = {
        **_CALLEE_PRIORS,
        "small_shift": Prior("Normal", {"mu": 0.0, "sigma": 0.15}, "small cpu and rate change"),
    }

    def effects(self, params: P, d: Drivers) -> Effects:  # noqa: D102
        waits = params["lat_rise"] * d.step
        # The callees' share of the latency; all of it when unknown (own_share 1).
        lat = _diluted(waits, pt.switch(pt.lt(d.own_share, 1.0), 1.0 - d.own_share, 1.0))
        err = params["err_rise"] * d.step
        small = params["small_shift"] * d.step
        rows = {"lat": lat, "lat_tail": lat, "callee_time": waits, "err": err,
                "cpu": small, "rps": small}
        return Effects(rows, {"latency_ratio": pt.exp(lat), "error_ratio": _logit_ratio(d, err)})


@register
class Loaded(TrafficSurge):
    """Role of a non-root component whose arrivals changed with its callers' traffic.

    Load flows down the call graph as latency flows up it: a surge at a caller, or a caller
    failing fast, changes the rate of every callee, whose cpu and queue follow as in a
    surge. Without this role a callee saturated by its caller's surge can only be explained
    as a root, and takes the blame. The load may rise or fall.
    """

    name = "loaded"
    summary = "not a root: arrivals changed with the callers' traffic (rate, cpu, queue)"
    signature = {"rps": "~", "cpu": "~", "lat": "~", "lat_tail": "~", "err": "~", "mem": "~",
                 "self_time": "~"}
    is_root = False
    priors = {
        "log_load": Prior("Normal", {"mu": 0.0, "sigma": 0.7}, "log of arrivals after / before"),
        **_QUEUE_PRIORS,
    }

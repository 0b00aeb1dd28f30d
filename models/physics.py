"""Queueing physics shared by the mechanisms, written in PyTensor so it differentiates.

Conventions: ``rho0`` is the utilisation before the onset (the headroom is ``1 - rho0``);
``load`` is the arrival rate relative to baseline; ``capacity`` the service rate relative to
baseline. Utilisation is ``rho = rho0 * load / capacity`` (arrivals x work / capacity).
Latency of an M/M/1-type queue is ``1 / (mu - lambda)``, so relative to baseline it is
``(1 - rho0) / (capacity * (1 - rho))``; past saturation the queue grows with time until
timeouts turn requests into errors, and the latency a client sees stops at the timeout (or
at the top bucket of a latency histogram). Smooth caps keep gradients finite at rho = 1.
"""

from __future__ import annotations

import pytensor.tensor as pt

__all__ = [
    "RHO_MAX",
    "ceiling",
    "latency_log_ratio",
    "saturation",
    "served_log_ratio",
    "soft_cap",
    "soft_floor",
    "utilisation",
]

#: Utilisation at which the stationary queueing formula is capped; beyond it the backlog term
#: takes over.
RHO_MAX = 0.97
#: Backlog growth over the post-onset window per unit of excess utilisation, in baseline
#: latencies (fluid queue; see ``latency_log_ratio``).
BACKLOG_RATE = 200.0
_SHARPNESS = 40.0
_BACKLOG_SHARPNESS = 200.0


def soft_cap(x: pt.TensorVariable, cap: float, k: float = _SHARPNESS) -> pt.TensorVariable:
    """``min(x, cap)``, smooth: equal to x well below cap, to cap well above."""
    return cap - pt.softplus(k * (cap - x)) / k


def soft_floor(x: pt.TensorVariable, floor: pt.TensorVariable,
               k: float = _SHARPNESS) -> pt.TensorVariable:
    """``max(x, floor)``, smooth: equal to x well above floor, to floor well below."""
    return floor + pt.softplus(k * (x - floor)) / k


def utilisation(rho0: pt.TensorVariable, load: pt.TensorVariable,
                capacity: pt.TensorVariable) -> pt.TensorVariable:
    """Utilisation from the baseline utilisation and relative arrivals and capacity."""
    return rho0 * load / capacity


def saturation(rho: pt.TensorVariable, k: float = 20.0) -> pt.TensorVariable:
    """How far past rho = 1 the component is, in 0..1 (a smooth step at saturation)."""
    return pt.sigmoid(k * (rho - 1.0))


def latency_log_ratio(rho0: pt.TensorVariable, rho: pt.TensorVariable,
                      capacity: pt.TensorVariable, elapsed: pt.TensorVariable,
                      backlog_rate: pt.TensorVariable | float = BACKLOG_RATE,
                      ) -> pt.TensorVariable:
    """Log of latency relative to baseline: the queueing curve plus a growing backlog.

    Below saturation, ``(1 - rho0) / (capacity (1 - rho))``. Above it the stationary formula
    is capped at ``RHO_MAX`` and the backlog grows linearly in time at a rate proportional to
    the excess utilisation (fluid approximation of a queue with arrivals above service). The
    rate is per post-onset window: a queue fed 10 % above its service rate for a window of
    hundreds of service times is hundreds of baseline latencies deep, so the backlog reaches
    the client's timeout within the first bins (see ``ceiling``).
    """
    rho_c = soft_cap(rho, RHO_MAX)
    stationary = pt.log1p(-rho0) - pt.log(capacity) - pt.log1p(-rho_c)
    # The excess is sharp (k = 200): multiplied by BACKLOG_RATE / (1 - RHO_MAX) ~ 6700, a
    # softer one leaked a growing backlog into stable queues (rho 0.9 grew 3.9-fold).
    excess = pt.softplus(_BACKLOG_SHARPNESS * (rho - 1.0)) / _BACKLOG_SHARPNESS
    return stationary + pt.log1p(backlog_rate * excess * elapsed / (1.0 - RHO_MAX))


def served_log_ratio(rho0: pt.TensorVariable, load: pt.TensorVariable,
                     capacity: pt.TensorVariable, k: float = 10.0) -> pt.TensorVariable:
    """Log of served throughput relative to baseline: ``min(load, capacity / rho0)``."""
    a = pt.log(load)
    b = pt.log(capacity) - pt.log(rho0)
    return -pt.logaddexp(-k * a, -k * b) / k


def ceiling(log_ratio: pt.TensorVariable, log_cap: pt.TensorVariable,
            k: float = 2.0) -> pt.TensorVariable:
    """Smooth ``min(log_ratio, log_cap)``: latency seen by clients stops at the timeout."""
    return -pt.logaddexp(-k * log_ratio, -k * log_cap) / k

"""Injected mechanisms: what changes in the root component, from when, and by how much.

Each mechanism of INTERFACE.md is a change of a physical parameter of the root, never of an
observed signal; the signals follow from the process simulation (``engine``). Magnitudes are
set relative to the root's own baseline, so that a label means the same visible effect in
every system the seed draws:

==================  =====================================  ======================  ===========
mechanism           magnitude (number in ``truth.json``)   obvious                 subtle
==================  =====================================  ======================  ===========
traffic_surge       factor on the root's arrival rate       utilisation -> 1.25     x 1.3
capacity_loss       share of the root's CPU capacity lost   utilisation -> 1.3      -> 0.65
service_slowdown    seconds added per request (no CPU)      6 x baseline latency    0.6 x
error_fault         share of requests failing fast          0.4                     0.03
memory_leak         leaked bytes per second                 OOM 150 s after onset   +40 % mem
retry_storm         offered load / capacity once storming   2.2                     1.2
==================  =====================================  ======================  ===========

(moderate lies between: utilisation -> 0.8 for a surge or a capacity loss, 2 x the
latency, 0.12 errors, a first OOM about 60 % of the way from onset to the window's end,
and 1.8 for a retry storm.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latentcause.errors import InputError
from latentcause.simulate.system import COMPONENTS, EDGES, System

__all__ = [
    "KINDS",
    "MAGNITUDES",
    "MECHANISMS",
    "Injection",
    "Profiles",
    "make_injection",
    "profiles",
    "root_utilisation",
]

MECHANISMS: tuple[str, ...] = (
    "none",
    "traffic_surge",
    "capacity_loss",
    "service_slowdown",
    "error_fault",
    "memory_leak",
    "retry_storm",
)
MAGNITUDES: tuple[str, ...] = ("obvious", "moderate", "subtle")

#: Variants of a mechanism: how a capacity loss shows in the container's CPU (a hog adds its
#: own use, a throttle or lost replica does not), how a leak grows, what triggers a storm.
KINDS: dict[str, tuple[str, ...]] = {
    "capacity_loss": ("hog", "throttle"),
    "memory_leak": ("ramp", "steps"),
    "retry_storm": ("surge", "errors"),
}

# Utilisation targets and sizes per label (see the module docstring).
_SURGE_RHO = {"obvious": 1.25, "moderate": 0.8}
_LOSS_RHO = {"obvious": 1.3, "moderate": 0.8, "subtle": 0.65}
_SLOW_X = {"obvious": 6.0, "moderate": 2.0, "subtle": 0.6}
_ERRORS = {"obvious": 0.4, "moderate": 0.12, "subtle": 0.03}
_STORM = {"obvious": (0.55, 3), "moderate": (0.45, 3), "subtle": (0.40, 2)}
_LEAK_STEP_S = 90.0


@dataclass(frozen=True)
class Injection:
    """One injected fault, fully resolved against a drawn system.

    Attributes
    ----------
    mechanism, component
        What and where (component None for ``none``).
    onset_s
        Seconds after the start of the observed window.
    magnitude
        The mechanism's size in its own unit (module docstring).
    label
        ``obvious``, ``moderate`` or ``subtle``.
    kind
        Variant (``KINDS``) or None.
    duration_s
        Seconds the change lasts; None for the rest of the window. For ``retry_storm`` the
        trigger's duration (the storm itself needs no cause to go on).
    parameters
        Everything else that was drawn or derived, for ``truth.json``.
    """

    mechanism: str
    component: str | None
    onset_s: float
    magnitude: float
    label: str
    kind: str | None = None
    duration_s: float | None = None
    parameters: dict[str, float | str] = field(default_factory=dict)


@dataclass(frozen=True)
class Profiles:
    """Per-second parameter changes, arrays of shape (seconds, components).

    ``extra_rate`` arrives from an outside client (no retries); ``capacity`` multiplies the
    cores available to the service; ``hog`` is CPU used by something else in the container
    (share of its cores); ``delay`` is added wait per request holding no CPU; ``error`` is the
    share of requests failing fast; ``late_error`` the share of served requests failing after
    their work was done (a failing commit or downstream write: the work is wasted, so retries
    of them load the queue); ``leak`` is heap growth in bytes per second.
    ``edge_retries`` and ``edge_budget`` are the callers' retry policies during the run.
    """

    extra_rate: np.ndarray
    capacity: np.ndarray
    hog: np.ndarray
    delay: np.ndarray
    error: np.ndarray
    late_error: np.ndarray
    leak: np.ndarray
    edge_retries: np.ndarray
    edge_budget: np.ndarray


def root_utilisation(mechanism: str, label: str) -> float | None:
    """Baseline utilisation a mechanism needs at its root, or None to draw it.

    A retry storm is metastable only when retries can push the offered load past capacity
    (utilisation x (1 + retries) > 1), so its label fixes the root's headroom.
    """
    if mechanism == "retry_storm":
        return _STORM[label][0]
    return None


def make_injection(
    mechanism: str,
    component: str | None,
    label: str,
    system: System,
    rng: np.random.Generator,
    *,
    onset_s: float,
    window_s: float,
    value: float | None = None,
    kind: str | None = None,
    duration_s: float | None = None,
) -> Injection:
    """Resolve a mechanism and a magnitude label into concrete parameters for ``system``.

    ``value`` overrides the numeric magnitude (the label is kept as given); ``kind`` picks a
    variant, drawn when None; ``duration_s`` makes a change transient (for a retry storm it
    sets the trigger's length, drawn in [60, 90] s when None).
    """
    if mechanism not in MECHANISMS:
        raise InputError(f"unknown mechanism {mechanism!r}; known: {', '.join(MECHANISMS)}")
    if label not in MAGNITUDES:
        raise InputError(f"unknown magnitude {label!r}; known: {', '.join(MAGNITUDES)}")
    if mechanism == "none":
        if component is not None:
            raise InputError("mechanism 'none' takes no component")
        return Injection("none", None, onset_s, 0.0, label)
    if component is None:
        raise InputError(f"mechanism {mechanism!r} needs a component")
    if component not in COMPONENTS:
        raise InputError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    kinds = KINDS.get(mechanism)
    if kind is not None and (kinds is None or kind not in kinds):
        raise InputError(f"mechanism {mechanism!r} has no kind {kind!r}")
    if kinds is not None and kind is None:
        kind = kinds[int(rng.integers(len(kinds)))]
    i = COMPONENTS.index(component)
    rho0 = float(system.rho0[i])
    params: dict[str, float | str] = {"root_utilisation": round(rho0, 4)}
    remaining = window_s - onset_s

    if mechanism == "traffic_surge":
        if label == "subtle":
            size = 1.3
        else:
            size = max(_SURGE_RHO[label] / rho0, 2.0 if label == "obvious" else 1.5)
        params["utilisation_after"] = round(rho0 * (value or size), 4)
    elif mechanism == "capacity_loss":
        size = 1.0 - rho0 / _LOSS_RHO[label]
        params["utilisation_after"] = round(rho0 / (1.0 - (value or size)), 4)
    elif mechanism == "service_slowdown":
        size = _SLOW_X[label] * float(system.latency0[i])
        params["baseline_latency_s"] = round(float(system.latency0[i]), 5)
    elif mechanism == "error_fault":
        size = _ERRORS[label]
    elif mechanism == "memory_leak":
        heap = float(system.limit[i] - system.nonheap[i])
        headroom = 0.98 * heap - float(system.live0[i])
        if label == "subtle":  # +40 % of the baseline memory by the window's end, no OOM
            size = 0.4 * float(system.nonheap[i] + system.live0[i]) / remaining
        else:
            size = headroom / (150.0 if label == "obvious" else 0.6 * remaining)
        params["headroom_bytes"] = round(headroom)
        params["seconds_to_oom"] = round(headroom / (value or size), 1)
    else:  # retry_storm
        rho_storm, retries = _STORM[label]
        size = rho0 * (1 + retries)
        trigger = float(duration_s) if duration_s is not None else float(rng.uniform(60, 90))
        duration_s = trigger
        params.update(
            retries=float(retries),
            trigger_s=round(trigger, 1),
            trigger_factor=round(1.7 / rho0, 4),
            trigger_error=0.9,
            callers=", ".join(_caller_names(component)),
        )
    magnitude = float(value) if value is not None else float(size)
    if magnitude <= 0 or (mechanism in ("capacity_loss", "error_fault") and magnitude >= 1):
        raise InputError(f"magnitude {magnitude} is out of range for {mechanism}")
    return Injection(mechanism, component, onset_s, magnitude, label, kind, duration_s, params)


def _caller_names(component: str) -> list[str]:
    return [a for a, b, _, _ in EDGES if b == component]


def profiles(inj: Injection, system: System, seconds: int, warmup: int) -> Profiles:
    """Per-second changes for a run of ``seconds``, whose observed window starts at ``warmup``."""
    n = system.n
    extra = np.zeros((seconds, n))
    capacity = np.ones((seconds, n))
    hog = np.zeros((seconds, n))
    delay = np.zeros((seconds, n))
    error = np.zeros((seconds, n))
    late_error = np.zeros((seconds, n))
    leak = np.zeros((seconds, n))
    retries = system.edge_retries.copy()
    budget = system.edge_budget.copy()
    if inj.mechanism == "none" or inj.component is None:
        return Profiles(extra, capacity, hog, delay, error, late_error, leak, retries, budget)
    i = COMPONENTS.index(inj.component)
    t0 = warmup + int(round(inj.onset_s))
    t1 = seconds if inj.duration_s is None else min(seconds, t0 + int(round(inj.duration_s)))
    m = inj.magnitude
    if inj.mechanism == "traffic_surge":
        extra[t0:t1, i] = (m - 1.0) * system.rate0[i]
    elif inj.mechanism == "capacity_loss":
        capacity[t0:t1, i] = 1.0 - m
        if inj.kind == "hog":
            hog[t0:t1, i] = m
    elif inj.mechanism == "service_slowdown":
        delay[t0:t1, i] = m
    elif inj.mechanism == "error_fault":
        error[t0:t1, i] = m
    elif inj.mechanism == "memory_leak":
        if inj.kind == "steps":
            steps = np.arange(t0, t1, int(_LEAK_STEP_S))
            leak[steps, i] = m * _LEAK_STEP_S
        else:
            leak[t0:t1, i] = m
    else:  # retry_storm: the callers of the root retry without budget; a short trigger
        n_retries = int(inj.parameters["retries"])
        into_root = system.edge_dst == i
        retries[into_root] = n_retries
        budget[into_root] = np.inf
        if inj.kind == "errors":
            late_error[t0:t1, i] = float(inj.parameters["trigger_error"])
        else:
            extra[t0:t1, i] = (float(inj.parameters["trigger_factor"]) - 1.0) * system.rate0[i]
    return Profiles(extra, capacity, hog, delay, error, late_error, leak, retries, budget)


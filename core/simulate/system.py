"""The simulated world: a small sock-shop-like service graph and its parameters.

Ten components, async callers (a worker is held only for the component's own CPU work, not
while it waits on its callees), one FIFO queue per component, per-call timeouts and retry
policies at the caller, and a heap with garbage collection under a memory limit. The
parameters are drawn per seed around a baseline utilisation, so every incident runs in a
slightly different system; the drawn values are reported in ``truth.json``.

The call graph (expected calls per request, probability that a failed call fails the caller)::

    users -> front-end
    front-end -> catalogue (0.9), carts (0.6), orders (0.15), user (0.3)
    catalogue -> catalogue-db
    carts -> carts-db
    orders -> carts, payment, shipping, orders-db, user (0.5)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "COMPONENTS",
    "EDGES",
    "CALLERS_FIRST",
    "DEFAULT_BUDGET",
    "DEFAULT_RETRIES",
    "EXTERNAL",
    "LEAVES_FIRST",
    "System",
    "ancestors",
    "build_system",
    "callees",
    "callers",
    "is_leaf",
    "kingman_wait",
]

#: Component names, in the column order of the output.
COMPONENTS: tuple[str, ...] = (
    "front-end",
    "catalogue",
    "catalogue-db",
    "carts",
    "carts-db",
    "orders",
    "orders-db",
    "payment",
    "shipping",
    "user",
)

#: Name of the outside world as a caller (end users and their load balancer).
EXTERNAL = "users"

#: (caller, callee, expected calls per caller request (<= 1), probability that a failed call
#: fails the caller's request). The first edge is the outside world calling the front-end.
EDGES: tuple[tuple[str, str, float, float], ...] = (
    (EXTERNAL, "front-end", 1.0, 1.0),
    ("front-end", "catalogue", 0.9, 0.6),
    ("front-end", "carts", 0.6, 0.9),
    ("front-end", "orders", 0.15, 0.95),
    ("front-end", "user", 0.3, 0.7),
    ("catalogue", "catalogue-db", 1.0, 0.95),
    ("carts", "carts-db", 1.0, 0.95),
    ("orders", "carts", 1.0, 0.9),
    ("orders", "payment", 1.0, 0.95),
    ("orders", "shipping", 1.0, 0.8),
    ("orders", "user", 0.5, 0.7),
    ("orders", "orders-db", 1.0, 0.95),
)

# Cores (= workers) per component and memory sizes (limit, non-heap RSS, live heap) in MiB.
_CORES = {"front-end": 2.0, "catalogue-db": 2.0, "carts-db": 2.0, "orders-db": 2.0}
_MEMORY_MIB = {
    "front-end": (1024, 110, 70),
    "catalogue": (512, 12, 6),
    "catalogue-db": (1024, 300, 140),
    "carts": (1024, 200, 150),
    "carts-db": (1024, 190, 100),
    "orders": (1024, 200, 140),
    "orders-db": (1024, 180, 90),
    "payment": (128, 6, 3),
    "shipping": (1024, 200, 120),
    "user": (256, 15, 5),
}
_MIB = 1024.0 * 1024.0

#: Default retry policy of every caller: at most this many retries per call, and retries
#: capped at this share of first attempts (a retry budget, as in Envoy or gRPC throttling).
DEFAULT_RETRIES = 2
DEFAULT_BUDGET = 0.05


def callers(component: str) -> list[str]:
    """Direct callers of ``component`` inside the system (not the outside world)."""
    return [a for a, b, _, _ in EDGES if b == component and a != EXTERNAL]


def callees(component: str) -> list[str]:
    """Direct callees of ``component``."""
    return [b for a, b, _, _ in EDGES if a == component]


def ancestors(component: str) -> list[str]:
    """Every component whose requests may reach ``component`` (callers, their callers ...)."""
    seen: list[str] = []
    todo = callers(component)
    while todo:
        c = todo.pop()
        if c not in seen:
            seen.append(c)
            todo.extend(callers(c))
    return [c for c in COMPONENTS if c in seen]


def is_leaf(component: str) -> bool:
    """Tell whether ``component`` calls nothing (its own load does not spread downstream)."""
    return not callees(component)


@dataclass(frozen=True)
class System:
    """Drawn parameters of one simulated system, arrays indexed like ``COMPONENTS``.

    Attributes
    ----------
    cores
        Workers (and CPU cores) per component; the container's CPU limit.
    work
        CPU seconds per request on one core (before GC overhead).
    rho0
        Baseline utilisation the work was chosen for (the latent headroom).
    rate0
        Baseline request rate per component (requests/s) implied by the call graph.
    latency0
        Baseline mean latency per component (s), own work plus its callees.
    limit, nonheap, live0
        Memory limit, non-heap resident memory and baseline live heap (bytes).
    inflight_bytes, alloc_bytes
        Heap held per in-flight request; garbage allocated per served request.
    restart_s
        Seconds a component is unavailable after an OOM kill.
    queue_limit
        Most requests a component queues; beyond that it rejects (fast errors).
    user_rate
        Baseline arrival rate of end users at the front-end (requests/s).
    edge_src, edge_dst
        Caller and callee index per edge; ``len(COMPONENTS)`` stands for the outside world.
    edge_calls, edge_propagate, edge_timeout, edge_retries, edge_budget
        Per edge: calls per request, failure propagation, timeout (s), retries, retry budget
        (``inf`` for no budget).
    """

    cores: np.ndarray
    work: np.ndarray
    rho0: np.ndarray
    rate0: np.ndarray
    latency0: np.ndarray
    limit: np.ndarray
    nonheap: np.ndarray
    live0: np.ndarray
    inflight_bytes: np.ndarray
    alloc_bytes: np.ndarray
    restart_s: np.ndarray
    queue_limit: np.ndarray
    idle_cpu: np.ndarray
    user_rate: float
    edge_src: np.ndarray
    edge_dst: np.ndarray
    edge_calls: np.ndarray
    edge_propagate: np.ndarray
    edge_timeout: np.ndarray
    edge_retries: np.ndarray
    edge_budget: np.ndarray

    @property
    def n(self) -> int:
        """Number of components."""
        return len(COMPONENTS)

    def describe(self) -> dict[str, dict[str, float]]:
        """Per-component summary for ``truth.json``: cores, utilisation, rate, latency."""
        return {
            c: {
                "cores": float(self.cores[i]),
                "utilisation": round(float(self.rho0[i]), 4),
                "rate_rps": round(float(self.rate0[i]), 3),
                "latency_s": round(float(self.latency0[i]), 5),
                "memory_limit_bytes": float(self.limit[i]),
            }
            for i, c in enumerate(COMPONENTS)
        }


def _topological(order_from_callers: bool) -> list[int]:
    """Component indices with every caller before its callees (or the reverse)."""
    index = {c: i for i, c in enumerate(COMPONENTS)}
    done: list[int] = []
    pending = list(COMPONENTS)
    while pending:
        for c in pending:
            if all(index[a] in done for a in callers(c)):
                done.append(index[c])
                pending.remove(c)
                break
    return done if order_from_callers else done[::-1]


#: Component indices, callees before callers (leaves first).
LEAVES_FIRST: tuple[int, ...] = tuple(_topological(False))
#: Component indices, callers before callees.
CALLERS_FIRST: tuple[int, ...] = tuple(_topological(True))


def build_system(
    rng: np.random.Generator,
    *,
    root: str | None = None,
    root_utilisation: float | None = None,
) -> System:
    """Draw one system: rates from the call graph, work per request from a target utilisation.

    Every component's baseline utilisation is drawn in [0.3, 0.55], a headroom from which
    each mechanism's magnitudes have a visible but not always saturating effect. The draw does
    not depend on the root, so one seed gives the same system for every mechanism, and the
    ``none`` incident of a seed is the control of every other. ``root_utilisation`` (a retry
    storm needs enough load for retries to overload the root) replaces the root's draw.
    """
    n = len(COMPONENTS)
    index = {c: i for i, c in enumerate(COMPONENTS)}
    rho0 = rng.uniform(0.3, 0.55, size=n)
    if root is not None and root_utilisation is not None:
        rho0[index[root]] = root_utilisation
    user_rate = float(rng.uniform(25.0, 45.0))
    cores = np.array([_CORES.get(c, 1.0) for c in COMPONENTS])

    src = np.array([index.get(a, n) for a, _, _, _ in EDGES])
    dst = np.array([index[b] for _, b, _, _ in EDGES])
    calls = np.array([e[2] for e in EDGES])
    propagate = np.array([e[3] for e in EDGES])

    rate0 = np.zeros(n)
    for i in CALLERS_FIRST:
        rate0[i] = sum(
            (user_rate if src[e] == n else rate0[src[e]]) * calls[e]
            for e in range(len(EDGES))
            if dst[e] == i
        )
    work = rho0 * cores / rate0

    # Baseline latency: own service time plus Kingman waiting, plus the callees' latency.
    own = work + kingman_wait(rho0, cores, work)
    latency0 = np.zeros(n)
    for i in LEAVES_FIRST:
        latency0[i] = own[i] + sum(
            calls[e] * latency0[dst[e]] for e in range(len(EDGES)) if src[e] == i
        )
    timeout = np.clip(40.0 * latency0[dst], 0.5, 10.0)
    timeout[src == n] = 15.0  # end users wait longer than services do
    retries = np.full(len(EDGES), DEFAULT_RETRIES, dtype=int)
    retries[src == n] = 1
    budget = np.full(len(EDGES), DEFAULT_BUDGET)

    mem = np.array([_MEMORY_MIB[c] for c in COMPONENTS], dtype=float) * _MIB
    jitter = rng.uniform(0.9, 1.1, size=(n, 2))
    return System(
        cores=cores,
        work=work,
        rho0=rho0,
        rate0=rate0,
        latency0=latency0,
        limit=mem[:, 0],
        nonheap=mem[:, 1] * jitter[:, 0],
        live0=mem[:, 2] * jitter[:, 1],
        inflight_bytes=np.full(n, 16 * 1024.0),
        alloc_bytes=mem[:, 2] * 0.004 / np.maximum(rate0, 1.0),
        restart_s=rng.integers(15, 30, size=n).astype(float),
        queue_limit=60.0 * rate0 / rho0,  # a minute of work at full capacity
        idle_cpu=0.004 * cores,
        user_rate=user_rate,
        edge_src=src,
        edge_dst=dst,
        edge_calls=calls,
        edge_propagate=propagate,
        edge_timeout=timeout,
        edge_retries=retries,
        edge_budget=budget,
    )


def kingman_wait(rho: np.ndarray, cores: np.ndarray, service: np.ndarray) -> np.ndarray:
    """Mean queueing delay of a G/G/c queue (Sakasegawa's approximation for P(wait)).

    Poisson arrivals (ca^2 = 1) and log-normal service times with cv 0.5 (cs^2 = 0.25).
    """
    rho = np.clip(rho, 0.0, 0.98)
    p_wait = rho ** (np.sqrt(2.0 * (cores + 1.0)) - 1.0)
    return p_wait * service / (cores * (1.0 - rho)) * (1.0 + 0.25) / 2.0


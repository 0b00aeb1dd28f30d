"""Incidents that are ambiguous by design: which columns to hide so hypotheses coincide.

A hypothesis (component, mechanism) predicts, for every observed series, whether it moves,
which way, and how its moves are tied together; each mechanism also has free amounts (how
much more traffic, how much capacity lost, how long the extra wait) and, since the core count
behind "percent of one core" is unknown, a free baseline utilisation. Two hypotheses are
equivalent for an incident when, for the series that remain, each one's free amounts can
reproduce what the other predicts. Hiding columns is the only way the simulator makes an
incident ambiguous; the physics is never bent. The three designs, and why each set is
really equivalent (and why some tempting ones are not):

``single_quantile``: every component exports only ``lat_p90``, the root's callers (and
    their callers) export no latency at all, and the root loses ``mem``. True mechanism:
    ``service_slowdown`` (moderate or subtle), or ``capacity_loss`` of the ``throttle`` kind
    (subtle). Equivalent: {capacity_loss, service_slowdown} at the root. Below saturation a
    throttle leaves CPU (load x work) and rate unchanged, as a slowdown does (its wait holds
    no CPU); neither changes errors or the callees' rates; both raise the root's latency.
    What separates them is the shape of the root's latency distribution: queueing stretches
    the tail (p99/p50 grows), an added wait shifts every quantile by the same amount. One
    quantile of the root does not show the shape. The callers' latencies would: a caller's
    quantile is a quantile of its own time plus the root's, a mixture whose value depends on
    the whole distribution of the root's latency (measured here: with the root's p90 matched,
    the front-end's p90 differed by a fifth of its baseline between the two), so the path
    to the root is hidden too. Magnitudes are limited to the range where the capacity loss
    that matches the root's p90 causes no timeouts at the callers (a timeout would show as
    caller errors only under queueing, whose tail is long). Caveat: queueing also amplifies
    the arrival noise, so the root's latency series is noisier under a capacity loss: a
    second-moment difference the mechanism signatures do not describe. Kept out: a ``hog``
    (its CPU rises, a slowdown's does not), and ``traffic_surge`` (rate rises, and the
    callees' rates with it).

``latency_only_root``: as ``single_quantile``, and the root also loses ``cpu`` and ``rps``
    (an exporter that only has a latency histogram for it). True mechanism: ``capacity_loss``
    (either kind, subtle), ``service_slowdown`` (moderate or subtle), or ``traffic_surge``
    (subtle) at a leaf. Equivalent: {capacity_loss, service_slowdown} at the root, plus
    ``traffic_surge`` when the root is a leaf. With CPU and rate hidden, the root shows a
    single latency quantile up, errors flat, memory hidden, in all three. A surge at a root
    that calls others raises its callees' rates, which stay observed, so it is equivalent
    only at a leaf (a surge here comes from a client outside the graph, so the callers' own
    rates do not move either; a subtle surge stays far from the callers' timeouts).

``no_rate_root``: the root loses ``rps`` and ``mem``. True mechanism: ``traffic_surge`` or
    ``capacity_loss`` of the ``hog`` kind, at a leaf, any magnitude. Equivalent:
    {traffic_surge, capacity_loss}. Both raise the root's CPU (more requests' work, or the
    hog's), raise its latency along the same queueing curve rho/(1-rho) from the baseline
    headroom, and past saturation both cap CPU at the container's cores, build a backlog
    whose timeouts become the callers' errors, and reject once the queue is full. Given the
    free baseline utilisation, the CPU rise and the latency rise fix the two free amounts of
    either mechanism (surge: factor and headroom; hog: share lost and headroom). The hog
    also stretches each request's service time by 1/(1 - share), a shift of the low
    quantiles that the queueing term dominates at the utilisations a visible effect needs
    (measured here at a 30 requests/s leaf, moderate: with p90 matched, p50 differed by
    0.16 of its baseline, about the size of the quantile noise of a 30 s window), and that
    reaches the callers' quantiles only diluted. This is the least strict of the three
    designs: equivalent at the level of the mechanism signatures and within the noise of
    the simulated exporters, not exactly. Kept out: ``service_slowdown`` (CPU flat); a surge
    at a non-leaf (callees' rates rise).

Considered and rejected: ``error_fault`` in a leaf with the leaf's ``err`` hidden vs an
``error_fault`` in its caller: the caller's CPU falls when it fails fast itself but not when
its callee does, and a failing caller stops calling all its callees (their rates fall), so
they are not equivalent. ``memory_leak`` with ``mem`` hidden still shows restarts and a slow
GC-driven rise in CPU and latency, which no step-like mechanism reproduces.
"""

from __future__ import annotations

import pandas as pd

from latentcause.simulate.system import COMPONENTS, ancestors, is_leaf

__all__ = ["DESIGNS", "apply_design", "design_kind", "eligible_designs", "equivalent_set"]

DESIGNS: tuple[str, ...] = ("single_quantile", "latency_only_root", "no_rate_root")


def eligible_designs(mechanism: str, component: str | None, label: str) -> list[str]:
    """Designs under which this (mechanism, root, magnitude) has equivalent hypotheses."""
    if component is None:
        return []
    leaf = is_leaf(component)
    out: list[str] = []
    slow_ok = mechanism == "service_slowdown" and label in ("moderate", "subtle")
    loss_subtle = mechanism == "capacity_loss" and label == "subtle"
    if slow_ok or loss_subtle:
        out.append("single_quantile")
    if slow_ok or loss_subtle or (mechanism == "traffic_surge" and label == "subtle" and leaf):
        out.append("latency_only_root")
    if leaf and mechanism in ("traffic_surge", "capacity_loss"):
        out.append("no_rate_root")
    return out


def design_kind(design: str, mechanism: str) -> str | None:
    """Return the variant a design needs: a throttle keeps CPU flat, a hog raises it."""
    if mechanism != "capacity_loss":
        return None
    return {"single_quantile": "throttle", "no_rate_root": "hog"}.get(design)


def equivalent_set(design: str, component: str) -> list[dict[str, str]]:
    """List the hypotheses with the same predictions under ``design`` (truth included)."""
    if design == "no_rate_root":
        mechs = ["traffic_surge", "capacity_loss"]
    else:
        mechs = ["capacity_loss", "service_slowdown"]
        if design == "latency_only_root" and is_leaf(component):
            mechs.append("traffic_surge")
    return [{"component": component, "mechanism": m} for m in mechs]


def apply_design(
    design: str, frame: pd.DataFrame, component: str
) -> tuple[pd.DataFrame, list[str]]:
    """Drop the columns ``design`` hides; return the frame and the dropped column names."""
    drop: list[str] = []
    if design in ("single_quantile", "latency_only_root"):
        drop += [f"{c}_{s}" for c in COMPONENTS for s in ("lat_p50", "lat_p99")]
        drop += [f"{c}_lat_p90" for c in ancestors(component)]
    root = {"single_quantile": ("mem",), "latency_only_root": ("cpu", "rps", "mem"),
            "no_rate_root": ("rps", "mem")}[design]
    drop += [f"{component}_{s}" for s in root]
    drop = [c for c in drop if c in frame.columns]
    return frame.drop(columns=drop), drop

"""Mechanisms: Bayesian generative models x = g(z), one per failure mechanism.

Each mechanism maps a hidden state (utilisation, capacity, arrivals, errors, memory) to the
change it causes in every canonical signal of its root component; ``build_model`` wraps it in
the shared, scale-free observation model. ``REGISTRY`` holds the mechanisms by stable name.
"""

from __future__ import annotations

import hashlib
import json

from latentcause.models import mechanisms as _mechanisms  # noqa: F401  (fills REGISTRY)
from latentcause.models._base import (
    LATENCY_ROWS,
    REGISTRY,
    RETRY_FLOOR,
    ROWS,
    Drivers,
    Effects,
    Mechanism,
    Prior,
    register,
)
from latentcause.models.builder import (
    NU,
    ROW_NUISANCE,
    ComponentInput,
    build_model,
    nuisance_log_density_at_zero,
    rows_without_data,
    set_component,
)

__all__ = [
    "MECHANISMS",
    "MODEL_VERSION",
    "NU",
    "REGISTRY",
    "LATENCY_ROWS",
    "RETRY_FLOOR",
    "ROLES",
    "ROWS",
    "VARIANTS",
    "ROW_NUISANCE",
    "ComponentInput",
    "Drivers",
    "Effects",
    "Mechanism",
    "Prior",
    "build_model",
    "config_sha256",
    "describe_library",
    "nuisance_log_density_at_zero",
    "register",
    "rows_without_data",
    "set_component",
]

#: Version of the model library; results made with another version are stale.
MODEL_VERSION = "12"

#: The root mechanisms of the INTERFACE.md vocabulary (``none`` is the absence of a root).
MECHANISMS: tuple[str, ...] = (
    "traffic_surge", "capacity_loss", "service_slowdown", "error_fault", "memory_leak",
    "retry_storm",
)

#: Every role a component can play: a root mechanism, or, when it is not the root, propagated
#: (latency and errors from a callee), loaded (arrivals from a caller) or unaffected (none).
ROLES: tuple[str, ...] = (*MECHANISMS, "propagated", "loaded", "none")

#: Variants of root mechanisms (``Mechanism.variant_of``): fitted beside their mechanism where
#: they apply, and mixed into its evidence (``latentcause.inference.engine``).
VARIANTS: tuple[str, ...] = ("traffic_surge_via_callees",)


def config_sha256() -> str:
    """Hash of the whole library's configuration (every mechanism's priors) and version."""
    configs = {name: REGISTRY[name]().config() for name in sorted(REGISTRY)}
    blob = json.dumps({"version": MODEL_VERSION, "mechanisms": configs}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def describe_library() -> str:
    """The library as text: name, summary, hidden state and signature of each mechanism."""
    lines = []
    for name in ("none", *MECHANISMS, *VARIANTS, "propagated", "loaded"):
        mech = REGISTRY[name]()
        sig = "  ".join(f"{r}{d}" for r, d in mech.signature.items())
        hidden = ", ".join(mech.hidden_state) or "-"
        role = ""
        if mech.variant_of:
            role = f"  (variant of {mech.variant_of}, where the call graph shows callees)"
        elif not mech.is_root:
            role = "  (role of a non-root component)"
        lines += [f"{name}{role}", f"    {mech.summary}", f"    hidden state: {hidden}",
                  f"    signature:    {sig}"]
        lines.append("    priors:       " + ", ".join(
            f"{k} ~ {p.dist}({', '.join(f'{a}={v:g}' for a, v in p.kwargs.items())})"
            for k, p in mech.priors.items()) if mech.priors else "    priors:       -")
    lines.append("signature: + rises, - falls, 0 flat, ~ either way; rows are relative to the "
                 "component's own pre-onset baseline")
    return "\n".join(lines)

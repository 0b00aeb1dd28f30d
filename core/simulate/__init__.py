"""Synthetic incidents with known ground truth, from a process simulation (no PyMC).

Benchmarks test the mechanism models against a world they did not write: a numpy fluid
simulation of a small service graph at 1-second resolution (``system``, ``engine``), with the
mechanisms of INTERFACE.md injected as changes of physical parameters (``injection``), seen
through exporter-like counters and histograms (``observe``), optionally made ambiguous by
design (``ambiguity``) or damaged like real scrapes (``defects``).

The public names are imported on first use: the CLI registers the ``simulate`` command on
every run, and that should not cost a pandas import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latentcause.simulate.ambiguity import DESIGNS
    from latentcause.simulate.defects import DEFECTS
    from latentcause.simulate.incident import (
        SimulatedIncident,
        simulate_incident,
        write_incident,
    )
    from latentcause.simulate.injection import KINDS, MAGNITUDES, MECHANISMS
    from latentcause.simulate.suite import plan_suite, simulate_suite
    from latentcause.simulate.system import COMPONENTS, ancestors, callees, callers, is_leaf

__all__ = [
    "COMPONENTS",
    "DEFECTS",
    "DESIGNS",
    "KINDS",
    "MAGNITUDES",
    "MECHANISMS",
    "SimulatedIncident",
    "ancestors",
    "callees",
    "callers",
    "is_leaf",
    "plan_suite",
    "simulate_suite",
    "simulate_incident",
    "write_incident",
]

#: Public name -> the module that defines it.
_HOME = {
    "DESIGNS": "ambiguity",
    "DEFECTS": "defects",
    "SimulatedIncident": "incident",
    "simulate_incident": "incident",
    "write_incident": "incident",
    "KINDS": "injection",
    "MAGNITUDES": "injection",
    "MECHANISMS": "injection",
    "plan_suite": "suite",
    "simulate_suite": "suite",
    "COMPONENTS": "system",
    "ancestors": "system",
    "callees": "system",
    "callers": "system",
    "is_leaf": "system",
}


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})

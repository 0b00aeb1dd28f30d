"""Synthetic incidents with known ground truth, from a process simulation (no PyMC).

Benchmarks test the mechanism models against a world they did not write: a numpy fluid
simulation of a small service graph at 1-second resolution (``system``, ``engine``), with the
mechanisms of INTERFACE.md injected as changes of physical parameters (``injection``), seen
through exporter-like counters and histograms (``observe``), optionally made ambiguous by
design (``ambiguity``) or damaged like real scrapes (``defects``).
"""

from latentcause.simulate.ambiguity import DESIGNS
from latentcause.simulate.defects import DEFECTS
from latentcause.simulate.incident import SimulatedIncident, simulate_incident, write_incident
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
    "simulate_incident",
    "simulate_suite",
    "write_incident",
]

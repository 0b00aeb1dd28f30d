"""A balanced suite of simulated incidents, for benchmarks and calibration curves.

Mechanisms take turns (each block of seven holds every mechanism once, in a seeded order),
each mechanism walks through the components in its own seeded order and through the three
magnitudes, so any prefix of the suite is close to balanced. On top of that plan a share of
the incidents is made ambiguous by design (among those a design applies to) and another
share gets data defects; each incident has its own seed derived from the suite's.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentcause.errors import InputError
from latentcause.simulate.ambiguity import eligible_designs
from latentcause.simulate.defects import DEFECTS
from latentcause.simulate.incident import simulate_incident, write_incident
from latentcause.simulate.injection import MAGNITUDES, MECHANISMS
from latentcause.simulate.system import COMPONENTS

__all__ = ["PlannedIncident", "plan_suite", "simulate_suite"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlannedIncident:
    """One entry of a suite's plan: what to simulate and under which seed."""

    index: int
    mechanism: str
    component: str | None
    magnitude: str
    seed: int
    design: str | None
    defects: tuple[str, ...]

    @property
    def folder(self) -> str:
        """Folder name: index, mechanism and root, e.g. ``007-capacity_loss-carts``."""
        return f"{self.index:03d}-{self.mechanism}-{self.component or 'none'}"


def plan_suite(
    n: int,
    *,
    seed: int,
    ambiguous_share: float = 0.18,
    defect_share: float = 0.15,
) -> list[PlannedIncident]:
    """Plan ``n`` incidents: balanced mechanisms, roots and magnitudes; designs and defects."""
    if n < 1:
        raise InputError(f"--suite {n}: need at least one incident")
    if not (0.0 <= ambiguous_share <= 1.0 and 0.0 <= defect_share <= 1.0):
        raise InputError("the ambiguous and defect shares must lie in [0, 1]")
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x5017E]))
    mechanisms: list[str] = []
    while len(mechanisms) < n:
        mechanisms += [MECHANISMS[k] for k in rng.permutation(len(MECHANISMS))]
    roots = {m: [COMPONENTS[k] for k in rng.permutation(len(COMPONENTS))] for m in MECHANISMS}
    offsets = {m: int(rng.integers(len(MAGNITUDES))) for m in MECHANISMS}
    seen = dict.fromkeys(MECHANISMS, 0)
    base: list[tuple[str, str | None, str]] = []
    for m in mechanisms[:n]:
        k = seen[m]
        seen[m] += 1
        root = None if m == "none" else roots[m][k % len(COMPONENTS)]
        base.append((m, root, MAGNITUDES[(k + offsets[m]) % len(MAGNITUDES)]))

    eligible = [i for i, (m, c, lab) in enumerate(base) if eligible_designs(m, c, lab)]
    n_amb = min(int(round(ambiguous_share * n)), len(eligible))
    if n_amb < int(round(ambiguous_share * n)):
        log.warning("only %d incidents of %d can be made ambiguous by design", n_amb, n)
    chosen = set(rng.choice(eligible, size=n_amb, replace=False).tolist()) if n_amb else set()
    n_def = int(round(defect_share * n))
    damaged = rng.choice(n, size=n_def, replace=False).tolist() if n_def else []
    defects: dict[int, tuple[str, ...]] = {}
    for k, i in enumerate(damaged):
        first = DEFECTS[k % len(DEFECTS)]
        defects[int(i)] = (first,) if rng.random() < 0.7 else tuple(
            sorted({first, DEFECTS[int(rng.integers(len(DEFECTS)))]}, key=DEFECTS.index))

    plan: list[PlannedIncident] = []
    for i, (m, c, lab) in enumerate(base):
        design = None
        if i in chosen:
            options = eligible_designs(m, c, lab)
            design = options[int(rng.integers(len(options)))]
        incident_seed = int(np.random.SeedSequence([seed, i]).generate_state(1)[0])
        plan.append(PlannedIncident(i, m, c, lab, incident_seed, design, defects.get(i, ())))
    return plan


def simulate_suite(
    n: int,
    out_dir: Path,
    *,
    seed: int,
    window_s: int = 1500,
    step_s: int = 5,
    ambiguous_share: float = 0.18,
    defect_share: float = 0.15,
    spans: bool = True,
    progress: Callable[[int, int, Path], None] | None = None,
) -> list[Path]:
    """Simulate and write a suite of ``n`` incidents under ``out_dir``; return their folders.

    ``out_dir/suite.json`` lists every folder with its truth. ``spans``: incidents that are
    not ambiguous by design also get sampled spans. ``progress(done, n, folder)`` is called
    after each incident (the CLI prints it on stderr).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    plan = plan_suite(n, seed=seed, ambiguous_share=ambiguous_share, defect_share=defect_share)
    folders: list[Path] = []
    entries: list[dict[str, Any]] = []
    for item in plan:
        incident = simulate_incident(
            item.mechanism, item.component, seed=item.seed, magnitude=item.magnitude,
            window_s=window_s, step_s=step_s, design=item.design, defects=item.defects,
            spans=spans,
        )
        folder = write_incident(incident, out_dir / item.folder)
        folders.append(folder)
        entries.append({"folder": item.folder, "truth": incident.truth})
        if progress is not None:
            progress(len(folders), n, folder)
    index = {
        "seed": seed,
        "n": n,
        "window_s": window_s,
        "step_s": step_s,
        "ambiguous": sum(e["truth"]["ambiguous"] for e in entries),
        "with_defects": sum(bool(e["truth"]["defects"]) for e in entries),
        "incidents": entries,
    }
    tmp = out_dir / ".suite.json.tmp"
    tmp.write_text(json.dumps(index, indent=2) + "\n")
    os.replace(tmp, out_dir / "suite.json")
    return folders

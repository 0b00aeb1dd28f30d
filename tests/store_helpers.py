"""Small stored incidents for the store, Dask and Prometheus tests, and the CLI in a subprocess.

``make_incident_csv`` writes a wide CSV (10 minutes at 5 s, four components, one clear capacity
loss); ``add_incident`` puts one into a store through the real spec code. The session fixture
``analysed_store`` (conftest.py) analyses two of them once, for every test that needs a real
analysis.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentcause.store import Store, parse_spec

__all__ = ["CLI", "T0", "add_incident", "copy_store", "latentcause", "make_incident_csv",
           "without_paths"]

CLI = str(Path(sys.executable).parent / "latentcause")
T0 = 1_700_000_000.0


def make_incident_csv(path: Path, *, seed: int, root: str = "carts",
                      components: tuple[str, ...] = ("frontend", "carts", "orders", "payment"),
                      minutes: float = 10.0, step_s: float = 5.0, onset_s: float = 300.0) -> float:
    """Write a wide CSV with a capacity loss in ``root`` at ``onset_s``; return the onset time.

    Before the onset every component idles around its own utilisation with noise. From the
    onset the root's CPU saturates and its latency climbs several-fold (queueing), its callers
    (``frontend``) see part of that latency, the others stay as they were; request rates are
    unchanged, which is what separates a capacity loss from a traffic surge.
    """
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 / step_s)
    t = T0 + np.arange(n) * step_s
    after = (t - T0) >= onset_s
    ramp = np.clip((t - T0 - onset_s) / 30.0, 0.0, 1.0)
    cols: dict[str, Any] = {"time": t}
    for i, comp in enumerate(components):
        rps = 50.0 + 10 * i + rng.normal(0, 1.5, n)
        cpu = 0.25 + 0.05 * i + rng.normal(0, 0.01, n)
        lat = 0.020 + 0.005 * i + rng.normal(0, 0.001, n)
        err = np.clip(0.001 + rng.normal(0, 0.0003, n), 0, 1)
        if comp == root:
            cpu = np.where(after, cpu + ramp * (0.93 - cpu), cpu)
            lat = lat * (1 + 5.0 * ramp)
        elif comp == components[0]:
            lat = lat * (1 + 1.5 * ramp)
        cols[f"{comp}_rps"] = rps
        cols[f"{comp}_cpu"] = cpu
        cols[f"{comp}_lat_p99"] = lat
        cols[f"{comp}_err"] = err
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(cols).to_csv(path, index=False)
    return T0 + onset_s


def add_incident(store: Path, incident_id: str, *, seed: int, root: str = "carts",
                 draws: int = 100) -> Path:
    """Add an incident whose data lives in its own folder, through the real CLI code path."""
    data = store / incident_id / "data" / "metrics.csv"
    onset = make_incident_csv(data, seed=seed, root=root)
    spec = parse_spec({
        "id": incident_id, "title": f"{root} capacity loss", "tags": ["test"],
        "onset": str(onset), "seed": 0, "draws": draws,
        "source": {"type": "file", "path": "data/metrics.csv"},
    }, store / incident_id / "incident.toml")
    return Store(store).add(spec)


def latentcause(*args: str, env: dict[str, str] | None = None,
                timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})}, check=False)


def without_paths(report: dict[str, Any]) -> dict[str, Any]:
    """The report without the data's location (a copied store reads its data elsewhere)."""
    prov = {k: v for k, v in report["provenance"].items() if k not in ("source", "queries")}
    return {**report, "provenance": prov}


def copy_store(src: Path, dst: Path) -> Store:
    """Copy a store without its locks and run log."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".locks", "reanalysis.log"))
    return Store(dst)

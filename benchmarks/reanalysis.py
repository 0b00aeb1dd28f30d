"""Benchmark: reanalysis of a store of incidents on the local pool of 2 and on a Dask cluster.

Builds a store of N incidents (a small built-in generator: five components, ten minutes at
5 s, one capacity loss; or ``latentcause.simulate`` with --simulate), runs ``latentcause
reanalyze`` on a copy with the local process pool of two, starts a Dask scheduler and two
single-threaded workers on 127.0.0.1, runs the same reanalysis on another copy through the
cluster, and prints both wall times, the speedup and whether every report.json (all but
timing and the data's path) agrees. Cluster start-up is not timed; worker start-up
(importing PyMC) is on the local side, since each run pays it there.

    .venv/bin/python benchmarks/reanalysis.py [--incidents 20] [--draws 100] [--keep DIR]
        [--no-warmup] [--simulate]

The machine is shared: run it once, not in a loop.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentcause.store import Store, comparable_report, parse_spec

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
COMPONENTS = ("frontend", "carts", "orders", "payment", "catalogue")


def generated_incident(folder: Path, seed: int, simulate: bool) -> tuple[str, str]:
    """Write one incident into ``folder``; return (data path relative to folder, onset)."""
    if not simulate:
        return _builtin_incident(folder, seed)
    from latentcause.simulate.incident import simulate_incident, write_incident
    from latentcause.simulate.injection import MECHANISMS
    from latentcause.simulate.system import COMPONENTS as SIM_COMPONENTS

    rng = np.random.default_rng(seed)
    mechanisms = [m for m in MECHANISMS if m != "none"]
    mechanism = str(rng.choice(mechanisms))
    component = str(rng.choice(list(SIM_COMPONENTS)))
    incident = simulate_incident(mechanism, component, seed=seed)
    write_incident(incident, folder / "data")
    return "data", str(incident.onset)


def _builtin_incident(folder: Path, seed: int) -> tuple[str, str]:
    """Ten minutes at 5 s, five components, a capacity loss in one of them at minute five."""
    rng = np.random.default_rng(seed)
    root = COMPONENTS[seed % len(COMPONENTS)]
    n, t0 = 120, 1_700_000_000.0
    t = t0 + np.arange(n) * 5.0
    ramp = np.clip((t - t0 - 300.0) / 30.0, 0.0, 1.0)
    cols: dict[str, Any] = {"time": t}
    for i, comp in enumerate(COMPONENTS):
        cpu = 0.25 + 0.05 * i + rng.normal(0, 0.01, n)
        lat = 0.02 + 0.005 * i + rng.normal(0, 0.001, n)
        if comp == root:
            cpu = cpu + ramp * (0.93 - cpu)
            lat = lat * (1 + 5 * ramp)
        elif comp == "frontend":
            lat = lat * (1 + 1.5 * ramp)
        cols[f"{comp}_rps"] = 50 + 10 * i + rng.normal(0, 1.5, n)
        cols[f"{comp}_cpu"] = cpu
        cols[f"{comp}_lat_p99"] = lat
        cols[f"{comp}_err"] = np.clip(0.001 + rng.normal(0, 3e-4, n), 0, 1)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    pd.DataFrame(cols).to_csv(folder / "data" / "metrics.csv", index=False)
    return "data/metrics.csv", str(t0 + 300.0)


def build_store(root: Path, n: int, draws: int, simulate: bool) -> None:
    store = Store(root)
    for i in range(n):
        incident_id = f"bench-{i:02d}"
        path, onset = generated_incident(root / incident_id, 1000 + i, simulate)
        spec = parse_spec({"id": incident_id, "title": f"benchmark incident {i}", "tags": [],
                           "onset": onset, "seed": 0, "draws": draws,
                           "source": {"type": "file", "path": path}},
                          store.spec_path(incident_id))
        store.add(spec)


def reanalyze(store: Path, *extra: str) -> float:
    t0 = time.perf_counter()
    out = subprocess.run([str(BIN / "latentcause"), "reanalyze", "--store", str(store), "-q",
                          *extra], capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"reanalyze failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_cluster(logs: Path) -> tuple[str, list[subprocess.Popen[bytes]]]:
    from distributed import Client

    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1",
                               "--port", str(port), "--no-dashboard"],
                              stdout=(logs / "scheduler.log").open("wb"),
                              stderr=subprocess.STDOUT)]
    for i in range(2):
        procs.append(subprocess.Popen([str(BIN / "dask"), "worker", address, "--nthreads", "1",
                                       "--no-dashboard", "--host", "127.0.0.1"],
                                      stdout=(logs / f"worker{i}.log").open("wb"),
                                      stderr=subprocess.STDOUT))
    deadline = time.monotonic() + 120
    while True:
        try:
            with Client(address, timeout=5) as client:
                client.wait_for_workers(2, timeout=120)
            return f"dask://127.0.0.1:{port}", procs
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in reversed(procs):
        p.terminate()
    for p in reversed(procs):
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--incidents", type=int, default=20)
    ap.add_argument("--draws", type=int, default=100)
    ap.add_argument("--keep", type=Path, help="build the stores here and keep them")
    ap.add_argument("--simulate", action="store_true",
                    help="incidents from latentcause.simulate (sock-shop sized, much slower) "
                         "instead of the small built-in generator")
    ap.add_argument("--no-warmup", action="store_true",
                    help="skip the one-incident run that fills the PyTensor compile cache")
    args = ap.parse_args()
    os.environ.setdefault("PYTENSOR_FLAGS", f"base_compiledir={ROOT / '.cache' / 'pytensor'}")

    work = args.keep or Path(tempfile.mkdtemp(prefix="latentcause-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    local, remote = work / "local", work / "dask"
    build_store(local, args.incidents, args.draws, args.simulate)
    shutil.copytree(local, remote)
    # Warm the PyTensor compile cache once so neither side pays compilation alone.
    if not args.no_warmup:
        reanalyze(local, "--id", "bench-00", "--executor", "inline")
        shutil.rmtree(local)
        shutil.copytree(remote, local)

    t_local = reanalyze(local, "--workers", "2")
    address, procs = start_cluster(work)
    try:
        t_dask = reanalyze(remote, "--executor", address)
    finally:
        stop(procs)

    a, b = Store(local), Store(remote)
    same = 0
    for incident_id in a.ids():
        ra, rb = a.latest(incident_id), b.latest(incident_id)
        assert ra is not None and rb is not None
        ja, jb = ra.report(), rb.report()
        for r in (ja, jb):
            r["provenance"].pop("source", None)
            r["provenance"].pop("queries", None)
        same += comparable_report(ja) == comparable_report(jb)
    n = args.incidents
    print(f"incidents:           {n} (draws {args.draws})")
    print(f"local pool of 2:     {t_local:7.1f} s  ({t_local / n:5.1f} s per incident)")
    print(f"dask, 2 workers:     {t_dask:7.1f} s  ({t_dask / n:5.1f} s per incident)")
    print(f"speedup dask/local:  {t_local / t_dask:7.2f}x")
    print(f"identical reports:   {same}/{n}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

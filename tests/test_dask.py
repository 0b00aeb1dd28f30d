"""``reanalyze --executor dask://...`` on a real local Dask cluster gives the local pool's results.

Starts ``dask scheduler`` and two ``dask worker`` processes from the venv on 127.0.0.1 (a free
port, no dashboards), reanalyses on the cluster the two incidents of the session's
``analysed_store`` (analysed on the local pool, conftest.py) and compares report.json (all but
timing and the data's location: the store is a copy) incident by incident; then one incident
once more with ``--return-artefacts`` (workers send the files back instead of writing to the
store).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("distributed")

from store_helpers import add_incident, copy_store, latentcause, without_paths  # noqa: E402

from latentcause.store import comparable_report  # noqa: E402

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.terminate()
    for proc in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A scheduler and two single-threaded workers; yields ``dask://127.0.0.1:PORT``."""
    from distributed import Client

    logs = tmp_path_factory.mktemp("dask-logs")
    port = free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs: list[subprocess.Popen[bytes]] = []

    def start(name: str, *args: str) -> None:
        out = (logs / f"{name}.log").open("wb")
        procs.append(subprocess.Popen([str(BIN / "dask"), *args], stdout=out,
                                      stderr=subprocess.STDOUT))

    try:
        start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", str(port),
              "--no-dashboard")
        for i in range(2):
            start(f"worker{i}", "worker", address, "--nthreads", "1", "--no-dashboard",
                  "--host", "127.0.0.1", "--name", f"w{i}")
        deadline = time.monotonic() + 120
        while True:
            try:
                with Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=120)
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        yield f"dask://127.0.0.1:{port}"
    finally:
        stop(procs)


@pytest.mark.slow
def test_dask_cluster_reproduces_the_local_pool(cluster: str, analysed_store: Path,
                                                tmp_path: Path) -> None:
    store = copy_store(analysed_store, tmp_path / "store")
    out_dask = latentcause("reanalyze", "--store", str(store.root), "--all", "--executor",
                           cluster, timeout=1800)
    assert out_dask.returncode == 0, out_dask.stdout + out_dask.stderr
    assert "2 incidents selected" in out_dask.stdout and "2 done, 0 failed" in out_dask.stdout
    for incident_id in ("inc-a", "inc-c"):
        local, remote = store.history(incident_id)
        assert (comparable_report(without_paths(local.report()))
                == comparable_report(without_paths(remote.report())))
        assert local.report()["hypotheses"][0] == remote.report()["hypotheses"][0]
        assert not remote.changes()["changed"]  # type: ignore[index]

    # workers that do not share the store send the files back instead
    again = latentcause("reanalyze", "--store", str(store.root), "--id", "inc-a",
                        "--executor", cluster, "--return-artefacts", timeout=1800)
    assert again.returncode == 0, again.stdout + again.stderr
    history = store.history("inc-a")
    assert len(history) == 3
    assert {p.name for p in history[2].path.iterdir()} == {
        "report.json", "report.md", "report.html", "posterior.nc", "stamp.json", "changes.json"}
    assert comparable_report(history[1].report()) == comparable_report(history[2].report())
    assert history[1].name.rsplit("-", 1)[1] == history[2].name.rsplit("-", 1)[1]  # same hash


def test_unreachable_scheduler_is_one_line_exit_2(tmp_path: Path) -> None:
    add_incident(tmp_path, "inc-1", seed=1)
    out = latentcause("reanalyze", "--store", str(tmp_path), "--executor",
                      f"dask://127.0.0.1:{free_port()}")
    assert out.returncode == 2
    errors = [x for x in out.stderr.splitlines() if x.startswith("latentcause: error:")]
    assert len(errors) == 1 and "cannot reach the Dask scheduler" in errors[0]
    assert "Traceback" not in out.stderr

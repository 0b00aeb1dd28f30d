"""Shared test set-up: a persistent PyTensor compile cache and one analysed incident store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SOCKSHOP = SHARED / "datasets" / "sockshop-rcd"

# Compiled C for PyTensor graphs is cached across runs; set before pytensor is imported.
os.environ.setdefault("PYTENSOR_FLAGS", f"base_compiledir={ROOT / '.cache' / 'pytensor'}")


@pytest.fixture(scope="session")
def analysed_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two small incidents (store_helpers) analysed once by ``reanalyze`` on the local pool.

    ``inc-a``: a capacity loss in carts (seed 10); ``inc-c``: one in payment (seed 12); each
    a wide CSV read with its onset given, seed 0, 100 draws. Tests copy the store before
    changing it; the store, Dask and Prometheus tests share these two analyses.
    """
    from store_helpers import add_incident, latentcause

    root = tmp_path_factory.mktemp("analysed") / "store"
    add_incident(root, "inc-a", seed=10, root="carts")
    add_incident(root, "inc-c", seed=12, root="payment")
    out = latentcause("reanalyze", "--store", str(root), timeout=1800)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 incidents stale" in out.stdout and "2 done, 0 failed" in out.stdout
    return root

"""Shared test set-up: a persistent PyTensor compile cache and fixed seeds."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
SOCKSHOP = SHARED / "datasets" / "sockshop-rcd"

# Compiled C for PyTensor graphs is cached across runs; set before pytensor is imported.
os.environ.setdefault("PYTENSOR_FLAGS", f"base_compiledir={ROOT / '.cache' / 'pytensor'}")

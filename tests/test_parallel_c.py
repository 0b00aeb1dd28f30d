"""C modules compiled by forked builders without PyTensor's lock: the index stays whole.

Each test runs its compilation in a child interpreter with a compile directory of its own
(PyTensor fixes its compile directory when imported), so what it compiles is new there.
The graphs are tiny: a handful of modules, a few seconds.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytensor
import pytest

from latentcause.inference import parallel_c

# Two builders compile the same graph at the same moment (so one of them finds the other's
# module entered first), and one graph each of their own.
_BUILDERS = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pytensor
    import pytensor.tensor as pt
    from latentcause.inference.parallel_c import compiling_side_by_side, prepare_module_cache
    from latentcause.inference.pool import map_tasks

    def graph(which):
        x = pt.dvector("x")
        if which == "shared":
            return pytensor.function([x], pt.exp(x).sum() * 3.0 + pt.log1p(x ** 2).sum())
        scale = {"first": 5.0, "second": 7.0}[which]
        return pytensor.function([x], pt.tanh(x * scale).sum() - pt.sqrt(x ** 2 + 1.0).sum())

    def build(which):
        with compiling_side_by_side():
            return float(graph(which)(np.arange(3.0)))

    prepare_module_cache()
    parallel = map_tasks(build, ["shared", "shared", "first", "second"], 2, min_tasks=2)
    # Compiled here with PyTensor's own code path: everything must come from the index.
    from pytensor.link.c.basic import get_module_cache
    cache = get_module_cache()
    before = cache.stats[2]
    again = [float(graph(w)(np.arange(3.0))) for w in ["shared", "shared", "first", "second"]]
    json.dump({"parallel": parallel, "again": again,
               "compiled_again": cache.stats[2] - before}, sys.stdout)
""")


def _compile_dir(base: Path) -> Path:
    (found,) = [p for p in base.iterdir() if p.name.startswith("compiledir_")]
    return found


@pytest.mark.skipif(not parallel_c.supported(), reason="PyTensor version not checked")
def test_builders_compile_side_by_side_into_one_index(tmp_path: Path) -> None:
    env = {**os.environ, "PYTENSOR_FLAGS": f"base_compiledir={tmp_path}"}
    out = subprocess.run([sys.executable, "-c", _BUILDERS], env=env, capture_output=True,
                         text=True, timeout=600, check=True)
    result = json.loads(out.stdout)
    assert result["parallel"] == pytest.approx(result["again"])
    assert result["compiled_again"] == 0
    # One entry per key: no key appears in two modules' key.pkl.
    keys: list[object] = []
    entries = [d for d in _compile_dir(tmp_path).iterdir() if (d / "key.pkl").exists()]
    for entry in entries:
        with (entry / "key.pkl").open("rb") as fh:
            keys.extend(pickle.load(fh).keys)  # noqa: S301 - written by this test
    assert len(keys) == len(set(keys))
    # Nothing left behind by a copy compiled twice.
    assert all(any(f.suffix == ".so" for f in entry.iterdir()) for entry in entries)
    leftovers = [d for d in _compile_dir(tmp_path).iterdir()
                 if d.name.startswith("tmp") and not (d / "key.pkl").exists()]
    assert leftovers == []


def test_unchecked_pytensor_compiles_under_its_lock(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytensor.link.c import cmodule
    original = cmodule.ModuleCache.module_from_key
    monkeypatch.setattr(pytensor, "__version__", "9.0.0")
    with parallel_c.compiling_side_by_side():
        assert cmodule.ModuleCache.module_from_key is original
    monkeypatch.setattr(pytensor, "__version__", parallel_c.CHECKED_VERSIONS[0] + "0")
    with parallel_c.compiling_side_by_side():
        assert cmodule.ModuleCache.module_from_key is not original
    assert cmodule.ModuleCache.module_from_key is original
    # Blocks that overlap (two threads) leave PyTensor's own behind whichever ends last.
    first, second = parallel_c.compiling_side_by_side(), parallel_c.compiling_side_by_side()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    second.__exit__(None, None, None)
    assert cmodule.ModuleCache.module_from_key is original

"""The precompiled header: g++ accepts it for the modules of a real graph, and it is rebuilt
only when what it depends on changes.

The compile runs in a child interpreter with a fresh compile directory (PyTensor fixes its
compile directory when imported) and ``-Werror=invalid-pch``, so a header g++ would skip
for a module (options that disagree with its own) fails the compile instead of silently
costing the time it was built to save.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from latentcause.inference import c_header

_CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import pytensor
    import pytensor.tensor as pt
    from latentcause.inference import compiled

    # PyTensor's own helper modules (cutils, lazylinker) are compiled with other options,
    # for which g++ rightly skips the header: build them first, outside the models' flags.
    y = pt.dvector("y")
    pytensor.function([y], y + 1.0)(np.zeros(2))
    with compiled._compiler_flags():
        flags = str(pytensor.config.gcc__cxxflags)
        x = pt.dvector("x")
        f = pytensor.function([x], [pt.exp(x).sum() * 3.0 + pt.log1p(x ** 2).sum(),
                                    pt.tanh(x * 5.0) - pt.sqrt(x ** 2 + 1.0)])
        total, vec = f(np.arange(3.0))
    json.dump({"flags": flags, "total": float(total), "vec": vec.tolist()}, sys.stdout)
""")


def test_modules_compile_with_the_precompiled_header(tmp_path: Path) -> None:
    env = {**os.environ,
           "PYTENSOR_FLAGS": f"base_compiledir={tmp_path},"
                             "gcc__cxxflags=-Winvalid-pch -Werror=invalid-pch"}
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    (gch,) = tmp_path.glob("compiledir_*/latentcause-header/*/modules.h.gch")
    assert f"-include {gch.with_suffix('')}" in result["flags"]
    x = [0.0, 1.0, 2.0]
    assert result["total"] == pytest.approx(3 * sum(map(math.exp, x))
                                            + sum(math.log1p(v * v) for v in x))
    assert result["vec"] == pytest.approx([math.tanh(5 * v) - math.sqrt(v * v + 1) for v in x])


def test_the_header_is_built_once_per_setting(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    builds: list[Path] = []
    real = c_header._build

    def counting(cxx: str, args: list[str], includes: list[str], header: Path) -> None:
        builds.append(header)
        real(cxx, args, includes, header)

    monkeypatch.setattr(c_header, "_build", counting)
    c_header.precompiled_header.cache_clear()
    try:
        first = c_header.precompiled_header("-O1 -g0", tmp_path)
        c_header.precompiled_header.cache_clear()
        assert c_header.precompiled_header("-O1 -g0", tmp_path) == first   # found on disk
        other = c_header.precompiled_header("-O2 -g0", tmp_path)          # other flags
    finally:
        c_header.precompiled_header.cache_clear()
    assert first is not None and other is not None and first != other
    assert first.is_relative_to(tmp_path)
    assert builds == [first, other]
    assert first.with_name("modules.h.gch").stat().st_size > 1_000_000

"""A precompiled header for the models' C modules: half of each module's compile time.

Every C module PyTensor writes begins with the same includes (Python, NumPy, its own helper
and two C++ headers), and g++ spends half of each compile reading them: measured on a
fused-elementwise module of the capacity_loss role, 0.17 s of 0.36 s is the headers alone,
and 0.16 to 0.18 s the whole compile with them precompiled. A cold start compiles about 150
modules, so the header is built once per compile directory (0.7 s) and handed to every
compile with ``-include``.

g++ uses a precompiled header only when the compile's options agree with those it was
built with, and reads the plain header otherwise: a mismatch costs speed, never
correctness. The header's folder is named by a hash of everything its content depends on
(compiler, Python, NumPy and PyTensor versions and the flags), so an upgrade builds a new one
instead of using a stale one. The path is part of every module's compile flags and so of
PyTensor's key for it; it depends only on that hash and the compile directory.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import pytensor
from pytensor.link.c.cmodule import GCC_compiler, std_include_dirs

__all__ = ["INCLUDES", "precompiled_header"]

log = logging.getLogger(__name__)

#: The includes every module PyTensor generates starts with, in its order.
INCLUDES = ("<Python.h>", '"pytensor_mod_helper.h"', "<math.h>", "<numpy/arrayobject.h>",
            "<numpy/arrayscalars.h>", "<numpy/npy_math.h>", "<vector>", "<algorithm>")

#: Options ``CLinker.compile_args`` puts before the compiler's own, and the ones
#: ``GCC_compiler.compile_str`` adds around them: the header is built with the same.
_LINKER_ARGS = ("-g", "-O3", "-fno-math-errno", "-Wno-unused-label", "-Wno-unused-variable",
                "-Wno-write-strings")
_COMPILE_STR_ARGS = ("-fvisibility=hidden",)


@cache
def precompiled_header(cxxflags: str, root: Path | None = None) -> Path | None:
    """The header to ``-include`` in modules compiled with ``cxxflags``, built if missing.

    It lives in ``root`` (PyTensor's compile directory unless given).

    None when it cannot be built or named in flags PyTensor splits at spaces (the modules
    then compile as PyTensor writes them).
    """
    cxx = str(pytensor.config.cxx)
    if not cxx:
        return None
    args = [*_LINKER_ARGS, *GCC_compiler.compile_args(), *cxxflags.split(), *_COMPILE_STR_ARGS]
    includes = [f"-I{d}" for d in std_include_dirs()]
    h = hashlib.sha256()
    for part in (cxx, _compiler_version(cxx), sys.version, np.__version__,
                 pytensor.__version__, *args, *includes, *INCLUDES):
        h.update(part.encode())
        h.update(b"\0")
    base = Path(pytensor.config.compiledir) if root is None else root
    folder = base / "latentcause-header" / h.hexdigest()[:16]
    header = folder / "modules.h"
    if " " in str(header):
        return None
    if (folder / "modules.h.gch").exists():
        return header
    try:
        _build(cxx, args, includes, header)
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("could not precompile the C modules' header (%s); compiling without", exc)
        return None
    return header


def _compiler_version(cxx: str) -> str:
    try:
        return subprocess.run([cxx, "-dumpfullversion", "-dumpversion"], capture_output=True,
                              text=True, timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _build(cxx: str, args: list[str], includes: list[str], header: Path) -> None:
    """Write the header and its ``.gch`` beside it, each atomically (others may race)."""
    header.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(f"#include {inc}\n" for inc in INCLUDES)
    _atomic_write(header, lambda tmp: tmp.write_text(text))

    def compile_to(tmp: Path) -> None:
        subprocess.run([cxx, "-x", "c++-header", *args, *includes, str(header), "-o", str(tmp)],
                       capture_output=True, text=True, timeout=300, check=True)

    _atomic_write(header.with_name(header.name + ".gch"), compile_to)
    log.debug("precompiled %s", header)


def _atomic_write(path: Path, write: Callable[[Path], object]) -> None:
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

"""Compiled role graphs kept on disk between runs, so a warm start does not rewrite graphs.

PyTensor caches the C code it generates, but not the graph rewriting that precedes it, and for
these models the rewriting is most of the work: measured on this machine, building one role's
fitter takes 16 s and its NUTS sampler 11 s with a warm C cache, while unpickling both takes
3 s. So the fitters and samplers are pickled (model, shared data containers and compiled
functions together, so they still share their containers) after they are first built, and
loaded from there by later processes.

The cache lives beside PyTensor's own (``<compiledir>/latentcause``, so
``PYTENSOR_FLAGS=base_compiledir=...`` moves both) or in ``LATENTCAUSE_CACHE_DIR``;
``LATENTCAUSE_CACHE_DIR=off`` disables it. Entries are keyed by the source of the code that
builds the graphs and by the versions of the libraries that compile them, so a change to
either builds afresh instead of loading a stale graph. An unreadable entry is rebuilt and
replaced; a cache that cannot be written is skipped. Like PyTensor's C cache, it trusts the
files in it: it is the user's own directory.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import pickle
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import TypeVar

import cloudpickle
import numpy as np
import pymc as pm
import pytensor

import latentcause.models as models_pkg
from latentcause import __version__
from latentcause.inference.c_header import precompiled_header
from latentcause.inference.parallel_c import compiling_side_by_side, prepare_module_cache
from latentcause.inference.pool import map_tasks

__all__ = ["build_missing", "cache_dir", "load_or_build"]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Modules whose source decides what the cached objects are.
_SOURCES = ("evidence.py", "sampling.py", "compiled.py", "c_header.py")


def _source_files() -> list[Path]:
    """The files whose code decides what the cached objects are."""
    here = Path(__file__).resolve().parent
    files = sorted(Path(models_pkg.__file__).resolve().parent.glob("*.py"))
    return files + [here / name for name in _SOURCES]


@cache
def _key() -> str:
    """Hash of the graph-building source and of the versions that compile it.

    Taken when this module is imported (see the end of the module), right after the code it
    hashes was imported: taken later, a source file edited while a long run goes on would
    be hashed in its new form and the run would store graphs of its old code under it.
    """
    h = hashlib.sha256()
    for v in (__version__, pytensor.__version__, pm.__version__, np.__version__,
              sys.version, cloudpickle.__version__):
        h.update(v.encode())
    for path in _source_files():
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def cache_dir() -> Path | None:
    """Where compiled roles are kept, or None when the cache is off."""
    env = os.environ.get("LATENTCAUSE_CACHE_DIR")
    if env and env.lower() in ("off", "0", "none"):
        return None
    root = Path(env) if env else Path(pytensor.config.compiledir) / "latentcause"
    return root / _key()


#: g++ flags added for the models' C code unless ``gcc__cxxflags`` already chooses an
#: optimisation level (they follow PyTensor's own ``-O3 -g``, so they win). The compiled
#: graphs spend their time in the virtual machine between ops on 64-bin vectors, not inside
#: the ops, so g++'s effort buys nothing at run time and costs most of a cold start.
#: Measured on this machine, per call of the fitters' log density and gradient: 22 to 71 us
#: at -O3 and at -O1 alike, within noise; cold analysis of sock-shop carts-mem/1 (empty
#: compile cache): 146 s at -O3 -g, 115 s at -O1, 108 s at -O1 -g0 (and 100 s at -O0, but
#: that doubled the warm run).
CXXFLAGS = "-O1 -g0"


@contextmanager
def _compiler_flags() -> Iterator[None]:
    """Compile (and link cached C code) with ``CXXFLAGS`` unless the user chose a level.

    With them comes the precompiled header of ``c_header``. The flags are part of
    PyTensor's key for each C module, so loading a role must see the same flags as building
    it did, or every module is compiled again.
    """
    flags = str(pytensor.config.gcc__cxxflags)
    if any(f.startswith("-O") for f in flags.split()):
        yield
        return
    ours = f"{flags} {CXXFLAGS}".strip()
    header = precompiled_header(ours)
    if header is not None:
        ours = f"-include {header} {ours}"
    with pytensor.config.change_flags(gcc__cxxflags=ours):
        yield


def load_or_build(name: str, build: Callable[[], T]) -> T:
    """The object cached under ``name``, or ``build()``'s result, stored for next time."""
    with _compiler_flags():
        return _load_or_build(name, build)


def _load_or_build(name: str, build: Callable[[], T]) -> T:
    folder = cache_dir()
    if folder is None:
        return _kept(build())
    path = folder / f"{name}.pkl"
    try:
        with path.open("rb") as fh, _collector_paused():
            obj: T = pickle.load(fh)  # noqa: S301 - the user's own cache, as PyTensor's
        log.debug("loaded %s from %s", name, path)
        return _kept(obj)
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt
        log.warning("compiled cache entry %s unreadable (%s); rebuilding it", path, exc)
    obj = build()
    _store(path, obj)
    return _kept(obj)


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Hold Python's cyclic garbage collector while a compiled role is unpickled.

    An entry is a few hundred thousand small objects (graphs, their features, thunks), and
    the collector, triggered every 700 allocations, walks all of them again and again while
    they are built: measured loading the nine fitters with a warm cache, 4.8 to 5.2 s with
    the collector running and 1.6 to 2.0 s with it held.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _kept(obj: T) -> T:
    """``obj``, with every object alive now moved out of the cyclic collector's sight.

    A compiled role lives as long as the process (``fitter`` and ``sampler`` keep it), so
    the collector gains nothing by walking its objects, and it walked them on every full
    collection: through the fits, through NUTS and once more at exit. Measured on sock-shop
    orders-mem/2 and carts-cpu/1, warm: 24.6 and 33.7 s per analysis without the freeze,
    18.9 and 17.3 s with it (of which 4 s had been the interpreter's collections at exit).
    Frozen objects are also what forked workers inherit without copying (``gc.freeze``'s
    documented use). The cost: garbage alive at this moment is never collected.
    """
    gc.freeze()
    return obj


def build_missing(builders: Mapping[str, Callable[[], object]], workers: int) -> list[str]:
    """Build and store the entries of ``builders`` not cached yet, side by side; their names.

    Compiling is one core's work per graph, and a cold start compiles every role: serially,
    125 s of a 184 s cold analysis of a sock-shop incident (13 components) on this 2-core
    machine. Here forked children build their share of the missing entries at once, their
    C code too (``parallel_c``), and store them; the caller then loads every entry with
    ``load_or_build`` as usual. Nothing passes back through the fork but the names, so
    without a cache (``LATENTCAUSE_CACHE_DIR=off``) there is nowhere to put the results and
    nothing is done: the caller builds serially.
    """
    folder = cache_dir()
    if folder is None:
        return []
    missing = [name for name in builders if not (folder / f"{name}.pkl").exists()]
    if len(missing) < 2:
        return []

    def build_one(name: str) -> str:
        start = time.perf_counter()
        with compiling_side_by_side():
            load_or_build(name, builders[name])
        log.debug("built %s in %.1f s", name, time.perf_counter() - start)
        return name

    prepare_module_cache()
    return map_tasks(build_one, missing, workers, min_tasks=2)


def _store(path: Path, obj: object) -> None:
    """Write atomically, so a concurrent reader sees a whole entry or none."""
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as fh:
            cloudpickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written is skipped
        log.warning("could not cache %s (%s); it will be built again next run", path.name, exc)
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


_key()

"""C modules compiled side by side by the processes that build compiled roles.

PyTensor compiles each C module while holding its compile-directory lock, so processes that
build graphs at once still compile one module at a time: measured on a cold analysis of
sock-shop carts-mem/1, 161 modules over 97 s with never two within 0.25 s of each other,
and the second core idle for the compilation, which is most of a cold start.

The lock guards PyTensor's index of the cache (the ``key.pkl`` of each module); g++ writes
only into the module's own new directory. ``compiling_side_by_side`` swaps in a
``ModuleCache.module_from_key`` that compiles a graph's module into a fresh directory
without the lock (``CLinker.compile_cmodule`` takes it again around g++, so its body is
followed here instead) and takes the lock only to enter the module in the index, after
looking once more whether another process entered the same module meanwhile: then its own
copy is deleted and the other's used, so the index never holds two. Only the workers of
``compiled.build_missing`` use it, and only with the PyTensor versions whose
``module_from_key`` it was written against; with any other they compile as PyTensor does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytensor
from pytensor.compile.compilelock import lock_ctx
from pytensor.link.c import cmodule
from pytensor.link.c.basic import CLinker, get_module_cache

__all__ = ["compiling_side_by_side", "prepare_module_cache"]

log = logging.getLogger(__name__)

_PYTENSOR_MODULE_FROM_KEY = cmodule.ModuleCache.module_from_key

#: PyTensor releases whose ``ModuleCache.module_from_key`` ``_module_from_key`` follows.
CHECKED_VERSIONS = ("2.38.",)


def supported() -> bool:
    """Whether this PyTensor's module cache is the one ``_module_from_key`` was written for."""
    return pytensor.__version__.startswith(CHECKED_VERSIONS)


def prepare_module_cache() -> None:
    """Open PyTensor's module cache in this process, before it forks builders.

    Opening it walks the compile directory and deletes empty folders; a builder opening its
    own would delete the fresh, still empty folder its sibling is about to compile into.
    Forked after this, the builders inherit the open cache and never walk it that way.
    """
    get_module_cache()


@contextmanager
def compiling_side_by_side() -> Iterator[None]:
    """Within the block, this process compiles C modules without holding PyTensor's lock."""
    if not supported():
        log.debug("PyTensor %s: compiling C modules under its lock", pytensor.__version__)
        yield
        return
    cmodule.ModuleCache.module_from_key = _module_from_key  # type: ignore[method-assign]
    try:
        yield
    finally:
        # PyTensor's own, not whatever was there on entry: with blocks overlapping in two
        # threads, the one leaving last must not leave this module's version behind.
        cmodule.ModuleCache.module_from_key = _PYTENSOR_MODULE_FROM_KEY  # type: ignore[method-assign]


def _module_from_key(self: cmodule.ModuleCache, key: Any, lnk: Any) -> Any:
    """PyTensor's ``module_from_key`` with the compilation moved out of the lock.

    Two processes needing the same new module may both compile it; the second to finish
    finds the first's in the index and deletes its own. Making the second wait for the
    first instead (a claim file per module) was measured and not kept: of the nine roles'
    cold build, 39 of 181 modules were compiled twice, but the build took 46.7 s with
    claims and 47.7 s without, since a waiting builder has nothing else to compile.
    """
    module = self._get_from_key(key)
    if module is not None:
        return module
    module_hash = cmodule.get_module_hash(lnk.get_src_code(), key)
    module = self._get_from_hash(module_hash, key)
    if module is not None:
        return module

    location = cmodule.dlimport_workdir(self.dirname)
    try:
        module = _compile(lnk, location)
    except BaseException:
        cmodule._rmtree(location, ignore_if_missing=True, msg="exception during compilation")
        raise
    with lock_ctx():
        self.refresh(cleanup=False)
        theirs = self._get_from_key(key)
        if theirs is None:
            theirs = self._get_from_hash(module_hash, key)
        if theirs is not None:
            log.debug("%s was compiled by another process too; using theirs", location)
            cmodule._rmtree(location, ignore_nocleanup=True, msg="compiled elsewhere too")
            return theirs
        self.module_from_name[module.__file__] = module
        key_data = self._add_to_cache(module, key, module_hash)
        self.module_hash_to_key_data[module_hash] = key_data
    self.stats[2] += 1
    return module


def _compile(lnk: Any, location: str) -> Any:
    """``lnk.compile_cmodule(location)``, for a graph's ``CLinker`` without the lock."""
    if not isinstance(lnk, CLinker):
        return lnk.compile_cmodule(location)
    mod = lnk.get_dynamic_module()
    return lnk.c_compiler().compile_str(
        module_name=mod.code_hash, src_code=mod.code(), location=location,
        include_dirs=lnk.header_dirs(), lib_dirs=lnk.lib_dirs(), libs=lnk.libraries(),
        preargs=lnk.compile_args())

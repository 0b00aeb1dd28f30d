"""The on-disk cache of compiled roles: what it stores, when it rebuilds, and that a loaded
fitter computes exactly what the one it was saved from does.

Default tier; the only graph used is the cached ``none`` fitter the other tests use too, so
nothing new is compiled.
"""

from __future__ import annotations

import gc
import logging
import pickle
from pathlib import Path

import cloudpickle
import numpy as np
import pytensor
import pytest

from latentcause.inference import compiled
from latentcause.inference.evidence import fitter
from latentcause.inference.grid import N_TIME
from latentcause.models import ROWS, ComponentInput


@pytest.fixture
def cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("LATENTCAUSE_CACHE_DIR", str(tmp_path))
    return tmp_path


def _counting_builder(calls: list[int], value: object) -> object:
    def build() -> object:
        calls.append(1)
        return value
    return build


def test_builds_once_then_loads(cache_root: Path) -> None:
    calls: list[int] = []
    first = compiled.load_or_build("thing", _counting_builder(calls, {"a": [1, 2]}))
    second = compiled.load_or_build("thing", _counting_builder(calls, {"a": "other"}))
    assert first == second == {"a": [1, 2]}
    assert calls == [1]
    folder = compiled.cache_dir()
    assert folder is not None and folder.parent == cache_root
    assert [p.name for p in folder.iterdir()] == ["thing.pkl"]  # no temporary file left


def test_loaded_entry_is_frozen_and_the_collector_left_as_it_was(cache_root: Path) -> None:
    compiled.load_or_build("thing", _counting_builder([], {"a": [1, 2]}))
    for enabled in (True, False):
        (gc.enable if enabled else gc.disable)()
        try:
            gc.unfreeze()
            loaded = compiled.load_or_build("thing", _counting_builder([], None))
            assert loaded == {"a": [1, 2]}
            assert gc.isenabled() is enabled
            # The loaded object (and all else alive) is out of the collector's generations.
            assert gc.get_freeze_count() > 0
            assert all(loaded is not o for o in gc.get_objects())
        finally:
            gc.enable()


def test_roles_compile_with_light_flags_unless_the_user_chose(cache_root: Path) -> None:
    def flags_now() -> str:
        return str(pytensor.config.gcc__cxxflags)

    before = flags_now()
    assert compiled.load_or_build("default", flags_now).endswith(compiled.CXXFLAGS)
    with pytensor.config.change_flags(gcc__cxxflags="-O2 -g"):
        assert compiled.load_or_build("chosen", flags_now) == "-O2 -g"
    assert flags_now() == before


def test_unreadable_entry_is_rebuilt_and_replaced(cache_root: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    folder = compiled.cache_dir()
    assert folder is not None
    folder.mkdir(parents=True)
    (folder / "thing.pkl").write_bytes(b"not a pickle")
    calls: list[int] = []
    with caplog.at_level(logging.WARNING, logger="latentcause.inference.compiled"):
        assert compiled.load_or_build("thing", _counting_builder(calls, 42)) == 42
    assert calls == [1] and "rebuilding" in caplog.text
    assert pickle.loads((folder / "thing.pkl").read_bytes()) == 42


def test_off_disables_and_unwritable_is_skipped(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []
    monkeypatch.setenv("LATENTCAUSE_CACHE_DIR", "off")
    assert compiled.cache_dir() is None
    compiled.load_or_build("thing", _counting_builder(calls, 1))
    compiled.load_or_build("thing", _counting_builder(calls, 1))
    assert calls == [1, 1]
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache's folder should be")
    monkeypatch.setenv("LATENTCAUSE_CACHE_DIR", str(blocker))
    with caplog.at_level(logging.WARNING, logger="latentcause.inference.compiled"):
        assert compiled.load_or_build("thing", _counting_builder(calls, 7)) == 7
    assert "could not cache" in caplog.text


def _fail_if_built() -> object:
    raise AssertionError("the parent built an entry the children had stored")


def test_missing_entries_are_built_in_children_and_loaded_by_the_parent(
        cache_root: Path) -> None:
    """A cold start compiles its roles side by side; the parent then only loads them."""
    compiled.load_or_build("kept", lambda: "old")
    builders = {"kept": _fail_if_built, "a": lambda: {"a": 1}, "b": lambda: [2],
                "c": lambda: "three"}
    built = compiled.build_missing(builders, workers=2)
    assert sorted(built) == ["a", "b", "c"]  # what was there is not built again
    assert [compiled.load_or_build(n, _fail_if_built) for n in ("a", "b", "c")] == [
        {"a": 1}, [2], "three"]
    assert compiled.build_missing(builders, workers=2) == []


def test_nothing_is_built_apart_without_a_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LATENTCAUSE_CACHE_DIR", "off")
    assert compiled.build_missing({"a": _fail_if_built, "b": _fail_if_built}, workers=2) == []


def test_key_follows_the_graph_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any edit to the code that builds the graphs must miss the old entries."""
    names = {p.name for p in compiled._source_files()}
    assert {"builder.py", "mechanisms.py", "physics.py", "evidence.py", "sampling.py"} <= names
    source = tmp_path / "physics.py"
    source.write_text("RATE = 1\n")
    monkeypatch.setattr(compiled, "_source_files", lambda: [source])
    compiled._key.cache_clear()
    try:
        before = compiled._key()
        source.write_text("RATE = 2\n")
        compiled._key.cache_clear()
        assert compiled._key() != before
    finally:
        compiled._key.cache_clear()


def test_loaded_fitter_keeps_its_data_containers() -> None:
    """A fitter round-tripped through the cache's pickling fits new data like the original.

    Model, shared data containers and compiled functions are pickled together; if the
    containers were copied apart from the functions, ``set_component`` would change the
    model's data but not what the functions read, and every fit would see stale data.
    """
    original = fitter("none", N_TIME)
    with compiled._compiler_flags():  # as ``load_or_build`` loads: same C code as built
        loaded = pickle.loads(cloudpickle.dumps(original))
    rng = np.random.default_rng(3)
    mask = np.zeros((len(ROWS), N_TIME))
    mask[:3] = 1.0
    step = (np.arange(N_TIME) >= N_TIME // 2).astype(float)
    for shift in (0.0, 2.0):
        y = (rng.normal(0.0, 1.0, (len(ROWS), N_TIME)) + shift * step) * mask
        data = ComponentInput(y=y, mask=mask, scale=np.ones(len(ROWS)), step=step,
                              elapsed=step, err_base=0.01)
        a = original.fit(data, np.random.default_rng(0))
        b = loaded.fit(data, np.random.default_rng(0))
        assert b.log_evidence == a.log_evidence
        assert np.array_equal(b.mu, a.mu)


def test_the_sampler_runs_on_a_copy_of_the_cached_fitter(
        cache_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A first run's sampler loads the evidence stage's stored fitter instead of building one."""
    from latentcause.inference import evidence, sampling

    monkeypatch.setattr(evidence, "_CACHE", {})
    monkeypatch.setattr(sampling, "_SAMPLERS", {})
    shared = fitter("none", N_TIME)  # built, and stored in the empty cache

    def no_build(role: str, n_time: int) -> object:
        raise AssertionError(f"the {role} fitter was built again")

    monkeypatch.setattr(evidence, "build_fitter", no_build)
    nuts = sampling.sampler("none", N_TIME)
    assert nuts.model is not shared.model  # its own data containers
    folder = compiled.cache_dir()
    assert folder is not None and (folder / f"sampler-none-{N_TIME}.pkl").exists()

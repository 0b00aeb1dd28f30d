"""The incident store and ``latentcause reanalyze``: specs, history, staleness, locks, crashes.

The reanalysis tests run the real command in subprocesses on a store of small generated
incidents (wide CSV, 10 minutes at 5 s, four components, one clear fault) analysed with few
draws; one store is analysed once per session and copied for each scenario.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock
from store_helpers import (
    CLI,
    add_incident,
    copy_store,
    latentcause,
    make_incident_csv,
    without_paths,
)

from latentcause.errors import StoreError
from latentcause.models import MODEL_VERSION
from latentcause.store import (
    Store,
    compare_reports,
    describe_changes,
    load_spec,
    report_digest,
    source_sha256,
    spec_sha256,
)
from latentcause.store._layout import staging_path

ARTEFACTS = {"report.json", "report.md", "report.html", "posterior.nc", "stamp.json",
             "changes.json"}


def fake_report(component: str | None, mechanism: str, p: float, *, ambiguous: bool = False,
                fits: bool = True, other: str = "orders") -> dict[str, Any]:
    """A schema-"1" shaped report for tests of the bookkeeping (no analysis involved)."""
    return {
        "schema_version": "1",
        "hypotheses": [
            {"component": component, "mechanism": mechanism, "probability": p},
            {"component": other, "mechanism": "service_slowdown", "probability": 1 - p},
        ],
        "ambiguity": {"ambiguous": ambiguous},
        "adequacy": {"fits": fits},
        "provenance": {"data_sha256": "d" * 64, "version": "0.1.0", "seed": 0},
        "timing_s": {"total": 1.0},
    }


def stage(store: Store, incident_id: str, report: dict[str, Any], finished: str) -> Path:
    staged = staging_path(store.results_dir(incident_id))
    staged.mkdir()
    (staged / "report.json").write_text(json.dumps(report))
    (staged / "stamp.json").write_text(json.dumps({"finished": finished}))
    return staged


# -- specs ------------------------------------------------------------------------------------

def test_spec_round_trip_and_relative_paths(tmp_path: Path) -> None:
    path = add_incident(tmp_path, "inc-1", seed=1)
    spec = load_spec(path)
    assert spec.id == "inc-1" and spec.draws == 100 and spec.tags == ("test",)
    kwargs = spec.load_kwargs()
    assert kwargs["input"] == (tmp_path / "inc-1" / "data" / "metrics.csv").resolve()
    assert kwargs["components"] is None
    # the store can move: a relative path follows it, and the spec hash does not change
    moved = tmp_path.parent / (tmp_path.name + "-moved")
    shutil.copytree(tmp_path, moved)
    spec2 = load_spec(moved / "inc-1" / "incident.toml")
    assert spec2.load_kwargs()["input"] == (moved / "inc-1" / "data" / "metrics.csv").resolve()
    assert spec_sha256(spec2) == spec_sha256(spec)
    assert source_sha256(spec2) == source_sha256(spec)


@pytest.mark.parametrize(("text", "message"), [
    ('id = "x"\n[source]\ntype = "file"\npath = "a.csv"\n', "does not match its folder"),
    ('id = "inc"\n', "missing table [source]"),
    ('id = "inc"\ncolour = 1\n[source]\ntype="file"\npath="a"\n', "unknown field 'colour'"),
    ('id = "inc"\nseed = -1\n[source]\ntype="file"\npath="a"\n', "'seed' must be"),
    ('id = "inc"\n[source]\ntype = "s3"\n', "type must be"),
    ('id = "inc"\n[source]\ntype="prometheus"\nurl="http://p:9090"\nstart="now-1h"\n'
     'end="now"\n', "relative to now"),
    ('id = "inc"\nonset = "yesterday"\n[source]\ntype="file"\npath="a"\n', "'onset'"),
    ('id = "inc"\n[source\n', "not valid TOML"),
])
def test_invalid_specs_are_one_line_errors_naming_the_file(tmp_path: Path, text: str,
                                                          message: str) -> None:
    path = tmp_path / "inc" / "incident.toml"
    path.parent.mkdir()
    path.write_text(text)
    with pytest.raises(StoreError) as info:
        load_spec(path)
    msg = str(info.value)
    assert message in msg and str(path) in msg and "\n" not in msg


def test_prometheus_spec_accepts_toml_datetimes(tmp_path: Path) -> None:
    path = tmp_path / "p1" / "incident.toml"
    path.parent.mkdir()
    path.write_text('id = "p1"\n[source]\ntype = "prometheus"\nurl = "http://127.0.0.1:9"\n'
                    'start = 2024-03-01T10:00:00Z\nend = 2024-03-01T11:00:00Z\nstep = "15s"\n'
                    'bearer_token_env = "TOKEN"\n')
    spec = load_spec(path)
    kwargs = spec.load_kwargs()
    assert kwargs["prometheus"] == "http://127.0.0.1:9" and kwargs["step"] == "15s"
    assert kwargs["start"].startswith("2024-03-01T10:00:00")
    assert kwargs["http"] == {"bearer_token_env": "TOKEN"}


def test_source_hash_follows_the_bytes(tmp_path: Path) -> None:
    spec = load_spec(add_incident(tmp_path, "inc-1", seed=1))
    before = source_sha256(spec)
    assert source_sha256(spec) == before
    make_incident_csv(tmp_path / "inc-1" / "data" / "metrics.csv", seed=2)
    assert source_sha256(spec) != before
    (tmp_path / "inc-1" / "data" / "metrics.csv").unlink()
    with pytest.raises(StoreError, match="does not exist"):
        source_sha256(spec)


# -- comparisons ------------------------------------------------------------------------------

def test_compare_reports_flags_the_four_changes() -> None:
    old = fake_report("carts", "capacity_loss", 0.80)
    same = compare_reports(old, fake_report("carts", "capacity_loss", 0.85), threshold=0.1)
    assert not same["changed"] and not same["leader_changed"]
    assert same["leader_probability_delta"] == pytest.approx(0.05)
    moved = compare_reports(old, fake_report("carts", "capacity_loss", 0.95), threshold=0.1)
    assert moved["probability_moved"] and moved["changed"] and not moved["leader_changed"]
    flipped = compare_reports(old, fake_report("orders", "capacity_loss", 0.6, other="carts"),
                              threshold=0.1)
    assert flipped["leader_changed"] and flipped["previous_leader"]["component"] == "carts"
    assert flipped["leader_probability_delta"] == pytest.approx(0.6)  # absent before
    amb = compare_reports(old, fake_report("carts", "capacity_loss", 0.8, ambiguous=True))
    assert amb["ambiguity_changed"] and not amb["adequacy_changed"] and amb["changed"]
    fit = compare_reports(old, fake_report("carts", "capacity_loss", 0.8, fits=False))
    assert fit["adequacy_changed"] and fit["changed"]
    assert "model no longer fits" in describe_changes(fit)
    assert "leader changed, was capacity_loss in carts" in describe_changes(flipped)
    first = compare_reports(None, old)
    assert first["first_result"] and not first["changed"]


def test_report_digest_ignores_timing_only() -> None:
    a = fake_report("carts", "capacity_loss", 0.8)
    b = {**a, "timing_s": {"total": 99.0}}
    assert report_digest(a) == report_digest(b)
    assert report_digest(a) != report_digest(fake_report("carts", "capacity_loss", 0.81))


# -- history and commits (no analysis) ---------------------------------------------------------

def test_commit_keeps_history_points_latest_and_records_changes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    add_incident(tmp_path, "inc-1", seed=1)
    r1, c1 = store.commit("inc-1", stage(store, "inc-1", fake_report("carts", "capacity_loss",
                                                                    0.8), "2024-01-01T00:00:00Z"))
    assert c1["first_result"]
    assert r1.name.startswith("20240101T000000Z-")
    r2, c2 = store.commit("inc-1", stage(store, "inc-1", fake_report("orders", "capacity_loss",
                                                                    0.7, other="carts"),
                                         "2024-02-01T00:00:00Z"), reasons=["data changed"])
    assert [r.name for r in store.history("inc-1")] == [r1.name, r2.name]
    assert (store.results_dir("inc-1") / "latest").read_text().strip() == r2.name
    assert store.latest("inc-1") == r2
    saved = json.loads((r2.path / "changes.json").read_text())
    assert saved == c2 and saved["previous_result"] == r1.name and saved["leader_changed"]
    assert saved["reasons"] == ["data changed"]
    # same second, same content: a new folder, never an overwrite
    r3, _ = store.commit("inc-1", stage(store, "inc-1", fake_report("orders", "capacity_loss",
                                                                    0.7, other="carts"),
                                        "2024-02-01T00:00:00Z"))
    assert r3.name == r2.name + "-2" and (r2.path / "report.json").is_file()
    assert len(store.history("inc-1")) == 3


def test_staging_leftovers_are_invisible_and_cleaned(tmp_path: Path) -> None:
    store = Store(tmp_path)
    add_incident(tmp_path, "inc-1", seed=1)
    leftover = stage(store, "inc-1", fake_report("carts", "capacity_loss", 0.8),
                     "2024-01-01T00:00:00Z")
    assert store.history("inc-1") == [] and store.latest("inc-1") is None
    assert store.clean_staging("inc-1") == 1 and not leftover.exists()


def test_commit_refuses_an_incomplete_staged_result(tmp_path: Path) -> None:
    store = Store(tmp_path)
    add_incident(tmp_path, "inc-1", seed=1)
    staged = staging_path(store.results_dir("inc-1"))
    staged.mkdir()
    (staged / "report.json").write_text("{}")
    with pytest.raises(StoreError, match="incomplete"):
        store.commit("inc-1", staged)
    assert store.history("inc-1") == []


# -- CLI without analysis -----------------------------------------------------------------------

def test_incidents_add_list_show(tmp_path: Path) -> None:
    data = tmp_path / "elsewhere" / "m.csv"
    make_incident_csv(data, seed=3)
    store = tmp_path / "store"
    out = latentcause("incidents", "add", "inc-9", "--input", str(data), "--title", "Nine",
                      "--tag", "a", "--tag", "b", "--component", "carts", "--draws", "50",
                      "--store", str(store))
    assert out.returncode == 0, out.stderr
    spec = load_spec(store / "inc-9" / "incident.toml")
    assert spec.source.to_toml()["path"] == str(data.resolve())  # outside the store: absolute
    assert spec.components == ("carts",) and spec.tags == ("a", "b")
    again = latentcause("incidents", "add", "inc-9", "--input", str(data), "--store", str(store))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert again.stderr.count("\n") == 1
    listed = latentcause("incidents", "list", "--store", str(store))
    assert listed.returncode == 0, listed.stderr
    assert "inc-9" in listed.stdout and "Nine" in listed.stdout
    assert "no result yet" in listed.stdout
    as_json = json.loads(latentcause("incidents", "list", "--json", env={
        "LATENTCAUSE_STORE": str(store)}).stdout)
    assert as_json[0]["id"] == "inc-9" and as_json[0]["stale"] is True
    shown = latentcause("incidents", "show", "inc-9", "--store", str(store))
    assert shown.returncode == 0 and "results: 0" in shown.stdout
    missing = latentcause("incidents", "show", "nope", "--store", str(store))
    assert missing.returncode == 2 and "no incident 'nope'" in missing.stderr


def test_a_held_lock_makes_another_run_skip_the_incident(tmp_path: Path) -> None:
    add_incident(tmp_path, "inc-1", seed=1)
    lock = FileLock(str(tmp_path / ".locks" / "inc-1.lock"))
    (tmp_path / ".locks").mkdir(exist_ok=True)
    with lock:
        out = latentcause("reanalyze", "--store", str(tmp_path))
    assert out.returncode == 0, out.stderr
    assert "1 incident stale" in out.stdout
    assert "inc-1: skipped (locked by another run)" in out.stdout
    assert Store(tmp_path).history("inc-1") == []
    lines = [json.loads(x) for x in (tmp_path / "reanalysis.log").read_text().splitlines()]
    assert [(x["incident"], x["status"]) for x in lines if x["event"] == "incident"] == [
        ("inc-1", "skipped")]


def test_wait_blocks_until_the_lock_is_released(tmp_path: Path) -> None:
    # A broken incident fails as soon as it is read, so this needs no analysis.
    inc = tmp_path / "broken"
    inc.mkdir()
    (inc / "bad.csv").write_text("when,what\n1,2\n")
    (inc / "incident.toml").write_text('id = "broken"\n[source]\ntype="file"\npath="bad.csv"\n')
    (tmp_path / ".locks").mkdir()
    lock = FileLock(str(tmp_path / ".locks" / "broken.lock"))
    lock.acquire()
    proc = subprocess.Popen([CLI, "reanalyze", "--wait", "--store", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(4)
        assert proc.poll() is None, proc.communicate()
    finally:
        lock.release()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err
    assert "broken: failed:" in out and "bad.csv" in out


def test_unknown_executor_and_conflicting_selectors_are_usage_errors(tmp_path: Path) -> None:
    add_incident(tmp_path, "inc-1", seed=1)
    out = latentcause("reanalyze", "--store", str(tmp_path), "--executor", "carrier-pigeon")
    assert out.returncode == 2 and "--executor" in out.stderr
    out = latentcause("reanalyze", "--store", str(tmp_path), "--all", "--id", "inc-1")
    assert out.returncode == 2 and "at most one of" in out.stderr
    out = latentcause("reanalyze", "--store", str(tmp_path), "--id", "nope")
    assert out.returncode == 2 and "no incident 'nope'" in out.stderr
    assert Store(tmp_path).history("inc-1") == []


# -- staleness (no analysis) ------------------------------------------------------------------

def test_stale_reasons_name_what_changed(tmp_path: Path) -> None:
    from dataclasses import replace

    from latentcause.store import ModelIdentity, stale_reasons
    from latentcause.store._stamp import make_stamp

    spec = load_spec(add_incident(tmp_path, "inc-1", seed=1))
    ident = ModelIdentity("0.1.0", "3", "c" * 64)
    stamp = make_stamp(spec, fake_report("carts", "capacity_loss", 0.9),
                       source_sha=source_sha256(spec), identity=ident,
                       started="2024-01-01T00:00:00Z", finished="2024-01-01T00:01:00Z")
    assert stale_reasons(spec, stamp, ident) == []
    assert stale_reasons(spec, None, ident) == ["no result yet"]
    assert stale_reasons(spec, stamp, replace(ident, model_version="4")) == [
        "model version 3 -> 4"]
    assert stale_reasons(spec, stamp, replace(ident, model_config_sha256="e" * 64)) == [
        f"model config {'c' * 12} -> {'e' * 12}"]
    # the identity may be given as the function that finds it (it imports the engine): it is
    # called only when there is a result to judge
    def unneeded() -> ModelIdentity:
        raise AssertionError("called without a result")

    assert stale_reasons(spec, None, unneeded) == ["no result yet"]
    assert stale_reasons(spec, stamp, lambda: ident) == []
    # an engine that does not know its version cannot make anything stale
    assert stale_reasons(spec, stamp, ModelIdentity("0.1.0", None, None)) == []
    assert stale_reasons(replace(spec, seed=1), stamp, ident) == ["spec changed"]
    assert stale_reasons(replace(spec, title="renamed", tags=("x",)), stamp, ident) == []
    make_incident_csv(tmp_path / "inc-1" / "data" / "metrics.csv", seed=2)
    assert stale_reasons(spec, stamp, ident) == ["data changed"]
    (tmp_path / "inc-1" / "data" / "metrics.csv").unlink()
    assert stale_reasons(spec, stamp, ident)[0].startswith("data unreadable:")


# -- reanalysis with the real engine ----------------------------------------------------------
# One analysis takes minutes on the shared 2-core machine, so these are in the slow tier and
# use as few analyses as prove the point: the session's ``analysed_store`` (two, conftest.py),
# one rerun, one and a half in the killed run.

@pytest.fixture(scope="module")
def rerun(analysed_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Make inc-a's model version old, add a broken incident and a postmortem, rerun twice."""
    store = copy_store(analysed_store, tmp_path_factory.mktemp("rerun") / "store")
    before = {i: [r.name for r in store.history(i)] for i in store.ids()}
    stamp_path = store.latest("inc-a").path / "stamp.json"  # type: ignore[union-attr]
    stamp = json.loads(stamp_path.read_text())
    stamp["model_version"] = "0-old"
    stamp_path.write_text(json.dumps(stamp))
    postmortem = store.root.parent / "postmortems" / "inc-a.md"
    postmortem.parent.mkdir()
    postmortem.write_text("# Checkout outage\n\nTimeline: ...\n")
    spec_path = store.spec_path("inc-a")
    spec_path.write_text(spec_path.read_text().replace(
        "seed = 0", 'postmortem = "../../postmortems/inc-a.md"\nseed = 0'))
    broken = store.root / "inc-d"
    broken.mkdir()
    (broken / "metrics.csv").write_text("time,nothing_known\n1,2\n2,3\n")
    (broken / "incident.toml").write_text(
        'id = "inc-d"\n[source]\ntype = "file"\npath = "metrics.csv"\n')
    first = latentcause("reanalyze", "--store", str(store.root), "--threshold", "0.1",
                        "--attach")
    shutil.rmtree(broken)
    second = latentcause("reanalyze", "--store", str(store.root))
    return {"store": store, "before": before, "first": first, "second": second,
            "postmortem": postmortem}


@pytest.mark.slow
def test_reanalyze_reruns_exactly_the_stale_incidents(rerun: dict[str, Any]) -> None:
    first, store = rerun["first"], rerun["store"]
    assert first.returncode == 1, first.stdout + first.stderr  # inc-d is broken
    assert "2 incidents stale" in first.stdout
    assert "inc-d: failed:" in first.stdout and "metrics.csv" in first.stdout
    assert "1 done, 1 failed" in first.stdout
    after = {i: [r.name for r in store.history(i)] for i in store.ids()}
    assert len(after["inc-a"]) == 2
    assert after["inc-c"] == rerun["before"]["inc-c"]
    log = [json.loads(x) for x in (store.root / "reanalysis.log").read_text().splitlines()]
    incidents = [x for x in log if x["event"] == "incident"]
    assert {x["incident"]: x["status"] for x in incidents} == {"inc-a": "done",
                                                              "inc-d": "failed"}
    reasons = {x["incident"]: x["reasons"] for x in incidents}
    assert reasons["inc-a"] == [f"model version 0-old -> {MODEL_VERSION}"]
    assert reasons["inc-d"] == ["no result yet"]
    run = [x for x in log if x["event"] == "run"]
    assert run[0]["done"] == 1 and run[0]["failed"] == 1 and run[0]["mode"] == "stale"


@pytest.mark.slow
def test_a_second_run_right_after_does_nothing(rerun: dict[str, Any]) -> None:
    second = rerun["second"]
    assert second.returncode == 0, second.stdout + second.stderr
    assert second.stdout.strip() == "0 incidents stale"


@pytest.mark.slow
def test_history_is_kept_and_changes_are_recorded(rerun: dict[str, Any]) -> None:
    store: Store = rerun["store"]
    old_name, new_name = rerun["before"]["inc-a"][0], store.latest("inc-a").name  # type: ignore
    old, new = store.history("inc-a")
    assert old.name == old_name and new.name == new_name != old_name
    assert {p.name for p in new.path.iterdir()} == ARTEFACTS
    changes = new.changes()
    assert changes is not None and changes["previous_result"] == old_name
    assert changes["reasons"] == [f"model version 0-old -> {MODEL_VERSION}"]
    # same data, seed and model: the rerun reproduces the report exactly, all but timing and
    # the data's path (this store is a copy of the one that made the first result)
    assert report_digest(without_paths(new.report())) == report_digest(
        without_paths(old.report()))
    assert not changes["changed"] and not changes["leader_changed"]
    assert changes["leader_probability_delta"] == 0.0
    stamp = new.stamp()
    for key in ("latentcause_version", "model_version", "model_config_sha256", "data_sha256",
                "source_sha256", "spec_sha256", "seed", "started", "finished"):
        assert stamp.get(key) is not None, key
    assert stamp["data_sha256"] == new.report()["provenance"]["data_sha256"]
    assert stamp["model_version"] == MODEL_VERSION
    shown = latentcause("incidents", "show", "inc-a", "--store", str(store.root))
    assert shown.returncode == 0, shown.stderr
    assert "results: 2" in shown.stdout and f"* {new_name}" in shown.stdout
    listed = json.loads(latentcause("incidents", "list", "--json", "--store",
                                    str(store.root)).stdout)
    assert [(r["id"], r["stale"]) for r in listed] == [("inc-a", False), ("inc-c", False)]
    top = new.report()["hypotheses"][0]
    assert listed[0]["leader"]["component"] == top["component"]
    assert listed[0]["leader"]["probability"] == pytest.approx(top["probability"])


@pytest.mark.slow
def test_attach_refreshes_the_postmortem(rerun: dict[str, Any]) -> None:
    from latentcause.reports import BEGIN, END

    text = rerun["postmortem"].read_text()
    assert text.startswith("# Checkout outage") and BEGIN in text and END in text
    report_md = (rerun["store"].latest("inc-a").path / "report.md").read_text()
    assert report_md.strip().splitlines()[0] in text
    log = [json.loads(x) for x in
           (rerun["store"].root / "reanalysis.log").read_text().splitlines()]
    attached = {x["incident"]: x["attached"] for x in log if x["event"] == "incident"}
    assert attached["inc-a"] is True


@pytest.mark.slow
def test_a_killed_run_loses_nothing_and_leaves_no_partial_result(
        analysed_store: Path, tmp_path: Path) -> None:
    store = copy_store(analysed_store, tmp_path / "store")
    before = {i: store.latest(i).name for i in store.ids()}  # type: ignore[union-attr]
    for incident_id, comp in (("inc-a", "carts"), ("inc-c", "payment")):
        make_incident_csv(store.root / incident_id / "data" / "metrics.csv", seed=50,
                          root=comp)
    proc = subprocess.Popen(
        [CLI, "reanalyze", "--workers", "1", "--store", str(store.root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "LATENTCAUSE_TEST_PAUSE_AFTER": "1"})
    log = store.root / "reanalysis.log"
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if log.is_file() and '"status": "done"' in log.read_text():
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the whole run: coordinator and pool workers
        proc.communicate()
    moved = [i for i in store.ids() if store.latest(i).name != before[i]]  # type: ignore
    assert len(moved) == 1
    done, untouched = moved[0], ({"inc-a", "inc-c"} - set(moved)).pop()
    assert {p.name for p in store.latest(done).path.iterdir()} == ARTEFACTS  # type: ignore
    assert [r.name for r in store.history(untouched)] == [before[untouched]]
    assert store.latest(untouched).name == before[untouched]  # type: ignore[union-attr]
    for incident_id in store.ids():
        visible = sorted(p.name for p in store.results_dir(incident_id).iterdir()
                         if not p.name.startswith(".") and p.name != "latest")
        assert visible == [r.name for r in store.history(incident_id)]
    # what the next run would do: only the interrupted incident is still stale
    listed = json.loads(latentcause("incidents", "list", "--json", "--store",
                                    str(store.root)).stdout)
    stale = {r["id"]: r["stale_reasons"] for r in listed if r["stale"]}
    assert stale == {untouched: ["data changed"]}

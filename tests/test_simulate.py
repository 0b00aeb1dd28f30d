"""The incident simulator: each mechanism's physics in the observed signals, determinism,
the written layout, the CLI and the balance of a suite.

Mechanisms are compared with the ``none`` incident of the same seed, which has the same
system, onset and traffic: a ratio to it isolates the injected cause from the traffic's own
drift.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from latentcause.connectors.files import read_input
from latentcause.errors import InputError
from latentcause.simulate import (
    COMPONENTS,
    MECHANISMS,
    SimulatedIncident,
    ancestors,
    callers,
    plan_suite,
    simulate_incident,
    simulate_suite,
    write_incident,
)
from latentcause.simulate.ambiguity import eligible_designs
from latentcause.simulate.observe import BUCKETS, histogram_quantile

SEED = 11


@cache
def sim(
    mechanism: str, component: str | None, magnitude: str = "moderate", **kw: object
) -> SimulatedIncident:
    return simulate_incident(mechanism, component, seed=SEED, magnitude=magnitude, **kw)


def baseline() -> SimulatedIncident:
    return sim("none", None)


def after(
    inc: SimulatedIncident, column: str, start: float = 60.0, end: float | None = None
) -> float:
    """Median of a column from ``start`` s after the onset to ``end`` s after it."""
    t = inc.frame["time"] - inc.onset
    sel = (t >= start) & (t < (end if end is not None else np.inf))
    return float(inc.frame.loc[sel, column].median())


def before(inc: SimulatedIncident, column: str) -> float:
    return float(inc.frame.loc[inc.frame["time"] < inc.onset, column].median())


def vs_none(inc: SimulatedIncident, column: str, **kw) -> float:
    """Post-onset median relative to the no-fault incident of the same seed."""
    return after(inc, column, **kw) / after(baseline(), column, **kw)


# --- the physics of each mechanism -------------------------------------------------------


def test_none_changes_nothing_at_the_onset() -> None:
    inc = baseline()
    assert inc.truth["component"] is None and inc.truth["mechanism"] == "none"
    for c in COMPONENTS:
        for s in ("rps", "lat_p90", "cpu"):
            ratio = after(inc, f"{c}_{s}") / before(inc, f"{c}_{s}")
            assert 0.8 < ratio < 1.25, (c, s, ratio)
        assert after(inc, f"{c}_err") == 0.0


def test_traffic_surge_raises_rate_and_past_saturation_latency() -> None:
    root = "carts-db"
    moderate = sim("traffic_surge", root, "moderate")
    obvious = sim("traffic_surge", root, "obvious")
    factor = moderate.truth["magnitude"]
    assert vs_none(moderate, f"{root}_rps") == pytest.approx(factor, rel=0.1)
    assert vs_none(moderate, f"{root}_cpu") == pytest.approx(factor, rel=0.15)
    # Below saturation latency rises along the queueing curve, past it the backlog explodes.
    lat_moderate = vs_none(moderate, f"{root}_lat_p90")
    lat_obvious = vs_none(obvious, f"{root}_lat_p90")
    assert 1.3 < lat_moderate < 10.0
    assert lat_obvious > 20.0
    assert obvious.truth["parameters"]["utilisation_after"] > 1.0
    # The extra load comes from outside the graph: the caller's own rate does not move, but
    # for the retries (within their budgets) its callers send once the root times out.
    assert vs_none(moderate, "carts_rps") == pytest.approx(1.0, abs=0.05)
    assert 1.0 < vs_none(obvious, "carts_rps") < 1.16
    assert after(obvious, "carts_err") > 0.3


def test_capacity_loss_raises_latency_at_flat_rate() -> None:
    hog = sim("capacity_loss", "carts", "moderate", kind="hog")
    assert vs_none(hog, "carts_rps") == pytest.approx(1.0, abs=0.05)
    assert vs_none(hog, "carts_lat_p90") > 2.0
    assert vs_none(hog, "carts_cpu") > 1.4  # the hog's own CPU shows in the container
    throttle = sim("capacity_loss", "carts", "moderate", kind="throttle")
    assert vs_none(throttle, "carts_lat_p90") > 2.0
    # Same work, below the cap: a throttle does not show in the CPU.
    assert vs_none(throttle, "carts_cpu") == pytest.approx(1.0, abs=0.08)


def test_service_slowdown_raises_latency_with_flat_cpu() -> None:
    inc = sim("service_slowdown", "catalogue", "moderate")
    assert vs_none(inc, "catalogue_lat_p50") > 2.0
    assert vs_none(inc, "catalogue_cpu") == pytest.approx(1.0, abs=0.05)
    assert vs_none(inc, "catalogue_rps") == pytest.approx(1.0, abs=0.05)
    assert after(inc, "catalogue_err") == 0.0
    # An added wait shifts every quantile alike: p50 rises by about as many seconds as p99.
    shift50 = after(inc, "catalogue_lat_p50") - after(baseline(), "catalogue_lat_p50")
    shift99 = after(inc, "catalogue_lat_p99") - after(baseline(), "catalogue_lat_p99")
    assert shift50 == pytest.approx(inc.truth["magnitude"], rel=0.3)
    assert shift99 == pytest.approx(shift50, rel=0.5)


def test_error_fault_raises_errors_with_flat_latency() -> None:
    inc = sim("error_fault", "user", "moderate")
    assert after(inc, "user_err") == pytest.approx(inc.truth["magnitude"], abs=0.03)
    assert 0.7 < vs_none(inc, "user_lat_p90") < 1.1  # failures are fast, never slower
    assert vs_none(inc, "user_cpu") < 1.0
    # Callers see the errors, which propagate with some probability.
    assert after(inc, "front-end_err") > 0.005
    assert after(inc, "catalogue_err") == 0.0


def test_memory_leak_raises_memory_until_restarts() -> None:
    inc = sim("memory_leak", "carts", "moderate")
    mem = inc.frame["carts_mem"]
    assert mem.max() > 1.5 * before(inc, "carts_mem")
    restarts = inc.frame["carts_restarts"]
    assert restarts.iloc[0] == 0 and restarts.iloc[-1] >= 1
    first = inc.frame.loc[restarts.diff() > 0, "time"].iloc[0]
    assert first > inc.onset
    subtle = sim("memory_leak", "carts", "subtle")
    assert subtle.frame["carts_restarts"].iloc[-1] == 0
    assert after(subtle, "carts_mem", start=600) > 1.1 * before(subtle, "carts_mem")


def test_retry_storm_outlives_its_trigger_while_a_plain_surge_recovers() -> None:
    storm = sim("retry_storm", "carts", "moderate", kind="surge")
    p = storm.truth["parameters"]
    late = dict(start=p["trigger_s"] + 300)
    assert vs_none(storm, "carts_rps", **late) > 2.0
    assert after(storm, "carts_err", **late) > 0.2
    assert after(storm, "front-end_err", **late) > 0.1
    # The same trigger without the callers' unbudgeted retries: the system recovers.
    onset_s = storm.onset - storm.truth["window"]["start"]
    surge = sim("traffic_surge", "carts", "moderate", magnitude_value=p["trigger_factor"],
                duration_s=p["trigger_s"], onset_s=onset_s,
                root_utilisation_value=p["root_utilisation"])
    assert surge.onset == storm.onset
    assert vs_none(surge, "carts_rps", start=5, end=p["trigger_s"] - 5) > 2.0  # same trigger
    assert vs_none(surge, "carts_rps", **late) == pytest.approx(1.0, abs=0.1)
    assert after(surge, "carts_err", **late) == 0.0
    assert after(surge, "carts_lat_p90", **late) < 1.3 * before(surge, "carts_lat_p90")


def test_a_storms_extra_arrivals_are_retries_and_a_surges_are_not() -> None:
    """The share of retries a mesh counts: most of a storm's arrivals, a few percent of a
    surge's past saturation (the callers' budget caps them), none before either."""
    storm = sim("retry_storm", "carts", "moderate", kind="surge")
    late = dict(start=storm.truth["parameters"]["trigger_s"] + 300)
    # Three retries per call without budget: attempts 1 + f + f^2 + f^3 at failure share f.
    assert after(storm, "carts_retries", **late) > 0.5
    assert before(storm, "carts_retries") < 0.01
    surge = sim("traffic_surge", "carts", "obvious")
    assert after(surge, "carts_rps") > 1.8 * before(surge, "carts_rps")
    assert after(surge, "carts_err") > 0.05                      # saturated: callers time out
    assert after(surge, "carts_retries") < 0.06                  # but retry within 5 %


def test_retry_storm_triggered_by_errors_also_persists() -> None:
    storm = sim("retry_storm", "catalogue-db", "obvious", kind="errors")
    late = dict(start=storm.truth["parameters"]["trigger_s"] + 300)
    assert vs_none(storm, "catalogue-db_rps", **late) > 2.0
    assert after(storm, "catalogue-db_err", **late) > 0.2


def test_callers_of_the_root_slow_down_and_others_do_not() -> None:
    root = "carts-db"
    assert set(ancestors(root)) == {"carts", "front-end", "orders"}
    others = ("catalogue", "catalogue-db", "orders-db", "payment", "shipping", "user")
    inc = sim("capacity_loss", root, "moderate")
    for c in ancestors(root):
        assert vs_none(inc, f"{c}_lat_p90") > 1.15, c
    for c in others:
        assert vs_none(inc, f"{c}_lat_p90") == pytest.approx(1.0, abs=0.05), c
    # Saturated, the root's timeouts become its callers' errors; elsewhere only the callers'
    # budgeted retries add a little load (and latency), never errors.
    obvious = sim("capacity_loss", root, "obvious")
    for c in ancestors(root):
        assert vs_none(obvious, f"{c}_lat_p90") > 2.0, c
        assert after(obvious, f"{c}_err") > 0.05, c
    for c in others:
        assert vs_none(obvious, f"{c}_lat_p90") < 1.3, c
        assert after(obvious, f"{c}_err") == 0.0, c


def test_signals_are_in_range_for_every_mechanism() -> None:
    for m in MECHANISMS[1:]:
        inc = sim(m, "orders", "obvious")
        f = inc.frame
        err = f[[f"{c}_err" for c in COMPONENTS]].to_numpy()
        assert np.nanmin(err) >= 0.0 and np.nanmax(err) <= 1.0
        lat = f[[c for c in f.columns if "_lat_" in c]].to_numpy()
        assert np.nanmin(lat) > 0.0 and np.nanmax(lat) <= BUCKETS[-1]
        p50, p99 = f["orders_lat_p50"], f["orders_lat_p99"]
        ok = p50.notna() & p99.notna()
        assert (p50[ok] <= p99[ok] + 1e-12).all()
        assert (f[[f"{c}_cpu" for c in COMPONENTS]].to_numpy() <= 200.0 + 1e-6).all()
        assert (np.diff(f["time"].to_numpy()) == 5).all()


# --- layout, determinism, defects, ambiguity ---------------------------------------------


def test_written_folder_reads_back_with_the_onset(tmp_path: Path) -> None:
    inc = sim("capacity_loss", "carts", "moderate")
    folder = write_incident(inc, tmp_path / "incident")
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["inject_time.txt", "metrics.csv", "traces.json.gz", "truth.json"]
    obs = read_input(folder)
    assert obs.onset == inc.onset and obs.onset_source == "layout"
    assert set(obs.components) == set(COMPONENTS)
    assert obs.signals("front-end") == ["cpu", "mem", "rps", "err", "lat_p50", "lat_p90",
                                        "lat_p99", "restarts", "retries"]
    truth = json.loads((folder / "truth.json").read_text())
    for key in ("component", "mechanism", "onset", "magnitude", "magnitude_label", "ambiguous",
                "equivalent", "seed", "notes"):
        assert key in truth
    start, end = truth["window"]["start"], truth["window"]["end"]
    assert start + (end - start) / 3 <= truth["onset"] <= start + 2 * (end - start) / 3 + 5
    assert 20 * 60 <= end - start <= 30 * 60


def test_same_seed_same_bytes_other_seed_other_data(tmp_path: Path) -> None:
    kw = dict(magnitude="subtle", defects=("missing", "gap"))
    a = write_incident(simulate_incident("memory_leak", "user", seed=5, **kw), tmp_path / "a")
    b = write_incident(simulate_incident("memory_leak", "user", seed=5, **kw), tmp_path / "b")
    c = write_incident(simulate_incident("memory_leak", "user", seed=6, **kw), tmp_path / "c")
    for name in ("metrics.csv", "inject_time.txt", "truth.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    assert (a / "metrics.csv").read_bytes() != (c / "metrics.csv").read_bytes()


def test_defects_damage_data_but_not_the_root() -> None:
    clean = sim("error_fault", "payment", "moderate")
    gap = sim("error_fault", "payment", "moderate", defects=("gap",))
    steps = np.diff(gap.frame["time"].to_numpy())
    assert len(gap.frame) < len(clean.frame)
    assert 30 <= steps.max() <= 95 and (steps == 5).sum() == len(steps) - 1
    far = np.abs(gap.frame["time"] - gap.onset) <= 60
    assert far.sum() == (np.abs(clean.frame["time"] - clean.onset) <= 60).sum()
    missing = sim("error_fault", "payment", "moderate", defects=("missing",))
    share = missing.frame.drop(columns="time").isna().to_numpy().mean()
    assert 0.015 < share < 0.05
    subset = sim("error_fault", "payment", "moderate", defects=("subset",))
    assert all(f"payment_{s}" in subset.frame for s in ("cpu", "rps", "err", "lat_p90", "restarts"))
    assert subset.frame.shape[1] < clean.frame.shape[1]
    assert not [c for c in subset.frame if c.endswith("_restarts") and c != "payment_restarts"]
    assert subset.truth["defects"] == ["subset"] and "subset" in subset.truth["notes"]


@pytest.mark.parametrize(
    ("mechanism", "root", "magnitude", "design", "expected"),
    [
        ("service_slowdown", "catalogue", "moderate", "single_quantile",
         {"capacity_loss", "service_slowdown"}),
        ("capacity_loss", "orders", "subtle", "latency_only_root",
         {"capacity_loss", "service_slowdown"}),
        ("traffic_surge", "payment", "subtle", "latency_only_root",
         {"capacity_loss", "service_slowdown", "traffic_surge"}),
        ("capacity_loss", "carts-db", "obvious", "no_rate_root",
         {"capacity_loss", "traffic_surge"}),
    ],
)
def test_ambiguous_designs_hide_what_separates_the_hypotheses(
    mechanism: str, root: str, magnitude: str, design: str, expected: set[str]
) -> None:
    inc = sim(mechanism, root, magnitude, design=design)
    truth = inc.truth
    assert truth["ambiguous"] is True and truth["design"] == design
    assert {e["mechanism"] for e in truth["equivalent"]} == expected
    assert {e["component"] for e in truth["equivalent"]} == {root}
    assert {"component": root, "mechanism": mechanism} in truth["equivalent"]
    assert not set(truth["dropped_columns"]) & set(inc.frame.columns)
    if design == "no_rate_root":
        assert f"{root}_rps" not in inc.frame and f"{root}_cpu" in inc.frame
        assert vs_none(inc, f"{root}_cpu") > 1.3  # both a hog and a surge raise CPU
    else:
        assert not [c for c in inc.frame if c.endswith(("_lat_p50", "_lat_p99"))]
        assert not [c for c in ancestors(root) if f"{c}_lat_p90" in inc.frame]
        assert f"{root}_lat_p90" in inc.frame and f"{root}_err" in inc.frame
        assert vs_none(inc, f"{root}_lat_p90") > 1.2
        # No timeouts: the caller's errors would betray queueing.
        for c in callers(root):
            assert np.nanmax(inc.frame[f"{c}_err"]) < 0.01
    if design == "single_quantile":  # a throttle or a slowdown: CPU and rate stay flat
        assert vs_none(inc, f"{root}_cpu") == pytest.approx(1.0, abs=0.08)
        assert vs_none(inc, f"{root}_rps") == pytest.approx(1.0, abs=0.05)


def test_designs_refuse_what_they_cannot_make_ambiguous() -> None:
    assert eligible_designs("error_fault", "carts", "moderate") == []
    assert "no_rate_root" not in eligible_designs("traffic_surge", "carts", "obvious")  # not a leaf
    assert "single_quantile" not in eligible_designs("capacity_loss", "carts", "obvious")
    with pytest.raises(InputError, match="does not make"):
        simulate_incident("traffic_surge", "carts", seed=1, design="no_rate_root")


def test_bad_arguments_are_input_errors() -> None:
    with pytest.raises(InputError, match="unknown mechanism"):
        simulate_incident("cpu_hog", "carts", seed=1)
    with pytest.raises(InputError, match="unknown component"):
        simulate_incident("capacity_loss", "cart", seed=1)
    with pytest.raises(InputError, match="takes no component"):
        simulate_incident("none", "carts", seed=1)
    with pytest.raises(InputError, match="needs a component"):
        simulate_incident("error_fault", None, seed=1)
    with pytest.raises(InputError, match="unknown magnitude"):
        simulate_incident("error_fault", "carts", seed=1, magnitude="huge")


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    buckets = np.array([1.0, 2.0, 4.0])
    counts = np.array([[10.0, 10.0, 0.0, 0.0], [0.0, 0.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0]])
    q = histogram_quantile(0.5, buckets, counts)
    assert q[0] == pytest.approx(1.0)  # rank 10 at the top of the first bucket
    assert histogram_quantile(0.75, buckets, counts)[0] == pytest.approx(1.5)
    assert q[1] == 4.0  # in +Inf: the highest finite bound
    assert np.isnan(q[2])  # nothing observed


# --- suites and the command line ---------------------------------------------------------


def test_suite_is_balanced_and_indexed(tmp_path: Path) -> None:
    done: list[int] = []
    folders = simulate_suite(20, tmp_path / "suite", seed=3, spans=False,
                             progress=lambda k, n, folder: done.append(k))
    assert done == list(range(1, 21)) and len(folders) == 20
    index = json.loads((tmp_path / "suite" / "suite.json").read_text())
    truths = [e["truth"] for e in index["incidents"]]
    assert [e["folder"] for e in index["incidents"]] == [f.name for f in folders]
    counts = Counter(t["mechanism"] for t in truths)
    assert set(counts) == set(MECHANISMS) and max(counts.values()) - min(counts.values()) <= 1
    assert Counter(t["magnitude_label"] for t in truths).most_common()[-1][1] >= 5
    assert len({t["component"] for t in truths if t["component"]}) >= 8
    assert sum(t["ambiguous"] for t in truths) == index["ambiguous"] == 4
    assert sum(bool(t["defects"]) for t in truths) == index["with_defects"] == 3
    for folder, t in zip(folders, truths, strict=True):
        assert (t["component"] is None) == (t["mechanism"] == "none")
        assert t["ambiguous"] == (len(t["equivalent"]) > 1)
        assert {"component": t["component"], "mechanism": t["mechanism"]} in t["equivalent"]
        assert json.loads((folder / "truth.json").read_text()) == t
        assert int((folder / "inject_time.txt").read_text()) == t["onset"]
    read_input(folders[0])  # every folder is an analysable layout; one suffices here
    # The plan is a pure function of the seed.
    assert plan_suite(20, seed=3) == plan_suite(20, seed=3) != plan_suite(20, seed=4)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the real entry point in a child process (exit status and streams as a user sees)."""
    code = "from latentcause.cli import main; main()"
    return subprocess.run([sys.executable, "-c", code, "simulate", *args],
                          capture_output=True, text=True, timeout=120, check=False)


def _main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
          *args: str) -> tuple[int, str, str]:
    """Run ``main()`` in this process: exit status, stdout and stderr."""
    from latentcause.cli import main

    monkeypatch.setattr(sys, "argv", ["latentcause", "simulate", *args])
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_cli_writes_an_incident_and_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = _cli("--mechanism", "service_slowdown", "--component", "carts", "--out",
              str(tmp_path / "one"), "--seed", "4", "--magnitude", "subtle")
    assert ok.returncode == 0, ok.stderr
    truth = json.loads((tmp_path / "one" / "truth.json").read_text())
    assert truth["mechanism"] == "service_slowdown" and truth["magnitude_label"] == "subtle"
    frame = pd.read_csv(tmp_path / "one" / "metrics.csv")
    assert "carts_lat_p99" in frame and frame["time"].dtype.kind == "i"
    bad = _cli("--mechanism", "cpu_hog", "--component", "carts", "--out", str(tmp_path / "bad"))
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    assert "unknown mechanism" in bad.stderr and "Traceback" not in bad.stderr
    for args, message in [
        (("--mechanism", "error_fault", "--component", "nope"), "unknown component"),
        (("--mechanism", "error_fault", "--component", "carts", "--magnitude", "big"),
         "unknown magnitude"),
        (("--mechanism", "none", "--component", "carts"), "takes no component"),
        (("--suite", "2", "--mechanism", "none"), "--suite takes no"),
        (("--suite", "0"), "at least one"),
    ]:
        code, _, err = _main(capsys, monkeypatch, *args, "--out", str(tmp_path / "bad"))
        assert code == 2, (args, err)
        assert err.count("\n") == 1 and message in err, err
    code, _, err = _main(capsys, monkeypatch, "--mechanism", "none")
    assert code == 2 and "--out" in err
    assert not (tmp_path / "bad").exists()


def test_cli_suite_and_component_list(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = _main(capsys, monkeypatch, "--list-components")
    listing = out.splitlines()
    assert code == 0 and listing[0].startswith("front-end -> ")
    assert len(listing) == len(COMPONENTS)
    run = _cli("--suite", "3", "--out", str(tmp_path / "s"), "--seed", "2", "--window", "1200")
    assert run.returncode == 0, run.stderr
    assert run.stderr.count("simulate: [") == 3
    index = json.loads((tmp_path / "s" / "suite.json").read_text())
    assert index["n"] == 3 and len(index["incidents"]) == 3
    assert all(e["truth"]["window"]["end"] - e["truth"]["window"]["start"] == 1195
               for e in index["incidents"])
    for e in index["incidents"]:  # spans unless ambiguous by design
        traced = (tmp_path / "s" / e["folder"] / "traces.json.gz").exists()
        assert traced == (e["truth"]["traces"] is not None) == (e["truth"]["design"] is None)
    bare = _cli("--mechanism", "none", "--out", str(tmp_path / "bare"), "--no-traces")
    assert bare.returncode == 0, bare.stderr
    assert not (tmp_path / "bare" / "traces.json.gz").exists()


def test_public_names_load_on_first_use() -> None:
    # the CLI registers the simulate and report commands on every run: neither may cost a
    # pandas or matplotlib import
    import latentcause.simulate as package

    assert sorted(package._HOME) == sorted(package.__all__)
    assert all(getattr(package, name) is not None for name in package.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        package.nope  # noqa: B018
    code = ("import sys, latentcause.simulate.commands, latentcause.reports.commands; "
            "assert 'pandas' not in sys.modules and 'matplotlib' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr

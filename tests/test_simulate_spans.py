"""Spans of simulated incidents, read back by the real trace reader: they show the system's
call graph, the requests the metrics count, a slow service's own time apart from its
callers' waiting, and nothing of what an ambiguity design hides.
"""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from latentcause.connectors.traces import read_spans, read_traces
from latentcause.observations import Observations
from latentcause.simulate import COMPONENTS, SimulatedIncident, callees, simulate_incident
from latentcause.simulate.incident import TRACES_FILE, write_incident
from latentcause.simulate.spans import SAMPLE_SHARE

SEED = 11


@cache
def slow_payment() -> SimulatedIncident:
    """Payment 'obvious'ly slower: orders, its only caller, waits on it."""
    return simulate_incident("service_slowdown", "payment", seed=SEED, magnitude="obvious")


@cache
def traced(tmp: Path) -> Observations:
    return read_traces(write_incident(slow_payment(), tmp) / TRACES_FILE)


@pytest.fixture(scope="module")
def obs(tmp_path_factory: pytest.TempPathFactory) -> Observations:
    return traced(tmp_path_factory.mktemp("slow-payment"))


def _mean(o: Observations, column: tuple[str, str], onset: float, after: bool) -> float:
    t = o.times
    sel = t >= onset + 120 if after else t < onset
    return float(np.nanmean(o.frame[column].to_numpy()[sel]))


def test_spans_show_the_systems_call_graph(obs: Observations) -> None:
    assert obs.call_graph == {c: frozenset(callees(c)) for c in COMPONENTS}


def test_span_rates_are_the_metrics_rates_times_the_sampled_share(obs: Observations) -> None:
    frame, onset = slow_payment().frame, slow_payment().onset
    before = frame["time"] < onset
    for c in COMPONENTS:
        metric = float(frame.loc[before, f"{c}_rps"].mean())
        spans = _mean(obs, (c, "rps"), onset, after=False) / SAMPLE_SHARE
        # a few hundred sampled requests per component before the onset: 20 % is ~3 sigma
        assert spans == pytest.approx(metric, rel=0.2), c


def test_a_slow_service_shows_in_its_own_time_and_its_callers_wait(obs: Observations) -> None:
    inc = slow_payment()
    delay, onset = float(inc.truth["magnitude"]), inc.onset
    rise = {(c, s): _mean(obs, (c, s), onset, True) - _mean(obs, (c, s), onset, False)
            for c, s in [("payment", "lat_avg"), ("orders", "callee_time"),
                         ("orders", "self_time"), ("carts", "lat_avg")]}
    assert rise[("payment", "lat_avg")] == pytest.approx(delay, rel=0.25)
    assert rise[("orders", "callee_time")] == pytest.approx(delay, rel=0.35)
    assert abs(rise[("orders", "self_time")]) < 0.2 * delay  # orders' own work is unchanged
    assert abs(rise[("carts", "lat_avg")]) < 0.2 * delay  # not on the path to payment
    # The spans' latency is the metrics': payment's median before the onset, both ways.
    before = inc.frame["time"] < onset
    metric_p50 = float(inc.frame.loc[before, "payment_lat_p50"].median())
    assert _mean(obs, ("payment", "lat_p50"), onset, False) == pytest.approx(metric_p50, rel=0.3)


def test_span_trees_nest_in_time_and_cross_services(tmp_path: Path) -> None:
    spans = read_spans(write_incident(slow_payment(), tmp_path) / TRACES_FILE)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    roots: dict[str, int] = defaultdict(int)
    for s in spans:
        assert s.kind == "server" and s.end_s >= s.start_s
        if s.parent_id is None:
            roots[s.trace_id] += 1
            assert s.service == "front-end"  # no outside client in this incident
            continue
        parent = by_id[(s.trace_id, s.parent_id)]
        assert parent.service != s.service and s.service in callees(parent.service)
        assert parent.start_s <= s.start_s <= parent.end_s + 1e-6
    assert set(roots.values()) == {1}
    assert any(s.error for s in spans) == (slow_payment().frame.filter(like="_err").max().max()
                                           > 0)


def test_spans_are_deterministic_and_leave_the_metrics_alone(tmp_path: Path) -> None:
    a = write_incident(slow_payment(), tmp_path / "a")
    b = write_incident(simulate_incident("service_slowdown", "payment", seed=SEED,
                                         magnitude="obvious"), tmp_path / "b")
    bare = write_incident(simulate_incident("service_slowdown", "payment", seed=SEED,
                                            magnitude="obvious", spans=False), tmp_path / "c")
    assert (a / TRACES_FILE).read_bytes() == (b / TRACES_FILE).read_bytes()
    assert (a / "metrics.csv").read_bytes() == (bare / "metrics.csv").read_bytes()
    assert not (bare / TRACES_FILE).exists()


def test_designed_incidents_have_no_spans_and_stale_ones_are_removed(tmp_path: Path) -> None:
    folder = write_incident(slow_payment(), tmp_path / "i")
    assert (folder / TRACES_FILE).exists()
    designed = simulate_incident("service_slowdown", "payment", seed=SEED, magnitude="subtle",
                                 design="single_quantile")
    assert designed.spans is None and designed.truth["traces"] is None
    write_incident(designed, folder)  # over the traced incident: its spans must go
    assert sorted(p.name for p in folder.iterdir()) == [
        "inject_time.txt", "metrics.csv", "truth.json"]

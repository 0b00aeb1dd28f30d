"""The traces connector against spans from a real OpenTelemetry SDK (tests/traced_app.py).

The incident: frontend -> cart -> db, the database ten times slower and failing more often
after the onset. Every signal is checked twice: exactly against what the generator did per
request (binned here independently), and loosely against the generating distributions.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import traced_app
from pandas.core.groupby import SeriesGroupBy

from latentcause.connectors.traces import read_spans, read_traces
from latentcause.errors import InputError, TraceFormatError, WindowError
from latentcause.observations import Observations
from latentcause.signals import CANONICAL_SIGNALS, split_column

DATA = Path(__file__).parent / "data" / "traces"
SEED = 7
#: Span times are float unix seconds: at 1.7e9 s a double resolves ~0.24 us, so durations
#: agree with the generator's integer microseconds to within 1 us (Jaeger's resolution).
US = 1e-6


@pytest.fixture(scope="module")
def incident() -> traced_app.Incident:
    return traced_app.run(seed=SEED)


@pytest.fixture(scope="module")
def files(incident: traced_app.Incident, tmp_path_factory: pytest.TempPathFactory
          ) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("traces")
    return {
        "otlp": traced_app.otlp_json_lines(incident.spans, out / "spans.jsonl"),
        "otlp_spec": traced_app.otlp_json_lines(incident.spans, out / "spec.jsonl",
                                                spec_exact=True),
        "jaeger": traced_app.jaeger_json(incident.spans, out / "jaeger.json"),
    }


@pytest.fixture(scope="module")
def observed(files: dict[str, Path]) -> dict[str, Observations]:
    return {name: read_traces(path) for name, path in files.items()}


@pytest.fixture(scope="module")
def obs(observed: dict[str, Observations]) -> Observations:
    return observed["otlp"]


def _truth_bins(incident: traced_app.Incident, obs: Observations, service: str,
                column: str) -> SeriesGroupBy:
    """Generated per-request values of ``service`` grouped by the bin of their arrival."""
    width = obs.step_s
    truth = incident.truth
    k = np.floor(truth[f"{service}_start"].to_numpy() / width)
    ends = (k + 1) * width
    keep = np.isin(ends, obs.times)
    return truth.loc[keep, column].groupby(ends[keep])


def _phases(obs: Observations, incident: traced_app.Incident) -> tuple[np.ndarray, np.ndarray]:
    onset = incident.params.start + incident.params.onset
    before = obs.times <= onset
    after = obs.times - obs.step_s >= onset
    return before, after


# -- the spans themselves ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["otlp", "otlp_spec", "jaeger"])
def test_spans_match_the_sdk(fmt: str, incident: traced_app.Incident,
                             files: dict[str, Path]) -> None:
    expected = {}
    for s in incident.spans:
        assert s.context is not None and s.start_time is not None and s.end_time is not None
        expected[(f"{s.context.trace_id:032x}", f"{s.context.span_id:016x}")] = (
            f"{s.parent.span_id:016x}" if s.parent else None,
            s.resource.attributes["service.name"], s.name, s.start_time, s.end_time,
            s.status.status_code.name == "ERROR", s.kind.name.lower(),
        )
    spans = read_spans(files[fmt])
    got = {
        (s.trace_id, s.span_id): (s.parent_id, s.service, s.name, round(s.start_s * 1e6) * 1000,
                                  round(s.end_s * 1e6) * 1000, s.error, s.kind)
        for s in spans
    }
    assert len(spans) == len(incident.spans)
    assert got == expected


def test_call_graph(observed: dict[str, Observations]) -> None:
    for obs in observed.values():
        assert obs.call_graph == {
            "frontend": frozenset({"cart"}), "cart": frozenset({"db"}), "db": frozenset(),
        }


def test_observations_shape(obs: Observations, files: dict[str, Path]) -> None:
    assert obs.source == f"traces:{files['otlp']}"
    assert obs.queries == (str(files["otlp"]),)
    assert obs.frame.columns.names == ["component", "signal"]
    assert set(obs.components) == {"frontend", "cart", "db"}
    base = {"rps", "err", "lat_avg", "lat_p50", "lat_p90", "lat_p99"}
    assert set(obs.signals("db")) == base  # a leaf: no callee time to separate
    assert set(obs.signals("cart")) == base | {"self_time", "callee_time"}
    assert obs.step_s == 10.0  # ~8 requests/s: the 10 s bins hold ~80
    assert np.all(np.mod(obs.times, obs.step_s) == 0)
    start = 1_700_000_000.0
    assert start < obs.times[0] - obs.step_s < start + 20
    assert start + 570 < obs.times[-1] <= start + 600
    assert obs.window == (obs.times[0] - obs.step_s, obs.times[-1])


# -- signals against the generator ------------------------------------------------------------


@pytest.mark.parametrize("service", ["frontend", "cart", "db"])
def test_rates(service: str, obs: Observations, incident: traced_app.Incident) -> None:
    counts = _truth_bins(incident, obs, service, "arrival").size()
    expected = counts.reindex(obs.times, fill_value=0) / obs.step_s
    np.testing.assert_allclose(obs.frame[(service, "rps")].to_numpy(), expected.to_numpy())
    rate = incident.params.rate
    se = np.sqrt(rate / (obs.step_s * len(obs.times)))
    assert abs(obs.frame[(service, "rps")].mean() - rate) < 4 * se


@pytest.mark.parametrize("service", ["frontend", "cart", "db"])
def test_error_ratio(service: str, obs: Observations, incident: traced_app.Incident) -> None:
    expected = _truth_bins(incident, obs, service, f"{service}_error").mean()
    np.testing.assert_allclose(obs.frame[(service, "err")].to_numpy(),
                               expected.reindex(obs.times).to_numpy().astype(float))
    p = incident.params
    before, after = _phases(obs, incident)
    rps, err = obs.frame[(service, "rps")], obs.frame[(service, "err")]
    for mask, db_p in ((before, p.db_err_before), (after, p.db_err_after)):
        truth = db_p if service != "frontend" else 1 - (1 - db_p) * (1 - p.frontend_err)
        n = float((rps[mask] * obs.step_s).sum())
        pooled = float((err[mask] * rps[mask] * obs.step_s).sum()) / n
        assert abs(pooled - truth) < 4 * np.sqrt(truth * (1 - truth) / n)


@pytest.mark.parametrize("service", ["frontend", "cart", "db"])
def test_latency_quantiles_per_bin(service: str, obs: Observations,
                                   incident: traced_app.Incident) -> None:
    grouped = _truth_bins(incident, obs, service, f"{service}_latency")
    for signal, q in (("lat_p50", 0.5), ("lat_p90", 0.9), ("lat_p99", 0.99)):
        expected = grouped.quantile(q).reindex(obs.times).to_numpy()
        np.testing.assert_allclose(obs.frame[(service, signal)].to_numpy(), expected,
                                   rtol=0, atol=US)
    np.testing.assert_allclose(obs.frame[(service, "lat_avg")].to_numpy(),
                               grouped.mean().reindex(obs.times).to_numpy(), rtol=0, atol=US)


def test_db_latency_against_its_distribution(obs: Observations,
                                             incident: traced_app.Incident) -> None:
    p = incident.params
    before, after = _phases(obs, incident)
    z90 = 1.2815515655446004
    for mask, median in ((before, p.db_before), (after, p.db_after)):
        p50 = float(obs.frame.loc[mask, ("db", "lat_p50")].median())
        p90 = float(obs.frame.loc[mask, ("db", "lat_p90")].median())
        assert p50 == pytest.approx(median, rel=0.08)
        assert p90 == pytest.approx(median * np.exp(z90 * p.sigma), rel=0.12)
        mean = float(obs.frame.loc[mask, ("db", "lat_avg")].mean())
        assert mean == pytest.approx(median * np.exp(p.sigma**2 / 2), rel=0.05)
    ratio = obs.frame.loc[after, ("db", "lat_p99")].median() / obs.frame.loc[
        before, ("db", "lat_p99")].median()
    assert 7 < ratio < 13


def test_cart_waits_on_db_without_slowing_itself(obs: Observations,
                                                 incident: traced_app.Incident) -> None:
    for signal, column in (("self_time", "cart_self"), ("callee_time", "cart_callee")):
        expected = _truth_bins(incident, obs, "cart", column).mean().reindex(obs.times)
        np.testing.assert_allclose(obs.frame[("cart", signal)].to_numpy(), expected.to_numpy(),
                                   rtol=0, atol=US)
    before, after = _phases(obs, incident)

    def change(component: str, signal: str) -> float:
        series = obs.frame[(component, signal)]
        return float(series[after].mean() / series[before].mean())

    assert change("cart", "self_time") == pytest.approx(1.0, abs=0.06)
    assert change("frontend", "self_time") == pytest.approx(1.0, abs=0.06)
    assert change("cart", "callee_time") > 8
    assert change("cart", "lat_avg") > 3  # the latency alone would blame cart too


def test_formats_give_the_same_observations(observed: dict[str, Observations]) -> None:
    ref = observed["otlp"]
    for name in ("otlp_spec", "jaeger"):
        other = observed[name]
        pd.testing.assert_frame_equal(other.frame, ref.frame, rtol=1e-9, atol=1e-12)
        assert other.call_graph == ref.call_graph
        assert other.window == ref.window


# -- bins, merging ----------------------------------------------------------------------------


def test_explicit_bin_width(files: dict[str, Path], obs: Observations) -> None:
    fine = read_traces(files["otlp"], bin_s=5)
    assert fine.step_s == 5.0 and np.all(np.mod(fine.times, 5) == 0)
    assert fine.frame[("db", "rps")].mean() == pytest.approx(
        obs.frame[("db", "rps")].mean(), rel=0.03)
    with pytest.raises(InputError, match="positive"):
        read_traces(files["otlp"], bin_s=0)
    with pytest.raises(WindowError):
        read_traces(files["otlp"], bin_s=120)  # 4 bins in 10 minutes


@pytest.mark.parametrize("offset", [0.0, 3.0])
def test_merged_onto_metrics(offset: float, obs: Observations) -> None:
    rng = np.random.default_rng(SEED)
    times = obs.times + offset  # a scraper on the same step, maybe out of phase
    columns = pd.MultiIndex.from_tuples(
        [("cart", "cpu"), ("db", "cpu"), ("db", "rps"), ("frontend", "lat_p99")],
        names=["component", "signal"])
    metrics = Observations(
        frame=pd.DataFrame(rng.gamma(4.0, 0.1, (len(times), 4)),
                           index=pd.Index(times, name="time"), columns=columns),
        source="file:metrics.csv", queries=("metrics.csv",),
    )
    merged = metrics.merged(obs)
    assert merged.call_graph == obs.call_graph
    assert merged.queries == ("metrics.csv", *obs.queries)
    assert set(merged.components) == {"cart", "db", "frontend"}
    # the metrics' own db/rps wins; trace-only signals are added on the metrics' time axis
    pd.testing.assert_series_equal(merged.frame[("db", "rps")], metrics.frame[("db", "rps")])
    np.testing.assert_allclose(merged.frame[("db", "lat_p90")].to_numpy(),
                               obs.frame[("db", "lat_p90")].to_numpy())
    np.testing.assert_allclose(merged.frame[("cart", "callee_time")].to_numpy(),
                               obs.frame[("cart", "callee_time")].to_numpy())
    # the front-end's latency comes from the metrics alone, not a mix of both sources
    assert [s for s in merged.signals("frontend") if s.startswith("lat_")] == ["lat_p99"]
    assert ("frontend", "lat_p99") in obs.frame.columns
    assert ("frontend", "rps") in merged.frame.columns


# -- damaged files ----------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "fragment"), [
    ("empty.json", "empty"),
    ("unknown_format.json", "unknown trace format"),
    ("otlp_bad_middle_line.jsonl", "line 2: not valid JSON"),
    ("otlp_missing_span_id.jsonl", "line 2: resourceSpans[0].scopeSpans[0].spans[1]: no spanId"),
    ("otlp_truncated_only_line.jsonl", "not valid JSON"),
    ("otlp_truncated_document.json", "truncated"),
    ("otlp_end_before_start.json", "before startTimeUnixNano"),
    ("jaeger_truncated.json", "not valid JSON"),
    ("jaeger_missing_start_time.json", "data[0].spans[1]: no startTime"),
    ("jaeger_unknown_process.json", "processID 'p9'"),
    ("mixed_formats.jsonl", "line 2: jaeger document in a file of otlp"),
])
def test_damaged_files_fail_with_one_line(name: str, fragment: str) -> None:
    path = DATA / name
    with pytest.raises(TraceFormatError) as info:
        read_traces(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    assert fragment in message


def test_truncated_json_lines_keep_the_complete_lines(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="latentcause.connectors.traces"):
        spans = read_spans(DATA / "otlp_truncated_tail.jsonl")
    assert [s.trace_id for s in spans] == [f"a{i:031x}" for i in (1, 2)]
    assert "line 3 is cut off" in caplog.text


@pytest.mark.parametrize("fmt", ["otlp", "jaeger"])
def test_generated_files_cut_short(fmt: str, files: dict[str, Path], tmp_path: Path,
                                   caplog: pytest.LogCaptureFixture) -> None:
    text = files[fmt].read_text()
    cut = tmp_path / files[fmt].name
    cut.write_text(text[: len(text) - 1000])
    if fmt == "jaeger":  # one document: nothing can be trusted
        with pytest.raises(TraceFormatError, match="not valid JSON"):
            read_spans(cut)
        return
    complete = text[: len(text) - 1000].count("\n")
    with caplog.at_level(logging.WARNING):
        spans = read_spans(cut)
    assert len(spans) == complete * 512  # every line but the cut last one holds a batch
    assert "cut off" in caplog.text
    assert len(read_traces(cut).times) > 40


def test_jaeger_error_response(tmp_path: Path) -> None:
    path = tmp_path / "answer.json"
    path.write_text(json.dumps({"data": None, "total": 0, "limit": 0, "offset": 0,
                                "errors": [{"code": 404, "msg": "trace not found"}]}))
    with pytest.raises(TraceFormatError, match="Jaeger error response.*trace not found"):
        read_spans(path)


def test_binary_and_missing_files(tmp_path: Path, files: dict[str, Path]) -> None:
    pb = tmp_path / "spans.pb"
    pb.write_bytes(bytes([0x0A, 0xFF, 0xFE, 0x80, 0x01]) * 20)
    with pytest.raises(TraceFormatError, match="protobuf"):
        read_spans(pb)
    with pytest.raises(InputError, match="no such file") as info:
        read_spans(tmp_path / "absent.json")
    assert not isinstance(info.value, TraceFormatError)
    packed = tmp_path / "spans.jsonl.gz"
    packed.write_bytes(gzip.compress(files["otlp"].read_bytes()[:200_000].rsplit(b"\n", 1)[0]))
    assert len(read_spans(packed)) > 0


# -- hand-written Jaeger details ----------------------------------------------------------------


def _jaeger_doc(tags: list[dict[str, object]], parent: str | None) -> dict[str, object]:
    refs = ([{"refType": "CHILD_OF", "traceID": "a3ce929d0e0e4736", "spanID": parent}]
            if parent else [])
    return {"data": [{
        "traceID": "a3ce929d0e0e4736",
        "spans": [
            {"traceID": "a3ce929d0e0e4736", "spanID": "b7ad6b7169203331", "operationName": "GET",
             "references": [], "startTime": 1_700_000_000_000_000, "duration": 2000, "tags": [],
             "processID": "p1"},
            {"traceID": "a3ce929d0e0e4736", "spanID": "00f067aa0ba902b7", "operationName": "q",
             "references": refs, "startTime": 1_700_000_000_000_500, "duration": 1000,
             "tags": tags, "processID": "p2"},
        ],
        "processes": {"p1": {"serviceName": "web", "tags": []},
                      "p2": {"serviceName": "store", "tags": []}},
    }]}


@pytest.mark.parametrize(("tags", "error"), [
    ([{"key": "http.status_code", "type": "int64", "value": 503}], True),
    ([{"key": "http.status_code", "type": "int64", "value": 404}], False),
    ([{"key": "error", "type": "bool", "value": True}], True),
    ([{"key": "otel.status_code", "type": "string", "value": "ERROR"}], True),
    ([{"key": "otel.status_code", "type": "string", "value": "OK"}], False),
])
def test_jaeger_error_tags(tags: list[dict[str, object]], error: bool, tmp_path: Path) -> None:
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(_jaeger_doc(tags, "b7ad6b7169203331")))
    spans = {s.name: s for s in read_spans(path)}
    assert spans["q"].error is error
    # Jaeger prints a 64-bit trace id as 16 digits: padded to the 32 of OTLP
    assert spans["q"].trace_id == "0" * 16 + "a3ce929d0e0e4736"
    assert spans["q"].parent_id == "b7ad6b7169203331"
    assert spans["GET"].parent_id is None


# -- signals table and the command line -------------------------------------------------------


def test_trace_signals_are_canonical() -> None:
    assert {"self_time", "callee_time"} <= set(CANONICAL_SIGNALS)
    assert split_column("cart-v2_self_time") == ("cart-v2", "self_time")
    assert split_column("db_callee_time") == ("db", "callee_time")


def test_cli_bad_trace_file_exits_2_with_one_line(tmp_path: Path) -> None:
    t = np.arange(60) * 10.0 + 1_700_000_000
    rng = np.random.default_rng(SEED)
    pd.DataFrame({"time": t, "carts_cpu": rng.gamma(4, 0.1, 60),
                  "carts_lat_90": rng.gamma(4, 0.01, 60)}).to_csv(tmp_path / "m.csv", index=False)
    bad = DATA / "otlp_missing_span_id.jsonl"
    proc = subprocess.run(
        [sys.executable, "-c", "from latentcause.cli import main; main()", "analyze",
         "--input", str(tmp_path / "m.csv"), "--traces", str(bad)],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("latentcause: error: ") and "no spanId" in lines[0]
    assert not proc.stdout

"""The Prometheus connector against a real local Prometheus loaded with known history."""

from __future__ import annotations

import base64
import json
import math
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from promserver import (
    K8S_CONTAINERS,
    OTEL_SERVICES,
    RecordingProxy,
    SockShop,
    free_port,
    histogram_quantile,
    join_openmetrics,
    k8s_openmetrics,
    otel_openmetrics,
    signals_toml,
    sockshop_openmetrics,
    start_prometheus,
    stop_prometheus,
    wide_csv_to_openmetrics,
)
from store_helpers import latentcause, make_incident_csv

from latentcause.connectors.http import HttpOptions, Secret, redact_url
from latentcause.connectors.presets import load_signal_file, rate_window
from latentcause.connectors.prometheus import default_step, plan_prometheus, read_prometheus
from latentcause.errors import InputError, QueryError, SourceUnreachable
from latentcause.observations import Observations

needs_prometheus = pytest.mark.prometheus
TOKEN = "s3cr3t-t0ken-value"  # noqa: S105  (a test credential)
# Other exporters' history lives a day and two days before the sock shop's window.
OTEL_START = SockShop().start - 86400
K8S_START = SockShop().start - 2 * 86400


@dataclass
class Server:
    url: str
    truth: SockShop
    wide: pd.DataFrame


def _wide_frame(truth: SockShop) -> pd.DataFrame:
    """A small wide incident (RCD-like names) over the same window, with a hole."""
    t = truth.times[: 200]
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "carts_cpu": 0.2 + 0.01 * rng.standard_normal(t.size),
            "carts_lat_99": 0.1 + 0.005 * rng.standard_normal(t.size),
            "front-end.v2_lod": 40 + rng.standard_normal(t.size),
            "front-end.v2_cpu": 0.3 + 0.01 * rng.standard_normal(t.size),
        },
        index=pd.Index(t, name="time"),
    )
    frame.iloc[50:53, 1] = np.nan
    return frame


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory):
    text, truth = sockshop_openmetrics()
    wide = _wide_frame(truth)
    history = join_openmetrics(text, wide_csv_to_openmetrics(wide),
                               otel_openmetrics(OTEL_START), k8s_openmetrics(K8S_START))
    url, pid = start_prometheus(history, tmp_path_factory.mktemp("prom"))
    try:
        yield Server(url, truth, wide)
    finally:
        stop_prometheus(pid)


@pytest.fixture(scope="session")
def obs(server: Server) -> Observations:
    t = server.truth
    return read_prometheus(
        server.url, t.start, t.end, step=None, signals_file=None, http=HttpOptions()
    )


@dataclass
class CsvIncident:
    csv: Path
    signals: Path
    url: str
    start: float
    end: float
    onset: float

    def from_prometheus(self, **extra: str) -> Observations:
        from latentcause.loading import load_observations

        return load_observations(prometheus=self.url, start=f"{self.start:.0f}",
                                 end=f"{self.end:.0f}", step="5s", signals=self.signals,
                                 onset=f"{self.onset:.0f}", **extra)


@pytest.fixture(scope="module")
def csv_incident(tmp_path_factory: pytest.TempPathFactory):
    """The session store's ``inc-a`` (conftest.py) as its CSV and in a Prometheus of its own.

    The same bytes as the store's copy (``make_incident_csv`` with seed 10, root carts), its
    columns written as ``latentcause_<signal>{component=...}`` gauges and read back with the
    matching ``--signals`` map.
    """
    folder = tmp_path_factory.mktemp("csv-incident")
    csv = folder / "metrics.csv"
    onset = make_incident_csv(csv, seed=10, root="carts")
    frame = pd.read_csv(csv)
    signals = folder / "signals.toml"
    signals.write_text(signals_toml(frame))
    url, pid = start_prometheus(wide_csv_to_openmetrics(frame), folder / "prom")
    try:
        yield CsvIncident(csv, signals, url, float(frame["time"].iloc[0]),
                          float(frame["time"].iloc[-1]), onset)
    finally:
        stop_prometheus(pid)


def _fast() -> HttpOptions:
    return HttpOptions(retries=1, backoff=0.0, timeout=5.0)


# ----------------------------------------------------------------------- no server needed


def test_default_step_aims_at_a_few_hundred_points() -> None:
    assert default_step(0, 7200) == 20
    assert default_step(0, 60) == 1  # never below 1 s
    assert default_step(0, 3600) == 10
    for window in (600, 3600, 6 * 3600, 86400, 7 * 86400):
        points = window / default_step(0, window) + 1
        assert 200 <= points <= 401, window
    assert default_step(0, 30 * 86400) % 3600 == 0


def test_rate_window_covers_four_scrapes_and_a_step() -> None:
    assert rate_window(20, 15) == "60s"
    assert rate_window(120, 15) == "135s"
    assert rate_window(1, 15) == "60s"


def test_missing_token_env_is_one_line_input_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LC_TEST_NO_SUCH_TOKEN", raising=False)
    with pytest.raises(InputError, match="LC_TEST_NO_SUCH_TOKEN") as info:
        HttpOptions.from_cli(bearer_token_env="LC_TEST_NO_SUCH_TOKEN")
    assert "\n" not in str(info.value)


def test_token_file_and_option_conflicts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    opts = HttpOptions.from_cli(bearer_token_file=token_file)
    assert opts.bearer_token == Secret(TOKEN)
    with pytest.raises(InputError, match="no such file"):
        HttpOptions.from_cli(bearer_token_file=tmp_path / "absent")
    monkeypatch.setenv("LC_TEST_TOKEN", TOKEN)
    with pytest.raises(InputError, match="not both"):
        HttpOptions.from_cli(bearer_token_env="LC_TEST_TOKEN", bearer_token_file=token_file)
    with pytest.raises(InputError, match="basic auth needs both"):
        HttpOptions.from_cli(basic_auth_user="alice")
    with pytest.raises(InputError, match="ca-file"):
        HttpOptions.from_cli(ca_file=tmp_path / "absent.pem")


def test_secrets_never_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LC_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("LC_TEST_PASSWORD", TOKEN)
    bearer = HttpOptions.from_cli(bearer_token_env="LC_TEST_TOKEN")
    basic = HttpOptions.from_cli(basic_auth_user="alice",
                                 basic_auth_password_env="LC_TEST_PASSWORD")
    for opts in (bearer, basic):
        session = opts.session()
        for text in (repr(opts), str(opts), f"{opts}", repr(session.auth), str(vars(opts))):
            assert TOKEN not in text
        session.close()
    assert "alice" in repr(basic)
    assert redact_url(f"http://bob:{TOKEN}@prom:9090/x") == "http://***@prom:9090/x"


def test_tls_options_reach_the_session(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert HttpOptions(ca_file=ca).session().verify == str(ca)
    assert HttpOptions(insecure=True).session().verify is False
    assert HttpOptions().session().verify is True


def test_signal_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("component_label = \n")
    with pytest.raises(InputError, match="bad.toml: not valid TOML"):
        load_signal_file(bad)
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('component_label = "service"\n[signals]\nthroughput_x = "up"\n')
    with pytest.raises(InputError, match="unknown.toml: 'throughput_x' is not a known signal"):
        load_signal_file(unknown)
    twice = tmp_path / "twice.toml"
    twice.write_text('component_label = "service"\n[signals]\nlod = "a"\nrps = "b"\n')
    with pytest.raises(InputError, match="twice.toml: 'lod' and 'rps' both give rps"):
        load_signal_file(twice)
    nolabel = tmp_path / "nolabel.toml"
    nolabel.write_text('[signals]\ncpu = "a"\n')
    with pytest.raises(InputError, match="nolabel.toml: component_label"):
        load_signal_file(nolabel)


def test_unreachable_server_is_source_unreachable() -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(SourceUnreachable, match="cannot connect") as info:
        read_prometheus(f"http://127.0.0.1:{port}", 0, 3600, step=None, signals_file=None,
                        http=_fast())
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------- against Prometheus


@needs_prometheus
def test_presets_detected(server: Server) -> None:
    t = server.truth
    plan = plan_prometheus(server.url, t.start, t.end, step=None, signals_file=None,
                           http=HttpOptions())
    sig = plan.signals
    assert sig.families == ("prometheus-client",)
    # job has one value (sock-shop) and so does not split; service is the first that does
    assert sig.component_label == "service"
    assert sig.components == ("carts", "catalogue", "front-end", "orders")
    assert list(sig.queries) == [
        "rps", "err", "lat_p50", "lat_p90", "lat_p99", "lat_avg", "cpu", "mem"
    ]
    assert sig.rate_window == "60s"  # 15 s scrapes measured on the server
    assert "histogram_quantile(0.99, sum by (service, le)" in sig.queries["lat_p99"]
    assert 'code=~"5.."' in sig.queries["err"]
    assert plan.step == 20 and plan.points == 361


@needs_prometheus
def test_otel_semconv_preset(server: Server) -> None:
    start, end = OTEL_START, OTEL_START + 3600
    plan = plan_prometheus(server.url, start, end, step=None, signals_file=None,
                           http=HttpOptions())
    assert plan.signals.families == ("otel-semconv",)
    assert plan.signals.component_label == "service_name"  # job is one collector
    assert plan.signals.components == ("cart", "checkout")
    assert 'http_response_status_code=~"5.."' in plan.signals.queries["err"]
    o = read_prometheus(server.url, start, end, step=None, signals_file=None, http=HttpOptions())
    f = o.frame.loc[o.times > start + 120]
    for svc, (rps, err, mean) in OTEL_SERVICES.items():
        np.testing.assert_allclose(f[(svc, "rps")], rps, rtol=1e-9)
        np.testing.assert_allclose(f[(svc, "err")], err, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(f[(svc, "lat_avg")], mean, rtol=1e-9)
        np.testing.assert_allclose(f[(svc, "lat_p90")], histogram_quantile(0.9, mean), rtol=1e-9)


@needs_prometheus
def test_cadvisor_and_kube_state_metrics_presets(server: Server) -> None:
    start, end = K8S_START, K8S_START + 3600
    plan = plan_prometheus(server.url, start, end, step=None, signals_file=None,
                           http=HttpOptions())
    sig = plan.signals
    assert sig.families == ("cadvisor", "kube-state-metrics")
    assert sig.component_label == "container"
    assert sig.components == ("cart", "checkout")  # no pod-level "POD" or "" series
    assert list(sig.queries) == ["cpu", "mem", "restarts"]
    o = read_prometheus(server.url, start, end, step=None, signals_file=None, http=HttpOptions())
    assert o.components == ["cart", "checkout"]
    f = o.frame.loc[o.times > start + 120]
    for c, (cores, mem) in K8S_CONTAINERS.items():
        np.testing.assert_allclose(f[(c, "cpu")], cores, rtol=1e-9)
        np.testing.assert_allclose(f[(c, "mem")], mem, rtol=1e-12)
    restarts = o.frame[("cart", "restarts")]
    assert restarts[o.times < start + 29 * 60].eq(0).all()
    assert restarts[(o.times > start + 31 * 60) & (o.times < start + 44 * 60)].eq(1).all()
    assert restarts[o.times > start + 46 * 60].eq(2).all()
    assert o.frame[("checkout", "restarts")].eq(0).all()


@needs_prometheus
def test_frame_layout_and_provenance(server: Server, obs: Observations) -> None:
    t = server.truth
    assert obs.source == f"prometheus:{server.url}"
    assert obs.window == (t.start, t.end)
    assert obs.components == ["carts", "catalogue", "front-end", "orders"]
    assert obs.signals("carts") == ["rps", "err", "lat_p50", "lat_p90", "lat_p99", "lat_avg",
                                    "cpu", "mem"]
    assert obs.frame.columns.names == ["component", "signal"]
    assert len(obs.queries) == 8 and all("service" in q for q in obs.queries)
    assert obs.step_s == 20
    np.testing.assert_array_equal(obs.times, t.start + 20 * np.arange(361))


@needs_prometheus
def test_values_match_the_generated_history(server: Server, obs: Observations) -> None:
    t, f = server.truth, obs.frame
    times = obs.times
    for name, s in t.services.items():
        ok = (times >= t.start + 60) & ~_near_gap(t, name, times)
        rps = f[(name, "rps")].to_numpy()[ok]
        np.testing.assert_allclose(rps, t.rps(name, times[ok] - 30), rtol=0.06)
        cpu = f[(name, "cpu")].to_numpy()[ok]
        steady = ~_near(times[ok], t.fault_time)
        np.testing.assert_allclose(cpu[steady], t.cpu(name, times[ok] - 30)[steady], rtol=0.06)
        # the 5xx share is exact: error counts are a fixed share of each interval's requests
        np.testing.assert_allclose(f[(name, "err")].to_numpy()[ok], s.err, rtol=1e-9, atol=1e-12)
        lat = f[(name, "lat_avg")].to_numpy()[ok]
        np.testing.assert_allclose(lat[steady], t.latency(name, times[ok])[steady], rtol=1e-9)
        for q, sig in ((0.5, "lat_p50"), (0.9, "lat_p90"), (0.99, "lat_p99")):
            before = f[(name, sig)].to_numpy()[ok & (times < t.fault_time)]
            np.testing.assert_allclose(before, histogram_quantile(q, s.latency), rtol=1e-9)
        mem = f[(name, "mem")].dropna().to_numpy()
        np.testing.assert_allclose(mem, s.mem, rtol=0.05)
    # the fault: carts' latency x4 and cpu + 0.6 cores after fault_time, the others unchanged
    after = times > t.fault_time + 60
    before = (times < t.fault_time) & (times > t.start + 60)
    carts = f["carts"]
    assert carts["lat_p99"][after].median() / carts["lat_p99"][before].median() > 3
    assert carts["cpu"][after].mean() - carts["cpu"][before].mean() == pytest.approx(0.6, rel=0.1)
    assert f[("front-end", "lat_p99")][after].median() == pytest.approx(
        f[("front-end", "lat_p99")][before].median()
    )


@needs_prometheus
def test_counter_reset_is_absorbed_by_rate(server: Server, obs: Observations) -> None:
    t = server.truth
    name = t.restart_component
    times = obs.times
    around = (times > t.restart_time - 120) & (times < t.restart_time + 120)
    rps = obs.frame[(name, "rps")].to_numpy()[around]
    assert np.all(rps > 0)
    np.testing.assert_allclose(rps, t.rps(name, times[around] - 30), rtol=0.06)
    cpu = obs.frame[(name, "cpu")].to_numpy()[around]
    np.testing.assert_allclose(cpu, t.cpu(name, times[around] - 30), rtol=0.06)


@needs_prometheus
def test_gaps_become_nan_on_the_full_grid(server: Server, obs: Observations) -> None:
    t = server.truth
    lo, hi = t.gap
    inside = (obs.times > lo + 6 * 60) & (obs.times < hi)  # past the 5-minute lookback
    orders = obs.frame[t.gap_component]
    assert orders.loc[inside].isna().all().all()
    assert orders.loc[obs.times > hi + 120].notna().all().all()
    assert obs.frame["carts"].loc[inside].notna().all().all()
    assert obs.frame.shape[0] == 361


@needs_prometheus
def test_chunked_reads_equal_one_query(server: Server, obs: Observations) -> None:
    t = server.truth
    with RecordingProxy(server.url) as proxy:
        chunked = read_prometheus(proxy.url, t.start, t.end, step=None, signals_file=None,
                                  http=HttpOptions(), max_points=50)
    pd.testing.assert_frame_equal(chunked.frame, obs.frame)
    ranges = [p for p in proxy.paths if p.startswith("/api/v1/query_range")]
    assert len(ranges) == math.ceil(361 / 50) * len(obs.queries)


@needs_prometheus
def test_explicit_step(server: Server) -> None:
    t = server.truth
    o = read_prometheus(server.url, t.start, t.end, step=60, signals_file=None,
                        http=HttpOptions())
    assert o.frame.shape[0] == 121 and o.step_s == 60


@needs_prometheus
def test_signal_file_overrides_presets(server: Server, obs: Observations, tmp_path: Path) -> None:
    t = server.truth
    rps = "sum by (service) (rate(http_requests_total[2m]))"
    p99 = ("histogram_quantile(0.99, sum by (service, le) "
           "(rate(http_request_duration_seconds_bucket[1m])))")
    path = tmp_path / "signals.toml"
    path.write_text(f"component_label = \"service\"\n\n[signals]\nload = '{rps}'\n"
                    f"latency-99 = '''{p99}'''\n")
    o = read_prometheus(server.url, t.start, t.end, step=None, signals_file=path,
                        http=HttpOptions())
    assert o.queries == (rps, p99)
    assert o.signals("carts") == ["rps", "lat_p99"]
    pd.testing.assert_series_equal(o.frame[("carts", "lat_p99")], obs.frame[("carts", "lat_p99")])
    assert o.frame[("carts", "rps")].mean() == pytest.approx(obs.frame[("carts", "rps")].mean(),
                                                             rel=0.01)


@needs_prometheus
def test_wide_frame_round_trip(server: Server, tmp_path: Path) -> None:
    wide = server.wide
    path = tmp_path / "wide.toml"
    path.write_text(signals_toml(wide))
    start, end = float(wide.index[0]), float(wide.index[-1])
    o = read_prometheus(server.url, start, end, step=15, signals_file=path, http=HttpOptions())
    assert sorted(o.components) == ["carts", "front-end.v2"]
    np.testing.assert_array_equal(o.times, wide.index.to_numpy())
    expected = {"carts_cpu": ("carts", "cpu"), "carts_lat_99": ("carts", "lat_p99"),
                "front-end.v2_lod": ("front-end.v2", "rps"),
                "front-end.v2_cpu": ("front-end.v2", "cpu")}
    for column, key in expected.items():
        np.testing.assert_array_equal(o.frame[key].to_numpy(), wide[column].to_numpy())
    # and an Observations frame ((component, signal) columns) converts to the same text
    assert wide_csv_to_openmetrics(o.frame) == wide_csv_to_openmetrics(
        wide.set_axis(pd.MultiIndex.from_tuples([expected[c] for c in wide.columns]), axis=1)
    )


@needs_prometheus
def test_bad_promql_is_query_error(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("component_label = \"service\"\n[signals]\n"
                    "cpu = 'sum by (service) (rate(process_cpu_seconds_total[1m])'\n")
    t = server.truth
    with pytest.raises(QueryError, match=r"HTTP 400\): bad_data: .*parse error") as info:
        read_prometheus(server.url, t.start, t.end, step=None, signals_file=path, http=_fast())
    assert "\n" not in str(info.value)


@needs_prometheus
def test_empty_result_is_query_error(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "empty.toml"
    path.write_text("component_label = \"service\"\n[signals]\ncpu = 'no_such_metric_total'\n")
    t = server.truth
    with pytest.raises(QueryError, match="no data in the window"):
        read_prometheus(server.url, t.start, t.end, step=None, signals_file=path, http=_fast())
    # presets on a window with no data at all
    with pytest.raises(QueryError, match="none of the preset metrics"):
        read_prometheus(server.url, t.start - 86400 * 30, t.start - 86400 * 29, step=None,
                        signals_file=None, http=_fast())


@needs_prometheus
def test_unaggregated_query_is_query_error(server: Server, tmp_path: Path) -> None:
    path = tmp_path / "raw.toml"
    path.write_text("component_label = \"service\"\n[signals]\n"
                    "rps = 'rate(http_requests_total[1m])'\n")
    t = server.truth
    with pytest.raises(QueryError, match="several series for service='carts'"):
        read_prometheus(server.url, t.start, t.end, step=None, signals_file=path, http=_fast())


@needs_prometheus
def test_bearer_token_reaches_the_server(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_TEST_TOKEN", TOKEN)
    t = server.truth
    with RecordingProxy(server.url, require_authorization=f"Bearer {TOKEN}") as proxy:
        o = read_prometheus(proxy.url, t.start, t.end, step=None, signals_file=None,
                            http=HttpOptions.from_cli(bearer_token_env="LC_TEST_TOKEN"))
        assert o.frame.shape == (361, 32)
        assert proxy.headers and all(
            h.get("authorization") == f"Bearer {TOKEN}" for h in proxy.headers
        )
        monkeypatch.setenv("LC_TEST_TOKEN", "wrong-" + TOKEN)
        with pytest.raises(QueryError, match="HTTP 401, authentication refused") as info:
            read_prometheus(proxy.url, t.start, t.end, step=None, signals_file=None,
                            http=HttpOptions.from_cli(bearer_token_env="LC_TEST_TOKEN"))
    assert TOKEN not in str(info.value)


@needs_prometheus
def test_basic_auth_reaches_the_server(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LC_TEST_PASSWORD", TOKEN)
    expected = "Basic " + base64.b64encode(f"alice:{TOKEN}".encode()).decode()
    t = server.truth
    with RecordingProxy(server.url, require_authorization=expected) as proxy:
        http = HttpOptions.from_cli(basic_auth_user="alice",
                                    basic_auth_password_env="LC_TEST_PASSWORD")
        o = read_prometheus(proxy.url, t.start, t.end, step=None, signals_file=None, http=http)
    assert o.components == ["carts", "catalogue", "front-end", "orders"]
    assert all(h.get("authorization") == expected for h in proxy.headers)


@needs_prometheus
def test_retries_ride_over_transient_5xx(server: Server) -> None:
    t = server.truth
    with RecordingProxy(server.url, fail_first=2) as proxy:
        o = read_prometheus(proxy.url, t.start, t.end, step=None, signals_file=None,
                            http=HttpOptions(retries=3, backoff=0.0))
    assert o.frame.shape == (361, 32)
    assert proxy.paths[0] == proxy.paths[1] == proxy.paths[2]  # the first call, tried 3 times
    with RecordingProxy(server.url, fail_first=100) as proxy:
        with pytest.raises(SourceUnreachable, match=r"HTTP 503\) after 1 retries"):
            read_prometheus(proxy.url, t.start, t.end, step=None, signals_file=None,
                            http=_fast())
    assert len(proxy.paths) == 2


@needs_prometheus
def test_load_observations_reads_prometheus(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from latentcause.loading import load_observations

    t = server.truth
    monkeypatch.setenv("LC_TEST_TOKEN", TOKEN)
    o = load_observations(
        prometheus=server.url, start=f"{t.start:.0f}", end=f"{t.end:.0f}", step="1m",
        onset=f"{t.fault_time:.0f}", components=["carts", "orders"],
        http={"bearer_token_env": "LC_TEST_TOKEN", "timeout": 10.0},
    )
    assert o.components == ["carts", "orders"]
    assert o.onset == t.fault_time and o.onset_source == "given"
    assert o.step_s == 60


@needs_prometheus
def test_cli_signals_command(server: Server) -> None:
    from typer.testing import CliRunner

    from latentcause.cli import app

    t = server.truth
    result = CliRunner().invoke(app, ["signals", "--prometheus", server.url,
                                      "--start", f"{t.start:.0f}", "--end", f"{t.end:.0f}"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "detected families: prometheus-client" in out
    assert "component label: service" in out
    assert "components (4): carts, catalogue, front-end, orders" in out
    assert "histogram_quantile(0.99" in out
    assert "carts: rps (360/361)" in out


def test_cli_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    exe = Path(sys.executable).parent / "latentcause"
    port = free_port()
    monkeypatch.setenv("LC_TEST_TOKEN", TOKEN)
    for extra, expected in (
        (["--bearer-token-env", "LC_TEST_NO_SUCH_TOKEN"], "LC_TEST_NO_SUCH_TOKEN"),
        (["--bearer-token-env", "LC_TEST_TOKEN"], "cannot connect"),
    ):
        done = subprocess.run(
            [str(exe), "signals", "--prometheus", f"http://127.0.0.1:{port}",
             "--start", "now-1h", "--end", "now", *extra],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 2, done.stderr
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("latentcause: error:")
        assert expected in done.stderr and TOKEN not in done.stderr + done.stdout


def _near(times: np.ndarray, event: float, before: float = 0.0, after: float = 80.0) -> np.ndarray:
    return (times >= event - before) & (times <= event + after)


def _near_gap(t: SockShop, name: str, times: np.ndarray) -> np.ndarray:
    if name != t.gap_component:
        return np.zeros(times.shape, dtype=bool)
    lo, hi = t.gap
    return (times > lo) & (times < hi + 80)


# ------------------------------------------- one incident from a CSV file and from Prometheus


@needs_prometheus
def test_csv_and_prometheus_read_the_same_incident(csv_incident: CsvIncident) -> None:
    from latentcause.loading import load_observations

    inc = csv_incident
    from_csv = load_observations(input=inc.csv, onset=f"{inc.onset:.0f}")
    from_prom = inc.from_prometheus()
    assert from_prom.source.startswith("prometheus:")
    assert sorted(from_prom.components) == sorted(from_csv.components)
    assert from_prom.onset == from_csv.onset and from_prom.onset_source == "given"
    # every value of every series, to the bit; only the column order differs (sorted labels)
    pd.testing.assert_frame_equal(from_prom.frame.loc[:, from_csv.frame.columns],
                                  from_csv.frame, check_exact=True)


@pytest.mark.slow
@needs_prometheus
def test_csv_and_prometheus_give_the_same_leading_hypothesis(
    csv_incident: CsvIncident, analysed_store: Path, tmp_path: Path
) -> None:
    """Issue 5: the same incident analysed from the CSV and from Prometheus.

    The CSV analysis is the session store's ``inc-a`` (``reanalyze``: the file with its onset,
    seed 0, 100 draws); this one reads the same incident through ``--prometheus`` with the
    same onset, seed and draws.
    """
    from latentcause.store import Store

    stored = analysed_store / "inc-a" / "data" / "metrics.csv"
    assert stored.read_bytes() == csv_incident.csv.read_bytes()
    from_csv = Store(analysed_store).latest("inc-a").report()  # type: ignore[union-attr]
    inc = csv_incident
    out = latentcause(
        "analyze", "--prometheus", inc.url, "--start", f"{inc.start:.0f}",
        "--end", f"{inc.end:.0f}", "--step", "5s", "--signals", str(inc.signals),
        "--onset", f"{inc.onset:.0f}", "--seed", "0", "--draws", "100",
        "--out", str(tmp_path / "out"), "--quiet", timeout=1800,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    from_prom = json.loads((tmp_path / "out" / "report.json").read_text())
    assert from_prom["provenance"]["source"].startswith("prometheus:")
    assert from_csv["provenance"]["source"].startswith("file:")

    def leader(report: dict) -> tuple[str, str]:
        top = report["hypotheses"][0]
        return top["component"], top["mechanism"]

    assert leader(from_prom) == leader(from_csv)
    assert from_prom["hypotheses"][0]["probability"] == pytest.approx(
        from_csv["hypotheses"][0]["probability"], abs=0.05)
    assert from_prom["window"] == from_csv["window"]

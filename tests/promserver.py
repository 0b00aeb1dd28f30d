"""A real Prometheus for tests: history written as OpenMetrics, backfilled, served locally.

Reusable by any test module (``pytest`` puts ``tests/`` on the path)::

    from promserver import start_prometheus, stop_prometheus, wide_csv_to_openmetrics

    url, pid = start_prometheus(wide_csv_to_openmetrics(frame), tmp_path)
    try:
        ...  # read_prometheus(url, ..., signals_file=<signals_toml(frame) written to a file>)
    finally:
        stop_prometheus(pid)

``start_prometheus`` loads the text with ``promtool tsdb create-blocks-from openmetrics`` and
starts ``/usr/bin/prometheus`` on a free 127.0.0.1 port with no scrape targets and a 100-year
retention (backfilled history is old), then waits for ``/-/ready``. It skips the calling test
when the Debian ``prometheus`` package is not installed.

``sockshop_openmetrics`` writes two hours of a small sock-shop-like system at 15 s with known
values (``SockShop`` holds the truth): a capacity-loss fault in ``carts``, a process restart
in ``catalogue`` (counter reset) and a 12-minute scrape gap in ``orders``. ``RecordingProxy``
is a tiny HTTP server in front of Prometheus that records request headers, can demand
credentials and can fail the first requests with 503.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from latentcause.signals import split_column

__all__ = [
    "PROMETHEUS",
    "PROMTOOL",
    "RecordingProxy",
    "SockShop",
    "K8S_CONTAINERS",
    "OTEL_SERVICES",
    "free_port",
    "k8s_openmetrics",
    "otel_openmetrics",
    "join_openmetrics",
    "require_prometheus",
    "signals_toml",
    "sockshop_openmetrics",
    "start_prometheus",
    "stop_prometheus",
    "wide_csv_to_openmetrics",
]

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")

_PROCS: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------- server


def require_prometheus() -> None:
    """Skip the calling test when the Prometheus binaries are not installed."""
    for binary in (PROMETHEUS, PROMTOOL):
        if not (binary.is_file() and os.access(binary, os.X_OK)):
            pytest.skip(f"{binary} is not installed (Debian package prometheus)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_prometheus(openmetrics_text: str, tmp_dir: Path) -> tuple[str, int]:
    """Backfill ``openmetrics_text`` into a TSDB under ``tmp_dir`` and serve it.

    Returns
    -------
    (url, pid)
        The base URL (``http://127.0.0.1:<port>``) and the server's process id, for
        ``stop_prometheus``.
    """
    require_prometheus()
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    history = tmp_dir / "history.om"
    history.write_text(openmetrics_text, encoding="utf-8")
    tsdb = tmp_dir / "tsdb"
    if tsdb.exists():
        shutil.rmtree(tsdb)
    done = subprocess.run(
        [str(PROMTOOL), "tsdb", "create-blocks-from", "openmetrics", str(history), str(tsdb)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"promtool failed: {done.stderr.strip()[-2000:]}")
    config = tmp_dir / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n", encoding="utf-8")
    last = ""
    for _ in range(5):  # another process may take the port between probe and bind
        port = free_port()
        log_path = tmp_dir / f"prometheus-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(PROMETHEUS),
                    f"--storage.tsdb.path={tsdb}",
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--storage.tsdb.retention.time=100y",
                    "--log.level=warn",
                ],
                stdout=log, stderr=subprocess.STDOUT, cwd=tmp_dir,
            )
        url = f"http://127.0.0.1:{port}"
        if _wait_ready(url, proc, timeout=60.0):
            _PROCS[proc.pid] = proc
            return url, proc.pid
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        last = log_path.read_text(encoding="utf-8", errors="replace")
        if "address already in use" not in last:
            break
    raise RuntimeError(f"prometheus did not become ready: {last.strip()[-2000:]}")


def stop_prometheus(pid: int) -> None:
    """Stop the server started by ``start_prometheus`` (SIGTERM, then SIGKILL after 15 s)."""
    proc = _PROCS.pop(pid, None)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    if proc is not None:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        return
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:  # noqa: S310
                if r.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    return False


# --------------------------------------------------------------------------- OpenMetrics


def _num(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(labels: dict[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{esc(v)}"' for k, v in labels.items()) + "}"


class _Writer:
    """OpenMetrics text, one family after another, each series' samples in time order."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str) -> None:
        self.lines.append(f"# TYPE {name} {kind}")

    def series(
        self, name: str, labels: dict[str, str], times: Iterable[float], values: Iterable[float]
    ) -> None:
        lab = _labels(labels)
        self.lines.extend(
            f"{name}{lab} {_num(v)} {_num(t)}" for t, v in zip(times, values, strict=True)
        )

    def text(self) -> str:
        return "\n".join([*self.lines, "# EOF", ""])


def join_openmetrics(*texts: str) -> str:
    """One OpenMetrics text from several (their ``# EOF`` lines dropped, one added)."""
    body = [
        line for t in texts for line in t.splitlines() if line.strip() and line.strip() != "# EOF"
    ]
    return "\n".join([*body, "# EOF", ""])


def gauge_name(signal: str) -> str:
    """The gauge a canonical signal becomes: ``latentcause_<signal>`` (``.`` -> ``_``)."""
    return "latentcause_" + re.sub(r"[^A-Za-z0-9_]", "_", signal)


def wide_csv_to_openmetrics(frame: pd.DataFrame) -> str:
    """OpenMetrics gauges ``latentcause_<signal>{component="..."}`` from a wide frame.

    ``frame``: columns ``<component>_<signal>`` (the wide layout; a ``time`` column, if any,
    becomes the index) or ``(component, signal)`` pairs (``Observations.frame``), index in
    unix seconds. NaN cells are written as NaN samples, so they come back as NaN instead of
    being filled from the previous sample by Prometheus' lookback.
    """
    if "time" in frame.columns:
        frame = frame.set_index("time")
    times = frame.index.to_numpy(dtype=float)
    by_signal: dict[str, list[tuple[str, Any]]] = {}
    for column, (component, signal_name) in _split_columns(frame).items():
        by_signal.setdefault(signal_name, []).append((component, column))
    w = _Writer()
    for signal_name, columns in by_signal.items():
        name = gauge_name(signal_name)
        w.family(name, "gauge")
        for component, column in columns:
            w.series(name, {"component": component}, times, frame[column].to_numpy(dtype=float))
    return w.text()


def signals_toml(frame: pd.DataFrame) -> str:
    """The ``--signals`` TOML that reads ``wide_csv_to_openmetrics(frame)`` back."""
    if "time" in frame.columns:
        frame = frame.drop(columns="time")
    signals = list(dict.fromkeys(s for _, s in _split_columns(frame).values()))
    rows = [f"\"{s}\" = '{gauge_name(s)}'" for s in signals]
    return 'component_label = "component"\n\n[signals]\n' + "\n".join(rows) + "\n"


def _split_columns(frame: pd.DataFrame) -> dict[Any, tuple[str, str]]:
    """Column -> (component, canonical signal), for wide names or (component, signal) pairs."""
    out: dict[Any, tuple[str, str]] = {}
    for column in frame.columns:
        if isinstance(column, tuple):
            out[column] = (str(column[0]), str(column[1]))
            continue
        split = split_column(str(column))
        if split is None:
            raise ValueError(f"column {column!r} names no known signal")
        out[column] = split
    return out


# --------------------------------------------------------------------------- sock shop

#: Histogram bucket bounds (seconds) of http_request_duration_seconds.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class Service:
    """Generation parameters of one service (rates in 1/s, latency mean in s, cpu in cores)."""

    rps: float
    err: float
    latency: float
    cpu_idle: float
    cpu_per_request: float
    mem: float


@dataclass(frozen=True)
class SockShop:
    """The truth behind ``sockshop_openmetrics``.

    Times are unix seconds. The fault multiplies ``carts`` latency by ``fault_latency`` and
    adds ``fault_cpu`` cores from ``fault_time`` on; ``catalogue`` restarts at
    ``restart_time`` (its counters start again from 0); ``orders`` has no samples in
    ``gap`` (open interval).
    """

    start: float = 1_700_000_000.0
    duration: float = 7200.0
    scrape: float = 15.0
    fault_component: str = "carts"
    fault_time: float = 1_700_000_000.0 + 80 * 60
    fault_latency: float = 4.0
    fault_cpu: float = 0.6
    restart_component: str = "catalogue"
    restart_time: float = 1_700_000_000.0 + 40 * 60
    gap_component: str = "orders"
    gap: tuple[float, float] = (1_700_000_000.0 + 100 * 60, 1_700_000_000.0 + 112 * 60)
    services: dict[str, Service] = field(
        default_factory=lambda: {
            "front-end": Service(40.0, 0.01, 0.05, 0.05, 0.004, 180e6),
            "orders": Service(10.0, 0.02, 0.08, 0.03, 0.010, 350e6),
            "carts": Service(20.0, 0.005, 0.03, 0.04, 0.006, 250e6),
            "catalogue": Service(25.0, 0.0, 0.02, 0.02, 0.002, 120e6),
        }
    )

    @property
    def end(self) -> float:
        """Last sample time."""
        return self.start + self.duration

    @property
    def times(self) -> np.ndarray:
        """Sample times."""
        return self.start + self.scrape * np.arange(int(self.duration / self.scrape) + 1)

    def rps(self, name: str, t: np.ndarray | float) -> np.ndarray:
        """Noise-free request rate: the base with a slow +-10 % wave."""
        t = np.asarray(t, dtype=float)
        return self.services[name].rps * (1 + 0.1 * np.sin(2 * np.pi * (t - self.start) / 7200))

    def latency(self, name: str, t: np.ndarray | float) -> np.ndarray:
        """Mean latency (s); latencies are exponential with this mean."""
        t = np.asarray(t, dtype=float)
        base = np.full(t.shape, self.services[name].latency)
        if name == self.fault_component:
            base = np.where(t >= self.fault_time, base * self.fault_latency, base)
        return base

    def cpu(self, name: str, t: np.ndarray | float) -> np.ndarray:
        """Noise-free cpu use in cores."""
        s = self.services[name]
        t = np.asarray(t, dtype=float)
        cores = s.cpu_idle + s.cpu_per_request * self.rps(name, t)
        if name == self.fault_component:
            cores = np.where(t >= self.fault_time, cores + self.fault_cpu, cores)
        return cores

    def in_gap(self, name: str, t: np.ndarray) -> np.ndarray:
        """True where ``name`` has no sample."""
        lo, hi = self.gap
        return (name == self.gap_component) & (t > lo) & (t < hi)


def histogram_quantile(q: float, mean: float) -> float:
    """What Prometheus' ``histogram_quantile`` gives for exponential latencies with ``mean``.

    Linear interpolation inside the bucket holding the rank, the first bucket starting at 0:
    the same rule as the server, so the expectation is exact, not a tolerance on ``mean ln 2``.
    """
    cdf = [1 - math.exp(-b / mean) for b in BUCKETS]
    lower_b, lower_c = 0.0, 0.0
    for b, c in zip(BUCKETS, cdf, strict=True):
        if c >= q:
            return lower_b + (b - lower_b) * (q - lower_c) / (c - lower_c)
        lower_b, lower_c = b, c
    return BUCKETS[-1]


def sockshop_openmetrics(truth: SockShop | None = None, seed: int = 7) -> tuple[str, SockShop]:
    """OpenMetrics history of the sock-shop-like system, and its truth.

    Per service: ``http_requests_total{code}`` (200 and 500; no 500 series for a service that
    never fails), the histogram ``http_request_duration_seconds`` (exponential latencies, the
    expected bucket shares of each scrape interval's requests), ``process_cpu_seconds_total``
    and ``process_resident_memory_bytes``. Request counts and cpu carry 2 % multiplicative
    noise per scrape interval, memory 1 %; every series has ``job="sock-shop"`` (one value,
    so not a component label) and ``service``.
    """
    truth = truth or SockShop()
    rng = np.random.default_rng(seed)
    t = truth.times
    mid = t - truth.scrape / 2  # the interval ending at t
    data: dict[str, dict[str, Any]] = {}
    for name, s in truth.services.items():
        keep = ~truth.in_gap(name, t)
        n = truth.rps(name, mid) * truth.scrape * (1 + 0.02 * rng.standard_normal(t.size))
        n[0] = 0.0
        lat = truth.latency(name, mid)
        cpu = truth.cpu(name, mid) * truth.scrape * (1 + 0.02 * rng.standard_normal(t.size))
        cpu[0] = 0.0
        mem = s.mem * (1 + 0.01 * rng.standard_normal(t.size))
        restart = None
        if name == truth.restart_component:
            restart = int(np.searchsorted(t, truth.restart_time))

        def cum(x: np.ndarray, restart: int | None = restart) -> np.ndarray:
            c = np.cumsum(x)
            if restart is not None:  # the process restarted just before this sample
                c[restart:] -= c[restart - 1]
            return c

        buckets = {
            str(b): cum(n * (1 - np.exp(-b / lat))) for b in BUCKETS
        }
        buckets["+Inf"] = cum(n)
        data[name] = {
            "keep": keep,
            "ok": cum(n * (1 - s.err)),
            "err": cum(n * s.err) if s.err > 0 else None,
            "buckets": buckets,
            "sum": cum(n * lat),
            "count": cum(n),
            "cpu": cum(cpu),
            "mem": mem,
        }
    w = _Writer()

    def base(name: str) -> dict[str, str]:
        return {"job": "sock-shop", "instance": f"{name}:8080", "service": name}

    w.family("http_requests", "counter")
    for name, d in data.items():
        k = d["keep"]
        w.series("http_requests_total", {**base(name), "code": "200"}, t[k], d["ok"][k])
        if d["err"] is not None:
            w.series("http_requests_total", {**base(name), "code": "500"}, t[k], d["err"][k])
    w.family("http_request_duration_seconds", "histogram")
    for name, d in data.items():
        k = d["keep"]
        for le, values in d["buckets"].items():
            w.series("http_request_duration_seconds_bucket", {**base(name), "le": le}, t[k],
                     values[k])
        w.series("http_request_duration_seconds_sum", base(name), t[k], d["sum"][k])
        w.series("http_request_duration_seconds_count", base(name), t[k], d["count"][k])
    w.family("process_cpu_seconds", "counter")
    for name, d in data.items():
        k = d["keep"]
        w.series("process_cpu_seconds_total", base(name), t[k], d["cpu"][k])
    w.family("process_resident_memory_bytes", "gauge")
    for name, d in data.items():
        k = d["keep"]
        w.series("process_resident_memory_bytes", base(name), t[k], d["mem"][k])
    return w.text(), truth


#: OpenTelemetry services: (requests/s, 5xx share, mean latency s), constant.
OTEL_SERVICES = {"cart": (5.0, 0.1, 0.2), "checkout": (2.0, 0.0, 0.5)}
#: cAdvisor containers: (cpu cores, working-set bytes), constant; restarts of ``cart``
#: step to 1 at +30 min and to 2 at +45 min (kube-state-metrics).
K8S_CONTAINERS = {"cart": (0.5, 300e6), "checkout": (0.25, 150e6)}


def otel_openmetrics(start: float, minutes: int = 60, scrape: float = 15.0) -> str:
    """``http_server_request_duration_seconds`` as the OpenTelemetry collector exports it.

    Labels ``service_name``, ``job="otel-collector"`` (one value), ``http_request_method`` and
    ``http_response_status_code``; constant rates and exponential latencies
    (``OTEL_SERVICES``), no noise.
    """
    t = start + scrape * np.arange(int(minutes * 60 / scrape) + 1)
    k = np.arange(t.size)
    w = _Writer()
    name = "http_server_request_duration_seconds"
    w.family(name, "histogram")
    for svc, (rps, err, mean) in OTEL_SERVICES.items():
        for code, share in (("200", 1 - err), ("500", err)):
            if share == 0:
                continue
            n = k * rps * scrape * share
            lab = {"job": "otel-collector", "service_name": svc, "http_request_method": "GET",
                   "http_response_status_code": code}
            for b in BUCKETS:
                w.series(f"{name}_bucket", {**lab, "le": str(b)}, t, n * (1 - math.exp(-b / mean)))
            w.series(f"{name}_bucket", {**lab, "le": "+Inf"}, t, n)
            w.series(f"{name}_sum", lab, t, n * mean)
            w.series(f"{name}_count", lab, t, n)
    return w.text()


def k8s_openmetrics(start: float, minutes: int = 60, scrape: float = 15.0) -> str:
    """cAdvisor cpu and memory per container, and kube-state-metrics restarts.

    Besides the containers of ``K8S_CONTAINERS`` each pod has cAdvisor's pod-level series
    (``container="POD"`` for the pause container, ``container=""`` for the whole pod cgroup)
    that the presets must leave out.
    """
    t = start + scrape * np.arange(int(minutes * 60 / scrape) + 1)
    k = np.arange(t.size)
    w = _Writer()
    cpu_name, mem_name = "container_cpu_usage_seconds_total", "container_memory_working_set_bytes"
    w.family("container_cpu_usage_seconds", "counter")
    for c, (cores, _) in K8S_CONTAINERS.items():
        pod = {"namespace": "shop", "pod": f"{c}-7d4b9c", "image": f"shop/{c}:1"}
        w.series(cpu_name, {**pod, "container": c}, t, k * scrape * cores)
        w.series(cpu_name, {**pod, "container": "POD"}, t, k * scrape * 0.001)
        w.series(cpu_name, {**pod, "container": ""}, t, k * scrape * (cores + 0.001))
    w.family(mem_name, "gauge")
    for c, (_, mem) in K8S_CONTAINERS.items():
        pod = {"namespace": "shop", "pod": f"{c}-7d4b9c", "image": f"shop/{c}:1"}
        w.series(mem_name, {**pod, "container": c}, t, np.full(t.size, mem))
        w.series(mem_name, {**pod, "container": "POD"}, t, np.full(t.size, 1e6))
        w.series(mem_name, {**pod, "container": ""}, t, np.full(t.size, mem + 1e6))
    w.family("kube_pod_container_status_restarts", "counter")
    for c in K8S_CONTAINERS:
        restarts = np.zeros(t.size)
        if c == "cart":
            restarts = (t >= start + 30 * 60).astype(float) + (t >= start + 45 * 60)
        w.series("kube_pod_container_status_restarts_total",
                 {"namespace": "shop", "pod": f"{c}-7d4b9c", "container": c, "uid": "u-" + c},
                 t, restarts)
    return w.text()


# --------------------------------------------------------------------------- proxy


@dataclass
class _ProxyState:
    upstream: str
    require: str | None
    fail_first: int
    fail_status: int
    seen: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class RecordingProxy:
    """A local HTTP server in front of ``upstream`` recording each request's headers.

    Parameters
    ----------
    upstream
        Base URL requests are forwarded to.
    require_authorization
        When set, requests whose ``Authorization`` header differs get 401.
    fail_first
        Answer the first N requests with ``fail_status`` (default 503) instead.

    Use as a context manager; ``url`` is its base URL, ``headers`` and ``paths`` what it saw.
    """

    def __init__(
        self,
        upstream: str,
        *,
        require_authorization: str | None = None,
        fail_first: int = 0,
        fail_status: int = 503,
    ) -> None:
        self.state = _ProxyState(upstream.rstrip("/"), require_authorization, fail_first,
                                 fail_status)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def headers(self) -> list[dict[str, str]]:
        """Headers of every request received (names lower-cased)."""
        return list(self.state.seen)

    @property
    def paths(self) -> list[str]:
        """Path and query of every request received."""
        return list(self.state.paths)

    def __enter__(self) -> RecordingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def _handler(state: _ProxyState) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass

        def do_GET(self) -> None:  # noqa: N802
            self._forward(None)

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            self._forward(self.rfile.read(length))

        def _forward(self, body: bytes | None) -> None:
            with state.lock:
                state.seen.append({k.lower(): v for k, v in self.headers.items()})
                state.paths.append(self.path)
                failing = state.fail_first > 0
                if failing:
                    state.fail_first -= 1
            if failing:
                self._send(state.fail_status, b'{"status":"error","errorType":"unavailable",'
                           b'"error":"injected failure"}')
                return
            if state.require is not None and self.headers.get("Authorization") != state.require:
                self._send(401, b"Unauthorized\n", "text/plain")
                return
            req = urllib.request.Request(  # noqa: S310
                state.upstream + self.path, data=body, method=self.command,
                headers={"Content-Type": self.headers.get("Content-Type", "")} if body else {},
            )
            try:
                with urllib.request.urlopen(req, timeout=60) as r:  # noqa: S310
                    self._send(r.status, r.read(), r.headers.get("Content-Type", ""))
            except urllib.error.HTTPError as err:
                self._send(err.code, err.read(), err.headers.get("Content-Type", ""))

        def _send(self, status: int, payload: bytes, ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    return Handler


"""The few Prometheus HTTP API calls latentcause makes, with errors turned into ours.

A thin layer over ``prometheus_api_client.PrometheusConnect``: it owns the session (auth, TLS,
retries from ``HttpOptions``) and maps every failure to a one-line ``SourceUnreachable`` or
``QueryError`` that names the server (credentials in the URL redacted) and Prometheus' own
error text, never a header.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import requests
from prometheus_api_client import PrometheusConnect
from prometheus_api_client.exceptions import PrometheusApiClientException
from urllib3.exceptions import InsecureRequestWarning

from latentcause.connectors.http import HttpOptions, redact_url
from latentcause.errors import QueryError, SourceUnreachable

__all__ = ["PromApi"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)\s*$", re.DOTALL)
_ERRNO = re.compile(r"\[Errno -?\d+\] ([^'\"\)\]]+)")
_UNAVAILABLE = {502, 503, 504}


class PromApi:
    """One Prometheus server: range and instant queries, label values, series, metadata.

    Parameters
    ----------
    url
        Base URL, e.g. ``http://prometheus:9090`` (a path prefix is kept).
    http
        Credentials, TLS, timeout and retry policy.
    session
        An already configured session to use instead of ``http.session()`` (tests, proxies).
    """

    def __init__(
        self, url: str, http: HttpOptions, session: requests.Session | None = None
    ) -> None:
        self.url = url.rstrip("/")
        self.shown = redact_url(self.url)
        self.http = http
        if not self.url.startswith(("http://", "https://")):
            raise SourceUnreachable(f"{self.shown}: not an http:// or https:// URL")
        self._client = PrometheusConnect(
            url=self.url,
            session=session if session is not None else http.session(),
            retry=http.retry(),
            timeout=http.timeout,  # type: ignore[arg-type]  # float seconds work for requests
        )

    def close(self) -> None:
        """Release the connection pool."""
        self._client.close()

    def query_range(
        self, promql: str, start: float, end: float, step: float
    ) -> list[dict[str, Any]]:
        """Evaluate ``promql`` at ``start, start + step, ... <= end`` (``/api/v1/query_range``).

        Start and end go to the server with millisecond precision (the client library would
        round them to whole seconds, which shifts a chunked grid).
        """
        params = {"start": _fmt(start), "end": _fmt(end)}
        return self._call(
            f"query {promql!r}",
            lambda: self._client.custom_query_range(
                promql, _dt(start), _dt(end), step=_fmt(step), params=params
            ),
        )

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        """Evaluate ``promql`` at one instant (``/api/v1/query``)."""
        params = {"time": _fmt(at)}
        return self._call(
            f"query {promql!r}", lambda: self._client.custom_query(promql, params=params)
        )

    def metric_names(self, start: float, end: float) -> list[str]:
        """Names of the metrics with samples in ``[start, end]``."""
        params = {"start": _fmt(start), "end": _fmt(end)}
        return list(
            self._call(
                "label __name__ values",
                lambda: self._client.get_label_values("__name__", params=params),
            )
        )

    def series(self, match: str, start: float, end: float) -> list[dict[str, str]]:
        """Label sets of the series matching ``match`` in ``[start, end]``."""
        return list(
            self._call(
                f"series {match!r}",
                lambda: self._client.get_series(_dt(start), _dt(end), params={"match[]": match}),
            )
        )

    def metadata(self) -> dict[str, str]:
        """Metric name -> type (counter, gauge, histogram, ...) as the scrape targets declare.

        Empty when the server has no scrape targets (e.g. backfilled history); a server too
        old for ``/api/v1/metadata`` also gives an empty map rather than an error.
        """
        try:
            rows = self._call("metadata", lambda: self._client.get_metric_metadata(None))
        except QueryError as exc:
            log.info("%s: no metric metadata (%s)", self.shown, exc)
            return {}
        out: dict[str, str] = {}
        for row in rows:
            out.setdefault(str(row["metric_name"]), str(row.get("type", "unknown")))
        return out

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        try:
            with self._quiet_tls():
                return fn()
        except requests.exceptions.SSLError as exc:
            raise SourceUnreachable(f"{self.shown}: TLS error ({_reason(exc)})") from None
        except requests.exceptions.Timeout:
            raise SourceUnreachable(
                f"{self.shown}: no answer within {self.http.timeout:g} s"
            ) from None
        except requests.exceptions.ConnectionError as exc:
            raise SourceUnreachable(f"{self.shown}: cannot connect ({_reason(exc)})") from None
        except requests.exceptions.RetryError:
            raise SourceUnreachable(
                f"{self.shown}: still failing after {self.http.retries} retries"
            ) from None
        except requests.exceptions.JSONDecodeError:
            raise QueryError(
                f"{self.shown}: {what}: the answer is not JSON; is the URL the Prometheus "
                "base URL?"
            ) from None
        except requests.exceptions.RequestException as exc:
            raise SourceUnreachable(f"{self.shown}: {type(exc).__name__}") from None
        except PrometheusApiClientException as exc:
            status, message = _parse_status(str(exc))
            if status in _UNAVAILABLE:
                raise SourceUnreachable(
                    f"{self.shown}: unavailable (HTTP {status}) after {self.http.retries} "
                    f"retries: {message}"
                ) from None
            if status in (401, 403):
                raise QueryError(
                    f"{self.shown}: HTTP {status}, authentication refused; check the token "
                    "or basic-auth options"
                ) from None
            raise QueryError(f"{self.shown}: {what} failed (HTTP {status}): {message}") from None
        except (ValueError, KeyError, TypeError) as exc:
            # A 200 whose body is not the API's JSON: a proxy or a wrong URL path.
            raise QueryError(
                f"{self.shown}: {what}: the answer is not Prometheus API JSON "
                f"({type(exc).__name__}); is the URL the Prometheus base URL?"
            ) from None

    @contextmanager
    def _quiet_tls(self) -> Iterator[None]:
        """Silence urllib3's per-request warning when --insecure was asked for (logged once)."""
        if not self.http.insecure:
            yield
            return
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            yield


def _fmt(seconds: float) -> str:
    """Seconds with millisecond precision, the resolution Prometheus keeps."""
    return f"{round(seconds * 1000) / 1000:.3f}"


def _dt(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _parse_status(text: str) -> tuple[int | None, str]:
    """Status and Prometheus' ``error`` field from the client library's exception text."""
    m = _STATUS.search(text)
    if not m:
        return None, _one_line(text)
    status = int(m.group(1))
    body: Any = m.group(2)
    try:
        raw = ast.literal_eval(body)
        body = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
        doc = json.loads(body)
        if isinstance(doc, dict) and doc.get("error"):
            return status, _one_line(f"{doc.get('errorType', 'error')}: {doc['error']}")
    except (ValueError, SyntaxError):
        pass
    return status, _one_line(str(body)) or "no detail"


def _reason(exc: BaseException) -> str:
    text = str(exc)
    m = _ERRNO.search(text)
    if m:
        return m.group(1).strip().lower()
    if "CERTIFICATE_VERIFY_FAILED" in text:
        return "certificate verify failed"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "host name not resolved"
    return type(exc).__name__


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."

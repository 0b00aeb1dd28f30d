"""From command-line options to one ``Observations``: picks and combines the connectors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from latentcause.errors import InputError
from latentcause.observations import Observations
from latentcause.timeparse import parse_duration, parse_time

__all__ = ["load_observations"]


def load_observations(
    *,
    input: Path | None = None,
    prometheus: str | None = None,
    start: str | None = None,
    end: str | None = None,
    step: str | None = None,
    signals: Path | None = None,
    traces: Path | None = None,
    onset: str | None = None,
    components: list[str] | None = None,
    http: dict[str, Any] | None = None,
) -> Observations:
    """Read the metrics (file or Prometheus), add spans, apply onset and component filter."""
    if (input is None) == (prometheus is None):
        raise InputError("give exactly one of --input PATH or --prometheus URL")
    if input is not None:
        from latentcause.connectors.files import read_input

        obs = read_input(input)
    else:
        assert prometheus is not None
        if start is None or end is None:
            raise InputError("--prometheus needs --start and --end")
        from latentcause.connectors.http import HttpOptions
        from latentcause.connectors.prometheus import read_prometheus

        t0, t1 = parse_time(start), parse_time(end)
        if t1 <= t0:
            raise InputError(f"--end ({end}) is not after --start ({start})")
        obs = read_prometheus(
            prometheus, t0, t1,
            step=parse_duration(step) if step else None,
            signals_file=signals,
            http=HttpOptions.from_cli(**(http or {})),
        )
    if traces is not None:
        from latentcause.connectors.traces import read_traces

        obs = obs.merged(read_traces(traces))
    if onset is not None:
        obs = obs.with_onset(parse_time(onset), source="given")
    if components:
        obs = obs.restrict(components)
    return obs

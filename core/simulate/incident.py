"""One simulated incident: draw a system, inject a mechanism, simulate, observe, write.

The random streams are separate children of the seed (system, timing, traffic, process,
observation, injection, defects), so one seed gives the same system, onset and traffic for
every mechanism: two incidents that differ only in what was injected differ only by its
consequences, which is what the tests compare.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentcause.errors import InputError
from latentcause.simulate.ambiguity import (
    DESIGNS,
    apply_design,
    design_kind,
    eligible_designs,
    equivalent_set,
)
from latentcause.simulate.defects import apply_defects
from latentcause.simulate.engine import run, user_rate
from latentcause.simulate.injection import (
    MAGNITUDES,
    MECHANISMS,
    make_injection,
    profiles,
    root_utilisation,
)
from latentcause.simulate.observe import observe
from latentcause.simulate.spans import (
    SAMPLE_SHARE,
    SimulatedSpan,
    entry_rate,
    otlp_lines,
    sample_spans,
)
from latentcause.simulate.system import COMPONENTS, build_system

__all__ = ["TRACES_FILE", "SimulatedIncident", "simulate_incident", "write_incident"]

log = logging.getLogger(__name__)

#: Seconds simulated before the observed window, so queues, GC and rates are settled.
WARMUP_S = 300
_EPOCH = 1_650_000_000
_FLOAT_FORMAT = "%.7g"
#: File name of an incident's spans (OTLP JSON Lines, gzip), the argument of ``--traces``.
TRACES_FILE = "traces.json.gz"


@dataclass(frozen=True)
class SimulatedIncident:
    """A simulated incident: the observed wide frame and the ground truth.

    Attributes
    ----------
    frame
        Wide layout: ``time`` (unix s, int) and ``<component>_<signal>`` columns.
    truth
        The content of ``truth.json`` (see ``simulate_incident``).
    spans
        Head-sampled server spans of the window (``latentcause.simulate.spans``), or None
        when the incident has none (asked for none, or ambiguous by design: span latencies
        would show what the design hides).
    """

    frame: pd.DataFrame
    truth: dict[str, Any]
    spans: list[SimulatedSpan] | None = None

    @property
    def onset(self) -> int:
        """Onset in unix seconds."""
        return int(self.truth["onset"])


def simulate_incident(
    mechanism: str,
    component: str | None,
    *,
    seed: int,
    magnitude: str = "moderate",
    magnitude_value: float | None = None,
    kind: str | None = None,
    duration_s: float | None = None,
    onset_s: float | None = None,
    root_utilisation_value: float | None = None,
    window_s: int = 1500,
    step_s: int = 5,
    design: str | None = None,
    defects: Sequence[str] = (),
    spans: bool = True,
) -> SimulatedIncident:
    """Simulate one incident with a known cause.

    Parameters
    ----------
    mechanism, component
        What to inject, and where (None for ``none``).
    seed
        Seeds everything: the same arguments give the same frame and truth.
    magnitude
        ``obvious``, ``moderate`` or ``subtle``: a size relative to the root's baseline
        (``latentcause.simulate.injection``).
    magnitude_value
        Override the numeric size in the mechanism's own unit (the label is kept).
    kind
        Variant: ``hog``/``throttle`` (capacity_loss), ``ramp``/``steps`` (memory_leak),
        ``surge``/``errors`` (retry_storm trigger); drawn when None.
    duration_s
        Make the change last this long (a transient); for a retry storm, its trigger.
    onset_s
        Seconds from the window start to the onset; drawn in the middle third when None.
    root_utilisation_value
        The root's baseline utilisation; drawn (or fixed by the mechanism) when None.
    window_s, step_s
        Observed window and scrape interval, seconds.
    design
        Hide columns so that hypotheses coincide (``latentcause.simulate.ambiguity``).
    defects
        Data defects to apply: ``missing``, ``gap``, ``subset``.
    spans
        Also trace a share of the requests (``latentcause.simulate.spans``); never under a
        design.

    Returns
    -------
    SimulatedIncident
        ``truth`` holds component, mechanism, onset, magnitude, magnitude_label, ambiguous,
        equivalent (the hypotheses indistinguishable from the truth, itself included), seed
        and notes, plus kind, duration_s, parameters, design, defects, dropped_columns,
        window, the drawn system and ``traces`` (file, sampled share and span count; null
        when the incident has no spans).
    """
    if mechanism not in MECHANISMS:
        raise InputError(f"unknown mechanism {mechanism!r}; known: {', '.join(MECHANISMS)}")
    if component is not None and component not in COMPONENTS:
        raise InputError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    if magnitude not in MAGNITUDES:
        raise InputError(f"unknown magnitude {magnitude!r}; known: {', '.join(MAGNITUDES)}")
    if step_s < 1 or window_s < 20 * step_s:
        raise InputError(f"window {window_s} s with step {step_s} s: need step >= 1 and "
                         "at least 20 steps")
    if design is not None:
        if design not in DESIGNS:
            raise InputError(f"unknown design {design!r}; known: {', '.join(DESIGNS)}")
        if design not in eligible_designs(mechanism, component, magnitude):
            raise InputError(f"design {design!r} does not make {mechanism} in {component} "
                             f"({magnitude}) ambiguous")
        kind = design_kind(design, mechanism) or kind
    # The spans' stream came last, so adding it left every other stream of a seed as it was.
    (sys_ss, time_ss, user_ss, run_ss, obs_ss, inj_ss, def_ss, span_ss) = (
        np.random.SeedSequence(seed).spawn(8))
    timing = np.random.default_rng(time_ss)
    start_unix = _EPOCH + int(timing.integers(0, 365 * 86400)) // step_s * step_s
    drawn_onset = float(np.round(timing.uniform(window_s / 3.0, 2.0 * window_s / 3.0)))
    onset_rel = float(onset_s) if onset_s is not None else drawn_onset
    if not 0.0 < onset_rel < window_s:
        raise InputError(f"onset {onset_rel} s is outside the window (0, {window_s}) s")

    rho_root = root_utilisation_value
    if rho_root is None:
        rho_root = root_utilisation(mechanism, magnitude)
    system = build_system(np.random.default_rng(sys_ss), root=component, root_utilisation=rho_root)
    inj = make_injection(mechanism, component, magnitude, system, np.random.default_rng(inj_ss),
                         onset_s=onset_rel, window_s=window_s, value=magnitude_value, kind=kind,
                         duration_s=duration_s)
    seconds = WARMUP_S + window_s
    prof = profiles(inj, system, seconds, WARMUP_S)
    users = user_rate(system, start_unix - WARMUP_S, seconds, np.random.default_rng(user_ss),
                      baseline_s=WARMUP_S + int(onset_rel))
    trace = run(system, prof, users, np.random.default_rng(run_ss))
    frame = observe(system, trace, np.random.default_rng(obs_ss), warmup=WARMUP_S,
                    window_s=window_s, step_s=step_s, start_unix=start_unix)

    onset = start_unix + int(onset_rel)
    traced = None
    if spans and design is None:
        traced = sample_spans(system, trace, entry_rate(system, users, prof.extra_rate),
                              np.random.default_rng(span_ss), first_s=WARMUP_S,
                              last_s=seconds, start_unix=start_unix - WARMUP_S)
    notes = [_describe(inj, system)]
    dropped: list[str] = []
    equivalent: list[dict[str, Any]]
    if design is not None and component is not None:
        frame, dropped = apply_design(design, frame, component)
        equivalent = equivalent_set(design, component)
        notes.append(f"ambiguous by design ({design}): hidden {', '.join(dropped)}")
    else:
        equivalent = [{"component": component, "mechanism": mechanism}]
    frame, defect_notes = apply_defects(frame, tuple(defects), np.random.default_rng(def_ss),
                                        root=component, onset=float(onset))
    notes += defect_notes
    truth: dict[str, Any] = {
        "component": component,
        "mechanism": mechanism,
        "onset": onset,
        "magnitude": round(inj.magnitude, 6),
        "magnitude_label": magnitude,
        "ambiguous": len(equivalent) > 1,
        "equivalent": equivalent,
        "seed": seed,
        "notes": "; ".join(notes),
        "kind": inj.kind,
        "duration_s": inj.duration_s,
        "parameters": inj.parameters,
        "design": design,
        "defects": list(defects),
        "dropped_columns": dropped,
        "window": {"start": start_unix, "end": int(frame["time"].iloc[-1]), "step_s": step_s},
        "system": system.describe(),
        "traces": None if traced is None else {
            "file": TRACES_FILE, "sample_share": SAMPLE_SHARE, "spans": len(traced)},
    }
    return SimulatedIncident(frame=frame, truth=truth, spans=traced)


def _describe(inj: Any, system: Any) -> str:
    if inj.mechanism == "none":
        return "no fault: normal variation only (the onset is a reference time)"
    m = inj.magnitude
    if inj.mechanism == "traffic_surge":
        what = f"arrivals x {m:.2f} from a client outside the graph"
    elif inj.mechanism == "capacity_loss":
        what = f"{m:.0%} of the CPU capacity lost ({inj.kind})"
    elif inj.mechanism == "service_slowdown":
        what = f"+{m * 1000:.1f} ms per request without CPU"
    elif inj.mechanism == "error_fault":
        what = f"{m:.0%} of requests fail fast"
    elif inj.mechanism == "memory_leak":
        what = f"heap leaks {m / 1024:.0f} KiB/s ({inj.kind})"
    else:
        what = (f"callers retry up to {int(inj.parameters['retries'])} times without budget; "
                f"{inj.duration_s:.0f} s {inj.kind} trigger; offered load {m:.2f} x capacity "
                "once storming")
    rho = float(system.rho0[COMPONENTS.index(inj.component)])
    span = "" if inj.duration_s is None or inj.mechanism == "retry_storm" else (
        f" for {inj.duration_s:.0f} s")
    return f"{inj.mechanism} in {inj.component}: {what}{span}; baseline utilisation {rho:.2f}"


def write_incident(incident: SimulatedIncident, out_dir: Path) -> Path:
    """Write ``metrics.csv``, ``inject_time.txt``, ``truth.json`` (and ``traces.json.gz``).

    Each file is written beside its final name and renamed into place, so an interrupted
    run never leaves a half-written file. The folder is the RCAEval layout
    ``latentcause analyze --input`` reads, with the onset from ``inject_time.txt``; the
    spans, when the incident has them, are OTLP JSON Lines for ``--traces``.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        csv = incident.frame.to_csv(index=False, float_format=_FLOAT_FORMAT, lineterminator="\n")
        _write(out_dir / "metrics.csv", csv)
        _write(out_dir / "inject_time.txt", f"{incident.onset}\n")
        _write(out_dir / "truth.json", json.dumps(incident.truth, indent=2) + "\n")
        traces = out_dir / TRACES_FILE
        if incident.spans is not None:
            _write_bytes(traces, otlp_lines(incident.spans))
        elif traces.exists():
            traces.unlink()  # a stale file from an earlier run would be read as this one's
    except OSError as exc:
        raise InputError(f"{out_dir}: cannot write the incident: {exc.strerror or exc}") from exc
    return out_dir


def _write(path: Path, text: str) -> None:
    _write_bytes(path, text.encode())


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)

"""Command-line commands of this package, registered on the main app by ``register``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from latentcause.errors import InputError

__all__ = ["register"]

_MECHANISM = ("Mechanism to inject: none, traffic_surge, capacity_loss, service_slowdown, "
              "error_fault, memory_leak, retry_storm.")
_OUT = ("Folder to write (metrics.csv, inject_time.txt, truth.json, traces.json.gz); for a "
        "suite, one folder per incident and suite.json.")


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    app.command()(simulate)


def simulate(
    mechanism: Annotated[str | None, typer.Option(help=_MECHANISM)] = None,
    component: Annotated[
        str | None, typer.Option(help="Root component (see --list-components); not with none.")
    ] = None,
    out: Annotated[Path | None, typer.Option(help=_OUT)] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, byte-identical files.")] = 0,
    magnitude: Annotated[str, typer.Option(help="obvious, moderate or subtle.")] = "moderate",
    suite: Annotated[
        int | None, typer.Option(help="Simulate a balanced suite of this many incidents.")
    ] = None,
    window: Annotated[int, typer.Option(help="Observed window in seconds.")] = 1500,
    step: Annotated[int, typer.Option(help="Scrape interval in seconds.")] = 5,
    traces: Annotated[
        bool, typer.Option(help="Also write sampled spans (OTLP JSON, gzip) for --traces.")
    ] = True,
    list_components: Annotated[
        bool, typer.Option("--list-components", help="List the components and their calls.")
    ] = False,
) -> None:
    """Simulate incidents with known ground truth (a process simulation, not the models)."""
    from latentcause.simulate import COMPONENTS, callees, simulate_incident, simulate_suite
    from latentcause.simulate import write_incident as write

    if list_components:
        for c in COMPONENTS:
            calls = ", ".join(callees(c))
            typer.echo(f"{c}" + (f" -> {calls}" if calls else ""))
        return
    if out is None:
        raise InputError("--out DIR is required")
    if suite is not None:
        if mechanism is not None or component is not None:
            raise InputError("--suite takes no --mechanism or --component")

        def progress(done: int, total: int, folder: Path) -> None:
            typer.echo(f"simulate: [{done}/{total}] {folder.name}", err=True)

        folders = simulate_suite(suite, out, seed=seed, window_s=window, step_s=step,
                                 spans=traces, progress=progress)
        typer.echo(f"wrote {len(folders)} incidents and suite.json to {out}")
        return
    if mechanism is None:
        raise InputError("give --mechanism (or --suite N, or --list-components)")
    incident = simulate_incident(mechanism, component, seed=seed, magnitude=magnitude,
                                 window_s=window, step_s=step, spans=traces)
    write(incident, out)
    typer.echo(f"wrote {out}: {incident.truth['notes']}")

"""The ``latentcause`` command line: thin typer commands over the library.

Every ``LatentCauseError`` becomes one line on stderr and exit status 2 (see ``main``).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated

import typer

from latentcause.errors import InputError, LatentCauseError

__all__ = ["app", "main"]

log = logging.getLogger("latentcause")

app = typer.Typer(
    name="latentcause",
    help="Which component, which mechanism, and how sure: Bayesian analysis of incidents.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.command()
def analyze(
    input: Annotated[Path | None, typer.Option("--input", help="Metrics file, or a folder holding one incident.")] = None,
    prometheus: Annotated[str | None, typer.Option(help="Prometheus base URL (HTTP API).")] = None,
    start: Annotated[str | None, typer.Option(help="Window start: RFC 3339, unix s, or now-2h.")] = None,
    end: Annotated[str | None, typer.Option(help="Window end: RFC 3339, unix s, or now.")] = None,
    step: Annotated[str | None, typer.Option(help="Query resolution, e.g. 15s (default: from the window).")] = None,
    signals: Annotated[Path | None, typer.Option(help="TOML signal map (PromQL per signal).")] = None,
    traces: Annotated[Path | None, typer.Option(help="Spans: OTLP JSON or Jaeger JSON.")] = None,
    onset: Annotated[str | None, typer.Option(help="When the fault began; inferred when absent.")] = None,
    component: Annotated[list[str] | None, typer.Option(help="Restrict candidate roots (repeatable).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write report.json, report.md, report.html, posterior.nc here.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: same seed and input, same report.")] = 0,
    draws: Annotated[int, typer.Option(help="NUTS draws per chain for the leading hypothesis.")] = 500,
    p_none: Annotated[float | None, typer.Option("--p-none", help="Prior probability of no fault (default 1/7: none counts as one of seven mechanisms).")] = None,
    bearer_token_env: Annotated[str | None, typer.Option(help="Env variable holding a bearer token.")] = None,
    bearer_token_file: Annotated[Path | None, typer.Option(help="File holding a bearer token.")] = None,
    basic_auth_user: Annotated[str | None, typer.Option(help="Basic-auth user name.")] = None,
    basic_auth_password_env: Annotated[str | None, typer.Option(help="Env variable holding the basic-auth password.")] = None,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle for TLS.")] = None,
    insecure: Annotated[bool, typer.Option(help="Skip TLS verification.")] = False,
    timeout: Annotated[float, typer.Option(help="HTTP timeout in seconds.")] = 30.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors.")] = False,
) -> None:
    """Analyse one incident and report the posterior over (component, mechanism)."""
    from latentcause.loading import load_observations

    _logging(quiet)
    if out is not None:
        _check_out(out)
    if p_none is not None and not 0.0 < p_none < 1.0:
        raise InputError(f"--p-none {p_none:g}: must lie strictly between 0 and 1")
    obs = load_observations(
        input=input, prometheus=prometheus, start=start, end=end, step=step, signals=signals,
        traces=traces, onset=onset, components=component,
        http=dict(bearer_token_env=bearer_token_env, bearer_token_file=bearer_token_file,
                  basic_auth_user=basic_auth_user, basic_auth_password_env=basic_auth_password_env,
                  ca_file=ca_file, insecure=insecure, timeout=timeout),
    )
    # The engine (PyMC) is imported only once the input is known to be usable: bad input
    # fails fast, and before anything is written to --out.
    from latentcause import inference
    from latentcause.reports import summary_lines, write_outputs

    result = inference.analyze(obs, seed=seed, draws=draws, p_none=p_none)
    if out is not None:
        write_outputs(result, out)
    if not quiet:
        for line in summary_lines(result.report):
            typer.echo(line)
        if out is not None:
            typer.echo(f"wrote {out}/report.json, report.md, report.html, posterior.nc")


@app.command()
def mechanisms() -> None:
    """List the mechanism library: name, hidden state and signature of each."""
    from latentcause.models import describe_library

    typer.echo(describe_library())


def _check_out(out: Path) -> None:
    """Refuse an ``--out`` that could not be written, before any work is done."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out}: exists and is not a folder")
    ancestor = out.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise InputError(f"--out {out}: {ancestor} is not a folder")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise InputError(f"--out {out}: {ancestor} is not writable")


def _logging(quiet: bool) -> None:
    level = logging.ERROR if quiet else logging.WARNING
    if os.environ.get("LATENTCAUSE_DEBUG"):
        level = logging.DEBUG
    logging.basicConfig(level=level, format="latentcause: %(levelname)s: %(message)s")
    logging.getLogger("latentcause").setLevel(logging.INFO if not quiet else logging.ERROR)
    for noisy in ("pymc", "pytensor", "arviz", "matplotlib", "urllib3", "filelock"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    # Printed on every cold start of a pip install, and irrelevant here: the compiled graphs
    # of the models hold no matrix product (checked: no Dot, Gemv or Gemm node in any
    # role), and the small linear algebra around them is NumPy's, with NumPy's own BLAS.
    warnings.filterwarnings("ignore", message="PyTensor could not link to a BLAS",
                            category=UserWarning)


def _register_commands() -> None:
    """Commands that live beside their library code (reports, simulator, store, signals)."""
    from latentcause.reports.commands import register as reports
    from latentcause.simulate.commands import register as simulate
    from latentcause.source_commands import register as connectors
    from latentcause.store.commands import register as store

    for register in (connectors, reports, simulate, store):
        register(app)


_register_commands()


def main() -> None:
    """Entry point: run the app, turning LatentCauseError into one line and exit 2."""
    try:
        app()
    except LatentCauseError as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        sys.stderr.write(f"latentcause: error: {msg}\n")
        sys.exit(2)
    except KeyboardInterrupt:
        sys.stderr.write("latentcause: interrupted\n")
        sys.exit(130)

"""Command-line commands of the source connectors, registered on the main app by ``register``.

``latentcause signals`` shows what ``analyze --prometheus`` would read: the preset families
detected (or the ``--signals`` file), the component label, the PromQL per signal, and the
components and signals that the window actually holds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["register"]



def signals(
    prometheus: Annotated[str, typer.Option(help="Prometheus base URL (HTTP API).")],
    start: Annotated[str, typer.Option(help="Window start: RFC 3339, unix s, now-2h.")] = "now-1h",
    end: Annotated[str, typer.Option(help="Window end: RFC 3339, unix s, or now.")] = "now",
    step: Annotated[str | None, typer.Option(help="Resolution, e.g. 15s.")] = None,
    signals: Annotated[Path | None, typer.Option(help="TOML signal map.")] = None,
    bearer_token_env: Annotated[str | None, typer.Option(help="Env var with a token.")] = None,
    bearer_token_file: Annotated[Path | None, typer.Option(help="File with a token.")] = None,
    basic_auth_user: Annotated[str | None, typer.Option(help="Basic-auth user.")] = None,
    basic_auth_password_env: Annotated[
        str | None, typer.Option(help="Env var with the basic-auth password.")
    ] = None,
    ca_file: Annotated[Path | None, typer.Option(help="CA bundle for TLS.")] = None,
    insecure: Annotated[bool, typer.Option(help="Skip TLS verification.")] = False,
    timeout: Annotated[float, typer.Option(help="HTTP timeout in seconds.")] = 30.0,
) -> None:
    """Show the PromQL per signal, the component label and the components found."""
    from latentcause.connectors.http import HttpOptions
    from latentcause.connectors.prometheus import describe_prometheus
    from latentcause.errors import InputError
    from latentcause.timeparse import parse_duration, parse_time

    t0, t1 = parse_time(start), parse_time(end)
    if t1 <= t0:
        raise InputError(f"--end ({end}) is not after --start ({start})")
    http = HttpOptions.from_cli(
        bearer_token_env=bearer_token_env, bearer_token_file=bearer_token_file,
        basic_auth_user=basic_auth_user, basic_auth_password_env=basic_auth_password_env,
        ca_file=ca_file, insecure=insecure, timeout=timeout,
    )
    lines = describe_prometheus(
        prometheus, t0, t1, step=parse_duration(step) if step else None,
        signals_file=signals, http=http,
    )
    for line in lines:
        typer.echo(line)


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""
    app.command(name="signals")(signals)

"""Commands of the reports package: ``latentcause report`` and ``latentcause attach``."""

from __future__ import annotations

import logging
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["ReportFormat", "register"]

log = logging.getLogger(__name__)


class ReportFormat(StrEnum):
    """Output formats of ``latentcause report``."""

    md = "md"
    html = "html"
    json = "json"


DirArg = Annotated[Path, typer.Argument(metavar="DIR", help="A folder written by analyze --out.")]
FormatOpt = Annotated[ReportFormat, typer.Option("--format", help="Output format.")]
OutOpt = Annotated[Path | None, typer.Option("--out", help="Write to FILE instead of stdout.")]
PostmortemOpt = Annotated[
    Path, typer.Option("--postmortem", metavar="FILE.md", help="The postmortem document.")
]
ReportOpt = Annotated[
    Path, typer.Option("--report", metavar="DIR", help="A result folder (or its report.md).")
]


def report(directory: DirArg, format: FormatOpt = ReportFormat.md, out: OutOpt = None) -> None:
    """Render a saved result again, without re-sampling (checks versions and hashes)."""
    from latentcause.reports import dump_report_json, load_result, render_html, render_markdown
    from latentcause.reports._atomic import atomic_write_bytes

    saved = load_result(directory)
    if format is ReportFormat.json:
        text = dump_report_json(saved.report)
    elif format is ReportFormat.html:
        text = render_html(saved.report, saved.idata)
    else:
        text = render_markdown(saved.report, saved.idata)
    if out is None:
        typer.echo(text, nl=False)
    else:
        atomic_write_bytes(out, text.encode("utf-8"))
        log.info("wrote %s", out)


def attach(postmortem: PostmortemOpt, report_dir: ReportOpt) -> None:
    """Put a report into a postmortem between latentcause markers (idempotent; keeps FILE.bak)."""
    from latentcause.reports import attach_report

    backup = attach_report(postmortem, report_dir)
    typer.echo(f"attached {report_dir} to {postmortem} (previous version: {backup})")


def register(app: typer.Typer) -> None:
    """Add ``report`` and ``attach`` to the main app."""
    app.command("report")(report)
    app.command("attach")(attach)

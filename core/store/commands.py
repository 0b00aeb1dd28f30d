"""Command-line commands of the store: ``incidents add|list|show`` and ``reanalyze``.

Thin typer commands over ``latentcause.store``; every ``LatentCauseError`` they raise becomes
one stderr line and exit 2 in ``latentcause.cli.main``. ``reanalyze`` exits 1 when some
incident failed (the others are still done).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from latentcause.errors import InputError, StoreError

__all__ = ["register"]

log = logging.getLogger(__name__)

incidents_app = typer.Typer(
    help="The incident store: one TOML spec per incident, its results beside it.",
    no_args_is_help=True,
)

StoreOption = Annotated[
    Path | None,
    typer.Option("--store", envvar="LATENTCAUSE_STORE", show_envvar=True,
                 help="Store folder (default ./incidents)."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@incidents_app.command("add")
def add(
    incident_id: Annotated[str, typer.Argument(metavar="ID", help="Folder name of the incident.")],
    input: Annotated[Path | None, typer.Option("--input", help="Metrics file or incident folder.")] = None,  # noqa: E501
    prometheus: Annotated[str | None, typer.Option(help="Prometheus base URL.")] = None,
    start: Annotated[str | None, typer.Option(help="Window start (absolute: RFC 3339 or unix s).")] = None,  # noqa: E501
    end: Annotated[str | None, typer.Option(help="Window end (absolute).")] = None,
    step: Annotated[str | None, typer.Option(help="Query resolution, e.g. 15s.")] = None,
    signals: Annotated[Path | None, typer.Option(help="TOML signal map for Prometheus.")] = None,
    traces: Annotated[Path | None, typer.Option(help="Spans: OTLP JSON or Jaeger JSON.")] = None,
    title: Annotated[str, typer.Option(help="One-line title.")] = "",
    onset: Annotated[str | None, typer.Option(help="When the fault began (absolute).")] = None,
    component: Annotated[list[str] | None, typer.Option(help="Candidate root (repeatable).")] = None,  # noqa: E501
    tag: Annotated[list[str] | None, typer.Option(help="Tag (repeatable).")] = None,
    postmortem: Annotated[Path | None, typer.Option(help="Postmortem document for --attach.")] = None,  # noqa: E501
    seed: Annotated[int, typer.Option(help="Random seed of the analysis.")] = 0,
    draws: Annotated[int | None, typer.Option(help="NUTS draws per chain (default: the analysis').")] = None,  # noqa: E501
    copy: Annotated[bool, typer.Option("--copy", help="Copy the --input data into the incident folder.")] = False,  # noqa: E501
    replace: Annotated[bool, typer.Option("--replace", help="Overwrite an existing spec.")] = False,  # noqa: E501
    store: StoreOption = None,
) -> None:
    """Add an incident to the store (writes <store>/<ID>/incident.toml)."""
    from latentcause.store import Store
    from latentcause.store._spec import parse_spec

    st = Store.at(store)
    spec_path = st.spec_path(incident_id)
    if (input is None) == (prometheus is None):
        raise InputError("give exactly one of --input PATH or --prometheus URL")
    doc: dict[str, Any] = {"id": incident_id, "title": title, "tags": list(tag or []),
                           "seed": seed}
    if input is not None:
        if not input.exists():
            raise InputError(f"--input {input}: no such file or folder")
        if copy:
            target = spec_path.parent / "data" / input.name
            if target.exists() and not replace:
                raise StoreError(f"{target}: exists; use --replace")
            target.parent.mkdir(parents=True, exist_ok=True)
            if input.is_dir():
                shutil.copytree(input, target, dirs_exist_ok=True)
            else:
                shutil.copy2(input, target)
            doc["source"] = {"type": "file", "path": f"data/{input.name}"}
        else:
            doc["source"] = {"type": "file", "path": _spec_relative(input, spec_path, st.root)}
    else:
        if start is None or end is None:
            raise InputError("--prometheus needs --start and --end")
        doc["source"] = {"type": "prometheus", "url": prometheus, "start": start, "end": end}
        if step is not None:
            doc["source"]["step"] = step
        if signals is not None:
            doc["source"]["signals"] = _spec_relative(signals, spec_path, st.root)
    for key, value in (("onset", onset), ("draws", draws)):
        if value is not None:
            doc[key] = value
    if component:
        doc["components"] = list(component)
    if traces is not None:
        doc["traces"] = _spec_relative(traces, spec_path, st.root)
    if postmortem is not None:
        doc["postmortem"] = _spec_relative(postmortem, spec_path, st.root)
    spec = parse_spec(doc, spec_path)
    path = st.add(spec, replace=replace)
    typer.echo(f"added {incident_id}: {path}")


@incidents_app.command("list")
def list_incidents(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List incidents: title, last result (leader and probability) and whether it is stale."""
    rows = [_incident_row(st_id, st) for st, st_id in _each(store)]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo("no incidents")
        return
    table = [("ID", "TITLE", "LAST RESULT", "STALE")]
    for r in rows:
        last = r["leader_text"] or "-"
        stale = "yes: " + "; ".join(r["stale_reasons"]) if r["stale"] else "no"
        if r["error"]:
            last, stale = "-", f"invalid spec: {r['error']}"
        table.append((r["id"], r["title"] or "", last, stale))
    widths = [max(len(row[i]) for row in table) for i in range(3)]
    for row in table:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row[:3], widths, strict=True))
                   + "  " + row[3])


@incidents_app.command("show")
def show(
    incident_id: Annotated[str, typer.Argument(metavar="ID")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show one incident: its spec, staleness and result history with what changed."""
    from latentcause.store import Store, describe_changes, hypothesis_label, leader

    st = Store.at(store)
    spec = st.load(incident_id)
    row = _incident_row(incident_id, st)
    history = []
    for res in st.history(incident_id):
        item: dict[str, Any] = {"result": res.name, "path": str(res.path)}
        try:
            stamp, report = res.stamp(), res.report()
        except StoreError as exc:
            item["error"] = str(exc)
        else:
            item.update(finished=stamp.get("finished"), model_version=stamp.get("model_version"),
                        leader=leader(report), changes=res.changes())
        history.append(item)
    if as_json:
        typer.echo(json.dumps({**row, "spec": spec.to_toml(), "history": history}, indent=2))
        return
    typer.echo(f"{spec.id}: {spec.title}" if spec.title else spec.id)
    typer.echo(f"  spec:    {spec.path}")
    src = spec.source.to_toml()
    typer.echo("  source:  " + ", ".join(f"{k}={v}" for k, v in src.items()))
    for label, value in (("onset", spec.onset), ("postmortem", spec.postmortem)):
        if value:
            typer.echo(f"  {label}:".ljust(11) + str(value))
    if spec.components:
        typer.echo(f"  components: {', '.join(spec.components)}")
    if spec.tags:
        typer.echo(f"  tags:    {', '.join(spec.tags)}")
    typer.echo(f"  seed:    {spec.seed}" + (f", draws {spec.draws}" if spec.draws else ""))
    typer.echo("  stale:   " + ("yes: " + "; ".join(row["stale_reasons"]) if row["stale"]
                                else "no"))
    typer.echo(f"  results: {len(history)}")
    for item in history:
        if "error" in item:
            typer.echo(f"    {item['result']}  unreadable: {item['error']}")
            continue
        lead = item["leader"]
        head = f"{hypothesis_label(lead)} (p = {lead['probability']:.2f})" if lead else "-"
        line = describe_changes(item["changes"]) if item["changes"] else head
        mark = "*" if item["result"] == row["latest"] else " "
        typer.echo(f"  {mark} {item['result']}  model {item['model_version']}  {line}")


def reanalyze_command(
    store: StoreOption = None,
    all_: Annotated[bool, typer.Option("--all", help="Rerun every incident.")] = False,
    since: Annotated[str | None, typer.Option(help="Rerun incidents that happened since DATE (YYYY-MM-DD or RFC 3339).")] = None,  # noqa: E501
    incident: Annotated[list[str] | None, typer.Option("--id", help="Rerun this incident (repeatable).")] = None,  # noqa: E501
    attach: Annotated[bool, typer.Option("--attach", help="Refresh the report in each incident's postmortem.")] = False,  # noqa: E501
    executor: Annotated[str, typer.Option(help="local, inline, dask://HOST:PORT or a Dask scheduler file.")] = "local",  # noqa: E501
    workers: Annotated[int | None, typer.Option(help="Local pool size (default 2).")] = None,
    threshold: Annotated[float, typer.Option(help="Leader probability move reported as a change.")] = 0.1,  # noqa: E501
    wait: Annotated[bool, typer.Option("--wait", help="Wait for incidents locked by another run instead of skipping them.")] = False,  # noqa: E501
    return_artefacts: Annotated[bool, typer.Option("--return-artefacts", help="Workers send the result files back instead of writing to a shared store.")] = False,  # noqa: E501
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Only errors and the summary.")] = False,  # noqa: E501
) -> None:
    """Rerun incidents whose model, model config, data or spec changed since their last result.

    Each run adds a new result folder (history is kept), records what changed in
    changes.json and a line per incident in <store>/reanalysis.log. Exit status 1 when some
    incident failed. Safe to run from cron: incidents are locked, reruns are idempotent.
    """
    from latentcause.store import Store, parse_since, reanalyze

    tty = sys.stderr.isatty() and not quiet
    _setup_logging(quiet=quiet, plain=not tty)
    st = Store.at(store)
    reporter = _CliReporter(tty=tty, quiet=quiet)
    try:
        summary = reanalyze(
            st, select_all=all_, since=parse_since(since) if since is not None else None,
            ids=list(incident or []), executor=executor, workers=workers, threshold=threshold,
            attach=attach, wait=wait, return_artefacts=return_artefacts, reporter=reporter,
        )
    finally:
        reporter.close()
    if summary.planned or summary.outcomes:
        parts = [f"{summary.count('done')} done", f"{len(summary.failed)} failed"]
        for status in ("skipped", "fresh"):
            if summary.count(status):
                parts.append(f"{summary.count(status)} {status}")
        typer.echo(", ".join(parts))
    raise typer.Exit(summary.exit_status)


class _CliReporter:
    """Plan and outcomes on stdout; a progress bar on a terminal, log lines otherwise."""

    def __init__(self, *, tty: bool, quiet: bool) -> None:
        self.tty, self.quiet = tty, quiet
        self._progress: Any = None
        self._task: Any = None

    def planned(self, items: Sequence[Any], forced: bool) -> None:
        n = len(items)
        noun = "incident" if n == 1 else "incidents"
        typer.echo(f"{n} {noun} {'selected' if forced else 'stale'}")
        for item in items:
            log.info("%s: %s", item.incident, "; ".join(item.reasons))
        if self.tty and n:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._progress = Progress(
                TextColumn("reanalysing"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=Console(stderr=True), transient=True,
                redirect_stdout=sys.stdout.isatty(), redirect_stderr=False)
            self._progress.start()
            self._task = self._progress.add_task("reanalyse", total=n)

    def finished(self, outcome: Any) -> None:
        from latentcause.store import describe_changes

        if outcome.status == "done":
            line = describe_changes(outcome.changes or {})
            if outcome.error:
                line += f"; {outcome.error}"
        elif outcome.status == "failed":
            line = f"failed: {outcome.error}"
        else:
            line = f"{outcome.status} ({outcome.note})" if outcome.note else outcome.status
        if not self.quiet or not outcome.ok:
            # sys.stdout looked up now: while the bar is drawn, rich proxies it above the bar
            sys.stdout.write(f"{outcome.incident}: {line}\n")
            sys.stdout.flush()
        if self._progress is not None:
            self._progress.advance(self._task)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _each(store: Path | None) -> list[tuple[Any, str]]:
    from latentcause.store import Store

    st = Store.at(store)
    return [(st, incident_id) for incident_id in st.ids()]


def _incident_row(incident_id: str, st: Any) -> dict[str, Any]:
    """Return the list/show summary of one incident (spec errors reported, not raised)."""
    from latentcause.store import hypothesis_label, incident_stale_reasons, leader

    row: dict[str, Any] = {"id": incident_id, "title": None, "latest": None, "leader": None,
                           "leader_text": None, "stale": None, "stale_reasons": [],
                           "error": None}
    try:
        spec = st.load(incident_id)
    except StoreError as exc:
        row["error"] = str(exc)
        return row
    row["title"] = spec.title
    latest = st.latest(incident_id)
    if latest is not None:
        row["latest"] = latest.name
        try:
            lead = leader(latest.report())
        except StoreError:
            lead = None
        if lead is not None:
            row["leader"] = lead
            row["leader_text"] = f"{hypothesis_label(lead)} (p = {lead['probability']:.2f})"
    reasons = incident_stale_reasons(spec, latest, _identity)
    row["stale"], row["stale_reasons"] = bool(reasons), reasons
    return row


@functools.cache
def _identity() -> Any:
    """Return the current model identity, computed once per command (it imports the engine)."""
    from latentcause.store import current_identity

    return current_identity()


def _spec_relative(path: Path, spec_path: Path, store_root: Path) -> str:
    """Write a path into a spec: relative to the spec when inside the store, else absolute."""
    target = path.expanduser().resolve()
    root = store_root.resolve()
    if target == root or root in target.parents:
        return Path(os.path.relpath(target, spec_path.parent.resolve())).as_posix()
    return str(target)


def _setup_logging(*, quiet: bool, plain: bool) -> None:
    """Log to stderr: INFO lines of latentcause when not drawing a progress bar."""
    level = logging.ERROR if quiet else logging.INFO if plain else logging.WARNING
    if os.environ.get("LATENTCAUSE_DEBUG"):
        level = logging.DEBUG
    logging.basicConfig(level=logging.WARNING,
                        format="latentcause: %(levelname)s: %(message)s")
    logging.getLogger("latentcause").setLevel(level)
    for noisy in ("pymc", "pytensor", "arviz", "matplotlib", "urllib3", "filelock",
                  "distributed", "tornado"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def register(app: typer.Typer) -> None:
    """Add ``incidents`` and ``reanalyze`` to the main app."""
    app.add_typer(incidents_app, name="incidents")
    app.command("reanalyze")(reanalyze_command)

"""Write a result's files into ``--out`` all at once, or not at all.

Everything is rendered into a temporary folder beside the target first; only when every
file exists does it move in (``os.replace``, same file system). A failure anywhere before
that leaves the target as it was: absent, or holding the previous run's files intact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from latentcause.errors import ArtifactError, InputError
from latentcause.reports._atomic import default_mode
from latentcause.reports._html import render_html
from latentcause.reports._markdown import render_markdown
from latentcause.reports._netcdf import load_posterior, save_posterior

__all__ = ["FILES", "ResultLike", "dump_report_json", "write_outputs"]

log = logging.getLogger(__name__)

#: The files of a result folder, in the order they are moved in: report.json last, so a
#: reader that finds the new report.json finds the new files beside it.
FILES = ("posterior.nc", "report.md", "report.html", "report.json")


class ResultLike(Protocol):
    """What the reports need of an analysis result (``latentcause.inference.AnalysisResult``)."""

    @property
    def report(self) -> Mapping[str, Any]:
        """report.json content."""
        ...

    @property
    def idata(self) -> Any:
        """``arviz.InferenceData`` of the leading hypothesis, or None."""
        ...


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and arrays, which the engine may leave in a report."""
    for attr in ("item", "tolist"):
        if hasattr(value, attr):
            return getattr(value, attr)()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dump_report_json(report: Mapping[str, Any]) -> str:
    """report.json text: indent 2, keys in the report's own (contract) order, final newline.

    Non-finite numbers are refused: ``NaN`` is not JSON, and a reader of the contract
    (``check_report.py``, dashboards) would choke on it.
    """
    try:
        text = json.dumps(
            report, indent=2, ensure_ascii=False, allow_nan=False, default=_plain
        )
    except ValueError as exc:
        raise ArtifactError(f"report.json would hold a non-finite number: {exc}") from None
    except TypeError as exc:
        raise ArtifactError(f"report.json would hold a value that is not JSON: {exc}") from None
    return text + "\n"


def _render_into(folder: Path, result: ResultLike) -> list[str]:
    """Write every file of ``result`` into ``folder``; return their names."""
    text = dump_report_json(result.report)
    # Render from the report as it will be read back, so `latentcause report` reproduces
    # these files byte for byte.
    report = json.loads(text)
    (folder / "report.json").write_text(text, encoding="utf-8")
    names = ["report.json"]
    idata = result.idata
    if idata is not None:
        save_posterior(idata, folder / "posterior.nc")
        idata = load_posterior(folder / "posterior.nc", report)
        names.append("posterior.nc")
    (folder / "report.md").write_text(render_markdown(report, idata), encoding="utf-8")
    (folder / "report.html").write_text(render_html(report, idata), encoding="utf-8")
    names += ["report.md", "report.html"]
    return [n for n in FILES if n in names]


def write_outputs(result: ResultLike, out_dir: Path) -> list[Path]:
    """Write report.json, report.md, report.html and posterior.nc (when idata is not None).

    Parameters
    ----------
    result
        Any object with ``report`` (report.json content) and ``idata`` attributes.
    out_dir
        The result folder; created (with parents) when missing. Files of a previous run
        are replaced; a stale posterior.nc is removed when this result has none.

    Returns
    -------
    list of Path
        The files written, in ``out_dir``.

    Raises
    ------
    InputError
        ``out_dir`` exists and is not a folder, or cannot be written.
    ArtifactError
        The report or posterior cannot be serialised (non-finite number, missing provenance).
    """
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a folder")
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    except OSError as exc:
        raise InputError(f"--out {out_dir}: cannot write there: {exc.strerror}") from None
    try:
        names = _render_into(tmp, result)
        if not out_dir.exists():
            os.chmod(tmp, default_mode(folder=True))
            try:
                os.rename(tmp, out_dir)
                log.info("wrote %s", out_dir)
                return [out_dir / n for n in names]
            except OSError:
                out_dir.mkdir(exist_ok=True)  # created meanwhile: fall back to file moves
        for name in names:
            os.replace(tmp / name, out_dir / name)
        if "posterior.nc" not in names:
            with contextlib.suppress(FileNotFoundError):
                (out_dir / "posterior.nc").unlink()
        log.info("wrote %s", out_dir)
        return [out_dir / n for n in names]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

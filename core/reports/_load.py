"""Read a saved result folder back: report.json and, when present, posterior.nc."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from latentcause.errors import InputError
from latentcause.reports._netcdf import load_posterior, read_report

__all__ = ["SavedResult", "load_result"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SavedResult:
    """A result read from disk: the same two attributes as an analysis result."""

    report: dict[str, Any]
    idata: Any


def load_result(directory: Path) -> SavedResult:
    """Read ``directory``'s report.json and posterior.nc, checking that they belong together.

    A folder without posterior.nc (a result without a posterior) gives ``idata=None``; a
    posterior whose version, configuration hash, data hash or seed differ from the report
    or from the running model version raises ``ArtifactError``.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: no such result folder")
    report = read_report(directory / "report.json")
    nc = directory / "posterior.nc"
    idata = load_posterior(nc, report) if nc.exists() else None
    if idata is None:
        log.info("%s: no posterior.nc; rendering without the posterior's plots", directory)
    return SavedResult(report, idata)

"""posterior.nc: save the InferenceData with its provenance, and refuse a mismatched one.

A saved posterior is only meaningful beside the report.json it came from and under the
model code that produced it. Its root attributes (docs/ARTEFACTS.md) carry the latentcause
version, the model version, the configuration hash, the data hash and the seed; loading
compares them with the report beside it and with the running ``MODEL_VERSION`` and raises
``ArtifactError`` on any difference, so a report is never re-rendered from another run's
posterior or read with model code that would interpret its parameters differently.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from latentcause.errors import ArtifactError, InputError
from latentcause.reports._format import as_mapping

if TYPE_CHECKING:
    from arviz import InferenceData

__all__ = [
    "REQUIRED_ATTRS",
    "check_posterior",
    "load_posterior",
    "read_report",
    "running_model_version",
    "save_posterior",
]

log = logging.getLogger(__name__)

#: Root attributes a posterior.nc must carry (docs/ARTEFACTS.md).
REQUIRED_ATTRS = ("latentcause_version", "model_version", "config_sha256", "data_sha256")

#: netCDF4 is the declared dependency; HDF5 files it writes are readable by h5netcdf too.
ENGINE = "netcdf4"

#: (posterior attribute, provenance key in report.json) pairs that must agree.
_AGAINST_REPORT = (
    ("latentcause_version", "version"),
    ("model_version", "model_version"),
    ("data_sha256", "data_sha256"),
    ("config_sha256", "model_config_sha256"),
    ("seed", "seed"),
)


def running_model_version() -> str:
    """``latentcause.models.MODEL_VERSION``, or ``"unknown"`` when the models do not define it.

    Imported lazily: the models pull in PyMC, which re-rendering a report does not need
    otherwise.
    """
    try:
        models = importlib.import_module("latentcause.models")
    except ImportError:
        return "unknown"
    return str(getattr(models, "MODEL_VERSION", "unknown"))


def _short(value: object) -> str:
    text = str(value)
    return text[:12] + "…" if len(text) > 16 else text


def check_posterior(attrs: Mapping[str, Any], report: Mapping[str, Any], what: str) -> None:
    """Raise ArtifactError unless ``attrs`` match ``report`` and the running model version.

    A comparison is skipped only when the report lacks an optional field (the model
    configuration hash is an addition to the contract); a missing attribute is an error.
    """
    missing = [k for k in REQUIRED_ATTRS if k not in attrs]
    if missing:
        raise ArtifactError(
            f"{what} lacks the attribute {missing[0]}: it was not written by latentcause"
        )
    running = running_model_version()
    if str(attrs["model_version"]) != running:
        raise ArtifactError(
            f"{what} was made by model version {attrs['model_version']}, this latentcause has "
            f"{running}: re-run the analysis"
        )
    prov = as_mapping(report.get("provenance"))
    for attr, key in _AGAINST_REPORT:
        if key not in prov or prov[key] is None or attr not in attrs:
            continue
        if str(attrs[attr]) != str(prov[key]):
            raise ArtifactError(
                f"{what} does not belong to its report.json: {attr} is {_short(attrs[attr])} "
                f"in the posterior but {_short(prov[key])} in the report"
            )


def read_report(path: Path) -> dict[str, Any]:
    """Read a report.json, refusing files that are not a schema-"1" report."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such report (run latentcause analyze --out first)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read: {exc}") from None
    try:
        report = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(report, dict):
        raise ArtifactError(f"{path}: not a report (the top level is not an object)")
    if report.get("schema_version") != "1":
        raise ArtifactError(
            f"{path}: schema_version {report.get('schema_version')!r} is not the \"1\" "
            "this latentcause reads"
        )
    return report


def save_posterior(idata: InferenceData, path: Path) -> Path:
    """Write ``idata`` to ``path`` as netCDF after checking it carries its provenance.

    Refusing to write a posterior without the attributes keeps every saved file checkable
    on load; a missing attribute is a bug in whoever built the InferenceData.
    """
    attrs = dict(getattr(idata, "attrs", None) or {})
    for key in REQUIRED_ATTRS:
        value = attrs.get(key)
        if value is None or str(value) == "":
            raise ArtifactError(f"cannot save the posterior: attribute {key} is missing or empty")
    path = Path(path)
    try:
        idata.to_netcdf(str(path), engine=ENGINE)
    except (OSError, ValueError, TypeError) as exc:
        raise ArtifactError(f"cannot write {path}: {exc}".splitlines()[0]) from exc
    log.debug("wrote %s", path)
    return path


def load_posterior(path: Path, report: Mapping[str, Any] | None = None) -> InferenceData:
    """Read a posterior.nc and check it against its report and the running model version.

    Parameters
    ----------
    path
        The netCDF file written by ``save_posterior``.
    report
        The report it must match; when None, the report.json in the same folder is read.

    Returns
    -------
    arviz.InferenceData
        Loaded fully into memory (the file is closed on return, so it may be replaced).

    Raises
    ------
    InputError
        The file does not exist.
    ArtifactError
        It cannot be read, or its version, configuration hash, data hash or seed differ.
    """
    import arviz as az

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such posterior file")
    if report is None:
        report = read_report(path.parent / "report.json")
    try:
        with az.rc_context({"data.load": "eager"}):
            idata = az.from_netcdf(str(path), engine=ENGINE)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: not a readable posterior: {exc}".splitlines()[0]) from exc
    check_posterior(dict(idata.attrs or {}), report, path.name)
    return idata

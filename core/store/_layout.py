"""The store on disk: incident folders, their result history, locks and the reanalysis log.

Layout (plain files, friendly to git and to people)::

    <store>/
      reanalysis.log                  JSON lines, one per incident processed by a run
      .locks/<id>.lock                one lock per incident (keep out of version control)
      <id>/incident.toml              the spec
      <id>/results/<UTC time>-<hash>/ report.json, report.md, report.html, posterior.nc,
                                      stamp.json, changes.json
      <id>/results/latest             text: the name of the newest result folder

A result folder is written as ``results/.tmp-*`` and renamed into place only once complete,
and ``latest`` is replaced atomically afterwards, so a run killed at any point leaves every
finished result intact and no partial folder among the results (leftover ``.tmp-*`` folders
are removed by the next run that locks the incident). The hash in a result folder's name is
that of its report.json without timing fields: two results with the same hash are identical.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from filelock import FileLock

from latentcause.errors import StoreError
from latentcause.store._changes import DEFAULT_THRESHOLD, compare_reports
from latentcause.store._spec import SPEC_NAME, IncidentSpec, load_spec, validate_id, write_spec
from latentcause.store._stamp import STAMP_NAME

__all__ = [
    "CHANGES_NAME",
    "DEFAULT_STORE",
    "ENV_STORE",
    "LATEST_NAME",
    "LOG_NAME",
    "TIMING_FIELDS",
    "Store",
    "StoredResult",
    "comparable_report",
    "report_digest",
    "staging_path",
    "write_json_atomic",
]

log = logging.getLogger(__name__)

#: Store used when neither ``--store`` nor ``$LATENTCAUSE_STORE`` is given.
DEFAULT_STORE = Path("incidents")
#: Environment variable naming the store.
ENV_STORE = "LATENTCAUSE_STORE"
LATEST_NAME = "latest"
CHANGES_NAME = "changes.json"
LOG_NAME = "reanalysis.log"
#: Fields of report.json that measure wall time and so differ between identical analyses.
TIMING_FIELDS = ("timing_s",)
_RESULTS = "results"
_STAGING = ".tmp-"
_LOCKS = ".locks"


def comparable_report(report: Mapping[str, Any]) -> dict[str, Any]:
    """Return report.json without its timing fields: what must match between two runs."""
    return {k: v for k, v in report.items() if k not in TIMING_FIELDS}


def report_digest(report: Mapping[str, Any]) -> str:
    """Return the sha256 of the comparable report as canonical JSON."""
    text = json.dumps(comparable_report(report), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class StoredResult:
    """One complete result folder of an incident."""

    incident: str
    path: Path

    @property
    def name(self) -> str:
        """Folder name: ``<UTC time>-<short hash>``."""
        return self.path.name

    def stamp(self) -> dict[str, Any]:
        """Return stamp.json (what the result was computed with)."""
        return _read_json(self.path / STAMP_NAME)

    def report(self) -> dict[str, Any]:
        """Return report.json."""
        return _read_json(self.path / "report.json")

    def changes(self) -> dict[str, Any] | None:
        """Return changes.json, or None for results written before it existed."""
        p = self.path / CHANGES_NAME
        return _read_json(p) if p.is_file() else None


class Store:
    """An incident store rooted at a folder (created on first write)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def at(cls, root: Path | None = None) -> Store:
        """Return the store at ``root``, else ``$LATENTCAUSE_STORE``, else ``./incidents``."""
        if root is None:
            env = os.environ.get(ENV_STORE)
            root = Path(env) if env else DEFAULT_STORE
        if root.exists() and not root.is_dir():
            raise StoreError(f"store {root}: exists and is not a folder")
        return cls(root)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- incidents ---------------------------------------------------------------------

    def incident_dir(self, incident_id: str) -> Path:
        """Return the folder of an incident."""
        return self.root / validate_id(incident_id)

    def spec_path(self, incident_id: str) -> Path:
        """Return the path of an incident's spec."""
        return self.incident_dir(incident_id) / SPEC_NAME

    def results_dir(self, incident_id: str) -> Path:
        """Return the folder holding an incident's result history."""
        return self.incident_dir(incident_id) / _RESULTS

    @property
    def log_path(self) -> Path:
        """Return the path of the reanalysis log (JSON lines)."""
        return self.root / LOG_NAME

    def ids(self) -> list[str]:
        """Return the ids of every incident in the store, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and (p / SPEC_NAME).is_file())

    def load(self, incident_id: str) -> IncidentSpec:
        """Read and validate an incident's spec."""
        path = self.spec_path(incident_id)
        if not path.is_file():
            raise StoreError(f"no incident {incident_id!r} in store {self.root}")
        return load_spec(path)

    def add(self, spec: IncidentSpec, *, replace: bool = False) -> Path:
        """Write a new incident's spec; refuse to overwrite one unless ``replace``."""
        if spec.path != self.spec_path(spec.id):
            raise StoreError(f"spec of {spec.id!r} must live at {self.spec_path(spec.id)}")
        if spec.path.exists() and not replace:
            raise StoreError(f"incident {spec.id!r} already exists in store {self.root}")
        return write_spec(spec)

    # -- results -----------------------------------------------------------------------

    def history(self, incident_id: str) -> list[StoredResult]:
        """Return the complete results of an incident, oldest first."""
        d = self.results_dir(incident_id)
        if not d.is_dir():
            return []
        return [StoredResult(incident_id, p) for p in sorted(d.iterdir())
                if p.is_dir() and not p.name.startswith(".") and (p / STAMP_NAME).is_file()]

    def latest(self, incident_id: str) -> StoredResult | None:
        """Return the result named by ``results/latest`` (or the newest one if it is missing)."""
        d = self.results_dir(incident_id)
        pointer = d / LATEST_NAME
        if pointer.is_file():
            name = pointer.read_text(encoding="utf-8").strip()
            if name and "/" not in name and (d / name / STAMP_NAME).is_file():
                return StoredResult(incident_id, d / name)
            log.warning("%s names %r, which is not a complete result; using the newest",
                        pointer, name)
        history = self.history(incident_id)
        return history[-1] if history else None

    def new_staging_dir(self, incident_id: str) -> Path:
        """Return a fresh path under results/ to write a result into before committing it."""
        return staging_path(self.results_dir(incident_id))

    def clean_staging(self, incident_id: str) -> int:
        """Remove leftovers of interrupted runs; call only while holding the incident's lock."""
        d = self.results_dir(incident_id)
        if not d.is_dir():
            return 0
        # Every dot-entry of results/ is transient: our staging folders, the writer's own
        # temp folders and half-written ``latest`` pointers.
        leftovers = [p for p in d.iterdir() if p.name.startswith(".")]
        for p in leftovers:
            log.info("%s: removing %s left by an interrupted run", incident_id, p.name)
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return len(leftovers)

    def commit(
        self,
        incident_id: str,
        staged: Path,
        *,
        threshold: float = DEFAULT_THRESHOLD,
        reasons: Sequence[str] = (),
    ) -> tuple[StoredResult, dict[str, Any]]:
        """Move a complete staged result into the history and point ``latest`` at it.

        Writes ``changes.json`` (the comparison with the previous latest result) into the
        staged folder first, then renames the folder into place, then replaces ``latest``:
        each step is atomic, so an interruption leaves either the old or the new state.
        """
        if not (staged / STAMP_NAME).is_file() or not (staged / "report.json").is_file():
            raise StoreError(
                f"{incident_id}: staged result {staged} is missing or incomplete (the store "
                "must be on a file system shared with the workers, or use --return-artefacts)"
            )
        stamp = _read_json(staged / STAMP_NAME)
        report = _read_json(staged / "report.json")
        previous = self.latest(incident_id)
        before: dict[str, Any] | None = None
        if previous is not None:
            try:
                before = previous.report()
            except StoreError as exc:
                log.warning("%s: previous result unreadable, not compared: %s", incident_id, exc)
        changes = compare_reports(before, report, threshold=threshold,
                                  previous_result=previous.name if previous else None,
                                  reasons=reasons)
        write_json_atomic(staged / CHANGES_NAME, changes)
        final = self._free_name(incident_id, _folder_name(stamp, report))
        os.rename(staged, final)
        _fsync_dir(final.parent)
        self._point_latest(incident_id, final.name)
        return StoredResult(incident_id, final), changes

    def _free_name(self, incident_id: str, name: str) -> Path:
        d = self.results_dir(incident_id)
        candidate, n = d / name, 1
        while candidate.exists():
            n += 1
            candidate = d / f"{name}-{n}"
        return candidate

    def _point_latest(self, incident_id: str, name: str) -> None:
        pointer = self.results_dir(incident_id) / LATEST_NAME
        tmp = pointer.with_name(f"{_STAGING}latest-{uuid.uuid4().hex}")
        with tmp.open("w", encoding="utf-8") as fh:
            fh.write(name + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, pointer)
        _fsync_dir(pointer.parent)

    # -- locks and log -----------------------------------------------------------------

    def lock(self, incident_id: str) -> FileLock:
        """Return the incident's inter-process lock (not yet acquired)."""
        locks = self.root / _LOCKS
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{validate_id(incident_id)}.lock"))

    def append_log(self, entry: Mapping[str, Any]) -> None:
        """Append one JSON line to the reanalysis log (one write, so lines never interleave)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, sort_keys=True, default=str) + "\n"
        fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)


def staging_path(results_dir: Path) -> Path:
    """Return a fresh ``.tmp-*`` path in ``results_dir`` (created) for a result being written.

    Staging inside results/ keeps the final rename on one file system, hence atomic.
    """
    results_dir.mkdir(parents=True, exist_ok=True)
    return results_dir / f"{_STAGING}{uuid.uuid4().hex}"


def _folder_name(stamp: Mapping[str, Any], report: Mapping[str, Any]) -> str:
    finished = str(stamp.get("finished") or "")
    try:
        when = datetime.fromisoformat(finished.replace("Z", "+00:00"))
    except ValueError as exc:
        raise StoreError(f"stamp has no valid 'finished' time: {finished!r}") from exc
    return f"{when.strftime('%Y%m%dT%H%M%SZ')}-{report_digest(report)[:8]}"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StoreError(f"{path}: missing") from exc
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable: {exc}") from exc
    if not isinstance(value, dict):
        raise StoreError(f"{path}: not a JSON object")
    return value


def write_json_atomic(path: Path, value: Any) -> None:
    """Write ``value`` as indented JSON: temp file, fsync, rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(value, fh, indent=2, sort_keys=True, default=str)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    """Make a rename durable where the platform allows opening folders (POSIX)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


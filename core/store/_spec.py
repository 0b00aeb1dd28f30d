"""Incident specs: one human-editable TOML file per incident, ``<store>/<id>/incident.toml``.

A spec names where the incident's data lives and how to analyse it, never the data itself, so
a worker that is handed the spec's path can load everything on its own. Example::

    id = "2024-03-01-carts"
    title = "Checkout latency, 1 March"
    onset = "2024-03-01T10:04:00Z"        # optional; inferred when absent
    components = ["carts", "orders"]       # optional: restrict the candidate roots
    tags = ["checkout", "sev2"]
    postmortem = "../../postmortems/2024-03-01.md"   # optional, for --attach
    seed = 0

    [source]
    type = "file"                          # or "prometheus"
    path = "data/incident.csv"             # relative to this file, or absolute

Relative paths are relative to the spec's folder, so a store can be moved or checked out
elsewhere. Every problem is one ``StoreError`` line that names the file.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import tomli_w

from latentcause.errors import LatentCauseError, StoreError

__all__ = [
    "SPEC_NAME",
    "FileSource",
    "IncidentSpec",
    "PrometheusSource",
    "Source",
    "load_spec",
    "parse_spec",
    "source_sha256",
    "spec_sha256",
    "validate_id",
    "write_spec",
]

#: File name of a spec inside its incident folder.
SPEC_NAME = "incident.toml"

_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TOP_KEYS = {
    "id", "title", "source", "onset", "components", "tags", "postmortem", "seed", "draws",
    "traces",
}
_HTTP_KEYS = {
    "bearer_token_env", "bearer_token_file", "basic_auth_user", "basic_auth_password_env",
    "ca_file", "insecure", "timeout",
}
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class FileSource:
    """Offline metrics: a wide/long table or an incident folder (INTERFACE.md layouts)."""

    path: str

    def to_toml(self) -> dict[str, Any]:
        """Return the ``[source]`` table as written in the spec."""
        return {"type": "file", "path": self.path}


@dataclass(frozen=True)
class PrometheusSource:
    """A window of a Prometheus server; start and end are absolute so reruns see the same window."""

    url: str
    start: str
    end: str
    step: str | None = None
    signals: str | None = None
    http: Mapping[str, Any] = field(default_factory=dict)

    def to_toml(self) -> dict[str, Any]:
        """Return the ``[source]`` table as written in the spec."""
        table: dict[str, Any] = {"type": "prometheus", "url": self.url,
                                 "start": self.start, "end": self.end}
        if self.step is not None:
            table["step"] = self.step
        if self.signals is not None:
            table["signals"] = self.signals
        table.update(self.http)
        return table


Source = FileSource | PrometheusSource


@dataclass(frozen=True)
class IncidentSpec:
    """One incident of the store, as read from (or to be written to) its ``incident.toml``.

    Attributes
    ----------
    id
        Folder name and identifier: letters, digits, ``.``, ``_``, ``-``.
    path
        The spec file; relative paths inside the spec are resolved against its folder.
    draws
        NUTS draws per chain, or None for the analysis default; small values keep tests quick.
    """

    id: str
    source: Source
    path: Path
    title: str = ""
    onset: str | None = None
    components: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    postmortem: str | None = None
    seed: int = 0
    draws: int | None = None
    traces: str | None = None

    @property
    def folder(self) -> Path:
        """The incident's folder (the spec's parent)."""
        return self.path.parent

    def resolve(self, relative: str) -> Path:
        """Return a path of the spec made absolute against the spec's folder."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.folder / p).resolve()

    @property
    def postmortem_path(self) -> Path | None:
        """The postmortem document to attach reports to, if any."""
        return self.resolve(self.postmortem) if self.postmortem else None

    def load_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``latentcause.loading.load_observations`` for this incident."""
        kwargs: dict[str, Any] = {
            "onset": self.onset,
            "components": list(self.components) or None,
            "traces": self.resolve(self.traces) if self.traces else None,
        }
        src = self.source
        if isinstance(src, FileSource):
            kwargs["input"] = self.resolve(src.path)
        else:
            http = dict(src.http)
            for key in ("bearer_token_file", "ca_file"):
                if http.get(key):
                    http[key] = self.resolve(str(http[key]))
            kwargs.update(
                prometheus=src.url, start=src.start, end=src.end, step=src.step,
                signals=self.resolve(src.signals) if src.signals else None,
                http=http or None,
            )
        return kwargs

    def to_toml(self) -> dict[str, Any]:
        """Return the spec as a TOML document (keys in a stable, readable order)."""
        doc: dict[str, Any] = {"id": self.id, "title": self.title}
        if self.onset is not None:
            doc["onset"] = self.onset
        if self.components:
            doc["components"] = list(self.components)
        doc["tags"] = list(self.tags)
        if self.postmortem is not None:
            doc["postmortem"] = self.postmortem
        if self.traces is not None:
            doc["traces"] = self.traces
        doc["seed"] = self.seed
        if self.draws is not None:
            doc["draws"] = self.draws
        doc["source"] = self.source.to_toml()
        return doc


def validate_id(incident_id: str) -> str:
    """Return ``incident_id`` if it can name a folder on every platform, else raise StoreError."""
    if not _ID.fullmatch(incident_id) or incident_id in {".", ".."}:
        raise StoreError(
            f"incident id {incident_id!r}: use letters, digits, '.', '_' and '-' "
            "(at most 128, starting with a letter or digit)"
        )
    return incident_id


def load_spec(path: Path) -> IncidentSpec:
    """Read and validate one ``incident.toml``; the id must match the folder's name."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StoreError(f"{path}: no such incident spec") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise StoreError(f"{path}: cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise StoreError(f"{path}: not valid TOML: {exc}") from exc
    spec = parse_spec(raw, path)
    if spec.id != path.parent.name:
        raise StoreError(
            f"{path}: id {spec.id!r} does not match its folder {path.parent.name!r}"
        )
    return spec


def parse_spec(raw: Mapping[str, Any], path: Path) -> IncidentSpec:
    """Validate a parsed TOML document as a spec; ``path`` is where it lives (for messages)."""
    where = str(path)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        known = ", ".join(sorted(_TOP_KEYS))
        raise StoreError(f"{where}: unknown field {unknown[0]!r}; known: {known}")
    if "id" not in raw:
        raise StoreError(f"{where}: missing field 'id'")
    incident_id = _str(raw, "id", where)
    try:
        validate_id(incident_id)
    except StoreError as exc:
        raise StoreError(f"{where}: {exc}") from None
    if "source" not in raw or not isinstance(raw["source"], dict):
        raise StoreError(f"{where}: missing table [source] (type = \"file\" or \"prometheus\")")
    source = _parse_source(raw["source"], where)
    onset = _opt_time(raw, "onset", where)
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise StoreError(f"{where}: field 'seed' must be a non-negative integer")
    draws = raw.get("draws")
    if draws is not None and (not isinstance(draws, int) or isinstance(draws, bool) or draws < 10):
        raise StoreError(f"{where}: field 'draws' must be an integer of at least 10")
    return IncidentSpec(
        id=incident_id,
        source=source,
        path=path,
        title=_str(raw, "title", where, default=""),
        onset=onset,
        components=_str_list(raw, "components", where),
        tags=_str_list(raw, "tags", where),
        postmortem=_opt_str(raw, "postmortem", where),
        seed=seed,
        draws=draws,
        traces=_opt_str(raw, "traces", where),
    )


def write_spec(spec: IncidentSpec) -> Path:
    """Write ``spec`` to ``spec.path`` atomically (temp file, then rename)."""
    spec.folder.mkdir(parents=True, exist_ok=True)
    tmp = spec.path.with_name(f".{spec.path.name}.tmp")
    tmp.write_text(tomli_w.dumps(spec.to_toml()), encoding="utf-8")
    tmp.replace(spec.path)
    return spec.path


def spec_sha256(spec: IncidentSpec) -> str:
    """Hash of what in the spec changes the analysis (not title, tags or postmortem).

    Paths are hashed as written, so moving the store does not make every incident stale.
    """
    relevant = {
        "source": {k: v for k, v in spec.source.to_toml().items() if k not in _HTTP_KEYS},
        "onset": spec.onset,
        "components": list(spec.components),
        "traces": spec.traces,
        "seed": spec.seed,
        "draws": spec.draws,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()


def source_sha256(spec: IncidentSpec) -> str:
    """Cheap fingerprint of the incident's input files, to decide whether to rerun.

    File sources: the bytes of the file, or of every non-hidden file under the folder with its
    relative name, plus the traces file. Prometheus sources cannot be hashed without querying,
    so their fingerprint covers the query (URL, window, step) and the signal map's bytes: data
    the server rewrites for a past window is only picked up by ``reanalyze --all``.
    """
    h = hashlib.sha256()
    src = spec.source
    if isinstance(src, FileSource):
        h.update(b"file\0")
        _hash_path(h, spec.resolve(src.path), where=str(spec.path))
    else:
        h.update(b"prometheus\0")
        h.update(json.dumps([src.url, src.start, src.end, src.step], sort_keys=True).encode())
        if src.signals:
            _hash_path(h, spec.resolve(src.signals), where=str(spec.path))
    if spec.traces:
        h.update(b"\0traces\0")
        _hash_path(h, spec.resolve(spec.traces), where=str(spec.path))
    return h.hexdigest()


def _hash_path(h: Any, path: Path, where: str) -> None:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise StoreError(f"{where}: data folder {path} holds no files")
    elif path.is_file():
        files = [path]
    else:
        raise StoreError(f"{where}: data {path} does not exist")
    for f in files:
        h.update(f.relative_to(path).as_posix().encode() if f != path else b".")
        h.update(b"\0")
        try:
            with f.open("rb") as fh:
                while chunk := fh.read(_HASH_CHUNK):
                    h.update(chunk)
        except OSError as exc:
            raise StoreError(f"{where}: cannot read data {f}: {exc.strerror or exc}") from exc
        h.update(b"\0")


def _parse_source(table: Mapping[str, Any], where: str) -> Source:
    kind = table.get("type")
    if kind == "file":
        extra = sorted(set(table) - {"type", "path"})
        if extra:
            raise StoreError(f"{where}: [source] of type file has unknown field {extra[0]!r}")
        if not isinstance(table.get("path"), str) or not table["path"].strip():
            raise StoreError(f"{where}: [source] of type file needs path = \"...\"")
        return FileSource(path=table["path"])
    if kind == "prometheus":
        known = {"type", "url", "start", "end", "step", "signals"} | _HTTP_KEYS
        extra = sorted(set(table) - known)
        if extra:
            raise StoreError(f"{where}: [source] of type prometheus has unknown field {extra[0]!r}")
        url = table.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise StoreError(f"{where}: [source] of type prometheus needs url = \"http(s)://...\"")
        times = {}
        for key in ("start", "end"):
            value = _opt_time(table, key, where, prefix="source.")
            if value is None:
                raise StoreError(f"{where}: [source] of type prometheus needs {key}")
            if value.strip().lower().startswith("now"):
                raise StoreError(
                    f"{where}: [source] {key} = {value!r} is relative to now; a stored incident "
                    "needs an absolute time so every rerun reads the same window"
                )
            times[key] = value
        start, end = times["start"], times["end"]
        step = table.get("step")
        signals = table.get("signals")
        for key, value in (("step", step), ("signals", signals)):
            if value is not None and not isinstance(value, str):
                raise StoreError(f"{where}: [source] {key} must be a string")
        http = {k: table[k] for k in sorted(_HTTP_KEYS) if k in table}
        return PrometheusSource(url=url, start=start, end=end, step=step, signals=signals,
                                http=http)
    raise StoreError(f"{where}: [source] type must be \"file\" or \"prometheus\", not {kind!r}")


def _opt_time(raw: Mapping[str, Any], key: str, where: str, prefix: str = "") -> str | None:
    """Read a time field as text: TOML datetime, RFC 3339 string or unix seconds."""
    from latentcause.timeparse import parse_time

    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise StoreError(f"{where}: field {prefix}{key!r} has no time zone; add Z")
        value = value.isoformat()
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise StoreError(f"{where}: field {prefix}{key!r} must be a time (RFC 3339 or unix s)")
    text = str(value)
    try:
        parse_time(text)
    except LatentCauseError as exc:
        raise StoreError(f"{where}: field {prefix}{key!r}: {exc}") from None
    return text


def _str(raw: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = raw.get(key, default)
    if not isinstance(value, str):
        raise StoreError(f"{where}: field {key!r} must be a string")
    return value


def _opt_str(raw: Mapping[str, Any], key: str, where: str) -> str | None:
    if raw.get(key) is None:
        return None
    return _str(raw, key, where)


def _str_list(raw: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = raw.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise StoreError(f"{where}: field {key!r} must be a list of non-empty strings")
    return tuple(value)

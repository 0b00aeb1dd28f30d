"""Stamps: what a stored result was computed with, and whether it is stale now.

Each result folder holds ``stamp.json``: the latentcause version, the model version, the hash
of the model configuration, the hashes of the data (the analysis' own ``data_sha256`` and the
cheap file fingerprint used to decide reruns), the spec hash, the seed and the wall-clock
times. An incident is stale when the model or its configuration changed, when its input files
or its spec changed, or when it has no result yet.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from latentcause.errors import LatentCauseError
from latentcause.store._spec import IncidentSpec, source_sha256, spec_sha256

__all__ = [
    "STAMP_NAME",
    "IdentitySource",
    "ModelIdentity",
    "current_identity",
    "make_stamp",
    "stale_reasons",
    "utc_now",
]

#: File name of the stamp inside a result folder.
STAMP_NAME = "stamp.json"
_STAMP_VERSION = 1


@dataclass(frozen=True)
class ModelIdentity:
    """The versions a result depends on, as this process sees them.

    ``None`` means "unknown" (a caller that cannot tell): an unknown value is never a reason
    to rerun, since it cannot be compared.
    """

    latentcause_version: str
    model_version: str | None
    model_config_sha256: str | None


#: A model identity, or how to get one: ``current_identity`` imports the engine (seconds), so
#: staleness checks take the function and call it only when there is a result to judge.
IdentitySource = ModelIdentity | Callable[[], ModelIdentity]


def current_identity() -> ModelIdentity:
    """Return the installed latentcause version, model version and model config hash."""
    from latentcause import __version__
    from latentcause.models import MODEL_VERSION, config_sha256

    return ModelIdentity(__version__, str(MODEL_VERSION), str(config_sha256()))


def utc_now() -> str:
    """Return the current UTC time as RFC 3339 with microseconds (sortable, unambiguous)."""
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def make_stamp(
    spec: IncidentSpec,
    report: Mapping[str, Any],
    *,
    source_sha: str,
    identity: ModelIdentity,
    started: str,
    finished: str,
) -> dict[str, Any]:
    """Build ``stamp.json`` for a result of ``spec`` computed by this process.

    The model version and config hash come from the process that ran the analysis; where that
    process does not know them, the report's provenance fills in (the engine records them).
    """
    prov = report.get("provenance") or {}
    return {
        "stamp_version": _STAMP_VERSION,
        "incident": spec.id,
        "latentcause_version": prov.get("version") or identity.latentcause_version,
        "model_version": identity.model_version or prov.get("model_version"),
        "model_config_sha256": identity.model_config_sha256 or prov.get("model_config_sha256"),
        "data_sha256": prov.get("data_sha256"),
        "source_sha256": source_sha,
        "spec_sha256": spec_sha256(spec),
        "seed": spec.seed,
        "draws": spec.draws,
        "started": started,
        "finished": finished,
        "host": socket.gethostname(),
    }


def stale_reasons(
    spec: IncidentSpec,
    stamp: Mapping[str, Any] | None,
    identity: IdentitySource,
) -> list[str]:
    """Why ``spec``'s latest result (``stamp``) no longer stands; empty when it is fresh.

    Unreadable input counts as stale (with the reason), so the rerun reports the real error.
    ``identity`` may be a function returning it, called only when there is a stamp.
    """
    if stamp is None:
        return ["no result yet"]
    if callable(identity):
        identity = identity()
    reasons: list[str] = []
    for key, what in (("model_version", "model version"),
                      ("model_config_sha256", "model config")):
        now, then = getattr(identity, key), stamp.get(key)
        if now is not None and now != then:
            reasons.append(f"{what} {_short(then)} -> {_short(now)}")
    try:
        if source_sha256(spec) != stamp.get("source_sha256"):
            reasons.append("data changed")
    except LatentCauseError as exc:
        reasons.append(f"data unreadable: {exc}")
    if spec_sha256(spec) != stamp.get("spec_sha256"):
        reasons.append("spec changed")
    return reasons


def _short(value: Any) -> str:
    if value is None:
        return "unknown"
    text = str(value)
    return text[:12] if len(text) == 64 else text

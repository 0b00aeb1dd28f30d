"""The incident store: one TOML spec per incident, its result history beside it, reruns.

``Store`` is the folder; ``IncidentSpec`` one incident's ``incident.toml``; ``reanalyze``
reruns the incidents whose results no longer stand (model, model config, data or spec
changed) on a local process pool or a Dask cluster, with ``run_incident`` as the unit of work.
See ``_layout`` for the on-disk layout and its atomicity guarantees.
"""

from latentcause.store._changes import (
    DEFAULT_THRESHOLD,
    compare_reports,
    describe_changes,
    hypothesis_label,
    leader,
)
from latentcause.store._executors import Executor, open_executor
from latentcause.store._layout import (
    DEFAULT_STORE,
    ENV_STORE,
    TIMING_FIELDS,
    Store,
    StoredResult,
    comparable_report,
    report_digest,
)
from latentcause.store._reanalyze import (
    Outcome,
    PlanItem,
    ReanalysisSummary,
    Reporter,
    incident_stale_reasons,
    incident_time,
    parse_since,
    plan,
    reanalyze,
)
from latentcause.store._spec import (
    FileSource,
    IncidentSpec,
    PrometheusSource,
    load_spec,
    parse_spec,
    source_sha256,
    spec_sha256,
)
from latentcause.store._stamp import (
    IdentitySource,
    ModelIdentity,
    current_identity,
    stale_reasons,
)
from latentcause.store._worker import run_incident

__all__ = [
    "DEFAULT_STORE",
    "DEFAULT_THRESHOLD",
    "ENV_STORE",
    "TIMING_FIELDS",
    "Executor",
    "FileSource",
    "IdentitySource",
    "IncidentSpec",
    "ModelIdentity",
    "Outcome",
    "PlanItem",
    "PrometheusSource",
    "ReanalysisSummary",
    "Reporter",
    "Store",
    "StoredResult",
    "comparable_report",
    "compare_reports",
    "current_identity",
    "describe_changes",
    "hypothesis_label",
    "incident_stale_reasons",
    "incident_time",
    "leader",
    "load_spec",
    "open_executor",
    "parse_since",
    "parse_spec",
    "plan",
    "reanalyze",
    "report_digest",
    "run_incident",
    "source_sha256",
    "spec_sha256",
    "stale_reasons",
]

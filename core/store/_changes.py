"""What changed between two results of one incident: the part of a rerun a person reads.

A reanalysis matters to a postmortem when it changes the conclusion, not when it moves the
third decimal: the leading hypothesis, a large move of the leader's probability, the ambiguity
verdict and the adequacy verdict are the four things compared.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["DEFAULT_THRESHOLD", "compare_reports", "describe_changes", "hypothesis_label", "leader"]

#: Default for ``--threshold``: a move of the leader's probability larger than this is reported.
DEFAULT_THRESHOLD = 0.1


def hypothesis_label(h: Mapping[str, Any]) -> str:
    """Return ``mechanism in component`` (or ``none``) for a hypothesis of report.json."""
    if h.get("component") is None or h.get("mechanism") in (None, "none"):
        return "none"
    return f"{h['mechanism']} in {h['component']}"


def leader(report: Mapping[str, Any]) -> dict[str, Any] | None:
    """Return the most probable hypothesis of a report (component, mechanism, probability)."""
    hypotheses = report.get("hypotheses") or []
    if not hypotheses:
        return None
    h = hypotheses[0]
    return {"component": h.get("component"), "mechanism": h.get("mechanism"),
            "probability": float(h.get("probability", 0.0))}


def compare_reports(
    previous: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    previous_result: str | None = None,
    reasons: Sequence[str] = (),
) -> dict[str, Any]:
    """Compare a new report with the incident's previous one; the result is ``changes.json``.

    The leader's probability move is measured for the *current* leader (its probability now
    minus its probability in the previous report, 0 if it was absent there), so a new leader
    that came from nowhere counts as a large move.

    Parameters
    ----------
    previous
        The previous result's report.json, or None for an incident's first result.
    current
        The new report.json.
    threshold
        Smallest absolute move of the leader's probability that counts as a change.
    previous_result
        Name of the previous result folder, recorded for the reader.
    reasons
        Why the incident was rerun (staleness reasons), recorded for the reader.
    """
    now = leader(current)
    out: dict[str, Any] = {
        "previous_result": previous_result,
        "first_result": previous is None,
        "reasons": list(reasons),
        "threshold": threshold,
        "leader": now,
        "ambiguous": _ambiguous(current),
        "fits": _fits(current),
    }
    if previous is None:
        out.update(previous_leader=None, leader_changed=False, leader_probability_delta=None,
                   probability_moved=False, previous_ambiguous=None, ambiguity_changed=False,
                   previous_fits=None, adequacy_changed=False, changed=False)
        return out
    before = leader(previous)
    changed_leader = _key(before) != _key(now)
    delta = None
    if now is not None:
        delta = now["probability"] - _probability(previous, _key(now))
    moved = delta is not None and abs(delta) > threshold
    amb_before, fits_before = _ambiguous(previous), _fits(previous)
    out.update(
        previous_leader=before,
        leader_changed=changed_leader,
        leader_probability_delta=delta,
        probability_moved=moved,
        previous_ambiguous=amb_before,
        ambiguity_changed=amb_before != out["ambiguous"],
        previous_fits=fits_before,
        adequacy_changed=fits_before != out["fits"],
    )
    out["changed"] = bool(changed_leader or moved or out["ambiguity_changed"]
                          or out["adequacy_changed"])
    return out


def describe_changes(changes: Mapping[str, Any]) -> str:
    """Return one line for a person: the new conclusion and what moved since the last result."""
    now = changes.get("leader")
    head = (f"{hypothesis_label(now)} (p = {now['probability']:.2f})" if now
            else "no hypothesis")
    if changes.get("first_result"):
        return f"{head}; first result"
    parts: list[str] = []
    if changes.get("leader_changed"):
        before = changes.get("previous_leader")
        was = (f"{hypothesis_label(before)} (p = {before['probability']:.2f})" if before
               else "no hypothesis")
        parts.append(f"leader changed, was {was}")
    elif changes.get("probability_moved"):
        parts.append(f"leader probability moved by {changes['leader_probability_delta']:+.2f}")
    if changes.get("ambiguity_changed"):
        parts.append("now ambiguous" if changes.get("ambiguous") else "no longer ambiguous")
    if changes.get("adequacy_changed"):
        parts.append("model now fits" if changes.get("fits") else "model no longer fits")
    return f"{head}; " + (", ".join(parts) if parts else "conclusion unchanged")


def _key(h: Mapping[str, Any] | None) -> tuple[Any, Any] | None:
    if h is None:
        return None
    mech = h.get("mechanism")
    return (None, "none") if h.get("component") is None or mech == "none" else (
        h.get("component"), mech)


def _probability(report: Mapping[str, Any], key: tuple[Any, Any] | None) -> float:
    for h in report.get("hypotheses") or []:
        if _key(h) == key:
            return float(h.get("probability", 0.0))
    return 0.0


def _ambiguous(report: Mapping[str, Any]) -> bool | None:
    value = (report.get("ambiguity") or {}).get("ambiguous")
    return None if value is None else bool(value)


def _fits(report: Mapping[str, Any]) -> bool | None:
    value = (report.get("adequacy") or {}).get("fits")
    return None if value is None else bool(value)

"""A few lines for the terminal after ``latentcause analyze``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentcause.reports._content import (
    credible_members,
    headline,
    is_ambiguous,
    signal_entries,
    warnings_of,
)
from latentcause.reports._format import (
    as_list,
    as_mapping,
    clean_text,
    hyp_key,
    interval,
    p_is,
    utc,
    utc_interval,
)

__all__ = ["SUMMARY_HYPOTHESES", "summary_lines"]

#: Hypotheses listed in the terminal summary.
SUMMARY_HYPOTHESES = 5


def summary_lines(report: Mapping[str, Any]) -> list[str]:
    """Summarise a report in a few terminal lines.

    The headline, the leading hypotheses with their probabilities, the onset (median and
    95 % interval in UTC), the ambiguity and the signals that would resolve it, and in plain
    words any adequacy or convergence problem. Data strings are stripped of control
    characters so a hostile component name cannot drive the terminal.
    """
    lines = [headline(report)]
    hyps = [as_mapping(h) for h in as_list(report.get("hypotheses"))][:SUMMARY_HYPOTHESES]
    width = max((len(clean_text(h.get("component") or "(none)")) for h in hyps), default=0)
    width = min(width, 40)
    for i, h in enumerate(hyps, start=1):
        comp, mech = hyp_key(h)
        name = clean_text(comp) if comp is not None else "(none)"
        lines.append(
            f"  {i}. {name:<{width}}  {clean_text(mech):<16}  {p_is(h.get('probability'))}"
        )
    m, lo, hi = interval(report.get("onset"))
    onset = f"onset: {utc(m)}"
    if lo is not None and hi is not None and (lo, hi) != (m, m):
        onset += f" (95 %: {utc_interval(lo, hi)})"
    source = as_mapping(report.get("onset")).get("source")
    if source:
        onset += f", {clean_text(source)}"
    lines.append(onset)
    if is_ambiguous(report):
        n = len(credible_members(report))
        signals = signal_entries(report)
        todo = [f"{c}/{s}" if c else s for c, s, _, obs in signals if obs is not True][:3]
        text = f"ambiguous: {n} hypotheses share 95 % of the probability"
        if todo:
            text += "; to separate them, collect " + ", ".join(todo)
        elif signals:
            best = [f"{c}/{s}" if c else s for c, s, _, _ in signals][:3]
            text += "; the most telling signals are " + ", ".join(best)
        lines.append(text)
    for warning in warnings_of(report):
        lines.append(f"warning: {warning}")
    return lines

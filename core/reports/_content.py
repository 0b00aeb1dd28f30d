"""What a report says, as document blocks: shared by the Markdown and the HTML renderers.

The wording describes mechanisms and conditions (what changed, what state the system was
in), never people, so the text can go into a blameless postmortem as it is. Every field
outside the schema-"1" contract may be missing or null; a section then says what is unknown
rather than failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentcause.reports._document import (
    Block,
    Bullets,
    Code,
    Figure,
    Heading,
    Inline,
    Line,
    Paragraph,
    Strong,
    Table,
)
from latentcause.reports._format import (
    MECHANISMS,
    as_list,
    as_mapping,
    clean_text,
    credible_keys,
    fmt_bits,
    fmt_num,
    fmt_percent,
    fmt_prob,
    fmt_ratio,
    hyp_key,
    hyp_label,
    interval,
    mechanism_name,
    num,
    p_is,
    sentence,
    utc,
    utc_interval,
)

__all__ = [
    "TITLE",
    "build_document",
    "credible_members",
    "headline",
    "is_ambiguous",
    "signal_entries",
    "warnings_of",
]

#: Title of the report (and of its section when attached to a postmortem).
TITLE = "Root-cause analysis (latentcause)"

#: Rows of the hypothesis table; the rest are summed into one line.
TABLE_ROWS = 8

#: R-hat above this is reported as a convergence problem even if ``converged`` is absent.
RHAT_LIMIT = 1.01


def _hyps(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [as_mapping(h) for h in as_list(report.get("hypotheses"))]


def credible_members(report: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Credible-set members with their probabilities, most probable first."""
    keys = credible_keys(report)
    members = [h for h in _hyps(report) if hyp_key(h) in keys]
    return members or _hyps(report)[:1]


def is_ambiguous(report: Mapping[str, Any]) -> bool:
    amb = as_mapping(report.get("ambiguity")).get("ambiguous")
    if isinstance(amb, bool):
        return amb
    return len(credible_members(report)) > 1


def _join(words: list[str]) -> str:
    if len(words) <= 1:
        return "".join(words)
    return ", ".join(words[:-1]) + " and " + words[-1]


def headline(report: Mapping[str, Any]) -> str:
    """One sentence: the leading mechanism, component and probability, or the ambiguity."""
    hyps = _hyps(report)
    if not hyps:
        return "No hypothesis was scored."
    if is_ambiguous(report):
        members = credible_members(report)
        shown = [f"{hyp_label(h)} ({p_is(h.get('probability'))})" for h in members[:4]]
        if len(members) > 4:
            shown.append(f"{len(members) - 4} more")
        return f"Ambiguous between {_join(shown)}."
    top = hyps[0]
    comp, mech = hyp_key(top)
    p = p_is(top.get("probability"))
    if mech == "none":
        return f"No fault stands out: normal variation explains the data best ({p})."
    what = MECHANISMS.get(mech, ("", ""))[1]
    tail = f" — {what}" if what else ""
    return f"Most probable cause: {hyp_label(top)} ({p}){tail}."


def _diagnostic_problem(report: Mapping[str, Any]) -> str | None:
    d = as_mapping(report.get("diagnostics"))
    rhat, div = num(d.get("rhat_max")), num(d.get("divergences"))
    converged = d.get("converged")
    if converged is True or (converged is None and (rhat is None or rhat <= RHAT_LIMIT)):
        return None
    parts = []
    if rhat is not None:
        parts.append(f"R-hat up to {rhat:.3f}")
    if (ess := num(d.get("ess_bulk_min"))) is not None:
        parts.append(f"bulk ESS down to {ess:.0f}")
    if div:
        parts.append(f"{div:.0f} divergent transitions")
    detail = f" ({', '.join(parts)})" if parts else ""
    return (
        f"The sampler did not converge{detail}: the intervals for the leading hypothesis may be "
        "wrong; re-run with more draws before relying on them."
    )


def _adequacy_problem(report: Mapping[str, Any]) -> str | None:
    a = as_mapping(report.get("adequacy"))
    if a.get("fits") is not False:
        return None
    worst = a.get("worst_series")
    where = f" (worst series: {clean_text(worst)})" if worst else ""
    return (
        f"No candidate reproduces the data well{where}. The ranking says which candidate "
        "explains the data least badly; the actual mechanism may be outside the library, or "
        "more than one fault may be present."
    )


def warnings_of(report: Mapping[str, Any]) -> list[str]:
    """Plain-language warnings a reader must see before the ranking: adequacy, convergence."""
    return [w for w in (_adequacy_problem(report), _diagnostic_problem(report)) if w]


def _onset_line(report: Mapping[str, Any]) -> Line:
    onset = as_mapping(report.get("onset"))
    m, lo, hi = interval(onset)
    source = {
        "layout": "from the data layout (inject_time.txt, or where normal.csv ends)",
        "given": "given on the command line",
        "inferred": "inferred from the data",
    }.get(str(onset.get("source")), "")
    parts: list[Inline] = [Strong("Onset:"), f" {utc(m)}"]
    if lo is not None and hi is not None and (lo, hi) != (m, m):
        parts.append(f" (95 % interval {utc_interval(lo, hi)})")
    if source:
        parts.append(f", {source}")
    return (*parts, ".")


def _window_text(report: Mapping[str, Any]) -> str:
    w = as_mapping(report.get("window"))
    step = num(w.get("step_s"))
    step_text = f", one point every {step:g} s" if step else ""
    return f"{utc_interval(w.get('start'), w.get('end'))}{step_text}"


def _hypothesis_section(report: Mapping[str, Any]) -> list[Block]:
    hyps = _hyps(report)
    keys = credible_keys(report)
    has_ev = any(num(h.get("log_evidence")) is not None for h in hyps)
    header: tuple[str, ...] = ("rank", "component", "mechanism", "probability", "in 95 % set")
    numeric: tuple[bool, ...] = (True, False, False, True, False)
    if has_ev:
        header += ("log evidence (nats)",)
        numeric += (True,)
    rows: list[tuple[Line, ...]] = []
    for i, h in enumerate(hyps[:TABLE_ROWS], start=1):
        comp, mech = hyp_key(h)
        row: tuple[Line, ...] = (
            (str(i),),
            (clean_text(comp) if comp is not None else "(none)",),
            (Code(clean_text(mech)),),
            (fmt_prob(h.get("probability")),),
            ("yes" if hyp_key(h) in keys else "",),
        )
        if has_ev:
            ev, se = num(h.get("log_evidence")), num(h.get("log_evidence_se"))
            text = "n/a" if ev is None else f"{ev:.1f}" + (f" ± {se:.1f}" if se else "")
            row += ((text,),)
        rows.append(row)
    blocks: list[Block] = [
        Heading(2, "Leading hypotheses", "hypotheses"),
        Table(header, tuple(rows), numeric),
    ]
    rest = hyps[TABLE_ROWS:]
    if rest:
        mass = sum(num(h.get("probability")) or 0.0 for h in rest)
        blocks.append(Paragraph((
            f"{len(rest)} further hypotheses hold {fmt_prob(mass)} of the probability together.",
        )))
    blocks.append(Figure("posterior"))
    return blocks


def _change_reading(value: object) -> str:
    m, lo, hi = interval(value)
    if m is None:
        return ""
    if lo is not None and hi is not None and lo <= 1 <= hi:
        return "no clear change"
    if m >= 1:
        return f"rose {m:.2g}-fold"
    return f"fell to {100 * m:.0f} % of its level before"


def _amplification_factor(value: object) -> dict[str, Any] | None:
    """Retry amplification as a factor >= 1.

    A value below 1 cannot be a factor (retries only add load), so it is read as the share
    ``a`` of the offered load that is retries, whose factor is ``1 / (1 - a)``; the map is
    monotonic, so the interval's ends map to the factor's.
    """
    m, lo, hi = interval(value)
    if m is None:
        return None
    vals = [m, lo, hi]
    if m < 1:
        vals = [1.0 / (1.0 - v) if v is not None and v < 1 else None for v in vals]
    if vals[0] is None:
        return None
    out: dict[str, Any] = {"median": vals[0]}
    if vals[1] is not None and vals[2] is not None:
        out["interval_95"] = [vals[1], vals[2]]
    return out


def _trigger_section(report: Mapping[str, Any]) -> list[Block]:
    trig = as_mapping(report.get("trigger"))
    cond = as_mapping(report.get("latent_condition"))
    blocks: list[Block] = [Heading(2, "Trigger and latent condition", "trigger")]
    if not trig and not cond:
        blocks.append(Paragraph((
            "This result does not describe the trigger or the state before it; "
            "see the leading hypotheses above.",
        )))
        return [*blocks, Figure("onset"), Figure("state")]
    if trig:
        what = hyp_label(trig) if trig.get("mechanism") else None
        line: list[Inline] = [Strong("Trigger:")]
        if what:
            line.append(f" {what}.")
        if trig.get("description"):
            line.append(f" {sentence(trig['description'])}")
        blocks.append(Paragraph(tuple(line)))
        changes = [as_mapping(c) for c in as_list(trig.get("changes"))]
        if changes:
            blocks.append(Paragraph((
                "What changed at the onset (level after the onset divided by the level "
                "before; median and 95 % interval):",
            )))
            rows = tuple(
                (
                    (clean_text(c.get("component", "")),),
                    (Code(clean_text(c.get("signal", ""))),),
                    (fmt_ratio(c.get("ratio")),),
                    (_change_reading(c.get("ratio")),),
                )
                for c in changes
            )
            blocks.append(Table(
                ("component", "signal", "after ÷ before", "reading"), rows,
                (False, False, True, False),
            ))
    blocks.append(Figure("onset"))
    if cond:
        line = [Strong("Latent condition:")]
        if cond.get("description"):
            line.append(f" {sentence(cond['description'])}")
        else:
            line.append(" the state of the system before the trigger.")
        blocks.append(Paragraph(tuple(line)))
        items: list[Line] = []
        if interval(cond.get("utilisation_before"))[0] is not None:
            items.append((
                "Utilisation before the onset: ", fmt_percent(cond.get("utilisation_before")),
            ))
        if interval(cond.get("headroom"))[0] is not None:
            items.append((
                "Headroom (distance to saturation, share of capacity): ",
                fmt_percent(cond.get("headroom")),
            ))
        if interval(cond.get("load_factor_to_saturation"))[0] is not None:
            items.append((
                "Load could grow by ", fmt_ratio(cond.get("load_factor_to_saturation")),
                " before saturating",
            ))
        amp = _amplification_factor(cond.get("amplification"))
        if amp is not None:
            items.append((
                "Retry amplification (load with retries ÷ load without): ", fmt_ratio(amp),
            ))
        if items:
            blocks.append(Bullets(tuple(items)))
    blocks.append(Figure("state"))
    return blocks


def signal_entries(report: Mapping[str, Any]) -> list[tuple[str | None, str, float | None, Any]]:
    amb = as_mapping(report.get("ambiguity"))
    out = []
    for s in as_list(amb.get("discriminating_signals")):
        if isinstance(s, Mapping):
            comp = s.get("component")
            out.append((
                None if comp is None else clean_text(comp),
                clean_text(s.get("signal", "")),
                num(s.get("information_bits")),
                s.get("observed"),
            ))
        else:
            out.append((None, clean_text(s), None, None))
    return out


#: The canonical signal of the share of requests that are retries.
_RETRIES = "retries"


def _signal_name(comp: str | None, signal: str) -> str:
    return f"{comp}/{signal}" if comp else signal


def _why_not_apart(members: list[Mapping[str, Any]]) -> str:
    comps = list(dict.fromkeys(hyp_key(h)[0] for h in members))
    mechs = list(dict.fromkeys(hyp_key(h)[1] for h in members))
    if "none" in mechs:
        return (
            "Normal variation cannot be ruled out: the change is small against the noise of "
            "the window, so a fault and no fault predict the data about equally well."
        )
    if len(comps) == 1 and comps[0] is not None:
        names = _join([mechanism_name(m) for m in mechs])
        return (
            f"The evidence points to {clean_text(comps[0])} but not to one mechanism: "
            f"{names} predict nearly the same changes in the signals that were observed."
        )
    if len(mechs) == 1:
        names = _join([clean_text(c) for c in comps if c is not None])
        return (
            f"The mechanism is clear ({mechanism_name(mechs[0])}) but not where it began: "
            f"{names} move together, as a fault propagates along the call path, and the "
            "observed signals do not show which one moved first."
        )
    return (
        "Neither the component nor the mechanism is singled out: several combinations "
        "reproduce the observed signals about equally well."
    )


def _ambiguity_section(report: Mapping[str, Any]) -> list[Block]:
    amb = as_mapping(report.get("ambiguity"))
    members = credible_members(report)
    blocks: list[Block] = [Heading(2, "Ambiguity", "ambiguity")]
    ent = num(amb.get("entropy_bits"))
    mass = sum(num(h.get("probability")) or 0.0 for h in members)
    intro = (
        f"The 95 % credible set holds {len(members)} "
        f"{'hypothesis' if len(members) == 1 else 'hypotheses'} "
        f"({fmt_prob(mass)} of the probability)"
    )
    if ent is not None:
        intro += (
            f"; the posterior's entropy is {ent:.2f} bits (0 means one hypothesis holds it all)"
        )
    blocks.append(Paragraph((intro + ".",)))
    if len(members) > 1:
        blocks.append(Bullets(tuple(
            (f"{hyp_label(h)}: ", p_is(h.get("probability"))) for h in members
        )))
    if is_ambiguous(report):
        why = _why_not_apart(members)
        blocks.append(Paragraph((Strong("What cannot be told apart:"), " " + why)))
    else:
        blocks.append(Paragraph(("The evidence singles out one hypothesis.",)))
    signals = signal_entries(report)
    if signals:
        rows = tuple(
            (
                (comp or "",),
                (Code(sig),),
                (fmt_bits(bits) if bits is not None else "n/a",),
                ("observed" if obs is True else "not collected" if obs is False else "unknown",),
            )
            for comp, sig, bits, obs in signals
        )
        blocks.append(Paragraph((
            "Signals that would best separate the leading hypotheses (expected information):",
        )))
        blocks.append(Table(
            ("component", "signal", "information", "status"), rows, (False, False, True, False)
        ))
        missing = [_signal_name(c, s) for c, s, _, obs in signals if obs is False]
        if missing:
            lead = "To tell them apart, collect:" if is_ambiguous(report) else (
                "To make the result firmer, collect:")
            blocks.append(Paragraph((Strong(lead), " " + ", ".join(missing[:5]) + ".")))
            if any(s == _RETRIES for _, s, _, obs in signals if obs is False):
                blocks.append(Paragraph((
                    Code(_RETRIES), " is the share of requests that are retries, as a service "
                    "mesh counts them (Envoy's upstream_rq_retry over its requests, Linkerd's "
                    "retry metrics): give it as the column <component>_retries. A retry "
                    "storm's extra load is retries, a surge's is new arrivals; the other "
                    "signals cannot tell them apart.",
                )))
        elif is_ambiguous(report):
            blocks.append(Paragraph((
                "These signals were already observed; a longer window or a finer step on "
                "them would sharpen the split.",
            )))
    elif is_ambiguous(report):
        blocks.append(Paragraph(("No signal was identified that would separate them.",)))
    return blocks


def _adequacy_section(report: Mapping[str, Any]) -> list[Block]:
    a = as_mapping(report.get("adequacy"))
    blocks: list[Block] = [Heading(2, "Model adequacy", "adequacy")]
    p, stat = num(a.get("p_value")), a.get("statistic")
    test = ""
    if p is not None:
        test = f"posterior predictive {p_is(p)}"
        if num(stat) is not None:
            test += f", test statistic {fmt_num(stat)}"
        elif stat:
            test += f" on {clean_text(stat)}"
    if a.get("fits") is True:
        text = "The leading hypothesis reproduces the observed data"
        text += f" ({test})." if test else "."
        blocks.append(Paragraph((text,)))
    elif a.get("fits") is False:
        text = _adequacy_problem(report) or ""
        if test:
            text += f" Check: {test}."
        blocks.append(Paragraph((Strong("Does not fit."), " " + text), kind="warning"))
    else:
        blocks.append(Paragraph(("Adequacy was not checked for this result.",)))
    if a.get("description"):
        blocks.append(Paragraph((sentence(a["description"]),)))
    blocks.append(Figure("series"))
    return blocks


def _diagnostics_section(report: Mapping[str, Any]) -> list[Block]:
    d = as_mapping(report.get("diagnostics"))
    blocks: list[Block] = [Heading(2, "Sampling diagnostics", "diagnostics")]
    rows: list[tuple[Line, ...]] = []

    def row(name: str, value: str) -> None:
        rows.append(((name,), (value,)))

    conv = d.get("converged")
    row("converged", "yes" if conv is True else "no" if conv is False else "unknown")
    row("largest R-hat", fmt_num(d.get("rhat_max"), 4))
    ess = num(d.get("ess_bulk_min"))
    row("smallest bulk ESS", f"{ess:.0f}" if ess is not None else "n/a")
    div = num(d.get("divergences"))
    row("divergent transitions", f"{div:.0f}" if div is not None else "n/a")
    if d.get("sampler"):
        row("sampler", clean_text(d["sampler"]))
    chains, draws = num(d.get("chains")), num(d.get("draws"))
    if chains is not None and draws is not None:
        tune = num(d.get("tune"))
        extra = f" (after {tune:.0f} tuning steps)" if tune else ""
        row("chains × draws", f"{chains:.0f} × {draws:.0f}{extra}")
    if d.get("evidence_method"):
        row("evidence", clean_text(d["evidence_method"]))
    if (se := num(d.get("evidence_se_max"))) is not None:
        row("largest evidence std. error", f"{se:.2f} nats")
    if d.get("sampled_hypothesis"):
        row("sampled hypothesis", clean_text(d["sampled_hypothesis"]))
    timing = as_mapping(report.get("timing_s"))
    spent = [f"{clean_text(k)} {v:.1f} s" for k, x in timing.items() if (v := num(x)) is not None]
    if spent:
        row("wall time", ", ".join(spent))
    blocks.append(Table(("quantity", "value"), tuple(rows), (False, True)))
    if (problem := _diagnostic_problem(report)) is not None:
        blocks.append(Paragraph((problem,), kind="warning"))
    return blocks


def _provenance_section(report: Mapping[str, Any]) -> list[Block]:
    p = as_mapping(report.get("provenance"))
    items: list[Line] = [
        ("Source: ", clean_text(p.get("source", "unknown"))),
        ("Window: ", _window_text(report)),
    ]
    queries = [clean_text(q) for q in as_list(p.get("queries"))]
    items.extend(("Query or file: ", Code(q)) for q in queries)
    items.append(("Data hash (SHA-256): ", Code(clean_text(p.get("data_sha256", "unknown")))))
    if p.get("model_config_sha256"):
        config = Code(clean_text(p["model_config_sha256"]))
        items.append(("Model configuration hash (SHA-256): ", config))
    items.append(("latentcause version: ", Code(clean_text(p.get("version", "unknown")))))
    if p.get("model_version"):
        items.append(("Model version: ", Code(clean_text(p["model_version"]))))
    items.append(("Seed: ", Code(clean_text(p.get("seed", "unknown")))))
    if p.get("onset_source"):
        items.append(("Onset source: ", clean_text(p["onset_source"])))
    comps = as_mapping(report.get("components"))
    if comps:
        items.append((f"Components analysed: {len(comps)}",))
    graph = report.get("call_graph")
    items.append(("Call graph: ", "known (from spans or configuration)" if graph else "unknown"))
    for note in as_list(p.get("notes")):
        items.append(("Note: ", sentence(note)))
    return [Heading(2, "Provenance", "provenance"), Bullets(tuple(items))]


def build_document(report: Mapping[str, Any]) -> list[Block]:
    """Build the whole report as blocks, in reading order."""
    blocks: list[Block] = [
        Heading(1, TITLE, "latentcause-report"),
        Paragraph((headline(report),), kind="lead"),
        Paragraph(_onset_line(report)),
    ]
    blocks.extend(Paragraph((w,), kind="warning") for w in warnings_of(report))
    blocks += _hypothesis_section(report)
    blocks += _trigger_section(report)
    blocks += _ambiguity_section(report)
    blocks += _adequacy_section(report)
    blocks += _diagnostics_section(report)
    blocks += _provenance_section(report)
    return blocks

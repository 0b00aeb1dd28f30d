"""Small formatting helpers shared by the Markdown, HTML and terminal renderers.

Every report field beyond the contract may be missing or null, and numbers may arrive as
ints, floats or numpy scalars; these helpers read defensively and return None (or a
placeholder) instead of raising, so one odd field never costs the whole report.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

__all__ = [
    "MECHANISMS",
    "as_list",
    "as_mapping",
    "clean_text",
    "credible_keys",
    "fmt_bits",
    "fmt_num",
    "fmt_percent",
    "fmt_prob",
    "fmt_ratio",
    "hyp_key",
    "hyp_label",
    "interval",
    "mechanism_name",
    "num",
    "p_is",
    "sentence",
    "utc",
    "utc_interval",
]

#: Human name and one-clause description of each mechanism of the vocabulary
#: (shared/INTERFACE.md), worded as mechanism and condition, never as blame.
MECHANISMS: dict[str, tuple[str, str]] = {
    "none": ("no fault", "nothing beyond normal variation"),
    "traffic_surge": (
        "traffic surge",
        "arrivals rose past the headroom, so requests queued as the component saturated",
    ),
    "capacity_loss": (
        "capacity loss",
        "the service rate fell (CPU contention, throttling or lost replicas) at unchanged load",
    ),
    "service_slowdown": (
        "service slowdown",
        "each request took longer (a sleep, I/O wait, lock or slow call) "
        "without more CPU per request",
    ),
    "error_fault": (
        "error fault",
        "requests failed (a deploy, configuration or failing call) "
        "without a load or latency cause",
    ),
    "memory_leak": (
        "memory growth",
        "memory use climbed beyond its normal range, steadily or in steps",
    ),
    "retry_storm": (
        "retry storm",
        "retries set off by a trigger added load that kept the overload going "
        "after the trigger ended",
    ),
}

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")


def clean_text(value: object) -> str:
    """Turn any value into one printable line: control characters become a space.

    Data strings reach terminals, table cells and plot labels, where a newline breaks the
    layout and an escape sequence can rewrite a terminal; neither carries meaning here.
    """
    return _CONTROL.sub(" ", str(value)).strip()


def sentence(value: object) -> str:
    """One clean line with a capital first letter and a full stop, for engine-written text."""
    text = clean_text(value)
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def num(value: object) -> float | None:
    """Return ``value`` as a finite float, or None when it is missing or not a number."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        x = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def as_mapping(value: object) -> Mapping[str, Any]:
    """Return ``value`` if it is a mapping, else an empty one (for missing/null fields)."""
    return value if isinstance(value, Mapping) else {}


def as_list(value: object) -> list[Any]:
    """Return ``value`` as a list if it is a sequence (not a string), else an empty list."""
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        return list(value)
    return []


def interval(value: object) -> tuple[float | None, float | None, float | None]:
    """Read ``{"median": m, "interval_95": [lo, hi]}`` as (median, lo, hi), None where absent.

    A bare number is accepted as a median without an interval.
    """
    if (m := num(value)) is not None:
        return m, None, None
    d = as_mapping(value)
    iv = as_list(d.get("interval_95"))
    lo = num(iv[0]) if len(iv) == 2 else None
    hi = num(iv[1]) if len(iv) == 2 else None
    return num(d.get("median")), lo, hi


def utc(t: object, *, date: bool = True) -> str:
    """Format unix seconds as ``2024-05-01 12:34:56 UTC`` (or the time alone)."""
    x = num(t)
    if x is None:
        return "unknown"
    try:
        moment = datetime.fromtimestamp(x, tz=UTC)
    except (OverflowError, OSError, ValueError):
        return f"{x:.0f} (unix s)"
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if date else "%H:%M:%S")


def utc_interval(lo: object, hi: object) -> str:
    """Format an interval of unix seconds, naming the date once when both ends share it."""
    a, b = num(lo), num(hi)
    if a is None or b is None:
        return "unknown"
    if utc(a)[:10] == utc(b)[:10]:
        return f"{utc(a)[:10]} {utc(a, date=False)} – {utc(b, date=False)} UTC"
    return f"{utc(a)} – {utc(b)}"


def fmt_prob(p: object) -> str:
    """Probability with the precision that matters: 0.93, 0.004, < 0.001, > 0.999."""
    x = num(p)
    if x is None:
        return "n/a"
    if x <= 0:
        return "0"
    if x < 0.001:
        return "< 0.001"
    if x >= 0.9995:
        return "≈ 1"
    if x > 0.999:
        return "> 0.999"
    if x < 0.01 or x > 0.99:
        return f"{x:.3f}"
    return f"{x:.2f}"


def p_is(p: object) -> str:
    """``p = 0.93``, or ``p < 0.001`` / ``p ≈ 1`` when the value carries its own relation."""
    text = fmt_prob(p)
    return f"p {text}" if text[0] in "<>≈" else f"p = {text}"


def fmt_num(x: object, digits: int = 3) -> str:
    """Format a general number with ``digits`` significant digits, or ``n/a``."""
    v = num(x)
    return "n/a" if v is None else f"{v:.{digits}g}"


def fmt_bits(x: object) -> str:
    """Information in bits, two decimals."""
    v = num(x)
    return "n/a" if v is None else f"{v:.2f} bits"


def _ratio_text(x: float) -> str:
    return f"×{x:.3g}"


def fmt_ratio(value: object) -> str:
    """Format a ratio after/before with its interval: ``×2.4 (95 %: ×2.1 – ×2.8)``."""
    m, lo, hi = interval(value)
    if m is None:
        return "n/a"
    text = _ratio_text(m)
    if lo is not None and hi is not None:
        text += f" (95 %: {_ratio_text(lo)} – {_ratio_text(hi)})"
    return text


def fmt_percent(value: object) -> str:
    """Format a fraction as a percentage with its interval: ``72 % (95 %: 65 – 80 %)``."""
    m, lo, hi = interval(value)
    if m is None:
        return "n/a"
    text = f"{100 * m:.0f} %"
    if lo is not None and hi is not None:
        text += f" (95 %: {100 * lo:.0f} – {100 * hi:.0f} %)"
    return text


def mechanism_name(mechanism: object) -> str:
    """Return the human name of a mechanism, or the raw name when it is not in the vocabulary."""
    key = clean_text(mechanism)
    return MECHANISMS.get(key, (key.replace("_", " "), ""))[0]


def hyp_key(h: Mapping[str, Any]) -> tuple[str | None, str]:
    """Return the (component, mechanism) identity of a hypothesis or credible-set entry."""
    comp = h.get("component")
    return (None if comp is None else str(comp), str(h.get("mechanism")))


def hyp_label(h: Mapping[str, Any]) -> str:
    """``capacity loss in carts``, or ``no fault (normal variation)`` for the null."""
    comp, mech = hyp_key(h)
    if mech == "none" or comp is None:
        return "no fault (normal variation)" if mech == "none" else mechanism_name(mech)
    return f"{mechanism_name(mech)} in {clean_text(comp)}"


def credible_keys(report: Mapping[str, Any]) -> set[tuple[str | None, str]]:
    """Identities of the hypotheses in the 95 % credible set."""
    amb = as_mapping(report.get("ambiguity"))
    return {hyp_key(as_mapping(c)) for c in as_list(amb.get("credible_set"))}

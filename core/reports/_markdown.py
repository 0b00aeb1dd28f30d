"""The report as Markdown, ready to paste into a postmortem (CommonMark plus GFM tables).

Headings start at level 2 so the report sits inside a postmortem whose title is the level-1
heading. Every data string is escaped: component names and label values come from exporters
and may hold ``|``, ``*``, ``<``, ``$`` or backticks, which would otherwise break a table,
start emphasis, inject HTML or math when the postmortem is rendered.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from latentcause.reports._content import build_document
from latentcause.reports._document import (
    Block,
    Bullets,
    Code,
    Figure,
    Heading,
    Line,
    Paragraph,
    Strong,
    Table,
)

__all__ = ["escape_markdown", "render_markdown"]

# Characters that start or end inline markup wherever they stand: emphasis, code, links,
# tables, strikethrough, headings and blockquotes (at the start of a list item), and math on
# GitHub. Three more are escaped only where they could act: "<" before a tag or autolink,
# "&" before an entity, "_" unless it sits inside a word (CommonMark ignores intraword "_").
_ALWAYS = re.compile(r"[\\`*\[\]|#~$>]|<(?=[A-Za-z/!?])|&(?=[#A-Za-z0-9])")
_BACKTICKS = re.compile(r"`+")


def _underscore(text: str, i: int) -> bool:
    before = text[i - 1] if i > 0 else " "
    after = text[i + 1] if i + 1 < len(text) else " "
    return not (before.isalnum() and after.isalnum())


def escape_markdown(text: str) -> str:
    """Backslash-escape every character that could turn plain text into Markdown markup."""
    out = []
    for i, ch in enumerate(text):
        if (ch == "_" and _underscore(text, i)) or (ch != "_" and _ALWAYS.match(text, i)):
            out.append("\\")
        out.append(ch)
    return "".join(out)


def _code(text: str, in_table: bool) -> str:
    """Make a code span whose fence is longer than any run of backticks inside it."""
    if not text:
        return "(empty)"
    longest = max((len(m) for m in _BACKTICKS.findall(text)), default=0)
    fence = "`" * (longest + 1)
    if text.startswith("`") or text.endswith("`"):
        text = f" {text} "
    if in_table:
        # GFM splits table cells on "|" even inside code spans; "\|" is its escape there.
        text = text.replace("|", "\\|")
    return f"{fence}{text}{fence}"


def _line(parts: Line, in_table: bool = False) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(_code(part.text, in_table))
        elif isinstance(part, Strong):
            out.append(f"**{escape_markdown(part.text)}**")
        else:
            out.append(escape_markdown(part))
    return "".join(out)


def _table(t: Table) -> str:
    header = "| " + " | ".join(escape_markdown(h) for h in t.header) + " |"
    rule = "| " + " | ".join("---:" if n else "---" for n in t.numeric) + " |"
    rows = ["| " + " | ".join(_line(c, in_table=True) for c in row) + " |" for row in t.rows]
    return "\n".join([header, rule, *rows])


def _block(b: Block) -> str | None:
    if isinstance(b, Heading):
        return "#" * (b.level + 1) + " " + escape_markdown(b.text)
    if isinstance(b, Paragraph):
        text = _line(b.parts)
        if b.kind == "lead":
            return f"**{text}**"
        if b.kind == "warning":
            return f"> **Warning:** {text}"
        return text
    if isinstance(b, Bullets):
        return "\n".join(f"- {_line(item)}" for item in b.items)
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        return None
    raise TypeError(f"unknown block {type(b).__name__}")  # pragma: no cover - a bug


def render_markdown(report: Mapping[str, Any], idata: object | None = None) -> str:
    """Render a report as Markdown.

    Parameters
    ----------
    report
        report.json content (schema "1" plus the additions in docs/ARTEFACTS.md); fields
        beyond the contract may be missing or null.
    idata
        Accepted for symmetry with ``render_html``; the Markdown has no plots, so the text
        is the same with or without it (re-rendering without the posterior gives the same
        Markdown).

    Returns
    -------
    str
        The Markdown, ending with a newline.
    """
    del idata
    parts = [s for b in build_document(report) if (s := _block(b)) is not None]
    return "\n\n".join(parts) + "\n"

"""The report as one self-contained HTML file: inline CSS, plots as base64 PNG, no scripts.

Nothing is fetched: no external style sheet, font, script or image, so the file opens the
same offline, attached to a ticket or printed. A Content-Security-Policy forbids scripts and
any request but ``data:`` images, as a second line of defence behind escaping every data
string with ``html.escape``.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from latentcause.reports._content import TITLE, build_document, headline
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

if TYPE_CHECKING:  # matplotlib is imported only when a page is drawn (render_html)
    from latentcause.reports._plots import Plot

__all__ = ["render_html"]

_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

_CSS = """
:root { --ink: #1f2933; --muted: #52606d; --rule: #d9e2ec; --soft: #f5f7fa;
        --accent: #2f5d95; --warn-bg: #fff7e6; --warn: #8a4b00; }
* { box-sizing: border-box; }
html { background: #fff; }
body { margin: 0 auto; max-width: 62rem; padding: 2rem 1.5rem 4rem; color: var(--ink);
       background: #fff; font: 15px/1.55 system-ui, -apple-system, "Segoe UI", Roboto,
       "Noto Sans", "DejaVu Sans", "Helvetica Neue", Arial, sans-serif; }
h1 { font-size: 1.6rem; line-height: 1.25; margin: 0 0 0.8rem; letter-spacing: -0.01em; }
h2 { font-size: 1.15rem; margin: 2.2rem 0 0.6rem; padding-bottom: 0.25rem;
     border-bottom: 1px solid var(--rule); }
p { margin: 0.55rem 0; }
p.lead { font-size: 1.12rem; font-weight: 600; margin: 0.2rem 0 0.8rem; padding: 0.7rem 1rem;
         background: var(--soft); border-left: 4px solid var(--accent); }
p.warning { background: var(--warn-bg); border-left: 4px solid #d97706; color: var(--warn);
            padding: 0.55rem 0.9rem; }
code { font: 0.86em/1.4 ui-monospace, "SFMono-Regular", "DejaVu Sans Mono", Menlo, Consolas,
       monospace; background: var(--soft); padding: 0.05em 0.3em; border-radius: 3px;
       overflow-wrap: anywhere; }
table { border-collapse: collapse; margin: 0.6rem 0 0.9rem; font-size: 0.93rem;
        font-variant-numeric: tabular-nums; }
th, td { padding: 0.3rem 0.75rem; border-bottom: 1px solid var(--rule); text-align: left;
         vertical-align: top; overflow-wrap: anywhere; }
th { font-weight: 600; color: var(--muted); border-bottom: 2px solid var(--rule);
     font-size: 0.86rem; }
td.num, th.num { text-align: right; }
tbody tr:nth-child(even) { background: #fafbfc; }
ul { margin: 0.4rem 0 0.8rem; padding-left: 1.3rem; }
li { margin: 0.15rem 0; }
figure { margin: 0.8rem 0 1.2rem; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: 0.85rem; margin-top: 0.3rem; }
footer { margin-top: 3rem; color: var(--muted); font-size: 0.8rem; }
@media print {
  body { max-width: none; padding: 0; font-size: 10.5pt; color: #000; }
  p.lead, p.warning, code, tbody tr:nth-child(even) { background: none; }
  p.lead, p.warning { border-left-width: 3px; }
  h2 { break-after: avoid; }
  figure, table, p.lead { break-inside: avoid; }
  footer { display: none; }
}
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _line(parts: Line) -> str:
    out = []
    for part in parts:
        if isinstance(part, Code):
            out.append(f"<code>{_e(part.text)}</code>")
        elif isinstance(part, Strong):
            out.append(f"<strong>{_e(part.text)}</strong>")
        else:
            out.append(_e(part))
    return "".join(out)


def _table(t: Table) -> str:
    def cls(i: int) -> str:
        return ' class="num"' if i < len(t.numeric) and t.numeric[i] else ""

    head = "".join(f"<th{cls(i)}>{_e(h)}</th>" for i, h in enumerate(t.header))
    rows = "\n".join(
        "<tr>" + "".join(f"<td{cls(i)}>{_line(c)}</td>" for i, c in enumerate(row)) + "</tr>"
        for row in t.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}\n</tbody>\n</table>"


def _figure(plot: Plot) -> str:
    data = base64.b64encode(plot.png).decode("ascii")
    return (
        f'<figure id="plot-{_e(plot.key)}">'
        f'<img src="data:image/png;base64,{data}" alt="{_e(plot.alt)}">'
        f"<figcaption>{_e(plot.caption)}</figcaption></figure>"
    )


def _block(b: Block, plots: Mapping[str, Plot]) -> str | None:
    if isinstance(b, Heading):
        level = min(max(b.level, 1), 6)
        return f'<h{level} id="{_e(b.anchor)}">{_e(b.text)}</h{level}>'
    if isinstance(b, Paragraph):
        text = _line(b.parts)
        if b.kind == "warning":
            return f'<p class="warning"><strong>Warning:</strong> {text}</p>'
        if b.kind == "lead":
            return f'<p class="lead">{text}</p>'
        return f"<p>{text}</p>"
    if isinstance(b, Bullets):
        return "<ul>\n" + "\n".join(f"<li>{_line(i)}</li>" for i in b.items) + "\n</ul>"
    if isinstance(b, Table):
        return _table(b)
    if isinstance(b, Figure):
        plot = plots.get(b.key)
        return _figure(plot) if plot is not None else None
    raise TypeError(f"unknown block {type(b).__name__}")  # pragma: no cover - a bug


def render_html(report: Mapping[str, Any], idata: object | None = None) -> str:
    """Render a report as one self-contained HTML page with plots.

    Parameters
    ----------
    report
        report.json content (schema "1" plus the additions in docs/ARTEFACTS.md).
    idata
        The ``arviz.InferenceData`` of the leading hypothesis (layout in docs/ARTEFACTS.md),
        or None: plots that need it (observed series with the predictive band, hidden
        state, onset posterior from ``constant_data``) are then left out.

    Returns
    -------
    str
        The HTML document. Every data string is HTML-escaped.
    """
    from latentcause.reports._plots import render_plots

    plots = render_plots(report, idata)
    body = "\n".join(s for b in build_document(report) if (s := _block(b, plots)) is not None)
    title = _e(f"{TITLE}: {headline(report)}")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n</main>\n"
        "<footer>Made by latentcause from report.json and posterior.nc; "
        "re-render with <code>latentcause report DIR</code>.</footer>\n"
        "</body>\n</html>\n"
    )

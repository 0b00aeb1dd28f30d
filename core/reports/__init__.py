"""Reports for postmortems: report.json, Markdown, self-contained HTML and posterior.nc.

``write_outputs`` writes a result folder atomically; ``render_markdown`` and ``render_html``
turn a report (and its posterior) into text; ``summary_lines`` is the terminal summary;
``save_posterior``/``load_posterior`` keep the posterior with its provenance and refuse a
mismatched one; ``attach_report`` puts a report into a postmortem document. Nothing here
imports the inference engine: a result is anything with ``report`` and ``idata``.
"""

from latentcause.reports._attach import BEGIN, END, attach_block, attach_report
from latentcause.reports._html import render_html
from latentcause.reports._load import SavedResult, load_result
from latentcause.reports._markdown import escape_markdown, render_markdown
from latentcause.reports._netcdf import (
    check_posterior,
    load_posterior,
    read_report,
    running_model_version,
    save_posterior,
)
from latentcause.reports._summary import summary_lines
from latentcause.reports._write import ResultLike, dump_report_json, write_outputs

__all__ = [
    "BEGIN",
    "END",
    "ResultLike",
    "SavedResult",
    "attach_block",
    "attach_report",
    "check_posterior",
    "dump_report_json",
    "escape_markdown",
    "load_posterior",
    "load_result",
    "read_report",
    "render_html",
    "render_markdown",
    "running_model_version",
    "save_posterior",
    "summary_lines",
    "write_outputs",
]

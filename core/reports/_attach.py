"""Put a report into a postmortem document, between markers, touching nothing else.

A postmortem is someone's document: every byte outside the latentcause block stays as it
was, including its line endings, a byte-order mark, bytes that are not valid UTF-8 and a
missing final newline. A second run replaces the block, so attaching is idempotent. The
file is replaced atomically, keeps its mode, and its previous content is kept in
``FILE.bak``. A begin marker without its end marker is refused rather than guessed at.
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

from latentcause.errors import InputError
from latentcause.reports._atomic import atomic_write_bytes

__all__ = ["BEGIN", "END", "attach_block", "attach_report"]

log = logging.getLogger(__name__)

BEGIN = "<!-- latentcause:begin -->"
END = "<!-- latentcause:end -->"

# surrogateescape maps undecodable bytes to lone surrogates and back, so a document in a
# legacy encoding round-trips byte for byte.
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


def _newline(text: str) -> str:
    """Return the document's line ending: CRLF when most of its line breaks are CRLF."""
    crlf = text.count("\r\n")
    return "\r\n" if crlf and crlf >= text.count("\n") - crlf else "\n"


def attach_block(document: str, report_md: str, *, name: str = "postmortem") -> str:
    """Return ``document`` with ``report_md`` between the markers, replacing an older block.

    Parameters
    ----------
    document
        The postmortem's text.
    report_md
        The report's Markdown (LF line breaks; converted to the document's).
    name
        The document's name, for error messages.

    Raises
    ------
    InputError
        The markers are unbalanced: a begin without an end, an end before its begin, or
        more than one of either.
    """
    nl = _newline(document)
    body = report_md.replace("\r\n", "\n").rstrip("\n").replace("\n", nl)
    block = f"{BEGIN}{nl}{body}{nl}{END}"
    n_begin, n_end = document.count(BEGIN), document.count(END)
    if n_begin == 0 and n_end == 0:
        if not document:
            return block + nl
        ends_with_nl = document.endswith(("\n", "\r"))
        sep = nl if ends_with_nl else nl + nl
        return document + sep + block + (nl if ends_with_nl else "")
    if n_begin != 1 or n_end != 1:
        raise InputError(
            f"{name}: expected one {BEGIN} and one {END}, found {n_begin} and {n_end}; "
            "fix the markers by hand"
        )
    start, end = document.index(BEGIN), document.index(END)
    if end < start:
        raise InputError(f"{name}: {END} comes before {BEGIN}; fix the markers by hand")
    return document[:start] + block + document[end + len(END):]


def attach_report(postmortem: Path, report: Path) -> Path:
    """Attach a saved report to a postmortem file in place; return the backup's path.

    Parameters
    ----------
    postmortem
        The postmortem document (Markdown). It must exist.
    report
        A result folder holding report.md, or a report.md file.

    Returns
    -------
    Path
        ``postmortem`` with ``.bak`` appended: the content before this run.
    """
    postmortem = Path(postmortem)
    report = Path(report)
    md_path = report / "report.md" if report.is_dir() else report
    if not postmortem.is_file():
        raise InputError(f"--postmortem {postmortem}: no such file")
    try:
        report_md = md_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"--report {report}: no report.md there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--report {md_path}: cannot read: {exc}") from None
    if BEGIN in report_md or END in report_md:
        raise InputError(f"--report {md_path}: holds the latentcause markers itself")
    try:
        old = postmortem.read_bytes()
        mode = stat.S_IMODE(postmortem.stat().st_mode)
    except OSError as exc:
        raise InputError(f"--postmortem {postmortem}: cannot read: {exc.strerror}") from None
    text = old.decode(_ENCODING, _ERRORS)
    new = attach_block(text, report_md, name=str(postmortem)).encode(_ENCODING, _ERRORS)
    backup = postmortem.with_name(postmortem.name + ".bak")
    try:
        atomic_write_bytes(backup, old, mode=mode)
        atomic_write_bytes(postmortem, new, mode=mode)
    except OSError as exc:
        raise InputError(f"--postmortem {postmortem}: cannot write: {exc.strerror}") from None
    log.info("attached %s to %s (previous content in %s)", md_path, postmortem, backup)
    return backup

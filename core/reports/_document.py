"""A tiny document model: the report's content once, rendered to Markdown and to HTML.

Building the content as blocks of inline pieces (rather than formatting strings per output)
keeps the two renderings saying the same thing, and makes escaping total: a renderer escapes
every piece of text it is given, so no data string can reach either output unescaped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "Block",
    "Bullets",
    "Code",
    "Figure",
    "Heading",
    "Inline",
    "Line",
    "Paragraph",
    "Strong",
    "Table",
]


@dataclass(frozen=True)
class Code:
    """Verbatim text (hashes, queries, vocabulary names): shown in a monospace font."""

    text: str


@dataclass(frozen=True)
class Strong:
    """Emphasised text."""

    text: str


#: A piece of a line: plain text (escaped by the renderer), code or strong text.
Inline = str | Code | Strong
#: A line of inline pieces, rendered one after the other.
Line = tuple[Inline, ...]


@dataclass(frozen=True)
class Heading:
    """A section heading: level 1 is the report's title, 2 its sections."""

    level: int
    text: str
    anchor: str


@dataclass(frozen=True)
class Paragraph:
    """A paragraph; ``kind`` is ``""``, ``"lead"`` (the headline) or ``"warning"``."""

    parts: Line
    kind: str = ""


@dataclass(frozen=True)
class Bullets:
    """An unordered list."""

    items: tuple[Line, ...]


@dataclass(frozen=True)
class Table:
    """A table; ``numeric[i]`` right-aligns column ``i``."""

    header: tuple[str, ...]
    rows: tuple[tuple[Line, ...], ...]
    numeric: tuple[bool, ...]


@dataclass(frozen=True)
class Figure:
    """A place for a plot (HTML only): ``key`` names one of the plots in ``_plots``."""

    key: str


Block = Heading | Paragraph | Bullets | Table | Figure

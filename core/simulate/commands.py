"""Command-line commands of this package, registered on the main app by ``register``."""

from __future__ import annotations

import typer

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app``."""

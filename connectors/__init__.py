"""Connectors: turn a source (files, Prometheus, spans) into Observations."""

from latentcause.connectors.files import read_input, read_table

__all__ = ["read_input", "read_table"]

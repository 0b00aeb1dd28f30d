"""latentcause: which component, which mechanism, and how sure, after an incident.

The package reads telemetry (``latentcause.connectors``), compares generative models of
failure mechanisms (``latentcause.models``) by their evidence (``latentcause.inference``) and
writes reports for postmortems (``latentcause.reports``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("latentcause")
except PackageNotFoundError:  # pragma: no cover - running from an uninstalled tree
    __version__ = "0.0.0"

__all__ = ["__version__"]

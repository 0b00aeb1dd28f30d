"""One exception hierarchy for latentcause.

The CLI turns every ``LatentCauseError`` into one line on stderr and exit status 2; any other
exception escaping is a bug. Leaves also subclass the matching built-in type so callers that
catch ``ValueError`` or ``OSError`` keep working::

    LatentCauseError
    ├── InputError (ValueError)            bad input: layout, values, options
    │   ├── LayoutError                    no time column, no recognisable signal, bad file
    │   ├── WindowError                    window too short, onset outside it
    │   └── TraceFormatError               malformed or truncated span files
    ├── SourceError (OSError)              a source could not be read
    │   ├── SourceUnreachable (ConnectionError)   server down, DNS, TLS, timeout
    │   └── QueryError                     the server answered with an error or nothing
    ├── ModelError (RuntimeError)          a mechanism is misconfigured
    ├── ArtifactError (ValueError)         a saved result does not match (version, hash)
    └── StoreError (RuntimeError)          the incident store: bad spec, locked incident
        └── LockedError                    another run holds the incident's lock
"""

from __future__ import annotations

__all__ = [
    "ArtifactError",
    "InputError",
    "LatentCauseError",
    "LayoutError",
    "LockedError",
    "ModelError",
    "QueryError",
    "SourceError",
    "SourceUnreachable",
    "StoreError",
    "TraceFormatError",
    "WindowError",
]


class LatentCauseError(Exception):
    """Base of every error latentcause raises on purpose."""


class InputError(LatentCauseError, ValueError):
    """The input (files, options, values) cannot be analysed as given."""


class LayoutError(InputError):
    """A file's layout is not one latentcause reads (no time column, no known signal)."""


class WindowError(InputError):
    """The time window is unusable: too short, or an onset outside it."""


class TraceFormatError(InputError):
    """A span file is malformed, truncated or of an unknown format."""


class SourceError(LatentCauseError, OSError):
    """A data source could not be read."""


class SourceUnreachable(SourceError, ConnectionError):
    """The source did not answer: connection refused, DNS, TLS or timeout."""


class QueryError(SourceError):
    """The source answered with an error, or with no data for a query."""


class ModelError(LatentCauseError, RuntimeError):
    """A mechanism or its configuration is inconsistent."""


class ArtifactError(LatentCauseError, ValueError):
    """A saved result does not match this version, its config hash or its data hash."""


class StoreError(LatentCauseError, RuntimeError):
    """The incident store is inconsistent or an incident spec is invalid."""


class LockedError(StoreError):
    """Another run holds the lock of an incident."""

"""Times on the command line: RFC 3339, unix seconds, or relative to now (``now-2h``)."""

from __future__ import annotations

import re
import time
from datetime import datetime

from latentcause.errors import InputError

__all__ = ["parse_duration", "parse_time"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")
_RELATIVE = re.compile(r"now\s*(?:([+-])\s*(.+))?", re.IGNORECASE)


def parse_duration(text: str) -> float:
    """Seconds in a Prometheus-style duration such as ``15s``, ``1h30m`` or a bare number."""
    s = text.strip()
    try:
        return float(s)
    except ValueError:
        pass
    parts = _DURATION.findall(s)
    if not parts or "".join(n + u for n, u in parts) != s:
        raise InputError(f"{text!r} is not a duration (examples: 15s, 5m, 1h30m)")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def parse_time(text: str, now: float | None = None) -> float:
    """Unix seconds from RFC 3339, unix seconds (or ms), or ``now``, ``now-2h``, ``now+5m``."""
    s = text.strip()
    m = _RELATIVE.fullmatch(s)
    if m:
        base = time.time() if now is None else now
        if m.group(1) is None:
            return base
        delta = parse_duration(m.group(2))
        return base - delta if m.group(1) == "-" else base + delta
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        return value / 1000.0 if value > 1e11 else value
    try:
        stamp = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError as exc:
        raise InputError(
            f"{text!r} is not a time (RFC 3339, unix seconds, or now-2h)"
        ) from exc
    if stamp.tzinfo is None:
        raise InputError(f"{text!r} has no time zone; add Z or an offset such as +00:00")
    return stamp.timestamp()

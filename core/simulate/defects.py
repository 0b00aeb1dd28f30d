"""Data defects real scrapes have: missing samples, a scrape gap, a subset of the signals.

Defects damage the data, never the truth: the root keeps its columns (hiding the root's
columns is what ``ambiguity`` does, on purpose and with the consequences recorded), and the
onset's neighbourhood keeps its rows, so every defective incident stays analysable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from latentcause.errors import InputError
from latentcause.simulate.system import COMPONENTS, callers

__all__ = ["DEFECTS", "apply_defects"]

DEFECTS: tuple[str, ...] = ("missing", "gap", "subset")


def apply_defects(
    frame: pd.DataFrame,
    defects: tuple[str, ...],
    rng: np.random.Generator,
    *,
    root: str | None,
    onset: float,
) -> tuple[pd.DataFrame, list[str]]:
    """Apply each named defect in turn; return the frame and one note per defect.

    ``missing``: 3 % of the cells (beyond ``time``) become NaN, as lost samples do.
    ``gap``: the rows of 30 to 90 contiguous seconds are gone (a scraper restart), at least
    60 s away from the onset. ``subset``: three components other than the root and its direct
    callers lose rate, errors and latency (exporters without request metrics), and every
    component but the root loses ``restarts``.
    """
    notes: list[str] = []
    for defect in defects:
        if defect == "missing":
            values = frame.drop(columns="time")
            mask = rng.random(values.shape) < 0.03
            frame = pd.concat([frame[["time"]], values.mask(mask)], axis=1)
            notes.append(f"missing: {int(mask.sum())} cells set to NaN (3 %)")
        elif defect == "gap":
            t = frame["time"].to_numpy(dtype=float)
            length = float(rng.uniform(30.0, 90.0))
            allowed = [s for s in t[2:-4] if s + length < onset - 60.0 or s > onset + 60.0]
            start = float(allowed[int(rng.integers(len(allowed)))])
            keep = (t < start) | (t >= start + length)
            notes.append(f"gap: rows from {start:.0f} for {length:.0f} s removed "
                         f"({int((~keep).sum())} rows)")
            frame = frame.loc[keep].reset_index(drop=True)
        elif defect == "subset":
            protected = {root, *(callers(root) if root else [])}
            others = [c for c in COMPONENTS if c not in protected]
            picked = sorted(rng.choice(len(others), size=min(3, len(others)), replace=False))
            names = [others[k] for k in picked]
            drop = [f"{c}_{s}" for c in names
                    for s in ("rps", "err", "lat_p50", "lat_p90", "lat_p99")]
            drop += [f"{c}_restarts" for c in COMPONENTS if c != root]
            drop = [c for c in drop if c in frame.columns]
            frame = frame.drop(columns=drop)
            notes.append(f"subset: no request metrics for {', '.join(names)}; "
                         "no restart counters but the root's")
        else:
            raise InputError(f"unknown data defect {defect!r}; known: {', '.join(DEFECTS)}")
    return frame, notes

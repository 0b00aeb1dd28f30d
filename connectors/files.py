"""Offline metrics: wide or long CSV/Parquet files and incident folders (RCD, RCAEval).

See INTERFACE.md for the layouts. Everything here returns ``Observations``; errors are one-line
``InputError``s naming the file.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from latentcause.errors import InputError, LayoutError
from latentcause.observations import Observations, validate_frame
from latentcause.signals import canonical_signal, split_column

__all__ = ["read_input", "read_table"]

log = logging.getLogger(__name__)

_TABLE_SUFFIXES = {".csv", ".parquet", ".pq"}
_LONG_COLUMNS = {"time", "component", "signal", "value"}


def read_input(path: str | Path) -> Observations:
    """Read one incident from a file or a folder holding one.

    A folder with ``normal.csv`` and ``anomalous.csv`` is the RCD layout: the two are separate
    recording windows, so the normal one is re-timed to end one step before the anomalous one
    begins, and the boundary is the onset. Otherwise the folder must hold exactly one table
    (CSV or Parquet); an ``inject_time.txt`` beside a table gives the onset.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(f"{p}: no such file or folder")
    if p.is_dir():
        if (p / "normal.csv").is_file() and (p / "anomalous.csv").is_file():
            return _read_rcd(p)
        tables = sorted(q for q in p.iterdir() if q.suffix.lower() in _TABLE_SUFFIXES)
        if not tables:
            raise InputError(f"{p}: the folder holds no .csv or .parquet file")
        if len(tables) > 1:
            names = ", ".join(q.name for q in tables)
            raise InputError(f"{p}: the folder holds several tables ({names}); name one")
        p = tables[0]
    obs = read_table(p)
    inject = p.parent / "inject_time.txt"
    if inject.is_file():
        obs = obs.with_onset(_read_inject_time(inject), source="layout")
    return obs


def read_table(path: Path) -> Observations:
    """Read one wide or long table into Observations (no onset)."""
    raw = _load(path)
    columns = {c.lower(): c for c in map(str, raw.columns)}
    if _LONG_COLUMNS <= set(columns):
        frame = _from_long(raw, columns, path)
    else:
        frame = _from_wide(raw, columns, path)
    frame = validate_frame(frame, str(path))
    return Observations(frame=frame, source=f"file:{path.resolve()}", queries=(str(path),))


def _load(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix == ".csv":
            return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LayoutError(f"{path}: cannot be read as {suffix[1:]}: {first}") from exc
    raise LayoutError(f"{path}: unknown file type {suffix!r}; expected .csv or .parquet")


def _time_index(values: pd.Series, path: Path) -> np.ndarray:
    """Unix seconds from a time column of numbers (s or ms) or timestamps."""
    if pd.api.types.is_numeric_dtype(values):
        t = values.to_numpy(dtype=float)
        finite = t[np.isfinite(t)]
        if finite.size and np.nanmedian(np.abs(finite)) > 1e11:
            t = t / 1000.0  # milliseconds
        return t
    try:
        stamps = pd.to_datetime(values, utc=True)
    except (ValueError, TypeError) as exc:
        raise LayoutError(
            f"{path}: the time column is neither unix seconds nor timestamps"
        ) from exc
    return ((stamps - pd.Timestamp(0, tz="UTC")) / pd.Timedelta(seconds=1)).to_numpy(float)


def _time_column(columns: dict[str, str], path: Path) -> str:
    for name in ("time", "timestamp", "ts"):
        if name in columns:
            return columns[name]
    raise LayoutError(f"{path}: no 'time' column")


def _from_wide(raw: pd.DataFrame, columns: dict[str, str], path: Path) -> pd.DataFrame:
    tcol = _time_column(columns, path)
    keys: list[tuple[str, str]] = []
    picked: list[str] = []
    ignored: list[str] = []
    for col in map(str, raw.columns):
        if col == tcol:
            continue
        split = split_column(col)
        if split is None:
            ignored.append(col)
            continue
        if split in keys:
            log.warning("%s: column %r repeats %s_%s; kept the first", path, col, *split)
            continue
        keys.append(split)
        picked.append(col)
    if not keys:
        raise LayoutError(f"{path}: no column names a known signal (<component>_<signal>)")
    if ignored:
        log.info("%s: ignored %d columns with no known signal: %s", path, len(ignored),
                 ", ".join(ignored[:5]) + (" ..." if len(ignored) > 5 else ""))
    frame = raw.loc[:, picked].copy()
    frame.columns = pd.MultiIndex.from_tuples(keys, names=["component", "signal"])
    frame.index = pd.Index(_time_index(raw[tcol], path), name="time")
    return frame


def _from_long(raw: pd.DataFrame, columns: dict[str, str], path: Path) -> pd.DataFrame:
    t, c, s, v = (columns[k] for k in ("time", "component", "signal", "value"))
    signals = raw[s].astype(str).map(canonical_signal)
    unknown = sorted(set(raw.loc[signals.isna(), s].astype(str)))
    if unknown:
        log.info("%s: ignored unknown signals: %s", path, ", ".join(unknown[:5]))
    keep = signals.notna()
    if not keep.any():
        raise LayoutError(f"{path}: no row names a known signal")
    long = pd.DataFrame({
        "time": _time_index(raw.loc[keep, t], path),
        "component": raw.loc[keep, c].astype(str).to_numpy(),
        "signal": signals[keep].to_numpy(),
        "value": pd.to_numeric(raw.loc[keep, v], errors="coerce").to_numpy(),
    })
    frame = long.pivot_table(index="time", columns=["component", "signal"], values="value",
                             aggfunc="mean", dropna=False)
    return frame.dropna(axis=1, how="all")


def _read_rcd(folder: Path) -> Observations:
    normal = read_table(folder / "normal.csv")
    anomalous = read_table(folder / "anomalous.csv")
    onset = float(anomalous.times[0])
    step = anomalous.step_s or normal.step_s or 1.0
    shift = onset - step - float(normal.times[-1])
    before = normal.frame.set_axis(normal.frame.index + shift, axis=0)
    frame = pd.concat([before, anomalous.frame], axis=0)
    frame = validate_frame(frame, str(folder))
    note = (f"normal.csv re-timed by {shift:+.0f} s to end just before anomalous.csv "
            "(separate recording windows; normal.csv is the baseline)")
    obs = Observations(frame=frame, source=f"file:{folder.resolve()}",
                       queries=(str(folder / "normal.csv"), str(folder / "anomalous.csv")),
                       notes=(note,))
    return replace(obs, onset=onset, onset_source="layout",
                   window=(float(frame.index[0]), float(frame.index[-1])))


def _read_inject_time(path: Path) -> float:
    text = path.read_text().strip()
    try:
        value = float(text.split()[0])
    except (ValueError, IndexError) as exc:
        raise LayoutError(f"{path}: expected unix seconds, found {text[:40]!r}") from exc
    return value / 1000.0 if value > 1e11 else value

"""Put an incident on the fixed grid the models expect: scale-free rows per component.

Each component's signals map onto the model rows (``latentcause.models.ROWS``): positive
signals on a log scale, errors and retries on a logit scale (retries clipped at the retry
budget, ``RETRY_FLOOR``: a share under it is read as none), restart counters as log1p of the
increase.
Every row is centred on the component's own baseline (median before the onset) and gets a
robust spread (MAD with a floor, so a flat baseline does not make every wiggle infinite
evidence). With a known onset, the pre-onset and post-onset parts get their own bins; with an
unknown onset the window is binned evenly and onset candidates lie on bin edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from latentcause.errors import WindowError
from latentcause.models import LATENCY_ROWS, RETRY_FLOOR, ROWS
from latentcause.observations import Observations
from latentcause.signals import is_latency

__all__ = ["N_POST", "N_PRE", "N_TIME", "ComponentGrid", "Grid", "OnsetCandidate", "make_grid"]

#: Bins of the grid; fixed so every graph compiles once.
N_TIME = 64
#: With a known onset: bins before and after it.
N_PRE = 16
N_POST = N_TIME - N_PRE
#: With an unknown onset: the first candidate bin edge and the last.
FIRST_CANDIDATE = 10
LAST_CANDIDATE = N_TIME - 8

# Spread floors per transform: 5 % on log rows, 0.25 on logit, 0.1 on counts.
_FLOOR = {"log": 0.05, "logit": 0.25, "count": 0.1}
_ROW_TRANSFORM = {r: "log" for r in ROWS} | {"err": "logit", "retries": "logit",
                                              "restarts": "count"}
#: Lowest share on a logit row: errors keep their detail down to 0.5 %, retries start to count
#: past the clients' retry budget.
_LOGIT_LOW = {"err": 0.005, "retries": RETRY_FLOOR}


@dataclass(frozen=True)
class OnsetCandidate:
    """An onset on a bin edge, with its drivers on the grid and its prior probability."""

    time: float
    step: np.ndarray
    elapsed: np.ndarray
    prior: float


@dataclass(frozen=True)
class ComponentGrid:
    """One component on the grid (rows x bins), with what is needed to undo the transform."""

    name: str
    y: np.ndarray            # centred, transformed; 0 where missing
    mask: np.ndarray         # 1 where observed
    scale: np.ndarray        # robust spread per row (transformed units)
    centre: np.ndarray       # baseline centre per row (transformed units)
    floor: np.ndarray        # value floor before the log, per row (data units)
    err_base: float
    sources: dict[str, str] = field(default_factory=dict)  # row -> original signal name
    #: Per row and bin, the effective share of an independent sample (``independent_share``).
    weight: np.ndarray = field(default_factory=lambda: np.ones((len(ROWS), N_TIME)))
    retry_base: float = RETRY_FLOOR

    @property
    def lat_level(self) -> np.ndarray:
        """Per row, the baseline of a latency row over the centre latency's (1 elsewhere)."""
        level = np.ones(len(ROWS))
        i_lat = ROWS.index("lat")
        if not self.mask[i_lat].any():
            return level
        for row in LATENCY_ROWS:
            i = ROWS.index(row)
            if self.mask[i].any():
                level[i] = float(np.exp(self.centre[i] - self.centre[i_lat]))
        return level

    @property
    def own_share(self) -> float:
        """Share of the baseline latency spent in the component's own code (1 when unknown).

        From spans: self time over self plus callee time, both means per request; with self
        time alone, its share of the centre latency. Kept within [0.02, 1], so a queue always
        shows in the latency a little.
        """
        i_self, i_callee = ROWS.index("self_time"), ROWS.index("callee_time")
        own, waits, timed = (bool(self.mask[i].any())
                             for i in (i_self, i_callee, ROWS.index("lat")))
        if not own or not (waits or timed):
            return 1.0
        if timed:
            # Through the levels: the same value as the baselines' ratio below, but the
            # figures quoted for version 10 were measured with these very floats, and the
            # fits' optimiser paths (and a storm/surge near-tie in suite 079) follow them.
            level = self.lat_level
            l_self = level[i_self]
            share = l_self / (l_self + level[i_callee]) if waits else l_self
        else:  # no latency of its own exported: the two baselines alone, in log units
            share = 1.0 / (1.0 + np.exp(self.centre[i_callee] - self.centre[i_self]))
        return float(np.clip(share, 0.02, 1.0))

    @property
    def observed_rows(self) -> list[str]:
        """Rows with at least one observed bin."""
        return [r for i, r in enumerate(ROWS) if self.mask[i].any()]

    def to_data_units(self, row: str, values: np.ndarray) -> np.ndarray:
        """Undo centring and transform: model-scale values back to the signal's units."""
        i = ROWS.index(row)
        z = values + self.centre[i]
        kind = _ROW_TRANSFORM[row]
        if kind == "logit":
            return 1.0 / (1.0 + np.exp(-z))
        if kind == "count":
            return np.expm1(z)
        return np.exp(z)


@dataclass(frozen=True)
class Grid:
    """An incident on the grid."""

    times: np.ndarray          # bin centres, unix s
    edges: np.ndarray          # bin edges, unix s
    components: list[ComponentGrid]
    candidates: list[OnsetCandidate]
    onset_known: bool

    def component(self, name: str) -> ComponentGrid:
        """The component called ``name``."""
        for c in self.components:
            if c.name == name:
                return c
        raise KeyError(name)


def make_grid(obs: Observations) -> Grid:
    """Bin, transform and centre every component; place the onset candidates."""
    t = obs.times
    start, end = float(t[0]), float(t[-1]) + obs.step_s
    if obs.onset is not None:
        edges = np.concatenate([
            np.linspace(start, obs.onset, N_PRE + 1)[:-1],
            np.linspace(obs.onset, end, N_POST + 1),
        ])
        baseline_bins = np.arange(N_PRE)
    else:
        edges = np.linspace(start, end, N_TIME + 1)
        baseline_bins = np.arange(FIRST_CANDIDATE)
    if obs.onset is not None and (np.sum(t < obs.onset) < 3 or np.sum(t >= obs.onset) < 3):
        raise WindowError("the onset leaves fewer than 3 samples on one side; widen the window")
    times = 0.5 * (edges[:-1] + edges[1:])
    bins = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, N_TIME - 1)
    counts = np.bincount(bins, minlength=N_TIME)
    if np.count_nonzero(counts) < N_TIME // 2:
        raise WindowError(
            f"the window has samples in only {np.count_nonzero(counts)} of {N_TIME} bins; "
            "it is too short or too sparse to analyse"
        )
    components = [_component(obs, c, bins, baseline_bins, np.diff(edges))
                  for c in obs.components]
    if obs.onset is not None:
        candidates = [_candidate(edges, N_PRE, 1.0)]
    else:
        idx = range(FIRST_CANDIDATE, LAST_CANDIDATE + 1)
        candidates = [_candidate(edges, k, 1.0 / len(idx)) for k in idx]
    return Grid(times=times, edges=edges, components=components, candidates=candidates,
                onset_known=obs.onset is not None)


def _candidate(edges: np.ndarray, k: int, prior: float) -> OnsetCandidate:
    onset, end = edges[k], edges[-1]
    centres = 0.5 * (edges[:-1] + edges[1:])
    step = np.clip((edges[1:] - onset) / np.diff(edges), 0.0, 1.0)
    elapsed = np.clip((centres - onset) / (end - onset), 0.0, 1.0)
    return OnsetCandidate(time=float(onset), step=step, elapsed=elapsed, prior=prior)


def _pick_latency(signals: list[str]) -> tuple[str | None, str | None]:
    """The centre (p50 or average) and tail (highest quantile >= 90) latency signals."""
    lat = [s for s in signals if is_latency(s)]
    quantiles = sorted((float(s[5:]), s) for s in lat if s.startswith("lat_p"))
    centre = next((s for q, s in quantiles if q <= 75), None) or (
        "lat_avg" if "lat_avg" in lat else (quantiles[0][1] if quantiles else None))
    tail_q = [s for q, s in quantiles if q >= 90 and s != centre]
    return centre, (tail_q[-1] if tail_q else None)


def _component(obs: Observations, name: str, bins: np.ndarray,
               baseline_bins: np.ndarray, widths: np.ndarray) -> ComponentGrid:
    n_rows = len(ROWS)
    y = np.zeros((n_rows, N_TIME))
    mask = np.zeros((n_rows, N_TIME))
    scale = np.ones(n_rows)
    centre = np.zeros(n_rows)
    floor = np.zeros(n_rows)
    signals = obs.signals(name)
    lat, tail = _pick_latency(signals)
    sources: dict[str, str] = {
        r: r for r in ("cpu", "mem", "rps", "err", "restarts", "self_time", "callee_time",
                       "retries")
        if r in signals}
    if lat:
        sources["lat"] = lat
    if tail:
        sources["lat_tail"] = tail
    err_base, retry_base = 0.01, RETRY_FLOOR
    weight = np.ones((n_rows, N_TIME))
    for row, signal in sources.items():
        i = ROWS.index(row)
        x = obs.frame[(name, signal)].to_numpy(dtype=float)
        z, floor[i] = _transform(x, _ROW_TRANSFORM[row], _LOGIT_LOW.get(row, 0.005))
        binned = _bin_mean(z, bins)
        ok = np.isfinite(binned)
        if ok.sum() < 4:
            continue
        base = binned[baseline_bins][ok[baseline_bins]]
        if base.size == 0:
            base = binned[ok][: max(3, ok.sum() // 4)]
        centre[i] = float(np.median(base))
        mad = 1.4826 * float(np.median(np.abs(base - centre[i]))) if base.size > 1 else 0.0
        scale[i] = max(mad, _FLOOR[_ROW_TRANSFORM[row]])
        y[i, ok] = binned[ok] - centre[i]
        mask[i, ok] = 1.0
        weight[i] = independent_share(binned[baseline_bins], widths,
                                      float(np.median(widths[baseline_bins])))
        if row == "err":
            err_base = float(np.clip(1.0 / (1.0 + np.exp(-centre[i])), 0.001, 0.5))
        if row == "retries":
            retry_base = float(np.clip(1.0 / (1.0 + np.exp(-centre[i])), RETRY_FLOOR, 0.9))
    return ComponentGrid(name=name, y=y, mask=mask, scale=scale, centre=centre, floor=floor,
                         err_base=err_base, sources=sources, weight=weight,
                         retry_base=retry_base)


def independent_share(base: np.ndarray, widths: np.ndarray, base_width: float) -> np.ndarray:
    """Per bin, the effective share of an independent sample: ``(1 - r) / (1 + r)``.

    ``r`` is the correlation of neighbouring bins. It is measured on the baseline bins
    (``base``, of width ``base_width``; normal variation by definition, so an incident's
    own ramp or step does not count) and carried to bins of other widths as a correlation
    that decays exponentially in time: ``r(w) = r_base ** (w / base_width)``, so the
    narrower bins after a known onset are more correlated. Measured on simulated incidents,
    that carries a lag-1 correlation of 0.2 between baseline bins to 0.69 between post-onset
    bins, where 0.67 was observed. The share is kept in [0.1, 1].
    """
    base = base[np.isfinite(base)]
    r_base = 0.0
    if base.size >= 6:
        d = base - np.median(base)
        den = float(np.sum(d * d))
        if den > 0.0:
            r_base = float(np.clip(np.sum(d[1:] * d[:-1]) / den, 0.0, 0.9))
    r = r_base ** (widths / base_width) if r_base > 0.0 else np.zeros_like(widths)
    return np.clip((1.0 - r) / (1.0 + r), 0.1, 1.0)


def _transform(x: np.ndarray, kind: str, low: float) -> tuple[np.ndarray, float]:
    """Scale-free axis for one series; returns the values and the floor used.

    ``low`` is the lowest share a logit row tells apart from the one below it.
    """
    finite = x[np.isfinite(x)]
    if kind == "logit":
        if finite.size and np.nanmax(finite) > 1.0:  # percent
            x = x / 100.0
        clipped = np.clip(x, low, 0.995)
        return np.log(clipped / (1 - clipped)), low
    if kind == "count":
        first = finite[0] if finite.size else 0.0
        return np.log1p(np.clip(x - first, 0.0, None)), 0.0
    positive = finite[finite > 0]
    floor = 0.01 * float(np.median(positive)) if positive.size else 1e-9
    return np.log(np.maximum(x, floor)), floor


def _bin_mean(z: np.ndarray, bins: np.ndarray) -> np.ndarray:
    ok = np.isfinite(z)
    sums = np.bincount(bins[ok], weights=z[ok], minlength=N_TIME)
    counts = np.bincount(bins[ok], minlength=N_TIME)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

"""Plots for the HTML report: PNG images made with matplotlib's Agg renderer.

Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot, so rendering
touches no global figure state and works without a display. Text from the data is drawn
with math parsing off (a ``$`` in a component name stays a dollar sign) and PNGs carry no
software or date metadata, so the same input gives the same bytes: re-rendering a saved
result reproduces the original report exactly.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from latentcause.reports._format import (
    as_list,
    as_mapping,
    clean_text,
    credible_keys,
    fmt_prob,
    hyp_key,
    interval,
    num,
    utc,
)

__all__ = ["MAX_SERIES_PANELS", "Plot", "render_plots"]

log = logging.getLogger(__name__)

#: Most observed-series panels in one report: beyond this a page stops being readable.
MAX_SERIES_PANELS = 8
#: Most hypotheses drawn in the posterior bar chart.
MAX_BARS = 12
DPI = 110

INK = "#1f2933"
MUTED = "#7b8794"
BAND = "#4c78a8"
ONSET = "#c2410c"
SET_COLOUR = "#2f5d95"
OTHER_COLOUR = "#c3cdd9"

_STYLE: dict[str, Any] = {
    "text.parse_math": False,
    "font.size": 9,
    "axes.titlesize": 9.5,
    "axes.titleweight": "bold",
    "axes.labelsize": 8.5,
    "axes.edgecolor": MUTED,
    "axes.labelcolor": INK,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "axes.formatter.useoffset": False,
    "axes.axisbelow": True,
    "grid.color": "#e4e7eb",
    "grid.linewidth": 0.6,
    "xtick.color": INK,
    "ytick.color": INK,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
}

_STATE = (
    ("utilisation", "utilisation (share of capacity)", 1.0, "saturation"),
    ("latency_ratio", "latency ÷ baseline", 1.0, "baseline"),
    ("error_ratio", "error rate ÷ baseline", 1.0, "baseline"),
    ("memory_ratio", "memory ÷ baseline", 1.0, "baseline"),
)

_SIGNAL_ORDER = ("lat", "err", "rps", "retries", "cpu", "mem", "restarts")


@dataclass(frozen=True)
class Plot:
    """One rendered plot: PNG bytes, alternative text and a caption (both plain text)."""

    key: str
    png: bytes
    alt: str
    caption: str


def _group(idata: object, name: str) -> Any:
    """Return a group of an InferenceData-like object, or None when it has no such group."""
    if idata is None:
        return None
    try:
        return getattr(idata, name)
    except (AttributeError, KeyError):
        return None


def _dates(t: np.ndarray) -> np.ndarray:
    """Unix seconds to matplotlib date numbers (independent of the rc date epoch)."""
    ms = np.round(np.asarray(t, dtype=float) * 1e3).astype("int64")
    return np.asarray(mdates.date2num(ms.astype("datetime64[ms]")))


def _time_axis(ax: Axes, t: np.ndarray, label: bool = True) -> None:
    span = float(np.nanmax(t) - np.nanmin(t)) if len(t) else 0.0
    fmt = "%m-%d %H:%M" if span > 2 * 86400 else "%H:%M"
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=7))
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=UTC))
    if label and len(t):
        ax.set_xlabel(f"time (UTC), {utc(float(np.nanmin(t)))[:10]}")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _short(text: str, n: int = 44) -> str:
    text = clean_text(text)
    return text if len(text) <= n else text[: n - 1] + "…"


def _bands(samples: np.ndarray, qs: Sequence[float]) -> np.ndarray:
    """Quantiles over draws (axis 0) of ``samples`` (draws, time); NaN where no draw is finite."""
    out = np.full((len(qs), samples.shape[1]), np.nan)
    ok = np.isfinite(samples).any(axis=0)
    if ok.any():
        out[:, ok] = np.nanquantile(samples[:, ok], qs, axis=0)
    return out


def _set_ylim(ax: Axes, core: np.ndarray, band: np.ndarray) -> None:
    """Fit the y-axis to the data, not to a predictive band that may be far wider.

    ``core`` (observed values, medians, reference lines) is always in view; the band is
    shown as far as twice the core's span beyond it, and clipped past that, so one wild
    predictive draw cannot flatten the observed series into a line.
    """
    c = core[np.isfinite(core)]
    if not c.size:
        return
    # Long series: ignore the extreme 0.5 % on each side (a scrape glitch); short: keep all.
    q = (0.005, 0.995) if c.size >= 200 else (0.0, 1.0)
    c_lo, c_hi = (float(v) for v in np.quantile(c, q))
    # A flat series gets a span of 10 % of its level, so noise-free data stay a flat line
    # with readable ticks instead of a magnified rounding error.
    least = max(0.1 * max(abs(c_lo), abs(c_hi)), 1e-9)
    if c_hi - c_lo < least:
        mid = 0.5 * (c_lo + c_hi)
        c_lo, c_hi = mid - 0.5 * least, mid + 0.5 * least
    span = c_hi - c_lo
    b = band[np.isfinite(band)]
    lo, hi = c_lo, c_hi
    if b.size:
        lo = min(lo, max(float(b.min()), c_lo - 2 * span))
        hi = max(hi, min(float(b.max()), c_hi + 2 * span))
    pad = 0.06 * (hi - lo)
    ax.set_ylim(lo - pad, hi + pad)


def _onset_marks(ax: Axes, report: Mapping[str, Any]) -> None:
    m, lo, hi = interval(report.get("onset"))
    if lo is not None and hi is not None and hi > lo:
        ax.axvspan(*_dates(np.array([lo, hi])), color=ONSET, alpha=0.08, lw=0)
    if m is not None:
        ax.axvline(_dates(np.array([m]))[0], color=ONSET, lw=1.0, ls="--")


# -- posterior over hypotheses ------------------------------------------------------------


def _evidence_spread(hyps: list[Mapping[str, Any]], shown: int) -> np.ndarray | None:
    """5 % and 95 % quantiles of each shown probability under the evidence estimator's error.

    Each hypothesis' log evidence is perturbed by its standard error (``log_evidence_se``,
    Gaussian, independent) and the probabilities renormalised; the prior and the onset
    marginalisation stay as they are, since only the evidence is estimated. None when the
    report gives no standard errors.
    """
    se = np.array([num(h.get("log_evidence_se")) or 0.0 for h in hyps])
    if not np.any(se > 0):
        return None
    p = np.array([max(num(h.get("probability")) or 0.0, 0.0) for h in hyps])
    logp = np.full(len(p), -np.inf)
    logp[p > 0] = np.log(p[p > 0])
    rng = np.random.default_rng(0)  # fixed: the same report draws the same whiskers
    z = logp + rng.standard_normal((2000, len(p))) * se
    z -= z.max(axis=1, keepdims=True)
    w = np.exp(z)
    w /= w.sum(axis=1, keepdims=True)
    return np.quantile(w[:, :shown], [0.05, 0.95], axis=0)


def _posterior_plot(report: Mapping[str, Any]) -> Plot | None:
    every = [as_mapping(h) for h in as_list(report.get("hypotheses"))]
    hyps = every[:MAX_BARS]
    # Bars too small to see say nothing; keep at least three for context.
    hyps = [h for i, h in enumerate(hyps) if i < 3 or (num(h.get("probability")) or 0) >= 1e-3]
    probs = np.array([num(h.get("probability")) or 0.0 for h in hyps])
    if not hyps:
        return None
    keys = credible_keys(report)
    labels = []
    for h in hyps:
        comp, mech = hyp_key(h)
        labels.append(_short(mech if comp is None else f"{comp} · {mech}"))
    colours = [SET_COLOUR if hyp_key(h) in keys else OTHER_COLOUR for h in hyps]
    fig = Figure(figsize=(8.6, 0.3 * len(hyps) + 1.0), layout="constrained")
    ax = fig.add_subplot()
    y = np.arange(len(hyps))
    spread = _evidence_spread(every, len(hyps))
    xerr = None
    if spread is not None:
        xerr = np.clip(np.vstack([probs - spread[0], spread[1] - probs]), 0, None)
    ax.barh(y, probs, color=colours, height=0.7, xerr=xerr,
            error_kw={"ecolor": INK, "elinewidth": 0.9, "capsize": 2.5})
    right = spread[1] if spread is not None else probs
    for yi, (p, r) in enumerate(zip(probs, right, strict=True)):
        ax.text(min(max(p, r), 1.0) + 0.012, yi, fmt_prob(p), va="center", fontsize=8, color=INK)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.1)
    ax.set_xticks(np.linspace(0, 1, 6))
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("posterior probability")
    ax.legend(
        handles=[Patch(color=SET_COLOUR, label="in the 95 % credible set"),
                 Patch(color=OTHER_COLOUR, label="outside it")],
        loc="lower right",
    )
    alt = (
        f"Bar chart of the posterior probability of the {len(hyps)} leading hypotheses; "
        f"the first, {labels[0]}, has {fmt_prob(probs[0])}."
    )
    caption = (
        "Posterior probability of each hypothesis (component · mechanism). Dark bars form the "
        "smallest set holding 95 % of the probability."
    )
    if spread is not None:
        caption += (" Whiskers: 90 % range of each probability under the error of the "
                    "evidence estimates.")
    return Plot("posterior", _png(fig), alt, caption)


# -- onset --------------------------------------------------------------------------------


def _onset_candidates(report: Mapping[str, Any], idata: object) -> tuple[np.ndarray, np.ndarray]:
    const = _group(idata, "constant_data")
    if const is not None and "onset_time" in const and "onset_probability" in const:
        t = np.asarray(const["onset_time"].values, dtype=float).ravel()
        p = np.asarray(const["onset_probability"].values, dtype=float).ravel()
        if len(t) == len(p) and len(t):
            return t, p
    cands = [as_mapping(c) for c in as_list(as_mapping(report.get("onset")).get("candidates"))]
    pairs = [(num(c.get("time")), num(c.get("probability"))) for c in cands]
    good = [(t, p) for t, p in pairs if t is not None and p is not None]
    return np.array([t for t, _ in good]), np.array([p for _, p in good])


def _onset_plot(report: Mapping[str, Any], idata: object) -> Plot | None:
    t, p = _onset_candidates(report, idata)
    if len(t) < 2:
        return None  # a known onset (given, or from the layout): the text says when
    order = np.argsort(t)
    t, p = t[order], p[order]
    step = num(as_mapping(report.get("window")).get("step_s")) or 60.0
    gap = float(np.min(np.diff(t))) if len(t) > 1 else step
    width_days = 0.8 * max(gap, 1.0) / 86400.0
    fig = Figure(figsize=(8.6, 2.3), layout="constrained")
    ax = fig.add_subplot()
    _onset_marks(ax, report)
    ax.bar(_dates(t), p, width=width_days, color=BAND, align="center")
    ax.set_ylabel("probability")
    ax.set_ylim(0, max(1e-9, float(np.nanmax(p))) * 1.15)
    pad = max(3 * gap, 5 * step) / 86400.0
    d = _dates(t)
    ax.set_xlim(d[0] - pad, d[-1] + pad)
    _time_axis(ax, t)
    m, _, _ = interval(report.get("onset"))
    alt = (
        f"Posterior of the onset time over {len(t)} candidate times; "
        f"median {utc(m)}."
    )
    return Plot("onset", _png(fig), alt,
                "Onset: posterior probability of each candidate time. The dashed line is the "
                "median, the shaded span the 95 % interval.")


# -- observed series with the posterior predictive band ------------------------------------


def _series_meta(idata: object, labels: list[str]) -> tuple[list[str], list[str]]:
    const = _group(idata, "constant_data")
    if const is not None and "series_component" in const and "series_signal" in const:
        comps = [str(c) for c in np.asarray(const["series_component"].values).ravel()]
        sigs = [str(s) for s in np.asarray(const["series_signal"].values).ravel()]
        if len(comps) == len(labels) == len(sigs):
            return comps, sigs
    split = [lab.rsplit("/", 1) if "/" in lab else ["", lab] for lab in labels]
    return [c for c, _ in split], [s for _, s in split]


def _signal_rank(signal: str) -> int:
    for i, prefix in enumerate(_SIGNAL_ORDER):
        if signal.startswith(prefix):
            return i
    return len(_SIGNAL_ORDER)


def _panel_components(report: Mapping[str, Any], idata: object, present: list[str]) -> list[str]:
    """Root first, then its callers when the call graph is known, else the next candidates."""
    attrs = getattr(idata, "attrs", None) or {}
    root = attrs.get("component") or None
    hyps = [as_mapping(h) for h in as_list(report.get("hypotheses"))]
    if root is None:
        root = next((h.get("component") for h in hyps if h.get("component") is not None), None)
    order: list[str] = []
    if root is not None and str(root) in present:
        order.append(str(root))
    graph = report.get("call_graph")
    if isinstance(graph, Mapping) and graph and root is not None:
        callers = sorted(str(c) for c, callees in graph.items() if str(root) in as_list(callees))
        order += [c for c in callers if c in present]
    else:
        order += [str(h["component"]) for h in hyps if h.get("component") is not None]
    order += present
    return [c for c in dict.fromkeys(order) if c in present]


def _scale(signal: str, values: np.ndarray) -> tuple[float, str]:
    """Divide by a factor for readable tick labels; return (factor, axis label)."""
    if signal == "mem":
        peak = float(np.nanmax(np.abs(values))) if np.isfinite(values).any() else 0.0
        for factor, unit in ((2.0**30, "GiB"), (2.0**20, "MiB"), (2.0**10, "KiB")):
            if peak >= factor:
                return factor, f"memory ({unit})"
        return 1.0, "memory (bytes)"
    if signal == "err":
        return 0.01, "errors (% of requests)"
    if signal == "retries":
        return 0.01, "retries (% of requests)"
    if signal == "rps":
        return 1.0, "requests / s"
    if signal == "cpu":
        return 1.0, "CPU (as recorded)"
    if signal == "lat_avg":
        return 1.0, "mean latency (as recorded)"
    if signal.startswith("lat_p"):
        return 1.0, f"{signal[4:]} latency (as recorded)"
    if signal == "restarts":
        return 1.0, "restarts"
    return 1.0, signal


def _series_plot(report: Mapping[str, Any], idata: object) -> Plot | None:
    observed = _group(idata, "observed_data")
    if observed is None or "y" not in observed:
        return None
    y = observed["y"]
    if "series" not in y.dims or "time" not in y.dims:
        return None
    y = y.transpose("series", "time")
    labels = [str(s) for s in y.coords["series"].values]
    times = np.asarray(y.coords["time"].values, dtype=float)
    comps, sigs = _series_meta(idata, labels)
    present = list(dict.fromkeys(comps))
    chosen: list[int] = []
    for comp in _panel_components(report, idata, present):
        idx = [i for i, c in enumerate(comps) if c == comp]
        chosen += sorted(idx, key=lambda i: _signal_rank(sigs[i]))
    chosen = chosen[:MAX_SERIES_PANELS]
    if not chosen:
        return None
    pp = _group(idata, "posterior_predictive")
    pred = None
    if pp is not None and "y" in pp and {"series", "time"} <= set(pp["y"].dims):
        pred = pp["y"].transpose(..., "series", "time")
    obs_values = np.asarray(y.values, dtype=float)
    ncols = 2 if len(chosen) > 1 else 1
    nrows = -(-len(chosen) // ncols)
    fig = Figure(figsize=(10.5 if ncols == 2 else 8.6, 2.35 * nrows + 0.4), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    d = _dates(times)
    for k, i in enumerate(chosen):
        ax = axes[k // ncols][k % ncols]
        factor, ylabel = _scale(sigs[i], obs_values[i])
        _onset_marks(ax, report)
        core, band = obs_values[i] / factor, np.array([])
        if pred is not None:
            draws = np.asarray(pred.isel(series=i).values, dtype=float).reshape(-1, len(times))
            lo, mid, hi = _bands(draws, (0.05, 0.5, 0.95)) / factor
            ax.fill_between(d, lo, hi, color=BAND, alpha=0.22, lw=0, label="predicted 5–95 %")
            ax.plot(d, mid, color=BAND, lw=1.0, label="predicted median")
            core, band = np.concatenate([core, mid]), np.concatenate([lo, hi])
        ax.plot(d, obs_values[i] / factor, color=INK, lw=0.9, label="observed")
        _set_ylim(ax, core, band)
        ax.set_title(_short(f"{comps[i]} · {sigs[i]}", 60), loc="left")
        ax.set_ylabel(ylabel)
        _time_axis(ax, times, label=k + ncols >= len(chosen))
    for k in range(len(chosen), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    axes[0][0].legend(loc="upper left")
    alt = (
        f"{len(chosen)} panels of observed series over time with the model's 5–95 % "
        f"predictive band: " + ", ".join(_short(labels[i], 40) for i in chosen) + "."
    )
    caption = (
        "Observed series of the leading component"
        + (" and its callers" if report.get("call_graph") else " and the next candidates")
        + " (black), with the leading hypothesis' posterior predictive median and 5–95 % band "
        "(blue). Dashed line and shading: the onset's median and 95 % interval."
    )
    return Plot("series", _png(fig), alt, caption)


# -- hidden state -------------------------------------------------------------------------


def _state_plot(report: Mapping[str, Any], idata: object) -> Plot | None:
    post = _group(idata, "posterior")
    if post is None:
        return None
    found = [
        s for s in _STATE
        if s[0] in post and "time" in post[s[0]].dims and post[s[0]].ndim >= 2
    ]
    if not found:
        return None
    ncols = 2 if len(found) > 1 else 1
    nrows = -(-len(found) // ncols)
    fig = Figure(figsize=(10.5 if ncols == 2 else 8.6, 2.3 * nrows + 0.3), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    times = np.array([])
    for k, (name, ylabel, ref, ref_label) in enumerate(found):
        ax = axes[k // ncols][k % ncols]
        var = post[name].transpose(..., "time")
        times = np.asarray(var.coords["time"].values, dtype=float)
        draws = np.asarray(var.values, dtype=float).reshape(-1, len(times))
        lo, mid, hi = _bands(draws, (0.05, 0.5, 0.95))
        d = _dates(times)
        _onset_marks(ax, report)
        ax.fill_between(d, lo, hi, color=BAND, alpha=0.25, lw=0, label="90 % band")
        ax.plot(d, mid, color=BAND, lw=1.2, label="median")
        ax.axhline(ref, color=MUTED, lw=0.8, ls=":", label=f"{ref_label} ({ref:g})")
        _set_ylim(ax, np.append(mid, ref), np.concatenate([lo, hi]))
        ax.set_title(name.replace("_", " "), loc="left")
        ax.set_ylabel(ylabel)
        if k == 0:
            ax.legend(loc="upper left")
        _time_axis(ax, times, label=k + ncols >= len(found))
    for k in range(len(found), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    alt = "Hidden state of the leading hypothesis over time: " + ", ".join(
        s[0].replace("_", " ") for s in found) + "; median and 90 % band."
    return Plot("state", _png(fig), alt,
                "Hidden state of the leading hypothesis: posterior median and 90 % band. "
                "Ratios are relative to the level before the onset; utilisation 1 is saturation.")


def render_plots(report: Mapping[str, Any], idata: object | None) -> dict[str, Plot]:
    """Render every plot the data allow, keyed ``posterior``, ``onset``, ``series``, ``state``.

    Plots whose inputs are absent (no posterior, no predictive draws) are left out rather
    than drawn empty.
    """
    plots: dict[str, Plot] = {}
    with warnings.catch_warnings(), matplotlib.rc_context(_STYLE):  # type: ignore[arg-type]
        # Component names may use characters the bundled font lacks; a missing glyph is
        # drawn as a box, which is fine in a plot label.
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        for key, make in (
            ("posterior", lambda: _posterior_plot(report)),
            ("onset", lambda: _onset_plot(report, idata)),
            ("series", lambda: _series_plot(report, idata)),
            ("state", lambda: _state_plot(report, idata)),
        ):
            plot = make()
            if plot is not None:
                plots[key] = plot
            else:
                log.debug("plot %s: no data for it", key)
    return plots

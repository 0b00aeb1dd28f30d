"""Synthetic analysis results for testing the reports without sampling.

``make_result`` simulates an incident from a small queueing picture (a root component loses
capacity at the onset: utilisation, latency and errors rise, callers inherit the latency),
then builds what the engine returns: a report dict (schema "1" plus the additions of
docs/ARTEFACTS.md) and an ``arviz.InferenceData`` made with ``az.from_dict`` in the
documented layout. Everything is drawn from a seeded generator, so a seed gives the same
result.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np

import latentcause
from latentcause.reports import running_model_version

MECHANISMS = ("capacity_loss", "service_slowdown", "traffic_surge", "error_fault",
              "memory_leak", "retry_storm")
SIGNALS = ("rps", "cpu", "mem", "err", "lat_p50", "lat_p99")
START = 1714566000.0  # 2024-05-01 12:20:00 UTC


@dataclass(frozen=True)
class FixtureResult:
    """Stands in for ``latentcause.inference.AnalysisResult``."""

    report: dict[str, Any]
    idata: az.InferenceData | None


def _probabilities(n: int, lead: list[float]) -> list[float]:
    """``lead`` first, the rest of the mass spread geometrically over ``n - len(lead)``."""
    rest = n - len(lead)
    left = 1.0 - sum(lead)
    weights = np.array([0.5 ** k for k in range(rest)])
    tail = list(left * weights / weights.sum()) if rest else []
    probs = lead + tail
    probs[-1] += 1.0 - sum(probs)
    return probs


def make_result(
    *,
    seed: int = 0,
    components: tuple[str, ...] = ("front-end", "orders", "carts", "catalogue", "user"),
    root: str | None = None,
    ambiguous: bool = False,
    fits: bool = True,
    with_idata: bool = True,
    call_graph: bool = True,
    queries: tuple[str, ...] | None = None,
    n_time: int = 160,
    step: float = 15.0,
    draws: int = 40,
) -> FixtureResult:
    """Build a synthetic result of a capacity loss in ``root`` (default: the third component).

    Parameters
    ----------
    ambiguous
        When true the posterior splits between two mechanisms of the root component.
    fits
        Sets ``adequacy.fits`` (and a small posterior predictive p-value when false).
    with_idata
        When false the result has no posterior (``idata`` None).
    call_graph
        When true the first component calls every other one and the second calls the root.
    """
    rng = np.random.default_rng(seed)
    root = root if root is not None else components[min(2, len(components) - 1)]
    t = START + step * (np.arange(n_time) + 0.5)
    onset = START + step * n_time * 0.55

    # -- the incident: capacity of the root falls to 60 % at the onset -------------------
    rho0, loss = 0.55, 0.6
    ramp = 1.0 / (1.0 + np.exp(-(t - onset) / (step * 1.5)))
    rho = rho0 / (1.0 - ramp * (1.0 - loss))
    rho = np.minimum(rho, 0.97)
    lat_ratio = (1.0 - rho0) / (1.0 - rho)
    err_ratio = 1.0 + 4.0 * ramp * (rho > 0.85)
    graph = {components[0]: list(components[1:])} if call_graph and len(components) > 1 else None
    if graph is not None and len(components) > 2 and components[1] != root:
        graph[components[1]] = [root]
    callers = {c for c, callees in (graph or {}).items() if root in callees}

    series_comp: list[str] = []
    series_sig: list[str] = []
    truth: list[np.ndarray] = []
    for i, comp in enumerate(components):
        base = {"rps": 40.0 + 30 * i, "cpu": 0.2 + 0.1 * i, "mem": (180 + 60 * i) * 2.0**20,
                "err": 0.002, "lat_p50": 0.012 + 0.003 * i, "lat_p99": 0.06 + 0.02 * i}
        for sig in SIGNALS:
            level = np.full(n_time, base[sig])
            if comp == root:
                if sig.startswith("lat"):
                    level = level * lat_ratio
                elif sig == "err":
                    level = level * err_ratio
                elif sig == "cpu":
                    level = level * (1 + 0.8 * ramp)
            elif comp in callers and sig.startswith("lat"):
                level = level * (1 + 0.6 * (lat_ratio - 1))
            series_comp.append(comp)
            series_sig.append(sig)
            truth.append(level)
    mean = np.array(truth)
    noise = 0.04 * mean
    observed = mean + noise * rng.standard_normal(mean.shape)
    observed[series_sig.index("mem"), 10:13] = np.nan  # a scrape gap

    # -- posterior of the leading hypothesis -----------------------------------------------
    chains = 2
    rho0_d = rng.normal(rho0, 0.02, (chains, draws))
    loss_d = rng.normal(loss, 0.02, (chains, draws))
    onset_d = onset + step * rng.normal(0, 1.0, (chains, draws))
    ramp_d = 1.0 / (1.0 + np.exp(-(t - onset_d[..., None]) / (step * 1.5)))
    rho_d = np.minimum(rho0_d[..., None] / (1.0 - ramp_d * (1.0 - loss_d[..., None])), 0.98)
    lat_d = (1.0 - rho0_d[..., None]) / (1.0 - rho_d)
    scale_d = rng.normal(1.0, 0.03, (chains, draws, len(series_comp), 1))
    pp = mean[None, None] * scale_d + noise[None, None] * rng.standard_normal(
        (chains, draws, *mean.shape))

    hyps = [(c, m) for c in components for m in MECHANISMS] + [(None, "none")]
    lead_pair = (root, "capacity_loss")
    second = (root, "service_slowdown")
    third = (next((c for c in components if c != root), root), "capacity_loss")
    order = [lead_pair, second, third] + [h for h in hyps if h not in (lead_pair, second, third)]
    lead = [0.48, 0.41, 0.07] if ambiguous else [0.965, 0.02, 0.008]
    probs = _probabilities(len(order), lead)
    cum = np.cumsum(probs)
    n_set = int(np.searchsorted(cum, 0.95 - 1e-12) + 1)
    hypotheses = [
        {"component": c, "mechanism": m, "probability": float(p),
         "log_evidence": float(-1520.0 + math.log(p)), "log_evidence_se": 0.4}
        for (c, m), p in zip(order, probs, strict=True)
    ]
    entropy = float(-sum(p * math.log2(p) for p in probs if p > 0))

    cand_t = onset + step * np.arange(-10, 11)
    cand_p = np.exp(-0.5 * ((cand_t - onset) / (1.5 * step)) ** 2)
    cand_p /= cand_p.sum()
    data_sha = hashlib.sha256(np.nan_to_num(observed).tobytes()).hexdigest()
    config_sha = hashlib.sha256(b"capacity_loss:v1").hexdigest()
    worst = f"{root}/lat_p99"
    report: dict[str, Any] = {
        "schema_version": "1",
        "window": {"start": float(START), "end": float(START + step * n_time), "step_s": step},
        "summary": (f"ambiguous between capacity_loss in {root} and service_slowdown in {root}"
                    if ambiguous else f"capacity_loss in {root} (p = {lead[0]:.2f})"),
        "hypotheses": hypotheses,
        "onset": {"median": float(onset), "interval_95": [float(onset - 2 * step),
                                                          float(onset + 3 * step)],
                  "source": "inferred",
                  "candidates": [{"time": float(a), "probability": float(b)}
                                 for a, b in zip(cand_t, cand_p, strict=True)]},
        "ambiguity": {
            "entropy_bits": entropy,
            "credible_set": [{"component": c, "mechanism": m} for c, m in order[:n_set]],
            "ambiguous": ambiguous,
            "discriminating_signals": [
                {"component": root, "signal": "cpu_throttled", "information_bits": 0.71,
                 "observed": False},
                {"component": root, "signal": "cpu", "information_bits": 0.42, "observed": True},
                {"component": third[0], "signal": "lat_p99", "information_bits": 0.18,
                 "observed": True},
            ],
        },
        "adequacy": {
            "fits": fits,
            "p_value": 0.41 if fits else 0.003,
            "statistic": 0.02 if fits else 0.31,
            "worst_series": worst,
            "description": ("The predictive band covers 93 % of the observed points."
                            if fits else f"{worst} stays above the predictive band after the "
                            "onset: the rise is larger than a capacity loss explains."),
        },
        "diagnostics": {"rhat_max": 1.004, "ess_bulk_min": 412.0, "divergences": 0,
                        "converged": True, "sampler": "nuts", "chains": chains, "draws": draws,
                        "tune": 300, "sampled_hypothesis": f"{root}/capacity_loss",
                        "evidence_method": "laplace + importance sampling",
                        "evidence_se_max": 0.4},
        "provenance": {
            "source": "file:/incidents/2024-05-01-carts",
            "queries": list(queries) if queries is not None else [
                "normal.csv", "anomalous.csv"],
            "data_sha256": data_sha,
            "version": latentcause.__version__,
            "seed": seed,
            "model_version": running_model_version(),
            "model_config_sha256": config_sha,
            "onset_source": "inferred",
            "notes": ["3 samples missing in the memory series were left as gaps"],
        },
        "trigger": {
            "component": root, "mechanism": "capacity_loss",
            "description": f"The service rate of {root} fell while its load stayed the same.",
            "changes": [
                {"component": root, "signal": "lat_p99",
                 "ratio": {"median": 4.6, "interval_95": [3.9, 5.4]}},
                {"component": root, "signal": "err", "ratio": {"median": 4.8,
                                                               "interval_95": [3.1, 6.9]}},
                {"component": root, "signal": "rps", "ratio": {"median": 1.01,
                                                               "interval_95": [0.96, 1.06]}},
                {"component": root, "signal": "cpu", "ratio": {"median": 1.78,
                                                               "interval_95": [1.6, 1.95]}},
            ],
        },
        "latent_condition": {
            "description": f"{root} ran at about half its capacity before the onset, so a "
                           "40 % capacity loss brought it close to saturation.",
            "utilisation_before": {"median": rho0, "interval_95": [0.51, 0.59]},
            "headroom": {"median": 1 - rho0, "interval_95": [0.41, 0.49]},
            "load_factor_to_saturation": {"median": 1 / rho0, "interval_95": [1.69, 1.96]},
            "amplification": None,
        },
        "components": {c: list(SIGNALS) for c in components},
        "call_graph": graph,
        "timing_s": {"evidence": 3.2, "sampling": 11.8, "total": 16.4},
    }
    if not with_idata:
        return FixtureResult(report, None)

    labels = [f"{c}/{s}" for c, s in zip(series_comp, series_sig, strict=True)]
    hyp_labels = [f"{c}/{m}" if c is not None else "none" for c, m in order]
    state_dims = ["time"]
    idata = az.from_dict(
        posterior={
            "rho0": rho0_d, "capacity_loss": 1 - loss_d, "onset": onset_d,
            "utilisation": rho_d, "latency_ratio": lat_d,
            "error_ratio": 1.0 + 4.0 * ramp_d * (rho_d > 0.85),
            "memory_ratio": 1.0 + 0.01 * rng.standard_normal(rho_d.shape),
            "arrival_ratio": 1.0 + 0.02 * rng.standard_normal(rho_d.shape),
            "capacity_ratio": 1.0 - ramp_d * (1.0 - loss_d[..., None]),
        },
        posterior_predictive={"y": pp},
        observed_data={"y": observed},
        constant_data={
            "onset_time": cand_t, "onset_probability": cand_p,
            "hypothesis_probability": np.array(probs),
            "series_component": np.array(series_comp, dtype=object),
            "series_signal": np.array(series_sig, dtype=object),
        },
        coords={"time": t, "series": labels, "onset_candidate": np.arange(len(cand_t)),
                "hypothesis": hyp_labels},
        dims={
            "utilisation": state_dims, "latency_ratio": state_dims, "error_ratio": state_dims,
            "memory_ratio": state_dims, "arrival_ratio": state_dims,
            "capacity_ratio": state_dims, "y": ["series", "time"],
            "onset_time": ["onset_candidate"], "onset_probability": ["onset_candidate"],
            "hypothesis_probability": ["hypothesis"], "series_component": ["series"],
            "series_signal": ["series"],
        },
        attrs={
            "latentcause_version": latentcause.__version__,
            "model_version": running_model_version(),
            "mechanism": "capacity_loss",
            "component": root,
            "config_sha256": config_sha,
            "data_sha256": data_sha,
            "seed": seed,
        },
    )
    return FixtureResult(report, idata)

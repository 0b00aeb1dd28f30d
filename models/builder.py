"""Wrap a mechanism in the shared observation model, with data in ``pm.Data`` containers.

Shapes are fixed (``len(ROWS)`` rows by ``n_time`` bins) and everything that differs between
components, onsets and incidents is data, so each mechanism's graph compiles once and is
reused: call ``set_component`` to point the model at new data.

Observation model, per row r and bin t (a row is a signal on its scale-free axis)::

    y[r, t] ~ StudentT(nu=4, mu = scale[r] * baseline[r] + drift[r] * step[t] + effect[r, t],
                       sigma = scale[r] * (0.5 + exp(noise_log[r])))

``drift`` is normal variation: any signal of any component may shift at the onset by a
modest factor (prior scale ``DRIFT_SD``, about 35 %, heavy-tailed) with no mechanism behind
it, as load and background work do between two windows. A mechanism must explain changes
beyond that, so evidence grows with the size of a change, not with how many bins or rows
show it. How much normal variation an incident has is not known in advance (two separate
recordings differ far more than two halves of one), so the drift's prior scale is
multiplied by ``drift_mult``, data: the engine fits a few values and lets the hypotheses,
which share one value across all components, weigh them (see ``inference.hypotheses``).

with missing samples masked out of the likelihood (not imputed) and each bin's likelihood
raised to its ``weight``: neighbouring bins of a real signal are not independent draws
(load wanders over minutes), and counting them as such both overstates every evidence and
lets any mechanism with a time shape (a ramp, a decaying burst) "explain" the wander; the
engine sets the weight to the bin's effective share of an independent sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy.special import gammaln

from latentcause.models._base import LATENCY_ROWS, RETRY_FLOOR, ROW, ROWS, Drivers, Mechanism

__all__ = [
    "NU",
    "ROW_NUISANCE",
    "ComponentInput",
    "build_model",
    "nuisance_log_density_at_zero",
    "rows_without_data",
    "set_component",
]

#: Prior scale of normal variation at the onset, per row (log units; logit for errors).
DRIFT_SD = 0.3
#: Tails of normal variation per row (Student-t degrees of freedom). Latency rows get heavy
#: tails: quantiles read off histograms jump by bucket widths, and two windows of a real
#: system can differ a lot in latency for reasons nobody injected (sock-shop's normal and
#: anomalous files are separate recordings; in catalogue-cpu/1 carts' p50 falls 100-fold).
#: With Gaussian tails such a shift costs so much that whichever mechanism can absorb it wins
#: (carts/error_fault "explained" that drop). Resources, rate and errors keep (nearly)
#: Gaussian tails: a CPU that goes from idle to a full core, or errors from none to a
#: quarter, is not normal variation, and is the evidence that singles out a root.
DRIFT_NU = np.array([3.0 if r in LATENCY_ROWS else 1e4 for r in ROWS])
#: A change of offered load between two windows moves the rate and the cpu together, so
#: normal variation in load is one shared term on both rows (``load_drift``; Gaussian, like
#: the resource rows: a two-fold load change between windows costs a few nats, a CPU hog's
#: hundred-fold cpu rise is not normal variation), and what is left to each of them on its
#: own is small. Otherwise a surge's rise in load could be cancelled on the rate row alone,
#: and a cpu hog (cpu up, rate flat) would pass for a surge.
LOAD_ROWS = np.array([1.0 if r in ("rps", "cpu") else 0.0 for r in ROWS])
DRIFT_SCALE = np.array([0.1 if r in ("rps", "cpu") else DRIFT_SD for r in ROWS])

#: Degrees of freedom of the Student-t noise: heavy tails so one outlier is not a mechanism.
NU = 4.0
#: Prior scales of each row's baseline offset and log noise (in scale units and log units).
BASELINE_SD = 2.0
NOISE_LOG_SD = 0.5
#: The per-row parameters that enter nothing but their own row's likelihood: with no data
#: on the row, their posterior is their prior (see ``nuisance_log_density_at_zero``).
ROW_NUISANCE: tuple[str, ...] = ("baseline", "noise_log", "drift")


@dataclass(frozen=True)
class ComponentInput:
    """One component's data on the grid, ready for a model.

    ``y`` and ``mask`` have shape (len(ROWS), T); ``y`` is centred on the baseline and 0
    where ``mask`` is 0. ``step``/``elapsed`` describe one onset candidate.
    """

    y: np.ndarray
    mask: np.ndarray
    scale: np.ndarray
    step: np.ndarray
    elapsed: np.ndarray
    err_base: float
    weight: np.ndarray | float = 1.0  # per row and bin (len(ROWS), T), or one for all
    drift_mult: float = 1.0
    lat_level: np.ndarray | None = None  # per row; see ``Drivers.lat_level``
    retry_base: float = RETRY_FLOOR  # see ``Drivers.retry_base``
    own_share: float = 1.0  # see ``Drivers.own_share``


def build_model(mechanism: Mechanism, n_time: int) -> pm.Model:
    """Return the PyMC model of ``mechanism`` as root (or role) of one component."""
    n_rows = len(ROWS)
    with pm.Model(check_bounds=False) as model:
        y = pm.Data("y", np.zeros((n_rows, n_time)))
        mask = pm.Data("mask", np.zeros((n_rows, n_time)))
        scale = pm.Data("scale", np.ones(n_rows))
        step = pm.Data("step", np.zeros(n_time))
        elapsed = pm.Data("elapsed", np.zeros(n_time))
        err_base = pm.Data("err_base", 0.01)
        weight = pm.Data("weight", np.ones((n_rows, n_time)))
        drift_mult = pm.Data("drift_mult", 1.0)
        lat_level = pm.Data("lat_level", np.ones(n_rows))
        lat_seen = pm.Data("lat_seen", 1.0)
        retry_base = pm.Data("retry_base", RETRY_FLOOR)
        own_share = pm.Data("own_share", 1.0)

        baseline = pm.Normal("baseline", 0.0, BASELINE_SD, shape=n_rows)
        noise_log = pm.Normal("noise_log", 0.0, NOISE_LOG_SD, shape=n_rows)
        drift_own = pm.StudentT("drift", nu=DRIFT_NU, mu=0.0, sigma=DRIFT_SCALE * drift_mult,
                                shape=n_rows)
        load_drift = pm.Normal("load_drift", mu=0.0, sigma=DRIFT_SD * drift_mult)
        drift = drift_own + load_drift * LOAD_ROWS
        # Noise may grow beyond the baseline spread but not collapse below half of it: exactly
        # constant rows (quantised histogram latencies) would otherwise be infinite evidence.
        sigma = pm.Deterministic("sigma", scale * (0.5 + pt.exp(noise_log)))

        params = {k: prior.build(k) for k, prior in mechanism.priors.items()}
        effects = mechanism.effects(params, Drivers(step=step, elapsed=elapsed, err_base=err_base,
                                                    lat_level=lat_level, lat_seen=lat_seen,
                                                    retry_base=retry_base,
                                                    own_share=own_share))
        zero = pt.zeros(n_time)
        effect = pt.stack([effects.rows.get(r, zero) * pt.ones(n_time) for r in ROWS])
        mu = pm.Deterministic(
            "mu", scale[:, None] * baseline[:, None] + drift[:, None] * step[None, :] + effect)
        for name, value in effects.hidden.items():
            pm.Deterministic(name, value * pt.ones(n_time))

        noise = pt.stack([effects.noise.get(r, zero) * pt.ones(n_time) for r in ROWS])
        # The noise scale of every bin, the mechanism's own volatility included (a leak's GC
        # churn): predictive bands must use this, not the baseline ``sigma``.
        sigma_t = pm.Deterministic("sigma_t", sigma[:, None] * pt.exp(noise))
        logp = _student_t_logp(y, mu, sigma_t)
        pm.Potential("loglik", pt.sum(weight * mask * logp))
    return model


def _student_t_logp(y: pt.TensorVariable, mu: pt.TensorVariable,
                    sigma: pt.TensorVariable) -> pt.TensorVariable:
    """Student-t log density, written out so no parameter check can raise mid-optimisation."""
    const = gammaln((NU + 1) / 2) - gammaln(NU / 2) - 0.5 * np.log(NU * np.pi)
    z = (y - mu) / sigma
    return const - pt.log(sigma) - 0.5 * (NU + 1) * pt.log1p(z**2 / NU)


def set_component(model: pm.Model, data: ComponentInput) -> None:
    """Point ``model``'s data containers at one component and onset candidate."""
    pm.set_data(
        {
            "y": data.y,
            "mask": data.mask,
            "scale": data.scale,
            "step": data.step,
            "elapsed": data.elapsed,
            "err_base": float(data.err_base),
            "weight": np.broadcast_to(np.asarray(data.weight, dtype=float),
                                      np.shape(data.y)).copy(),
            "drift_mult": float(data.drift_mult),
            "lat_level": (np.ones(len(ROWS)) if data.lat_level is None
                          else np.asarray(data.lat_level, dtype=float)),
            "lat_seen": float(np.asarray(data.mask)[[ROW[r] for r in LATENCY_ROWS]].any()),
            "retry_base": float(data.retry_base),
            "own_share": float(data.own_share),
        },
        model=model,
    )


def rows_without_data(data: ComponentInput) -> np.ndarray:
    """Per row, whether no bin of it counts in the likelihood (masked out or weighted 0)."""
    weight = np.broadcast_to(np.asarray(data.weight, dtype=float), np.shape(data.y))
    return np.asarray((np.asarray(data.mask) * weight).sum(axis=1) == 0)


def nuisance_log_density_at_zero(data: ComponentInput) -> np.ndarray:
    """Per row, the prior log density of its ``ROW_NUISANCE`` parameters, all at 0.

    Zero is each one's prior mode (they are centred and symmetric). Every prior is written
    out here as ``build_model`` states it; tests/test_models.py checks the two against
    each other through PyMC.
    """
    drift_scale = DRIFT_SCALE * float(data.drift_mult)
    return (_normal_at_mean(BASELINE_SD) + _normal_at_mean(NOISE_LOG_SD)
            + gammaln((DRIFT_NU + 1) / 2) - gammaln(DRIFT_NU / 2)
            - 0.5 * np.log(DRIFT_NU * np.pi) - np.log(drift_scale))


def _normal_at_mean(sd: float) -> float:
    return float(-0.5 * np.log(2 * np.pi * sd**2))


def row_index(name: str) -> int:
    """Index of a row by name."""
    return ROW[name]


def describe(mechanism: Mechanism) -> Mapping[str, str]:
    """Signature of a mechanism as row -> direction, in row order."""
    return {r: mechanism.signature[r] for r in ROWS if r in mechanism.signature}

"""NUTS on the leading hypothesis: its hidden-state trajectory, with diagnostics.

Evidence comes from the fast estimator; the trajectories the report shows come from real
posterior draws. When R-hat, bulk ESS or divergences fail, sampling is retried once with
more tuning and a higher target acceptance; if it still fails, ``converged`` is False and
the report says so.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import arviz as az
import numpy as np
import pymc as pm

from latentcause.models import ComponentInput, set_component

__all__ = ["Diagnostics", "sample_leader"]

log = logging.getLogger(__name__)

RHAT_MAX = 1.01
ESS_MIN_PER_CHAIN = 100


@dataclass(frozen=True)
class Diagnostics:
    """Convergence of the NUTS run behind the reported trajectories."""

    rhat_max: float
    ess_bulk_min: float
    divergences: int
    converged: bool
    chains: int
    draws: int
    tune: int


def _diagnose(idata: az.InferenceData, free: list[str], chains: int, draws: int,
              tune: int) -> Diagnostics:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = az.rhat(idata, var_names=free)
        ess = az.ess(idata, var_names=free, method="bulk")
    rhat_max = float(max(np.nanmax(np.asarray(rhat[v])) for v in free))
    ess_min = float(min(np.nanmin(np.asarray(ess[v])) for v in free))
    div = int(np.asarray(idata.sample_stats["diverging"]).sum())
    ok = (np.isfinite(rhat_max) and rhat_max <= RHAT_MAX
          and ess_min >= ESS_MIN_PER_CHAIN * chains and div == 0)
    return Diagnostics(rhat_max=rhat_max if np.isfinite(rhat_max) else 99.0,
                       ess_bulk_min=ess_min if np.isfinite(ess_min) else 0.0,
                       divergences=div, converged=bool(ok), chains=chains, draws=draws,
                       tune=tune)


def sample_leader(model: pm.Model, data: ComponentInput, *, seed: int, draws: int,
                  chains: int = 2, x_init: dict[str, np.ndarray] | None = None,
                  ) -> tuple[az.InferenceData, Diagnostics]:
    """Sample ``model`` on ``data`` with NUTS; retry once with more tuning if needed."""
    set_component(model, data)
    free = [v.name for v in model.free_RVs]
    tune = max(draws, 300)
    attempt: tuple[float, int] = (0.9, tune)
    for target_accept, n_tune in (attempt, (0.97, 2 * tune)):
        with model, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idata = pm.sample(
                draws=draws, tune=n_tune, chains=chains, cores=1, random_seed=seed,
                target_accept=target_accept, progressbar=False, initvals=x_init,
                init="adapt_diag",
                compute_convergence_checks=False, return_inferencedata=True,
            )
        diag = _diagnose(idata, free, chains, draws, n_tune)
        if diag.converged:
            break
        log.warning(
            "NUTS did not converge (R-hat %.3f, bulk ESS %.0f, %d divergences) with "
            "target_accept %.2f; %s", diag.rhat_max, diag.ess_bulk_min, diag.divergences,
            target_accept, "retrying with more tuning" if n_tune == tune else "giving up")
    return idata, diag

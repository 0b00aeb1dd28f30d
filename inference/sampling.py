"""NUTS on the leading hypothesis: its hidden-state trajectory, with diagnostics.

Evidence comes from the fast estimator; the trajectories the report shows come from real
posterior draws. The sampler is PyMC's NUTS, driven step by step here rather than through
``pm.sample`` so that nothing is compiled per call: the step runs on the evidence fitter's
log density and gradient (already compiled, see ``_FitterDensity``), and the function that
turns a draw into the model's named quantities is compiled once per role and reused for
every component, onset and incident. The Laplace covariance at the MAP,
its variances clipped where the curvature vanishes, is the dense mass matrix, so NUTS needs
only step-size tuning (measured on sock-shop carts-cpu/1: tree depth 4 instead of 7 with a
diagonal metric adapted from scratch).

When R-hat, bulk ESS or divergences fail, sampling runs once more on a metric from the first
draws and with a higher target acceptance; if that nearly passes, its chains are carried on
(with a shorter step if it diverged); if it still fails, ``converged`` is False and the
report says so.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import cast

import arviz as az
import numpy as np
import pymc as pm
import pytensor
from pymc.blocking import DictToArrayBijection, RaveledVars
from pymc.pytensorf import join_nonshared_inputs
from pymc.step_methods.hmc.quadpotential import QuadPotentialFull
from pymc.step_methods.step_sizes import DualAverageAdaptation

from latentcause.inference.compiled import load_or_build
from latentcause.inference.evidence import RoleFitter, own_fitter
from latentcause.inference.pool import map_tasks
from latentcause.models import ComponentInput, set_component

__all__ = ["Diagnostics", "LeaderSampler", "clipped_metric", "diagnose", "sampler"]

log = logging.getLogger(__name__)

RHAT_MAX = 1.01
ESS_MIN_PER_CHAIN = 100
#: Largest variance the metric keeps in any direction of the unconstrained space, where the
#: priors put the parameters within a few units. The Laplace covariance is floored at
#: precision 1e-3 (variance 1000) where the MAP's curvature vanishes: a metric that wide in
#: one direction forces a tiny step size in all (simulated 011, orders capacity_loss: step
#: 0.0006 and tree depth 10 on every draw, 45 s for 350 iterations of one chain; clipped at 1:
#: step 0.13, depth 6, 5 s).
METRIC_MAX_VARIANCE = 1.0
#: Trees deeper than this stop growing (PyMC's default is 10): it bounds a draw at 256
#: gradient evaluations, so a badly shaped posterior costs minutes, not half an hour, and the
#: shortfall shows up in ESS and R-hat rather than in the wall time.
MAX_TREE_DEPTH = 8
#: A retry that fails R-hat by no more than this, with at most ``_FEW_DIVERGENCES``, is
#: carried on rather than reported as failed (measured on the bundled catalogue example and
#: simulated 005: R-hat 1.016 and 1.012 with bulk ESS above 300).
_EXTEND_RHAT = 1.05
_FEW_DIVERGENCES = 5
#: Chains carried on take this share of their adapted step. With the full step, the added
#: draws of sock-shop carts-cpu/1 and /5 (model version 8) diverged once or twice in 2,000,
#: on the posterior's long tail towards no capacity lost, and failed the check for it.
_CARRY_ON_STEP = 0.5
#: Spread of the chains' starting points around the MAP, in Laplace standard deviations:
#: overdispersed, so R-hat can tell chains that have not mixed.
_START_SPREAD = 1.5


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


def diagnose(idata: az.InferenceData, free: list[str], chains: int, draws: int,
             tune: int, rows: np.ndarray | None = None) -> Diagnostics:
    """R-hat, bulk ESS and divergences of what is reported, and whether they pass.

    ``rows`` (a boolean mask over the model rows) leaves out the per-row nuisance parameters
    of rows with no data: they are prior draws that nothing reports, and with some thirty of
    them one would cross R-hat 1.01 by chance alone.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = az.rhat(idata, var_names=free)
        ess = az.ess(idata, var_names=free, method="bulk")

    def kept(values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if rows is not None and values.shape == rows.shape:
            return values[rows]
        return values.ravel()

    rhat_max = float(max(np.nanmax(kept(rhat[v]), initial=1.0) for v in free))
    ess_min = float(min(np.nanmin(kept(ess[v]), initial=np.inf) for v in free))
    div = int(np.asarray(idata["sample_stats"]["diverging"]).sum())
    ok = (np.isfinite(rhat_max) and rhat_max <= RHAT_MAX
          and ess_min >= ESS_MIN_PER_CHAIN * chains and div == 0)
    return Diagnostics(rhat_max=rhat_max if np.isfinite(rhat_max) else 99.0,
                       ess_bulk_min=ess_min if np.isfinite(ess_min) else 0.0,
                       divergences=div, converged=bool(ok), chains=chains, draws=draws,
                       tune=tune)


def clipped_metric(cov: np.ndarray) -> np.ndarray:
    """``cov`` with its variances held at ``METRIC_MAX_VARIANCE`` along every eigenvector."""
    vals, vecs = np.linalg.eigh(0.5 * (cov + cov.T))
    vals = np.clip(vals, 1e-10, METRIC_MAX_VARIANCE)
    out = (vecs * vals) @ vecs.T
    return np.asarray(0.5 * (out + out.T))


class _FitterDensity:
    """A fitter's compiled log density and gradient, in the form PyMC's NUTS step calls.

    Unless handed one, the step compiles its own (``Model.logp_dlogp_function``): the same
    density of the same flat vector as the fitter's, but rewritten into other fused C
    modules. Measured from an empty compile cache on the memory_leak role: 15 modules and
    8.9 s of a cold start that the fitter's function, built and cached by the evidence
    stage, does not need. PyMC's leapfrog integrator reads exactly these attributes.
    """

    _raveled_inputs = True
    dtype = "float64"

    def __init__(self, fitter: RoleFitter) -> None:
        self._pytensor_function = fitter.density
        self._extra_vars_shared: dict[object, object] = {}


class LeaderSampler:
    """PyMC's NUTS step on one role's fitter, with a per-call dense metric."""

    def __init__(self, fitter: RoleFitter) -> None:
        model = fitter.model
        self.model = model
        ip = model.initial_point()
        self._value_names = [v.name for v in model.value_vars]
        self._shapes = {n: np.asarray(ip[n]).shape for n in self._value_names}
        with model, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.step = pm.NUTS(model.value_vars, potential=QuadPotentialFull(np.eye(fitter.size)),
                                target_accept=0.9, max_treedepth=MAX_TREE_DEPTH,
                                early_max_treedepth=MAX_TREE_DEPTH,
                                logp_dlogp_func=_FitterDensity(fitter))
        self._step_names = [v.name for v in self.step.vars]
        # Named outputs of a draw: free parameters in their own space, and deterministics.
        self.names = [rv.name for rv in model.free_RVs] + [d.name for d in model.deterministics]
        graphs = model.replace_rvs_by_values([*model.free_RVs, *model.deterministics])
        outs, x = join_nonshared_inputs(ip, graphs, model.value_vars)
        self._outputs = pytensor.function([x], outs, on_unused_input="ignore")

    def _raveled(self, x: np.ndarray) -> RaveledVars:
        """A flat vector in ``model.value_vars`` order as the step's raveled point."""
        point, i = {}, 0
        for name in self._value_names:
            n = int(np.prod(self._shapes[name]))
            point[name] = x[i: i + n].reshape(self._shapes[name])
            i += n
        return DictToArrayBijection.map({n: point[n] for n in self._step_names})

    def _flat(self, q: RaveledVars) -> np.ndarray:
        point = DictToArrayBijection.rmap(q)
        return np.concatenate([np.asarray(point[n]).ravel() for n in self._value_names])

    def _chain(self, start: np.ndarray, cov: np.ndarray, rng: np.random.Generator,
               tune: int, draws: int, target_accept: float, step_size: float | None = None,
               ) -> tuple[np.ndarray, dict[str, list]]:
        """One chain from ``start``; with ``tune=0``, ``step_size`` is the step it keeps."""
        step = self.step
        q = self._raveled(start)
        order = [self._value_names.index(n) for n in self._step_names]
        if order != sorted(order):  # pragma: no cover - PyMC keeps value_vars order
            raise RuntimeError("NUTS step orders the variables differently from the model")
        potential = QuadPotentialFull(cov, rng=rng)
        step.potential = potential
        step.integrator._potential = potential
        size = start.size
        initial = step_size if step_size is not None else 0.25 / size**0.25
        step.step_adapt = DualAverageAdaptation(initial, target_accept, 0.05, 0.75, 10)
        step.target_accept = target_accept
        step.set_rng(rng)
        step.tune = True
        step.reset_tuning()
        xs = np.empty((draws, size))
        stats: dict[str, list] = {"diverging": [], "lp": [], "tree_depth": [], "step_size": [],
                                  "energy": [], "n_steps": []}
        for i in range(tune + draws):
            if i == tune:
                step.stop_tuning()
            q, st = step.astep(q)
            if i >= tune:
                s = st[0]
                xs[i - tune] = self._flat(q)
                stats["diverging"].append(bool(s["diverging"]))
                stats["lp"].append(float(s["model_logp"]))
                stats["tree_depth"].append(int(s["depth"]))
                stats["step_size"].append(float(s["step_size"]))
                stats["energy"].append(float(s["energy"]))
                stats["n_steps"].append(int(s["tree_size"]))
        return xs, stats

    def sample(self, data: ComponentInput, x_map: np.ndarray, cov: np.ndarray, *, seed: int,
               draws: int, chains: int = 2, workers: int = 1,
               ) -> tuple[az.InferenceData, Diagnostics]:
        """Sample the model on ``data``; if diagnostics fail, sample once more on a better metric.

        The first attempt is short (tune 150, three fifths of ``draws``): on most leaders
        the Laplace metric does not mix well enough to pass on its own (5 of 7 measured),
        so it serves mainly as warm-up. When it fails, its draws' covariance is the second
        attempt's metric, and fresh chains start around the MAP with a short step-size tune
        (``tune`` reported is every iteration before the kept draws). Carrying the first
        chains on from their last draws instead did not converge on sock-shop carts-cpu/1
        (R-hat 1.07): one chain had wandered down the ridge between drift and effect.

        Measured from cached fits of seven leaders (sock-shop carts-cpu/1, orders-cpu/2,
        payment-mem/1, the bundled catalogue example, simulated 002, 005, 011): 84 s in
        all and 6 converged, against 90 s and 5 with a full-length first attempt, and 27 to
        41 s on carts-cpu/1 alone for the restart with twice the tune and draws this
        replaced.

        Chains run side by side on up to ``workers`` forked processes. Each chain seeds its
        own generator from (seed, attempt, chain), so the draws do not depend on ``workers``.
        """
        set_component(self.model, data)
        free = [rv.name for rv in self.model.free_RVs]
        rows = cast(np.ndarray, data.mask.any(axis=1))
        tune, first = 150, max(3 * draws // 5, 150)
        runs = self._chains(x_map, clipped_metric(cov), seed, 0, tune, first, 0.9, chains,
                            workers)
        idata = self._inference_data(runs)
        diag = diagnose(idata, free, chains, first, tune, rows=rows)
        if diag.converged:
            return idata, diag
        log.warning("NUTS did not converge (R-hat %.3f, bulk ESS %.0f, %d divergences); "
                    "sampling again on the draws' own metric", diag.rhat_max,
                    diag.ess_bulk_min, diag.divergences)
        # The Laplace curvature was a poor metric (a posterior against a boundary, a ridge
        # between drift and effect): use the draws' own covariance instead.
        pooled = np.concatenate([xs for xs, _ in runs])
        cov = clipped_metric(np.cov(pooled, rowvar=False) + 1e-6 * np.eye(x_map.size))
        tune2 = max(tune // 2, 100)
        runs = self._chains(x_map, cov, seed, 1, tune2, draws, 0.95, chains, workers)
        idata = self._inference_data(runs)
        diag = diagnose(idata, free, chains, draws, tune + first + tune2, rows=rows)
        if (not diag.converged and diag.rhat_max <= _EXTEND_RHAT
                and diag.divergences <= _FEW_DIVERGENCES):
            # Mixing, but not long enough for R-hat, the maximum over dozens of parameters,
            # to settle under 1.01, or with a step a little too long somewhere: carry the
            # same chains on.
            divergent = diag.divergences > 0
            runs = self.carry_on(runs, cov, seed, draws, workers, divergent=divergent)
            idata = self._inference_data(runs)
            warm = tune + first + tune2 + (draws if divergent else 0)
            diag = diagnose(idata, free, chains, 2 * draws, warm, rows=rows)
        if not diag.converged:
            log.warning("NUTS still did not converge (R-hat %.3f, bulk ESS %.0f, %d "
                        "divergences)", diag.rhat_max, diag.ess_bulk_min, diag.divergences)
        return idata, diag

    def carry_on(self, runs: list[tuple[np.ndarray, dict[str, list]]], cov: np.ndarray,
                 seed: int, draws: int, workers: int, *, divergent: bool,
                 ) -> list[tuple[np.ndarray, dict[str, list]]]:
        """``runs``' chains carried on from their last draws, with a shorter step.

        The metric is ``cov``, the step ``_CARRY_ON_STEP`` of each chain's last. Without
        divergences, ``draws`` more, added to the old. With some, ``2 * draws`` replacing
        the old: a divergence means the step was too long somewhere, and the draws around
        it may be off.
        """
        n = 2 * draws if divergent else draws

        def resume(c: int) -> tuple[np.ndarray, dict[str, list]]:
            xs, stats = runs[c]
            rng = np.random.default_rng([seed, 2, c])
            return self._chain(xs[-1], cov, rng, 0, n, 0.95,
                               _CARRY_ON_STEP * stats["step_size"][-1])

        more = map_tasks(resume, list(range(len(runs))), workers, min_tasks=2)
        if divergent:
            return more
        return [(np.concatenate([xs, xs2]), {k: st[k] + st2[k] for k in st})
                for (xs, st), (xs2, st2) in zip(runs, more, strict=True)]

    def _chains(self, x_map: np.ndarray, cov: np.ndarray, seed: int, attempt: int, tune: int,
                draws: int, target_accept: float, chains: int, workers: int,
                ) -> list[tuple[np.ndarray, dict[str, list]]]:
        """``chains`` chains from overdispersed starts around ``x_map``, side by side."""
        chol = np.linalg.cholesky(cov)

        def chain(c: int) -> tuple[np.ndarray, dict[str, list]]:
            rng = np.random.default_rng([seed, attempt, c])
            start = x_map + _START_SPREAD * chol @ rng.standard_normal(x_map.size)
            return self._chain(start, cov, rng, tune, draws, target_accept)

        return map_tasks(chain, list(range(chains)), workers, min_tasks=2)

    def _inference_data(self, runs: list[tuple[np.ndarray, dict[str, list]]]) -> az.InferenceData:
        per_chain = []
        for xs, _ in runs:
            values = [self._outputs(x) for x in xs]
            per_chain.append([np.stack([np.asarray(v[j]) for v in values])
                              for j in range(len(self.names))])
        posterior = {name: np.stack([chain[j] for chain in per_chain])
                     for j, name in enumerate(self.names)}
        stats = {k: np.array([s[k] for _, s in runs]) for k in runs[0][1]}
        return az.from_dict(posterior=posterior, sample_stats=stats)


_SAMPLERS: dict[tuple[str, int], LeaderSampler] = {}


def sampler(role: str, n_time: int) -> LeaderSampler:
    """The compiled sampler of ``role``, built (or loaded) on first use.

    It runs on a fitter of its own, not the evidence stage's: the two set their data
    containers separately, so each can be loaded from the compiled cache alone. On a first
    run that fitter is a copy of the evidence stage's from the cache, not built again
    (measured on a cold analysis of sock-shop carts-mem/1: the first
    NUTS attempt, sampler built included, took 3.4 s instead of 4.8 s; 1.4 s warm).
    """
    key = (role, n_time)
    if key not in _SAMPLERS:
        _SAMPLERS[key] = load_or_build(f"sampler-{role}-{n_time}",
                                       lambda: LeaderSampler(own_fitter(role, n_time)))
    return _SAMPLERS[key]

"""Marginal likelihood of one component's data under one role, fast and with its error.

Each role's PyMC graph is compiled once into a function of a flat parameter vector (in the
unconstrained space) returning the log density, its gradient and the predicted rows; the data
live in shared containers, so the same compiled function serves every component, onset
candidate and incident.

The estimator is Laplace-then-importance-sampling: find the MAP (L-BFGS with the analytic
gradient), take the Hessian there (central differences of the gradient), and draw from a
defensive mixture of multivariate Student-t centred at the MAP with that curvature (see
``proposal_draws``). The importance weights give an
estimate of the evidence that corrects the Laplace error, and their spread gives the
estimator's standard error, which is reported. Parameters that only a row without data
would inform are their prior: they stay at its mode and out of all three steps, and its
density there is divided out (``RoleFitter._free``). Roles that share this role's
likelihood under other priors ("twins") get their evidence ratio to it from the same
draws (``RoleFitter.twin_ratio``).

The same draws, weighted, are the role's posterior (``RoleFitter.posterior``), which the
slow tier's simulation-based calibration checks against NUTS and the truth.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import numpy as np
import pytensor
import pytensor.tensor as pt
from pymc.pytensorf import join_nonshared_inputs
from scipy import optimize, special

from latentcause.errors import ModelError
from latentcause.inference.compiled import build_missing, load_or_build
from latentcause.models import (
    REGISTRY,
    ROW_NUISANCE,
    ComponentInput,
    Mechanism,
    build_model,
    nuisance_log_density_at_zero,
    rows_without_data,
    set_component,
)

__all__ = [
    "Fit",
    "RoleFitter",
    "WeightedDraws",
    "build_fitter",
    "fitter",
    "own_fitter",
    "prepare_fitters",
]

log = logging.getLogger(__name__)

_IS_DRAWS = 192
_IS_DF = 5.0
#: The importance proposal's two components: covariance factors and the wide one's share.
_IS_NARROW_SCALE = 1.2
_IS_WIDE_SCALE = 9.0
_IS_WIDE_SHARE = 0.5
_MIN_ESS = 8.0
#: Largest posterior sd of a parameter whose priors differ for a twin's ratio to be read off
#: a role's draws (``RoleFitter.twin_ratio``); in the parameter's own space.
_TWIN_MAX_SD = 0.5
#: Least curvature (precision) the Laplace covariance keeps in any direction.
_MIN_PRECISION = 1e-3
_FALLBACK_SE = 5.0


@dataclass(frozen=True)
class Fit:
    """Result of fitting one role to one component at one onset candidate."""

    log_evidence: float
    stderr: float          # standard error of log_evidence from the importance weights
    laplace: float         # the plain Laplace estimate, for measuring its error
    x_map: np.ndarray
    cov: np.ndarray
    mu: np.ndarray         # predicted rows at the MAP (len(ROWS), T)
    sigma: np.ndarray      # noise scale per row and bin at the MAP (len(ROWS), T)
    ess: float             # effective sample size of the importance weights
    #: Per twin role (``fit``'s ``twins``): log of the twin's evidence over this role's, and
    #: its standard error; absent where this role's draws cannot say (see ``twin_ratio``).
    twin_log_ratio: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    #: The role whose model ``x_map``, ``cov``, ``mu`` and ``sigma`` belong to, when it is not
    #: the role the fit is filed under (a variant standing in for its mechanism); else None.
    model: str | None = None


class RoleFitter:
    """A role's model compiled once; ``fit`` evaluates evidence for new data."""

    def __init__(self, mechanism: Mechanism, n_time: int) -> None:
        self.mechanism = mechanism
        self.model = build_model(mechanism, n_time)
        ip = self.model.initial_point()
        value_vars = self.model.value_vars
        logp = self.model.logp(jacobian=True)
        grads = cast(list[pt.TensorVariable], pt.grad(logp, value_vars))
        grad = pt.concatenate([g.ravel() for g in grads])
        # Deterministics are graphs of the random variables; evaluate them at the values.
        mu, sigma = self.model.replace_rvs_by_values([self.model["mu"], self.model["sigma_t"]])
        outs, x = join_nonshared_inputs(ip, [logp, grad, mu, sigma], value_vars)
        # Hot path of the optimiser and the importance sampler: log density and gradient
        # only, inputs trusted (always a float64 vector), which saves a third of each call.
        self._fg = pytensor.function([x], outs[:2], on_unused_input="ignore")
        # Predictions alone, without the gradient: a third of the nodes of a function of
        # all four, so a third of the thunks to rebuild when the fitter is loaded.
        self._predict = pytensor.function([x], outs[2:], on_unused_input="ignore")
        self._fg.trust_input = True
        self._x0 = np.concatenate([np.asarray(ip[v.name], dtype=float).ravel() for v in value_vars])
        self.size = self._x0.size
        self._slices: dict[str, slice] = {}
        i = 0
        for v in value_vars:
            n = int(np.asarray(ip[v.name]).size)
            self._slices[v.name] = slice(i, i + n)
            i += n

    @property
    def density(self) -> pytensor.compile.function.types.Function:
        """The log density and its gradient at a contiguous float64 vector, unchecked."""
        return self._fg

    def _neg(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        lp, g = self._fg(np.ascontiguousarray(x, dtype=float))
        if not np.isfinite(lp) or not np.all(np.isfinite(g)):
            return 1e20, np.zeros_like(x)
        return -float(lp), -np.asarray(g, dtype=float)

    def logp(self, x: np.ndarray) -> float:
        """Log density (unnormalised posterior) at a flat parameter vector; -inf outside."""
        lp = float(self._fg(np.ascontiguousarray(x, dtype=float))[0])
        return lp if np.isfinite(lp) else float("-inf")

    def predict(self, data: ComponentInput, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predicted rows and noise scales of ``data`` at each flat parameter vector in ``xs``.

        The data are set first: predictions depend on the onset, baselines and scales in
        them, and the model's containers hold whatever was fitted last (until version 8
        the posterior predictive of non-root components and the discriminating signals'
        simulations were computed on such stale containers, up to 3.6 scale units off).
        """
        set_component(self.model, data)
        pairs = [self._predict(np.ascontiguousarray(x, dtype=float)) for x in np.atleast_2d(xs)]
        return (np.stack([np.asarray(mu) for mu, _ in pairs]),
                np.stack([np.asarray(sigma) for _, sigma in pairs]))

    def fit(self, data: ComponentInput, rng: np.random.Generator,
            draws: int = _IS_DRAWS, starts: list[np.ndarray] | None = None,
            twins: Sequence[Mechanism] = ()) -> Fit:
        """Evidence of ``data`` under this role, with its standard error.

        ``starts`` replaces the default starting points of the optimiser. ``twins`` are roles
        with this role's likelihood and parameters but other priors: the ratio of each
        one's evidence to this role's is estimated from the same draws (``twin_ratio``).
        """
        free = self._free(data)
        x_map, cov = self._laplace(data, starts, free)
        held = self._held_log_density(data)
        lp_map = self.logp(x_map)
        sign, logdet = np.linalg.slogdet(cov[np.ix_(free, free)])
        laplace = lp_map + 0.5 * free.sum() * np.log(2 * np.pi) + 0.5 * logdet - held
        post = self._importance(x_map, cov, free, rng, draws)
        log_z, se, ess = post.estimate()
        log_z -= held
        # The twins' ratios from the same posterior the evidence uses: the weighted draws, or
        # the Laplace approximation where the weights degenerated.
        ratios: dict[str, tuple[float, float]] = {}
        if twins:
            basis = (post if post.ess >= _MIN_ESS
                     else _gaussian_draws(x_map, cov, free, rng, draws))
            ratios = {twin.name: ratio for twin in twins
                      if (ratio := self.twin_ratio(basis, twin)) is not None}
        if not np.isfinite(log_z) or ess < _MIN_ESS:
            # The weights degenerated: the Student-t proposal missed the posterior's shape.
            # Fall back to Laplace, and say how far the two disagreed as its error.
            gap = abs(log_z - laplace) if np.isfinite(log_z) else _FALLBACK_SE
            log_z, se = laplace, float(min(max(gap, 1.0), _FALLBACK_SE))
        mu, sigma = (np.asarray(v) for v in self._predict(x_map))   # data set by _laplace
        return Fit(log_evidence=float(log_z), stderr=float(se), laplace=float(laplace),
                   x_map=x_map, cov=cov, mu=mu, sigma=sigma, ess=float(ess),
                   twin_log_ratio=ratios)

    def twin_ratio(self, post: WeightedDraws, twin: Mechanism) -> tuple[float, float] | None:
        """Log of ``twin``'s evidence over this role's, and its error, from this role's draws.

        With one likelihood and other priors, the ratio of the evidences is the posterior
        mean of the ratio of the priors, E[p_twin(theta) / p_this(theta)]. Where the data pin
        the parameters down, that ratio hardly varies over the posterior, so the estimate
        is precise even from few effective draws, while each evidence on its own carries the
        importance sampler's error (a nat and more at an ESS of 3 to 15 of 192, as traffic
        surges' and loaded callees' fits have). Ranking a surge in a caller against one in
        its callee comes down to exactly this ratio at each of the two.

        None when the data leave a parameter whose priors differ loosely determined (posterior
        sd over ``_TWIN_MAX_SD``): the ratio of two priors with different tails is then
        dominated by draws far out in them (measured on simulated 079: +347 nats at
        catalogue-db, whose load the data barely inform), and such a component is no
        candidate for the twin's role anyway. None also when most of this role's posterior
        lies outside the twin's support.
        """
        if set(twin.priors) != set(self.mechanism.priors):
            raise ModelError(f"{twin.name} and {self.mechanism.name} have other parameters")
        log_r = np.zeros(post.x.shape[0])
        w = post.weights
        for name, prior in twin.priors.items():
            mine = self.mechanism.priors[name]
            if prior != mine:
                values = self.values(post.x, name)[:, 0]
                spread = np.sqrt(np.sum(w * (values - np.sum(w * values)) ** 2))
                if not spread <= _TWIN_MAX_SD:
                    return None
                log_r += prior.logpdf(values) - mine.logpdf(values)
        inside = np.isfinite(log_r) & (w > 0)
        if w[inside].sum() < 0.5:
            return None
        terms = np.full(w.size, -np.inf)
        terms[inside] = np.log(w[inside]) + log_r[inside]
        log_ratio = float(special.logsumexp(terms))
        # Delta method for the self-normalised estimate, in log space: the variance is
        # sum (w_i r_i / R - w_i)^2, and each w_i r_i / R is a share of a sum (no overflow).
        share = np.exp(terms - log_ratio)
        return log_ratio, float(np.sqrt(np.sum((share - w) ** 2)))

    def posterior(self, data: ComponentInput, rng: np.random.Generator,
                  draws: int = _IS_DRAWS) -> WeightedDraws:
        """Weighted draws from the posterior of ``data`` under this role (flat parameters).

        Parameters the data cannot inform (``_free``) are drawn from the Gaussian at their
        prior's mode and curvature, which is their prior where it is normal; their weights
        do not depend on them.
        """
        free = self._free(data)
        x_map, cov = self._laplace(data, None, free)
        post = self._importance(x_map, cov, free, rng, draws)
        held = ~free
        if held.any():
            sd = np.sqrt(np.diag(cov)[held])
            post.x[:, held] = x_map[held] + sd * rng.standard_normal((post.x.shape[0], sd.size))
        return post

    def _free(self, data: ComponentInput) -> np.ndarray:
        """Which flat parameters the data inform: all but the nuisance ones of rows with no data.

        A row's baseline, noise and drift (``ROW_NUISANCE``) enter only that row's
        likelihood, so with no data on the row their posterior is their prior and they
        integrate to one. They are held at their prior mode, 0, through the optimiser, the
        Hessian and the importance sampler, and the evidence divides out their prior density
        there (``_held_log_density``), which is exact. Left in, they were a third to two
        thirds of the dimensions (a sock-shop database has two rows of ten), each a prior
        the Student-t proposal matches only roughly, so they cost importance weights and
        gradient calls and bought nothing.
        """
        free = np.ones(self.size, dtype=bool)
        rows = rows_without_data(data)
        for name in ROW_NUISANCE:
            sl = self._slices[name]
            free[np.arange(sl.start, sl.stop)[rows]] = False
        return free

    @staticmethod
    def _held_log_density(data: ComponentInput) -> float:
        """The log density the held parameters (see ``_free``) add to ``logp`` at 0."""
        return float(nuisance_log_density_at_zero(data)[rows_without_data(data)].sum())

    def _laplace(self, data: ComponentInput, starts: list[np.ndarray] | None,
                 free: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The MAP for ``data`` and the covariance of the Gaussian approximation there.

        Only ``free`` parameters move; the others stay at 0.
        """
        set_component(self.model, data)
        x_map = self._map(self.starts(data) if starts is None else starts, free)
        return x_map, self._covariance(x_map, free)

    def starts(self, data: ComponentInput) -> list[np.ndarray]:
        """Starting points: drift at the observed shift, and (unless ``none``) without it.

        Starting from the data's own level shift puts L-BFGS near the mode of the roles that
        explain a change by normal variation; the second start lets the mechanism take the
        change instead, which is the other mode worth finding. Non-root roles need it as much
        as roots: from the first start alone, a callee's threefold load rise stayed with the
        drift and its ``loaded`` evidence came out 250 nats short of the surge's.
        """
        after = data.step > 0.5
        shift = np.zeros(data.y.shape[0])
        for r in range(data.y.shape[0]):
            pre, post = (data.mask[r] > 0) & ~after, (data.mask[r] > 0) & after
            if pre.any() and post.any():
                shift[r] = np.median(data.y[r, post]) - np.median(data.y[r, pre])
        x1 = self._x0.copy()
        x1[self._slices["drift"]] = shift
        return [x1, self._x0] if self.mechanism.priors else [x1]

    def _map(self, starts: list[np.ndarray], free: np.ndarray) -> np.ndarray:
        base = np.zeros(self.size)

        def neg(z: np.ndarray) -> tuple[float, np.ndarray]:
            x = base.copy()
            x[free] = z
            f, g = self._neg(x)
            return f, g[free]

        best_z, best_f = starts[0][free], np.inf
        for x0 in starts:
            res = optimize.minimize(neg, x0[free], jac=True, method="L-BFGS-B",
                                    options={"maxiter": 400})
            if res.fun < best_f:
                best_z, best_f = np.asarray(res.x), float(res.fun)
        x_map = base.copy()
        x_map[free] = best_z
        return x_map

    def _covariance(self, x: np.ndarray, free: np.ndarray, eps: float = 1e-4) -> np.ndarray:
        """The Laplace covariance at ``x``, free parameters and held ones (see ``_free``).

        The free block is the inverse Hessian; each held parameter gets its prior's curvature,
        all read off one pair of gradients (they are independent of each other and the rest).
        """
        cov = np.zeros((self.size, self.size))
        index = np.flatnonzero(free)
        h = np.empty((index.size, index.size))
        for k, i in enumerate(index):
            e = np.zeros(self.size)
            e[i] = eps
            h[k] = (self._neg(x + e)[1] - self._neg(x - e)[1])[free] / (2 * eps)
        cov[np.ix_(free, free)] = _covariance(0.5 * (h + h.T))
        held = ~free
        if held.any():
            e = np.where(held, eps, 0.0)
            curvature = (self._neg(x + e)[1] - self._neg(x - e)[1])[held] / (2 * eps)
            cov[held, held] = 1.0 / np.clip(curvature, _MIN_PRECISION, None)
        return cov

    def _importance(self, loc: np.ndarray, cov: np.ndarray, free: np.ndarray,
                    rng: np.random.Generator, draws: int) -> WeightedDraws:
        """Importance draws from the defensive Student-t mixture at the Laplace fit.

        Only the ``free`` parameters are drawn; the others stay at ``loc``.
        """
        zs, logq = proposal_draws(loc[free], cov[np.ix_(free, free)], draws, rng)
        xs = np.tile(loc, (zs.shape[0], 1))
        xs[:, free] = zs
        logp = np.array([self.logp(x) for x in xs])
        return WeightedDraws(xs, np.where(np.isfinite(logp), logp - logq, -np.inf))

    def translate(self, x: np.ndarray, other: RoleFitter) -> np.ndarray | None:
        """``other``'s flat point ``x`` as a point of this role, or None if it has no image.

        Parameters of the same name carry over, a log transform on one side only is undone
        or applied (a non-positive value has no image then); this role's own parameters
        start from its initial point.
        """
        return self.merge([(x, other)])

    def merge(self, points: Sequence[tuple[np.ndarray, RoleFitter]]) -> np.ndarray | None:
        """A point of this role from other roles' points, or None if one has no image.

        Each parameter comes from the first point whose role has it (as in ``translate``);
        the rest stay at this role's initial point.
        """
        out = self._x0.copy()
        for name, sl in self._slices.items():
            base = name.removesuffix("_log__")
            for x, other in points:
                if name in other._slices:
                    src = x[other._slices[name]]
                elif base != name and base in other._slices:
                    src = x[other._slices[base]]
                    if np.any(src <= 0):
                        return None
                    src = np.log(src)
                elif f"{name}_log__" in other._slices:
                    src = np.exp(x[other._slices[f"{name}_log__"]])
                else:
                    continue
                if src.size == sl.stop - sl.start:
                    out[sl] = src
                break
        return out

    def with_value(self, x: np.ndarray, name: str, value: float) -> np.ndarray | None:
        """``x`` with one scalar parameter set to ``value`` in its own space.

        The inverse of ``values``; None when ``value`` is outside the parameter's support.
        """
        sl, transform = self._slot(name)
        if not transform.inside(value):
            return None
        out = x.copy()
        out[sl] = transform.forward(value)
        return out

    def values(self, xs: np.ndarray, name: str) -> np.ndarray:
        """One free parameter's values in its own space (the log and log-odds transforms undone)."""
        sl, transform = self._slot(name)
        return transform.backward(xs[:, sl])

    def _slot(self, name: str) -> tuple[slice, _Transform]:
        """Where parameter ``name`` sits in the flat vector, and PyMC's transform of it."""
        for transform in _TRANSFORMS:
            key = name + transform.suffix
            if key in self._slices:
                return self._slices[key], transform
        raise KeyError(f"{self.mechanism.name} has no parameter {name!r}")


@dataclass(frozen=True)
class _Transform:
    """A PyMC value transform, named by the suffix it gives a variable's value."""

    suffix: str
    forward: Callable[[Any], Any]     # own space -> unconstrained
    backward: Callable[[Any], Any]    # unconstrained -> own space
    inside: Callable[[float], bool]   # the own space's support


_TRANSFORMS = (
    _Transform("", lambda v: v, lambda z: z, lambda v: True),
    _Transform("_log__", np.log, np.exp, lambda v: v > 0),
    _Transform("_logodds__", special.logit, special.expit, lambda v: 0 < v < 1),
)


@dataclass(frozen=True)
class WeightedDraws:
    """Importance draws (flat, unconstrained parameters) and their log weights."""

    x: np.ndarray
    log_w: np.ndarray

    @property
    def weights(self) -> np.ndarray:
        """Normalised weights."""
        if not np.isfinite(self.log_w).any():
            return np.full(self.log_w.size, 1.0 / self.log_w.size)
        w = np.exp(self.log_w - self.log_w.max())
        return w / w.sum()

    @property
    def ess(self) -> float:
        """Kish's effective sample size of the weights."""
        if not np.isfinite(self.log_w).any():
            return 0.0
        w = self.weights
        return float(1.0 / np.sum(w**2))

    def estimate(self) -> tuple[float, float, float]:
        """Log evidence, its standard error (delta method) and the ESS."""
        if not np.isfinite(self.log_w).any():
            return float("-inf"), float("inf"), 0.0
        n = self.log_w.size
        log_z = float(special.logsumexp(self.log_w) - np.log(n))
        w = self.weights  # the relative spread does not depend on the normalisation
        se = float(np.std(w) / (np.mean(w) * np.sqrt(n)))
        return log_z, se, float(1.0 / np.sum(w**2))


def proposal_draws(loc: np.ndarray, cov: np.ndarray, n: int,
                   rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Draws from the importance proposal and their log densities under the whole mixture.

    A defensive mixture of two Student-t at the MAP: one with the Laplace covariance (slightly
    widened), one three times wider in every direction, each drawing half. The narrow one
    gives precision where the Laplace fit is right; the wide one reaches the tails it gets
    wrong (a magnitude near its zero boundary, a curved ridge), where a single Student-t
    gives few, huge weights. Measured on the slow tier's simulation-based calibration (50
    replications): with a single proposal the true traffic-surge load fell in the outer 10 %
    of its posterior 38 % of the time, with this mixture 30 %, and 24 % once its prior was
    also made log-normal; capacity loss stayed at 28 % (ranks [14, 11, 11, 4, 10] before,
    [17, 9, 7, 7, 10] after). Weights use the mixture density (balance heuristic), so the
    estimate stays unbiased.
    """
    n_wide = int(round(n * _IS_WIDE_SHARE))
    xs = np.concatenate([
        _student_t_draws(loc, cov * _IS_NARROW_SCALE, _IS_DF, n - n_wide, rng),
        _student_t_draws(loc, cov * _IS_WIDE_SCALE, _IS_DF, n_wide, rng)])
    return xs, _mixture_logpdf(xs, loc, cov, share=n_wide / n)


def _mixture_logpdf(xs: np.ndarray, loc: np.ndarray, cov: np.ndarray,
                    share: float = _IS_WIDE_SHARE) -> np.ndarray:
    """Log density of the proposal mixture (``share`` of it the wide one) at rows of ``xs``."""
    return np.logaddexp(
        np.log1p(-share) + _student_t_logpdf(xs, loc, cov * _IS_NARROW_SCALE, _IS_DF),
        np.log(share) + _student_t_logpdf(xs, loc, cov * _IS_WIDE_SCALE, _IS_DF))


def _student_t_logpdf(xs: np.ndarray, loc: np.ndarray, cov: np.ndarray,
                      df: float) -> np.ndarray:
    """Log density of a multivariate Student-t at each row of ``xs``."""
    d = loc.size
    chol = np.linalg.cholesky(cov)
    z = np.linalg.solve(chol, (xs - loc).T).T
    logdet = 2.0 * np.sum(np.log(np.diag(chol)))
    return (special.gammaln((df + d) / 2) - special.gammaln(df / 2)
            - 0.5 * d * np.log(df * np.pi) - 0.5 * logdet
            - 0.5 * (df + d) * np.log1p(np.sum(z**2, axis=1) / df))


def _student_t_draws(loc: np.ndarray, cov: np.ndarray, df: float, n: int,
                     rng: np.random.Generator) -> np.ndarray:
    """Draws from a multivariate Student-t (their density is ``_student_t_logpdf``)."""
    chol = np.linalg.cholesky(cov)
    z = rng.standard_normal((n, loc.size))
    g = rng.chisquare(df, size=n) / df
    return loc + (z @ chol.T) / np.sqrt(g)[:, None]


def _gaussian_draws(loc: np.ndarray, cov: np.ndarray, free: np.ndarray,
                    rng: np.random.Generator, n: int) -> WeightedDraws:
    """Equally weighted draws of the ``free`` parameters from the Laplace approximation."""
    xs = np.tile(loc, (n, 1))
    chol = np.linalg.cholesky(cov[np.ix_(free, free)])
    xs[:, free] += rng.standard_normal((n, int(free.sum()))) @ chol.T
    return WeightedDraws(xs, np.zeros(n))


def _covariance(neg_hessian: np.ndarray) -> np.ndarray:
    """Inverse of the (negated log-density) Hessian, with eigenvalues kept positive."""
    vals, vecs = np.linalg.eigh(neg_hessian)
    vals = np.clip(vals, _MIN_PRECISION, None)
    cov = (vecs / vals) @ vecs.T
    return 0.5 * (cov + cov.T)


_CACHE: dict[tuple[str, int], RoleFitter] = {}


def build_fitter(role: str, n_time: int) -> RoleFitter:
    """A newly compiled fitter of ``role``, not shared with anyone (see ``fitter``)."""
    log.debug("compiling the %s model", role)
    return RoleFitter(REGISTRY[role](), n_time)


def fitter(role: str, n_time: int) -> RoleFitter:
    """The compiled fitter of ``role`` (a mechanism name, ``propagated`` or ``none``), cached."""
    key = (role, n_time)
    if key not in _CACHE:
        _CACHE[key] = own_fitter(role, n_time)
    return _CACHE[key]


def own_fitter(role: str, n_time: int) -> RoleFitter:
    """A fitter of ``role`` that nobody else holds (its data containers are its own).

    Loaded from the compiled cache when the role was built before, as it always has been
    once ``prepare_fitters`` ran: unpickling a copy takes a fraction of a second, building
    one rewrites the graphs again (1.6 to 3.6 s a role with every C module compiled).
    """
    return load_or_build(_entry(role, n_time), lambda: build_fitter(role, n_time))


def _entry(role: str, n_time: int) -> str:
    return f"fitter-{role}-{n_time}"


def prepare_fitters(roles: Sequence[str], n_time: int, workers: int) -> None:
    """Make the fitters of ``roles`` ready, compiling the missing ones on ``workers`` cores."""
    build_missing({_entry(r, n_time): partial(build_fitter, r, n_time)
                   for r in roles if (r, n_time) not in _CACHE}, workers)
    for role in roles:
        fitter(role, n_time)

"""The analysis: from Observations to the posterior over (component, mechanism) and a report.

Steps: put the incident on the grid; screen onset candidates if the onset is unknown; fit
every (component, role) at every kept candidate with the compiled fitters; combine into the
posterior over hypotheses and onsets; sample the leading hypothesis with NUTS for its hidden
state; check adequacy by posterior predictive; rank discriminating signals; assemble the
report (INTERFACE.md schema "1" plus docs/ARTEFACTS.md).
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import arviz as az
import numpy as np
from threadpoolctl import threadpool_limits

from latentcause import __version__
from latentcause.inference import ambiguity as amb
from latentcause.inference.evidence import Fit, fitter, prepare_fitters
from latentcause.inference.grid import N_TIME, ComponentGrid, Grid, make_grid
from latentcause.inference.hypotheses import (
    Hypothesis,
    Posterior,
    combine,
    none_prior,
    prior_weights,
    role_of,
)
from latentcause.inference.onset import screen_candidates
from latentcause.inference.pool import default_workers, map_tasks
from latentcause.inference.sampling import Diagnostics, sampler
from latentcause.models import (
    MODEL_VERSION,
    NU,
    REGISTRY,
    ROLES,
    ROWS,
    VARIANTS,
    ComponentInput,
    config_sha256,
    set_component,
)
from latentcause.observations import Observations

__all__ = ["AnalysisResult", "Ranking", "analyze", "rank"]

log = logging.getLogger(__name__)

#: Power on the likelihood (1 = plain Bayes). Kept as data in every graph; see benchmarks.
LIKELIHOOD_WEIGHT = 1.0
#: Fraction of post-onset bins a series may have outside the 98 % predictive band and still
#: count as reproduced.
ADEQUACY_OUTSIDE_MAX = 0.3
#: Multipliers of the drift's prior scale (normal variation) at which every role is fitted;
#: the hypotheses weigh them evenly (``hypotheses.combine``), a grid over a decade. 1 is the
#: scale sock-shop's separate normal and anomalous recordings need; a quarter of it is what
#: one steady recording shows between two halves; at a tenth a steady system's 25 % rise in
#: one component's load is a change (suite 091: `none` at 0.93 with a quarter, the surge at
#: 1.00 with a tenth). Each value is one more fit per (component, role, onset); the
#: data choose among them (sock-shop: 1 in 30 of 50 incidents; the simulated suite, whose
#: windows are one steady recording each: a tenth in 93 of 100).
DRIFT_MULTS = (0.1, 0.25, 1.0)
#: Cap on a fit's reported evidence error: a degenerate importance sample says "unknown", and
#: beyond a few nats that is all the combination needs to know.
_SE_CAP = 5.0
#: Noise of a measurement not yet taken, per transform, for discriminating signals.
_UNOBSERVED_NOISE = {"err": 0.5, "restarts": 0.2, "retries": 0.25}

Progress = Callable[[str, float], None]


@dataclass
class AnalysisResult:
    """What an analysis produces: the report (report.json) and the posterior (posterior.nc)."""

    report: dict[str, Any]
    idata: az.InferenceData | None


#: Key of one fit: component name, role, onset candidate, drift multiplier index.
FitKey = tuple[str, str, int, int]


@dataclass
class Ranking:
    """The evidence stage: the grid, the onsets kept, every fit and the posterior they give.

    This is all the report's hypothesis probabilities, credible set and onset depend on;
    what ``analyze`` adds (NUTS on the leader, adequacy, discriminating signals) does not
    move them.
    """

    grid: Grid
    kept: list[int]
    fits: dict[FitKey, Fit]
    posterior: Posterior
    seconds: float


def fit_key(comp: str, role: str, k: int, s: int, kept: list[int]) -> FitKey:
    """Key of the fit of ``comp`` in ``role`` at candidate ``k``: ``none`` has one, at kept[0].

    Nothing moves at the onset under ``none``, so ``evidence_fits`` fits it only there.
    """
    return (comp, role, kept[0] if role == "none" else k, s)


def _input(comp: ComponentGrid, grid: Grid, k: int, s: int) -> ComponentInput:
    cand = grid.candidates[k]
    return ComponentInput(y=comp.y, mask=comp.mask, scale=comp.scale, step=cand.step,
                          elapsed=cand.elapsed, err_base=comp.err_base,
                          retry_base=comp.retry_base,
                          weight=LIKELIHOOD_WEIGHT * comp.weight,
                          lat_level=comp.lat_level, own_share=comp.own_share,
                          drift_mult=DRIFT_MULTS[s])


def analyze(obs: Observations, *, seed: int = 0, draws: int = 500, chains: int = 2,
            p_none: float | None = None, progress: Progress | None = None,
            workers: int | None = None) -> AnalysisResult:
    """Analyse one incident; the same seed and observations give the same report.

    ``workers`` processes share the evidence fits (default: the usable cores, at most 4, or
    ``LATENTCAUSE_WORKERS``); the report does not depend on it.

    BLAS is held to one thread: the work is thousands of tiny linear-algebra calls, for which
    a multi-threaded BLAS spends more time waking threads than computing (measured: 4.5 ms
    instead of a few microseconds per L-BFGS step on 2 busy cores).
    """
    with threadpool_limits(limits=1):
        return _analyze(obs, seed=seed, draws=draws, chains=chains, p_none=p_none,
                        progress=progress, workers=workers)


def _analyze(obs: Observations, *, seed: int, draws: int, chains: int, p_none: float | None,
             progress: Progress | None, workers: int | None) -> AnalysisResult:
    t0 = time.perf_counter()
    say = progress or (lambda msg, frac: log.info("%3.0f%% %s", 100 * frac, msg))
    n_workers = default_workers() if workers is None else workers
    ranking = rank(obs, seed=seed, p_none=p_none, workers=n_workers, say=say)
    grid, kept, fits, post = ranking.grid, ranking.kept, ranking.fits, ranking.posterior
    t_evidence = ranking.seconds
    order = post.order()
    leader_i = next(int(i) for i in order if post.hypotheses[int(i)].mechanism != "none")
    leader = post.hypotheses[leader_i]
    assert leader.component is not None
    k_lead = kept[int(post.best_onset[leader_i])]
    s_lead = int(post.best_drift[leader_i])
    say(f"sampling {leader.label}", len(ROLES) / (len(ROLES) + 2))
    root = grid.component(leader.component)
    lead_fit = fits[(root.name, leader.mechanism, k_lead, s_lead)]
    t1 = time.perf_counter()
    # The leader is sampled at its most probable drift scale (conditioning on it rather than
    # marginalising: the scale moves the hidden state far less than the onset does).
    sampled_model = lead_fit.model or leader.mechanism
    raw, diag = sampler(sampled_model, N_TIME).sample(
        _input(root, grid, k_lead, s_lead), lead_fit.x_map, lead_fit.cov, seed=seed,
        draws=draws, chains=chains, workers=n_workers)
    t_sampling = time.perf_counter() - t1

    say("posterior predictive, adequacy, ambiguity", (len(ROLES) + 1) / (len(ROLES) + 2))
    rng = np.random.default_rng([seed, 7])
    idata, series = _inference_data(grid, post, leader_i, k_lead, s_lead, kept, raw, fits, rng)
    adequacy = _adequacy(idata, series, root.name, grid, k_lead)
    ambiguity = _ambiguity(grid, post, kept, fits, rng)
    report = _report(obs, grid, post, kept, leader, k_lead, raw, diag, adequacy, ambiguity,
                     seed, sampled_model)
    report["provenance"]["prior_none"] = round(none_prior(p_none), 6)
    report["timing_s"] = {"evidence": round(t_evidence, 2), "sampling": round(t_sampling, 2),
                          "total": round(time.perf_counter() - t0, 2)}
    idata.attrs.update({
        "latentcause_version": __version__, "model_version": MODEL_VERSION,
        "mechanism": leader.mechanism, "component": leader.component,
        "config_sha256": report["provenance"]["model_config_sha256"],
        "data_sha256": report["provenance"]["data_sha256"], "seed": seed,
    })
    say("done", 1.0)
    return AnalysisResult(report=report, idata=idata)


# ----------------------------------------------------------------------------- evidence

def rank(obs: Observations, *, seed: int = 0, p_none: float | None = None,
         workers: int | None = None, say: Progress | None = None) -> Ranking:
    """The posterior over hypotheses and onsets, without sampling or reporting.

    The first half of ``analyze``, and what ``benchmarks/accuracy.py --ranking-only``
    measures: the same seed gives the same probabilities as the full analysis.
    """
    none_prior(p_none)  # a bad prior fails now, not after the evidence stage
    t0 = time.perf_counter()
    grid = make_grid(obs)
    kept = screen_candidates(grid)
    n_workers = default_workers() if workers is None else workers
    with threadpool_limits(limits=1):  # see ``analyze``
        fits = evidence_fits(grid, kept, seed=seed, workers=n_workers, say=say,
                             call_graph=obs.call_graph)
    post = posterior_of(grid, kept, fits, obs, p_none)
    return Ranking(grid=grid, kept=kept, fits=fits, posterior=post,
                   seconds=time.perf_counter() - t0)


def evidence_fits(grid: Grid, kept: list[int], *, seed: int, workers: int,
                  say: Progress | None = None,
                  call_graph: Mapping[str, frozenset[str]] | None = None) -> dict[FitKey, Fit]:
    """Fit every (component, role, onset candidate, drift multiplier) on ``workers`` cores.

    Nothing moves at the onset under ``none``, so it is fitted at the first candidate only.
    Where the call graph gives a component callees, the variants of its mechanisms are
    fitted too and mixed into their evidence (``_with_variants``).
    """
    if say is not None:
        say("compiling the mechanism models (cached after the first run)", 0.0)
    with_callees = {c.name for c in grid.components if call_graph and call_graph.get(c.name)}
    prepare_fitters(ROLES + (VARIANTS if with_callees else ()), N_TIME, workers)
    tasks = [(c_i, r_i, k, s) for r_i, role in enumerate(ROLES)
             for c_i in range(len(grid.components))
             for k in (kept[:1] if role == "none" else kept)
             for s in range(len(DRIFT_MULTS))]
    if say is not None:
        say(f"evidence: {len(tasks)} fits of {len(ROLES)} roles on {workers} cores", 0.05)

    def rng_of(c_i: int, r_i: int, k: int, s: int) -> np.random.Generator:
        # Seeded by the component's name, not its position: the same data read in another
        # column order (CSV versus Prometheus) gives the same report.
        name_key = zlib.crc32(grid.components[c_i].name.encode())
        return np.random.default_rng([seed, name_key, r_i, k, s])

    def fit_one(task: tuple[int, int, int, int]) -> Fit:
        c_i, r_i, k, s = task
        return _fit(ROLES[r_i], _input(grid.components[c_i], grid, k, s), rng_of(c_i, r_i, k, s))

    results = map_tasks(fit_one, tasks, workers)
    fits = dict(zip(tasks, results, strict=True))
    # A second pass carries an optimum one hop further: a loaded role's optimum can repair
    # the surge's fit, which then repairs the storm's (simulated payment storm, seed 2).
    for _ in range(_RESEED_PASSES):
        better = _cross_seeded(grid, fits, rng_of, workers)
        if not better:
            break
        fits.update(better)
    fits = _tied_to_twins(fits)
    named = {(grid.components[c_i].name, ROLES[r_i], k, s): fit
             for (c_i, r_i, k, s), fit in fits.items()}
    if not with_callees:
        return named
    if say is not None:
        say(f"evidence: variants at {len(with_callees)} components with callees", 0.6)
    tasks_v = [(c_i, len(ROLES) + v_i, k, s) for v_i in range(len(VARIANTS))
               for c_i, comp in enumerate(grid.components) if comp.name in with_callees
               for k in kept for s in range(len(DRIFT_MULTS))]

    def fit_variant(task: tuple[int, int, int, int]) -> Fit:
        c_i, r_i, k, s = task
        comp, variant = grid.components[c_i], VARIANTS[r_i - len(ROLES)]
        data = _input(comp, grid, k, s)
        starts = _variant_starts(variant, {role: named[(comp.name, role, k, s)].x_map
                                           for role in _VARIANT_PARTS[variant]}, data)
        return _fit(variant, data, rng_of(c_i, r_i, k, s), starts=starts)

    variants = {(grid.components[c_i].name, VARIANTS[r_i - len(ROLES)], k, s): fit
                for (c_i, r_i, k, s), fit in zip(
                    tasks_v, map_tasks(fit_variant, tasks_v, workers), strict=True)}
    return _with_variants(named, variants)


#: Prior share of a variant in its mechanism's evidence, where it applies: of the surges at
#: a component with callees, those that pass on enough load to saturate one. Nothing
#: measured sets it; 0.3 keeps a surge whose callees kept up within 0.36 nats (log 1/0.7)
#: of what it earned before variants, and costs the variant 1.2 nats (log 1/0.3) where it
#: is what happened, against about 14 and 45 nats of fit it gained there (suite 086, 069).
VARIANT_SHARE = 0.3
#: Variant -> the roles whose optima, merged, start its fit: the surge's own parameters,
#: and the callee waits and errors a propagated role found at the same component.
_VARIANT_PARTS: dict[str, tuple[str, ...]] = {
    "traffic_surge_via_callees": ("traffic_surge", "propagated")}


def _variant_starts(variant: str, optima: Mapping[str, np.ndarray],
                    data: ComponentInput) -> list[np.ndarray]:
    """Starts for ``variant``'s fit: its parts' optima merged, and its own default starts.

    From its default starts alone the optimiser would have to find both a surge and a
    callee's saturation in a likelihood with several modes; each part has found its own.
    """
    f_v = fitter(variant, N_TIME)
    merged = f_v.merge([(optima[role], fitter(role, N_TIME)) for role in _VARIANT_PARTS[variant]])
    return ([merged] if merged is not None else []) + f_v.starts(data)


def _with_variants(fits: dict[FitKey, Fit], variants: dict[FitKey, Fit]) -> dict[FitKey, Fit]:
    """``fits`` with each mechanism's evidence mixed with its variant's, where fitted.

    The mixture's evidence is ``(1 - q) Z_mechanism + q Z_variant`` (q = ``VARIANT_SHARE``):
    the variant is the mechanism with a prior that lets one more thing happen, and the
    hypothesis is the same. The fit filed under the mechanism is the one with the larger
    share of the mixture, so the leader is sampled, and its predictions drawn, from the
    model that explains the data (``Fit.model`` says which).
    """
    out = dict(fits)
    for (comp, variant, k, s), f_v in variants.items():
        key = (comp, REGISTRY[variant].variant_of or "", k, s)
        f_m = fits[key]
        a = np.log1p(-VARIANT_SHARE) + f_m.log_evidence
        b = np.log(VARIANT_SHARE) + f_v.log_evidence
        log_z = float(np.logaddexp(a, b))
        w = float(np.exp(b - log_z))
        se = float(np.hypot((1.0 - w) * f_m.stderr, w * f_v.stderr))
        chosen = dataclasses.replace(f_v, model=variant) if w > 0.5 else f_m
        out[key] = dataclasses.replace(chosen, log_evidence=log_z, stderr=se)
    return out


#: Role -> its twins: roles with the same likelihood and parameters and other priors, whose
#: evidence is read off the role's own fit (``_tied_to_twins``). A callee's changed load and
#: a surge are one model under two priors; which of a caller and its callee took a surge is
#: decided by exactly the ratio of those priors' evidences at each.
_TWINS: dict[str, tuple[str, ...]] = {"loaded": ("traffic_surge",)}


def _fit(role: str, data: ComponentInput, rng: np.random.Generator,
         starts: list[np.ndarray] | None = None) -> Fit:
    """``role``'s fit of ``data``, with the evidence ratios of its twins."""
    twins = [fitter(t, N_TIME).mechanism for t in _TWINS.get(role, ())]
    return fitter(role, N_TIME).fit(data, rng, starts=starts, twins=twins)


def _tied_to_twins(fits: dict[tuple[int, int, int, int], Fit],
                   ) -> dict[tuple[int, int, int, int], Fit]:
    """``fits`` with each twin's evidence set to its role's plus their ratio.

    Both evidences come from importance samplers with an error of about a nat each at the
    effective sample sizes these roles reach (3 to 15 of 192), independent between the two,
    while their ratio, from one set of draws (``RoleFitter.twin_ratio``), is precise. So a
    caller's surge and its callee's, which differ by that ratio at each, were ranked by
    the samplers' noise: measured on simulated 079 (a surge at front-end, read at orders),
    the surge at orders at p 0.97 in one run and at front-end 0.67 in another, from
    evidences that differed by under a nat.
    """
    out = dict(fits)
    for (c_i, _, k, s), fit in fits.items():
        for twin, (log_ratio, se) in fit.twin_log_ratio.items():
            key = (c_i, ROLES.index(twin), k, s)
            if key in out:
                out[key] = dataclasses.replace(out[key], log_evidence=fit.log_evidence + log_ratio,
                                               stderr=float(np.hypot(fit.stderr, se)))
    return out


#: Roles whose likelihoods are one function (their priors differ): a root's surge and a
#: non-root's changed load; and, past saturation, a surge and a retry storm, once the one
#: parameter they name differently is converted (``_CONVERT``).
_SHARED_LIKELIHOOD = (("traffic_surge", "loaded"), ("traffic_surge", "retry_storm"))
#: (from role, to role) -> the to-role's own parameters from the from-role's values. A storm
#: at overload O over a baseline utilisation rho0 is arrivals x O / rho0
#: (``RetryStorm.effects``), so log_overload = log_load + log(rho0).
_CONVERT: dict[tuple[str, str], Callable[[Callable[[str], float]], dict[str, float]]] = {
    ("traffic_surge", "retry_storm"):
        lambda v: {"log_overload": v("log_load") + float(np.log(v("rho0")))},
    ("retry_storm", "traffic_surge"):
        lambda v: {"log_load": v("log_overload") - float(np.log(v("rho0")))},
}
#: How much better (log density) the other role's optimum must be, read in this role, to fit
#: this role again from it.
_RESEED_GAIN = 1.0
#: Rounds of cross-seeding (each fits again only where a twin's optimum is better).
_RESEED_PASSES = 2


def _cross_seeded(grid: Grid, fits: dict[tuple[int, int, int, int], Fit],
                  rng_of: Callable[[int, int, int, int], np.random.Generator], workers: int,
                  ) -> dict[tuple[int, int, int, int], Fit]:
    """Fits redone from the optimum of a role that shares their likelihood, where it is better.

    L-BFGS from fixed starts can stop in different optima of one likelihood under two priors
    (measured on simulated 038: the surge's fit 21 nats below the loaded role's at the same
    data), and the evidence of the worse one then misranks the hypotheses. A surge past
    saturation and a retry storm are such a pair too: three simulations of one payment storm
    (seeds 1 to 3) came out storm 1.00, surge 1.00 and storm 0.62 by which optimum each fit
    found; seeded from each other, all three give storm 0.59-0.62, surge 0.34-0.35.
    """
    # Fit -> its starts: its own optimum, and every better optimum a twin role offers.
    redo: dict[tuple[int, int, int, int], list[np.ndarray]] = {}
    for role_a, role_b in _SHARED_LIKELIHOOD:
        r_a, r_b = ROLES.index(role_a), ROLES.index(role_b)
        for key in [key for key in fits if key[1] == r_a]:
            c_i, _, k, s = key
            twin = (c_i, r_b, k, s)
            if twin not in fits:
                continue
            data = _input(grid.components[c_i], grid, k, s)
            for mine, other in ((key, twin), (twin, key)):
                x = _start_from(ROLES[mine[1]], ROLES[other[1]], fits[other].x_map)
                if x is None:
                    continue
                f_mine = fitter(ROLES[mine[1]], N_TIME)
                set_component(f_mine.model, data)
                if f_mine.logp(x) > f_mine.logp(fits[mine].x_map) + _RESEED_GAIN:
                    redo.setdefault(mine, [fits[mine].x_map]).insert(0, x)
    if not redo:
        return {}

    def refit(item: tuple[tuple[int, int, int, int], list[np.ndarray]]) -> Fit:
        (c_i, r_i, k, s), starts = item
        return _fit(ROLES[r_i], _input(grid.components[c_i], grid, k, s),
                    rng_of(c_i, r_i, k, s), starts=starts)

    items = list(redo.items())
    return {key: fit for (key, _), fit in zip(items, map_tasks(refit, items, workers), strict=True)}


def _start_from(role: str, other: str, x_other: np.ndarray) -> np.ndarray | None:
    """``other`` role's optimum as a start for ``role``, or None if it has no image there."""
    f_mine, f_other = fitter(role, N_TIME), fitter(other, N_TIME)
    x = f_mine.translate(x_other, f_other)
    convert = _CONVERT.get((other, role))
    if x is None or convert is None:
        return x

    def value(name: str) -> float:
        return float(f_other.values(x_other[None, :], name)[0, 0])

    for name, v in convert(value).items():
        x = f_mine.with_value(x, name, v)
        if x is None:
            return None
    return x


Table = dict[tuple[str, str], np.ndarray]


def _evidence_table(grid: Grid, kept: list[int], fits: dict[FitKey, Fit]) -> tuple[Table, Table]:
    """Log evidence and its error per (component, role), as (drift multiplier, onset) arrays."""
    log_e: dict[tuple[str, str], np.ndarray] = {}
    log_se: dict[tuple[str, str], np.ndarray] = {}
    for role in ROLES:
        for comp in grid.components:
            vals = [[fits[fit_key(comp.name, role, k, s, kept)] for k in kept]
                    for s in range(len(DRIFT_MULTS))]
            log_e[(comp.name, role)] = np.array([[v.log_evidence for v in row] for row in vals])
            log_se[(comp.name, role)] = np.array([[min(v.stderr, _SE_CAP) for v in row]
                                                  for row in vals])
    return log_e, log_se


def posterior_of(grid: Grid, kept: list[int], fits: dict[FitKey, Fit], obs: Observations,
                 p_none: float | None = None) -> Posterior:
    """The posterior over hypotheses, onsets and drift scales from the fits."""
    log_e, log_se = _evidence_table(grid, kept, fits)
    onset_prior = np.array([grid.candidates[k].prior for k in kept])
    names = [c.name for c in grid.components]
    return combine(names, log_e, log_se, onset_prior / onset_prior.sum(),
                   prior_weights(names, p_none), obs.call_graph,
                   drift_prior=np.ones(len(DRIFT_MULTS)))


# ----------------------------------------------------------------------------- posterior data

def _series_of(comp: ComponentGrid) -> list[tuple[str, str, str]]:
    """(label, row, signal) of every observed row of a component."""
    return [(f"{comp.name}/{comp.sources.get(r, r)}", r, comp.sources.get(r, r))
            for r in comp.observed_rows]


def _inference_data(grid: Grid, post: Posterior, leader_i: int, k: int, s: int,
                    kept: list[int], raw: az.InferenceData, fits: dict[FitKey, Fit],
                    rng: np.random.Generator,
                    ) -> tuple[az.InferenceData, list[tuple[str, str, str]]]:
    leader = post.hypotheses[leader_i]
    n_chain = raw["posterior"].sizes["chain"]
    n_draw = raw["posterior"].sizes["draw"]
    mu_root = raw["posterior"]["mu"].to_numpy()        # chain, draw, row, time
    sigma_root = raw["posterior"]["sigma_t"].to_numpy()  # chain, draw, row, time
    labels: list[tuple[str, str, str]] = []
    pred: list[np.ndarray] = []
    obs_y: list[np.ndarray] = []
    comp_of: list[str] = []
    for c_i, comp in enumerate(grid.components):
        if comp.name == leader.component:
            mu, sigma = mu_root, sigma_root
        else:
            role = role_of(post, leader_i, c_i)
            key = fit_key(comp.name, role, k, s, kept)
            mu, sigma = _laplace_predict(role, fits[key], _input(comp, grid, key[2], s),
                                         n_chain * n_draw, rng)
            mu = mu.reshape(n_chain, n_draw, *mu.shape[1:])
            sigma = sigma.reshape(n_chain, n_draw, *sigma.shape[1:])
        for label, row, _signal in _series_of(comp):
            r = ROWS.index(row)
            noise = rng.standard_t(NU, size=mu[:, :, r, :].shape) * sigma[:, :, r, :]
            pred.append(comp.to_data_units(row, mu[:, :, r, :] + noise))
            y = np.where(comp.mask[r] > 0, comp.to_data_units(row, comp.y[r]), np.nan)
            obs_y.append(y)
            labels.append((label, row, comp.name))
            comp_of.append(comp.name)
    series = [lab for lab, _, _ in labels]
    posterior = {name: raw["posterior"][name].to_numpy() for name in raw["posterior"].data_vars
                 if name not in ("mu", "sigma", "sigma_t", "baseline", "noise_log", "drift",
                                 "load_drift")}
    dims = {name: ["time"] for name, v in posterior.items() if v.ndim == 3}
    hyps = [h.label for h in post.hypotheses]
    cands = [grid.candidates[i].time for i in kept]
    idata = az.from_dict(
        posterior=posterior,
        posterior_predictive={"y": np.stack(pred, axis=2)},
        observed_data={"y": np.stack(obs_y)},
        constant_data={
            "onset_time": np.array(cands), "onset_probability": post.onset_probability,
            "hypothesis_probability": post.probability,
            "series_component": np.array(comp_of), "series_signal": np.array(
                [s.split("/")[-1] for s in series]),
            "time_edges": grid.edges,
        },
        coords={"time": grid.times, "series": series, "onset_candidate": np.arange(len(cands)),
                "hypothesis": hyps, "edge": np.arange(grid.edges.size)},
        dims={**dims, "y": ["series", "time"], "onset_time": ["onset_candidate"],
              "onset_probability": ["onset_candidate"], "hypothesis_probability": ["hypothesis"],
              "series_component": ["series"], "series_signal": ["series"],
              "time_edges": ["edge"]},
        sample_stats={k: raw["sample_stats"][k].to_numpy() for k in ("diverging", "lp")
                      if k in raw["sample_stats"]},
    )
    return idata, labels


def _laplace_predict(role: str, fit: Fit, data: ComponentInput, n: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Predicted rows of ``data`` under the Gaussian approximation of ``fit``'s posterior."""
    chol = np.linalg.cholesky(fit.cov)
    xs = fit.x_map + rng.standard_normal((n, fit.x_map.size)) @ chol.T
    return fitter(role, N_TIME).predict(data, xs)


# ----------------------------------------------------------------------------- adequacy

def _adequacy(idata: az.InferenceData, series: list[tuple[str, str, str]], root: str,
              grid: Grid, k: int) -> dict[str, Any]:
    """Posterior predictive check of the leading hypothesis on the root's series."""
    after = grid.candidates[k].step > 0.5
    pred = idata["posterior_predictive"]["y"].to_numpy()   # chain, draw, series, time
    pred = pred.reshape(-1, *pred.shape[2:])
    obs = idata["observed_data"]["y"].to_numpy()
    lo, hi = np.nanquantile(pred, [0.01, 0.99], axis=0)
    worst, worst_label, checked = 0.0, "", []
    rep_worst = np.zeros(pred.shape[0])
    for s_i, (label, _row, comp) in enumerate(series):
        if comp != root:
            continue
        ok = np.isfinite(obs[s_i]) & after
        if ok.sum() < 3:
            continue
        outside = float(np.mean((obs[s_i, ok] < lo[s_i, ok]) | (obs[s_i, ok] > hi[s_i, ok])))
        rep = np.mean((pred[:, s_i][:, ok] < lo[s_i, ok]) | (pred[:, s_i][:, ok] > hi[s_i, ok]),
                      axis=1)
        rep_worst = np.maximum(rep_worst, rep)
        checked.append({"series": label, "outside_98": round(outside, 3)})
        if outside >= worst:
            worst, worst_label = outside, label
    p_value = float(np.mean(rep_worst >= worst)) if checked else 1.0
    fits = bool(worst <= ADEQUACY_OUTSIDE_MAX)
    desc = (f"the leading hypothesis reproduces the root's signals ({worst:.0%} of post-onset "
            f"bins outside the 98% band at worst, {worst_label or 'n/a'})" if fits else
            f"no candidate reproduces the data: {worst:.0%} of post-onset bins of {worst_label} "
            "fall outside the leading hypothesis' 98% predictive band")
    return {"fits": fits, "p_value": round(p_value, 4), "statistic": round(worst, 4),
            "worst_series": worst_label, "checked": checked, "description": desc}


# ----------------------------------------------------------------------------- ambiguity

def _ambiguity(grid: Grid, post: Posterior, kept: list[int],
               fits: dict[FitKey, Fit], rng: np.random.Generator) -> dict[str, Any]:
    p = post.probability
    cs = amb.credible_set(p)
    lead = [i for i in post.order()[:4] if p[i] > 0.01]
    names = [c.name for c in grid.components]
    changes: dict[tuple[int, str], np.ndarray] = {}

    def fit_of(h_i: int, comp: str) -> tuple[str, int, Fit, ComponentInput]:
        """The role ``comp`` plays under hypothesis ``h_i``, its onset, fit and data."""
        h = post.hypotheses[h_i]
        k, s = kept[int(post.best_onset[h_i])], int(post.best_drift[h_i])
        if h.component == comp:
            role = h.mechanism
        elif h.component is not None:
            role = role_of(post, h_i, names.index(comp))
        else:
            role = "none"
        key = fit_key(comp, role, k, s, kept)
        return role, key[2], fits[key], _input(grid.component(comp), grid, key[2], s)

    def simulate(j: int, comp: str, row: str) -> np.ndarray | None:
        # One set of predictive draws per (hypothesis, component) serves all its rows.
        key = (lead[j], comp)
        if key not in changes:
            role, k, fit, data = fit_of(*key)
            mu, _ = _laplace_predict(fit.model or role, fit, data, 48, rng)
            after = grid.candidates[k].step > 0.5
            changes[key] = mu[:, :, after].mean(axis=2) - mu[:, :, ~after].mean(axis=2)
        return changes[key][:, ROWS.index(row)]

    discriminating: list[dict[str, object]] = []
    if len(lead) > 1:
        involved = list(dict.fromkeys(
            c for i in lead for c in ([post.hypotheses[i].component] if post.hypotheses[i].component
                                      else [])))
        cands = []
        for comp in involved:
            cg = grid.component(comp)
            for r_i, row in enumerate(ROWS):
                observed = bool(cg.mask[r_i].mean() > 0.5)
                noise = cg.scale[r_i] if observed else _UNOBSERVED_NOISE.get(row, 0.1)
                cands.append((comp, row, observed, float(noise)))
        weights = p[lead] / p[lead].sum()
        discriminating = amb.rank_signals(weights, simulate, cands, rng)
    return {
        "entropy_bits": round(amb.entropy_bits(p), 4),
        "credible_set": [{"component": post.hypotheses[i].component,
                          "mechanism": post.hypotheses[i].mechanism} for i in cs],
        "ambiguous": amb.is_ambiguous(p),
        "discriminating_signals": discriminating,
    }


# ----------------------------------------------------------------------------- report

def _interval(x: np.ndarray) -> dict[str, Any]:
    lo, med, hi = np.quantile(x, [0.025, 0.5, 0.975])
    return {"median": round(float(med), 4),
            "interval_95": [round(float(lo), 4), round(float(hi), 4)]}


def _trigger(grid: Grid, leader: Hypothesis, k: int, raw: az.InferenceData,
             model: str) -> dict[str, Any]:
    """What changed at the onset at the root, in the words of the model sampled.

    ``model`` is the leader's mechanism, or its variant where that explained the data.
    """
    assert leader.component is not None
    root = grid.component(leader.component)
    after = grid.candidates[k].step > 0.5
    mu = raw["posterior"]["mu"].to_numpy().reshape(-1, len(ROWS), N_TIME)
    base = raw["posterior"]["baseline"].to_numpy().reshape(-1, len(ROWS)) * root.scale
    changes: list[dict[str, Any]] = []
    for row in root.observed_rows:
        r = ROWS.index(row)
        effect = mu[:, r, after].mean(axis=1) - base[:, r]
        changes.append({"component": root.name, "signal": root.sources.get(row, row),
                        "ratio": _interval(np.exp(effect))})
    big = sorted(changes, key=lambda c: -abs(np.log(c["ratio"]["median"])))[:3]
    words = ", ".join(f"{c['signal']} x{c['ratio']['median']:.3g}" for c in big)
    util = (raw["posterior"]["utilisation"].to_numpy().reshape(-1, N_TIME)
            if "utilisation" in raw["posterior"] else None)
    return {"component": root.name, "mechanism": leader.mechanism,
            "description": f"at the onset {root.name}'s {words} "
                           f"({_mechanism_words(model, util, after)})",
            "changes": changes}


def _mechanism_words(model: str, utilisation: np.ndarray | None, after: np.ndarray) -> str:
    """How ``model`` made the change, true to the sampled utilisation (draws by bins).

    A mechanism's summary may speak of saturation ("arrivals rose past the headroom"),
    which a small surge never reaches (simulated 091: 21 % -> 26 %); there the mechanism's
    ``summary_below_saturation`` is said instead, and the utilisation before and after.
    """
    mech = REGISTRY[model]
    if utilisation is None:
        return mech.summary
    before, later = (float(np.median(utilisation[:, part].mean(axis=1)))
                     for part in (~after, after))
    how = mech.summary
    if later < 1.0 and mech.summary_below_saturation is not None:
        how = mech.summary_below_saturation
    return f"{how}; utilisation {before:.0%} -> {later:.0%}"


def _latent(raw: az.InferenceData, mechanism: str) -> dict[str, Any]:
    out: dict[str, Any] = {"utilisation_before": None, "headroom": None, "amplification": None,
                           "load_factor_to_saturation": None}
    post = raw["posterior"]
    parts = []
    if "rho0" in post:
        rho0 = post["rho0"].to_numpy().ravel()
        out["utilisation_before"] = _interval(rho0)
        out["headroom"] = _interval(1 - rho0)
        out["load_factor_to_saturation"] = _interval(1 / rho0)
        u = out["utilisation_before"]
        parts.append(f"utilisation before the onset {u['median']:.0%} "
                     f"(95% {u['interval_95'][0]:.0%}-{u['interval_95'][1]:.0%}): load could grow "
                     f"x{out['load_factor_to_saturation']['median']:.2g} before saturating")
    if "amplification" in post:
        a = post["amplification"].to_numpy()[..., -1].ravel()
        out["amplification"] = _interval(a)
        parts.append(f"retries amplify the offered load by x{1 / (1 - np.median(a)):.2g}")
    if not parts:
        parts.append(f"{mechanism} does not involve the queue's headroom; it is not identified")
    out["description"] = "; ".join(parts)
    return out


def _report(obs: Observations, grid: Grid, post: Posterior, kept: list[int], leader: Hypothesis,
            k_lead: int,
            raw: az.InferenceData, diag: Diagnostics, adequacy: dict[str, Any],
            ambiguity: dict[str, Any], seed: int, sampled_model: str) -> dict[str, Any]:
    order = post.order()
    probs = np.round(post.probability[order], 6)
    probs[0] += 1.0 - probs.sum()  # rounding must not break the sum
    hyps = [{"component": post.hypotheses[i].component, "mechanism": post.hypotheses[i].mechanism,
             "probability": float(max(p, 0.0)),
             "log_evidence": round(float(post.log_evidence[i]), 3),
             "log_evidence_se": round(float(post.log_evidence_se[i]), 3)}
            for i, p in zip(order, probs, strict=True)]
    cand_t = np.array([grid.candidates[k].time for k in kept])
    w = post.onset_probability
    idx = np.argsort(cand_t)
    cdf = np.cumsum(w[idx])
    pick = lambda q: float(cand_t[idx][min(int(np.searchsorted(cdf, q)), len(idx) - 1)])  # noqa: E731
    # Candidates sit on bin edges: an onset anywhere in the bins on either side of the chosen
    # edge looks the same at this resolution, so the interval spans them.
    half_bin = float(np.median(np.diff(grid.edges))) if not grid.onset_known else 0.0
    median = pick(0.5)
    onset = {"median": median,
             "interval_95": [min(pick(0.025) - half_bin, median),
                             max(pick(0.975) + half_bin, median)],
             "source": obs.onset_source or "inferred",
             "candidates": [{"time": float(cand_t[i]), "probability": round(float(w[i]), 6)}
                            for i in idx]}
    start, end = obs.bounds
    top = post.hypotheses[order[0]]
    if ambiguity["ambiguous"]:
        names = [f"{c['mechanism']} in {c['component']}" if c["component"] else "no fault"
                 for c in ambiguity["credible_set"][:3]]
        summary = "ambiguous between " + ", ".join(names)
    elif top.component is None:
        summary = f"no fault beyond normal variation (p = {probs[0]:.2f})"
    else:
        summary = f"{top.mechanism} in {top.component} (p = {probs[0]:.2f})"
    if not adequacy["fits"]:
        summary += "; but no candidate reproduces the data well"
    return {
        "schema_version": "1",
        "summary": summary,
        "window": {"start": float(start), "end": float(end), "step_s": float(obs.step_s)},
        "hypotheses": hyps,
        "onset": onset,
        "ambiguity": ambiguity,
        "adequacy": adequacy,
        "trigger": _trigger(grid, leader, k_lead, raw, sampled_model),
        "latent_condition": _latent(raw, leader.mechanism),
        "diagnostics": {"rhat_max": round(diag.rhat_max, 4),
                        "ess_bulk_min": round(diag.ess_bulk_min, 1),
                        "divergences": diag.divergences, "converged": diag.converged,
                        "sampler": "nuts", "chains": diag.chains, "draws": diag.draws,
                        "tune": diag.tune, "sampled_hypothesis": leader.label,
                        "sampled_model": sampled_model,
                        "evidence_method": "laplace + importance sampling",
                        "normal_variation": {
                            "drift_multipliers": list(DRIFT_MULTS),
                            "probability": [round(float(q), 6) for q in post.drift_probability],
                        },
                        "evidence_se_max": round(float(np.max(post.log_evidence_se)), 3)},
        "provenance": {"source": obs.source, "queries": list(obs.queries),
                       "data_sha256": obs.data_sha256(), "version": __version__, "seed": seed,
                       "model_version": MODEL_VERSION, "model_config_sha256": config_sha256(),
                       "onset_source": obs.onset_source or "inferred", "notes": list(obs.notes)},
        "components": {c.name: [c.sources[r] for r in c.observed_rows] for c in grid.components},
        "call_graph": ({k: sorted(v) for k, v in obs.call_graph.items()}
                       if obs.call_graph is not None else None),
    }

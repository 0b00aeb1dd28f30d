"""The hypothesis space and how component-level evidence combines into its posterior.

A hypothesis is (root component, mechanism) or ``none``. Following the factorisation in
MODELLING.md, its evidence at onset candidate k is the root's evidence under the mechanism
times, for every other component, the evidence of its being propagated or unaffected (a
mixture whose weight follows the call graph when it is known). The onset is marginalised
over the candidates; the posterior is the normalised product with the prior.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special

from latentcause.errors import InputError
from latentcause.models import MECHANISMS

__all__ = ["DEFAULT_P_NONE", "Hypothesis", "Posterior", "combine", "none_prior", "prior_weights",
           "role_of"]

#: Prior probability of ``none`` unless the user gives one (``--p-none``): one of seven, as
#: if it were a seventh mechanism, so the prior is even over what could have happened.
DEFAULT_P_NONE = 1.0 / (len(MECHANISMS) + 1)

#: Prior probability that a non-root component shows propagated symptoms (latency and errors
#: from a callee) or is loaded (arrivals changed by a caller), call graph unknown.
P_PROPAGATED = 0.2
P_LOADED = 0.05
#: With a known call graph: propagated for a caller of the root, loaded for a callee of it,
#: and either for a component that is neither. Symptoms off the root's paths are a second,
#: unrelated change, so P_OTHER is small: 2 % each, 4 % in all (5 % each until the suite
#: had spans: with its call graph known, a surge entering a caller was still given a tenth
#: of its mass as a surge in the callee, the caller's rate rise passing for an unrelated one).
P_PROPAGATED_CALLER = 0.6
P_LOADED_CALLEE = 0.5
P_OTHER = 0.02
#: A callee's load changes with what its root passes on: more calls under a surge or a retry
#: storm, fewer once a capacity loss caps the throughput (``P_LOADED_CALLEE``). An error
#: fault sheds only the failing share's calls, a slowdown or a leak passes on fewer only if
#: it saturates the root, so under those a loaded callee is less likely (model version 11).
#: At 0.5 for every mechanism, each quiet callee cost an error fault 0.7 nats, and one in
#: orders (five callees) lost 3 nats to a slowdown in a leaf callee, which has no callees
#: to pay for: simulated 021 and 088 stayed ambiguous, their error faults at p 0.83-0.95.
P_LOADED_CALLEE_QUIET = 0.2
_PASS_ON_LOAD = frozenset({"traffic_surge", "retry_storm", "capacity_loss"})


@dataclass(frozen=True)
class Hypothesis:
    """A root component and a mechanism; ``component`` is None for ``none``."""

    component: str | None
    mechanism: str

    @property
    def label(self) -> str:
        """``component/mechanism``, or ``none``."""
        return "none" if self.component is None else f"{self.component}/{self.mechanism}"


@dataclass(frozen=True)
class Posterior:
    """Posterior over hypotheses and, jointly, over onset candidates."""

    hypotheses: list[Hypothesis]
    probability: np.ndarray      # per hypothesis, sums to 1
    log_evidence: np.ndarray     # per hypothesis, onset marginalised
    log_evidence_se: np.ndarray  # Monte Carlo standard error of log_evidence
    onset_probability: np.ndarray  # per candidate, marginal over hypotheses
    best_onset: np.ndarray       # per hypothesis: index of its most probable candidate
    propagated: np.ndarray       # per hypothesis x component: P(propagated | H), 0 for the root
    loaded: np.ndarray           # per hypothesis x component: P(loaded | H), 0 for the root
    drift_probability: np.ndarray  # per drift-scale value, marginal over hypotheses
    best_drift: np.ndarray       # per hypothesis: index of its most probable drift scale

    def order(self) -> np.ndarray:
        """Indices of hypotheses, most probable first."""
        return np.argsort(-self.probability, kind="stable")


def none_prior(p_none: float | None = None) -> float:
    """``none``'s prior probability: ``p_none`` checked, or the default."""
    p0 = DEFAULT_P_NONE if p_none is None else float(p_none)
    if not 0.0 < p0 < 1.0:
        raise InputError(f"prior of none {p0:g}: must lie strictly between 0 and 1")
    return p0


def prior_weights(components: Sequence[str],
                  p_none: float | None = None) -> dict[Hypothesis, float]:
    """Even over mechanisms (``none`` counted as one of them), even over components.

    ``p_none`` replaces ``none``'s share; the rest stays even over the others.
    """
    p0 = none_prior(p_none)
    each = (1.0 - p0) / (len(MECHANISMS) * max(len(components), 1))
    prior = {Hypothesis(None, "none"): p0}
    for c in components:
        for m in MECHANISMS:
            prior[Hypothesis(c, m)] = each
    return prior


def _callees(graph: Mapping[str, frozenset[str]], root: str) -> set[str]:
    """Every component ``root`` calls directly or through others: its callers, graph reversed."""
    reverse: dict[str, set[str]] = {}
    for caller, callees in graph.items():
        for callee in callees:
            reverse.setdefault(callee, set()).add(caller)
    return _callers({c: frozenset(v) for c, v in reverse.items()}, root)


def role_of(post: Posterior, h_i: int, c_i: int) -> str:
    """The most probable role of component ``c_i`` under hypothesis ``h_i`` (not its root)."""
    p_prop, p_load = post.propagated[h_i, c_i], post.loaded[h_i, c_i]
    p_none = 1.0 - p_prop - p_load
    return max((p_prop, "propagated"), (p_load, "loaded"), (p_none, "none"))[1]


def _callers(graph: Mapping[str, frozenset[str]], root: str) -> set[str]:
    """Every component that calls ``root`` directly or through others."""
    found: set[str] = set()
    frontier = {root}
    while frontier:
        nxt = {caller for caller, callees in graph.items() if callees & frontier} - found
        found |= nxt
        frontier = nxt
    return found - {root}


def combine(
    components: Sequence[str],
    log_e: Mapping[tuple[str, str], np.ndarray],
    log_se: Mapping[tuple[str, str], np.ndarray],
    onset_prior: np.ndarray,
    prior: Mapping[Hypothesis, float],
    call_graph: Mapping[str, frozenset[str]] | None = None,
    drift_prior: np.ndarray | None = None,
) -> Posterior:
    """Posterior over hypotheses from per-(component, role) evidence over onset candidates.

    ``log_e[(c, role)]`` has one entry per onset candidate (``none`` is constant in k), or,
    when the drift's prior scale was fitted at several values, one row per value and
    ``drift_prior`` their prior weights. The scale of normal variation is one per incident:
    within a hypothesis every component shares it, and it is marginalised like the onset.
    So a hypothesis that explains the one large change by a mechanism, leaving the rest of
    the system quiet, earns the evidence of a small normal variation, while ``none`` has to
    buy that change with a large one for every component.
    """
    n_c = len(components)
    log_onset = np.log(onset_prior)
    n_k = onset_prior.size
    n_s = 1 if drift_prior is None else drift_prior.size
    log_drift = np.zeros(1) if drift_prior is None else np.log(drift_prior / drift_prior.sum())
    le = {key: np.broadcast_to(np.asarray(v, dtype=float).reshape(-1, n_k), (n_s, n_k))
          for key, v in log_e.items()}
    ls = {key: np.broadcast_to(np.asarray(v, dtype=float).reshape(-1, n_k), (n_s, n_k))
          for key, v in log_se.items()}
    hyps = list(prior)
    joint = np.full((len(hyps), n_s, n_k), -np.inf)
    var = np.zeros(len(hyps))
    prop = np.zeros((len(hyps), n_c))
    load = np.zeros((len(hyps), n_c))
    for h_i, h in enumerate(hyps):
        total = np.zeros((n_s, n_k))
        se2 = np.zeros((n_s, n_k))
        callers = _callers(call_graph, h.component) if call_graph and h.component else set()
        callees = _callees(call_graph, h.component) if call_graph and h.component else set()
        p_callee = P_LOADED_CALLEE if h.mechanism in _PASS_ON_LOAD else P_LOADED_CALLEE_QUIET
        for c_i, c in enumerate(components):
            if c == h.component:
                total = total + le[(c, h.mechanism)]
                se2 = se2 + ls[(c, h.mechanism)] ** 2
                continue
            none_e = le[(c, "none")]
            if h.component is None:
                total, se2 = total + none_e, se2 + ls[(c, "none")] ** 2
                continue
            if call_graph is None:
                pp, pl = P_PROPAGATED, P_LOADED
            else:
                pp = P_PROPAGATED_CALLER if c in callers else P_OTHER
                pl = p_callee if c in callees else P_OTHER
            terms = np.stack([np.log(pp) + le[(c, "propagated")],
                              np.log(pl) + le[(c, "loaded")],
                              np.log(1.0 - pp - pl) + none_e])
            mix = special.logsumexp(terms, axis=0)
            w = np.exp(terms - mix)
            total = total + mix
            se2 = se2 + ((w[0] * ls[(c, "propagated")]) ** 2 + (w[1] * ls[(c, "loaded")]) ** 2
                         + (w[2] * ls[(c, "none")]) ** 2)
            prop[h_i, c_i] = float(np.max(w[0]))
            load[h_i, c_i] = float(np.max(w[1]))
        joint[h_i] = np.log(prior[h]) + log_drift[:, None] + log_onset[None, :] + total
        s_best, k_best = np.unravel_index(int(np.argmax(joint[h_i])), (n_s, n_k))
        var[h_i] = se2[s_best, k_best]
    flat = joint.reshape(len(hyps), -1)
    log_ev_h = special.logsumexp(flat, axis=1)
    norm = special.logsumexp(log_ev_h)
    probability = np.exp(log_ev_h - norm)
    probability = probability / probability.sum()
    onset_p = np.exp(special.logsumexp(joint, axis=(0, 1)) - norm)
    drift_p = np.exp(special.logsumexp(joint, axis=(0, 2)) - norm)
    best = np.argmax(flat, axis=1)
    log_prior = np.log([prior[h] for h in hyps])
    return Posterior(
        hypotheses=hyps,
        probability=probability,
        log_evidence=log_ev_h - log_prior,
        log_evidence_se=np.sqrt(var),
        onset_probability=onset_p / onset_p.sum(),
        best_onset=best % n_k,
        propagated=prop,
        loaded=load,
        drift_probability=drift_p / drift_p.sum(),
        best_drift=best // n_k,
    )

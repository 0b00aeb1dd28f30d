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

from latentcause.models import MECHANISMS

__all__ = ["Hypothesis", "Posterior", "combine", "prior_weights"]

#: Prior probability that a non-root component shows propagated symptoms, call graph unknown.
P_PROPAGATED = 0.3
#: With a known call graph: for a caller of the root, and for a component that is not one.
P_PROPAGATED_CALLER = 0.6
P_PROPAGATED_OTHER = 0.05


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

    def order(self) -> np.ndarray:
        """Indices of hypotheses, most probable first."""
        return np.argsort(-self.probability, kind="stable")


def prior_weights(components: Sequence[str],
                  p_none: float | None = None) -> dict[Hypothesis, float]:
    """Even over mechanisms (``none`` counted as one of them), even over components."""
    n_mech = len(MECHANISMS) + 1
    p0 = 1.0 / n_mech if p_none is None else p_none
    each = (1.0 - p0) / (len(MECHANISMS) * max(len(components), 1))
    prior = {Hypothesis(None, "none"): p0}
    for c in components:
        for m in MECHANISMS:
            prior[Hypothesis(c, m)] = each
    return prior


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
) -> Posterior:
    """Posterior over hypotheses from per-(component, role) evidence over onset candidates.

    ``log_e[(c, role)]`` has one entry per onset candidate (``none`` is constant in k).
    """
    n_c = len(components)
    log_onset = np.log(onset_prior)
    hyps = list(prior)
    n_k = onset_prior.size
    joint = np.full((len(hyps), n_k), -np.inf)
    var = np.zeros(len(hyps))
    prop = np.zeros((len(hyps), n_c))
    for h_i, h in enumerate(hyps):
        total = np.zeros(n_k)
        se2 = np.zeros(n_k)
        callers = _callers(call_graph, h.component) if call_graph and h.component else set()
        for c_i, c in enumerate(components):
            if c == h.component:
                total = total + log_e[(c, h.mechanism)]
                se2 = se2 + log_se[(c, h.mechanism)] ** 2
                continue
            none_e = log_e[(c, "none")]
            if h.component is None:
                total, se2 = total + none_e, se2 + log_se[(c, "none")] ** 2
                continue
            if call_graph is None:
                pp = P_PROPAGATED
            else:
                pp = P_PROPAGATED_CALLER if c in callers else P_PROPAGATED_OTHER
            a = np.log(pp) + log_e[(c, "propagated")]
            b = np.log1p(-pp) + none_e
            mix = np.logaddexp(a, b)
            w = np.exp(a - mix)
            total = total + mix
            se2 = se2 + (w * log_se[(c, "propagated")]) ** 2 + ((1 - w) * log_se[(c, "none")]) ** 2
            prop[h_i, c_i] = float(np.max(w))
        joint[h_i] = np.log(prior[h]) + log_onset + total
        k_best = int(np.argmax(joint[h_i]))
        var[h_i] = se2[k_best]
    log_ev_h = special.logsumexp(joint, axis=1)
    norm = special.logsumexp(log_ev_h)
    probability = np.exp(log_ev_h - norm)
    probability = probability / probability.sum()
    onset_p = np.exp(special.logsumexp(joint, axis=0) - norm)
    log_prior = np.log([prior[h] for h in hyps])
    return Posterior(
        hypotheses=hyps,
        probability=probability,
        log_evidence=log_ev_h - log_prior,
        log_evidence_se=np.sqrt(var),
        onset_probability=onset_p / onset_p.sum(),
        best_onset=np.argmax(joint, axis=1),
        propagated=prop,
    )

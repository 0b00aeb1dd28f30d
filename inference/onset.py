"""Screening onset candidates when the onset is not given.

Evaluating every hypothesis at every bin edge is too slow, so candidates are screened with
a cheap, analytic model first: in every row of every component, a mean shift at the
candidate with a Gaussian prior on its size, whose Bayes factor against no shift is closed
form. The best few candidates (kept apart by at least two bins) go on to the full models,
which then give the onset's posterior. ``benchmarks/`` measures how often the true onset
survives the screen.
"""

from __future__ import annotations

import numpy as np

from latentcause.inference.grid import Grid, OnsetCandidate

__all__ = ["KEEP", "screen_candidates"]

#: Candidates kept for the full models.
KEEP = 5
_TAU2 = 4.0      # prior variance of a shift, in noise units
_CLIP = 8.0      # robust: one bin cannot weigh more than this many noise units


def _score(grid: Grid, cand: OnsetCandidate) -> float:
    after = cand.step > 0.5
    score = 0.0
    for comp in grid.components:
        for r in range(comp.y.shape[0]):
            m = comp.mask[r] > 0
            pre, post = m & ~after, m & after
            n1, n2 = int(pre.sum()), int(post.sum())
            if n1 < 2 or n2 < 2:
                continue
            z = np.clip(comp.y[r] / comp.scale[r], -_CLIP, _CLIP)
            d = z[post].mean() - z[pre].mean()
            n_eff = n1 * n2 / (n1 + n2)
            log_bf = -0.5 * np.log1p(n_eff * _TAU2) + 0.5 * d**2 * n_eff**2 * _TAU2 / (
                1 + n_eff * _TAU2)
            score += max(float(log_bf), 0.0)
    return score


def screen_candidates(grid: Grid, keep: int = KEEP) -> list[int]:
    """Indices into ``grid.candidates`` of the most promising onsets, best first."""
    if len(grid.candidates) <= keep:
        return list(range(len(grid.candidates)))
    scores = np.array([_score(grid, c) for c in grid.candidates])
    chosen: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        if all(abs(int(i) - j) >= 2 for j in chosen):
            chosen.append(int(i))
        if len(chosen) == keep:
            break
    return chosen

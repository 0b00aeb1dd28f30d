"""The base of every mechanism: stable name, hidden state, priors, signature, effects.

A mechanism is data (its priors and its signature table) plus one method, ``effects``, that
maps its parameters and the onset drivers to the change it causes in each observed row, in
log-ratio units relative to the component's own baseline. The model builder wraps that in the
shared observation model, so every mechanism gets the same noise model, masking and baseline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from scipy import stats

from latentcause.errors import ModelError

__all__ = [
    "REGISTRY",
    "RETRY_FLOOR",
    "Drivers",
    "Effects",
    "Mechanism",
    "Prior",
    "register",
]

#: Rows of the observation matrix each component is put on (fixed, so graphs compile once).
ROWS: tuple[str, ...] = (
    "cpu", "mem", "rps", "err", "lat", "lat_tail", "restarts", "self_time", "callee_time",
    "retries",
)
ROW = {name: i for i, name in enumerate(ROWS)}
#: The rows that measure a component's latency.
LATENCY_ROWS: tuple[str, ...] = ("lat", "lat_tail", "self_time", "callee_time")

#: The retry budget: a share of requests that are retries below which they count as none.
#: Clients that retry do so within a budget (Finagle's and Envoy's default to 20 % of
#: requests; the simulator's callers use 5 %), so any failing dependency draws retries up to
#: it whatever the mechanism; only a storm's retries go past it and carry load of their own.
#: The retry share is read on a logit axis clipped here, so no mechanism has to predict
#: where under the budget a client's retries sit.
RETRY_FLOOR = 0.2


@dataclass(frozen=True)
class Prior:
    """A prior as data: a PyMC distribution name and its keyword arguments.

    Kept serialisable so a mechanism's configuration can be hashed and saved with results.
    """

    dist: str
    kwargs: Mapping[str, float] = field(default_factory=dict)
    meaning: str = ""

    def logpdf(self, value: Any) -> np.ndarray:
        """Log density at ``value`` in the parameter's own space (numpy, not a graph).

        For comparing roles whose likelihoods are one function and whose priors differ (see
        ``latentcause.inference.evidence``); -inf outside the support.
        """
        make = _SCIPY.get(self.dist)
        if make is None:
            raise ModelError(f"no numpy density for a {self.dist} prior")
        with np.errstate(all="ignore"):  # far out in the tails: -inf or a huge negative
            return np.asarray(make(**dict(self.kwargs)).logpdf(value), dtype=float)

    def build(self, name: str) -> pt.TensorVariable:
        """Create the random variable inside the current PyMC model context."""
        try:
            cls = getattr(pm, self.dist)
        except AttributeError as exc:
            raise ModelError(f"prior for {name!r}: PyMC has no distribution {self.dist!r}") from exc
        return cls(name, **dict(self.kwargs))


#: The priors' densities in scipy, named and parametrised as PyMC names them.
_SCIPY: dict[str, Callable[..., Any]] = {
    "Normal": lambda mu=0.0, sigma=1.0: stats.norm(loc=mu, scale=sigma),
    "LogNormal": lambda mu=0.0, sigma=1.0: stats.lognorm(s=sigma, scale=np.exp(mu)),
    "HalfNormal": lambda sigma=1.0: stats.halfnorm(scale=sigma),
    "Gamma": lambda alpha, beta: stats.gamma(a=alpha, scale=1.0 / beta),
    "Beta": lambda alpha, beta: stats.beta(alpha, beta),
}


@dataclass(frozen=True)
class Drivers:
    """The onset, as time courses on the grid (data, so one graph serves every onset).

    ``step`` is the fraction of each bin after the onset (0 before, 1 after); ``elapsed`` is
    the time since the onset as a fraction of the post-onset window (0 before, 1 at the end).
    ``err_base`` is the baseline error ratio, so effects on the logit scale become ratios.
    ``lat_level`` is, per row, the baseline of a latency row over that of the centre latency
    row (``lat``), e.g. p99 / p50: an added wait of d seconds raises p50 by d / p50 but p99
    only by d / p99, so a mechanism that adds time needs the levels, one that multiplies it
    does not. None means every level is 1. ``lat_seen`` is 1 when the component's latency
    is measured (any latency row observed), 0 when it is not. ``retry_base`` is the baseline
    share of requests that are retries, at least the budget below which retries are read as
    none (see ``latentcause.inference.grid``). ``own_share`` is the share of a request's
    baseline latency spent in the component's own code rather than waiting on its callees
    (from spans' self and callee time): a queue stretches only that share, and a callee's
    slowdown reaches the caller's latency only through the rest. 1 when unknown, which reads
    every latency as the component's own and every callee-time rise as the whole latency's.
    """

    step: pt.TensorVariable
    elapsed: pt.TensorVariable
    err_base: pt.TensorVariable
    lat_level: pt.TensorVariable | None = None
    lat_seen: pt.TensorVariable | float = 1.0
    retry_base: pt.TensorVariable | float = RETRY_FLOOR
    own_share: pt.TensorVariable | float = 1.0

    def level(self, row: str) -> pt.TensorVariable | float:
        """Baseline level of latency row ``row`` relative to the centre latency row."""
        return 1.0 if self.lat_level is None else self.lat_level[ROW[row]]


@dataclass
class Effects:
    """What a mechanism does: per-row changes (log-ratio, shape (T,)) and its hidden state."""

    rows: dict[str, pt.TensorVariable]
    hidden: dict[str, pt.TensorVariable]
    #: Log multiplier of a row's noise over time (e.g. allocation churn under memory pressure).
    noise: dict[str, pt.TensorVariable] = field(default_factory=dict)


# A signature cell: "+" rises, "-" falls, "0" flat, "~" may move either way, "." not modelled.
Signature = Mapping[str, str]


class Mechanism:
    """Base class. Subclasses set the class attributes and implement ``effects``."""

    name: ClassVar[str]
    summary: ClassVar[str]
    hidden_state: ClassVar[tuple[str, ...]]
    signature: ClassVar[Signature]
    #: The class default; each instance holds its own copy (possibly overridden).
    priors: Mapping[str, Prior]
    is_root: ClassVar[bool] = True
    #: For a variant, the mechanism whose hypothesis it serves (the engine mixes the two);
    #: None for a mechanism of the vocabulary or a role.
    variant_of: ClassVar[str | None] = None
    #: How to say what happened when the utilisation stayed below 1 after the onset, for a
    #: mechanism whose ``summary`` speaks of saturation; None where ``summary`` holds at any
    #: size (see the engine's trigger).
    summary_below_saturation: ClassVar[str | None] = None

    def __init__(self, priors: Mapping[str, Prior] | None = None) -> None:
        self.priors = dict(self.priors if priors is None else priors)
        expected = set(type(self).priors)
        if set(self.priors) != expected:
            missing = sorted(expected - set(self.priors))
            extra = sorted(set(self.priors) - expected)
            raise ModelError(
                f"mechanism {self.name}: priors must be exactly {sorted(expected)}; "
                f"missing {missing}, unexpected {extra}"
            )
        unknown = set(self.signature) - set(ROWS)
        if unknown:
            raise ModelError(
                f"mechanism {self.name}: signature names unknown rows {sorted(unknown)}")

    def effects(self, params: Mapping[str, pt.TensorVariable], d: Drivers) -> Effects:
        """Return the per-row changes and the hidden state, given parameters and drivers."""
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Serialisable configuration: name and priors."""
        return {
            "name": self.name,
            "priors": {k: {"dist": p.dist, **dict(p.kwargs)}
                       for k, p in sorted(self.priors.items())},
        }

    def config_sha256(self) -> str:
        """Hash of ``config()``: results record it so stale ones can be found."""
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()


REGISTRY: dict[str, type[Mechanism]] = {}


def register(cls: type[Mechanism]) -> type[Mechanism]:
    """Class decorator: add a mechanism to the registry under its stable name, once."""
    if cls.name in REGISTRY:
        raise ModelError(f"mechanism {cls.name!r} is registered twice")
    REGISTRY[cls.name] = cls
    return cls


EffectFn = Callable[[Mapping[str, pt.TensorVariable], Drivers], Effects]

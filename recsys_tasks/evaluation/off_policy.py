"""Off-policy estimates: the click-through a policy would get, from slates another policy showed and logged.

The unit is one shown item (a slate position), as in the Open Bandit Pipeline: a policy's value is its expected
reward per shown item, and each position of a slate is one logged decision with its own propensity.

- IPS (inverse propensity scoring): the mean of ``w · r``, ``w = π_target(a | x, position) / π_logging(a | ...)``;
- SNIPS (self-normalised IPS): ``Σ w · r / Σ w``, a little biased and much less variable;
- DR (doubly robust): a reward model's estimate under the target policy plus the IPS-weighted error of that model
  on what was logged; unbiased when either the propensities or the reward model are right.

Intervals are percentile (Poisson) bootstraps over slates: the positions of one slate are not independent draws.
Two policies are compared on the same resampled slates (``estimate_difference``): a paired interval of their
difference, far narrower than either interval where the policies mostly agree.
The reward model of DR is cross-fitted: each slate's estimate comes from a model fitted on the other folds' slates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from recsys_tasks.errors import InputDataError

Estimator = Literal["ips", "snips", "dr"]
ESTIMATORS: tuple[Estimator, ...] = ("ips", "snips", "dr")
# Pseudo-count of the reward model's shrinkage of an item's click rate at a position towards the position's rate.
REWARD_MODEL_PRIOR_SHOWS = 20.0


@dataclass(frozen=True)
class LoggedDecisions:
    """Logged slates, one entry per shown item."""

    slate: np.ndarray  # [n] which slate (round) the item was shown in
    position: np.ndarray  # [n] 0 = the top of the slate
    action: np.ndarray  # [n] the item shown
    reward: np.ndarray  # [n] 1 when clicked (or any reward in [0, 1])
    propensity: np.ndarray  # [n] P(the logging policy shows this item at this position | context)

    def __post_init__(self) -> None:
        sizes = {len(getattr(self, name)) for name in ("slate", "position", "action", "reward", "propensity")}
        if len(sizes) != 1:
            raise InputDataError(f"logged decisions: columns of different lengths {sorted(sizes)}")
        if not len(self.reward):
            raise InputDataError("logged decisions: no shown item to estimate from")
        if not np.all((self.propensity > 0) & (self.propensity <= 1)):
            raise InputDataError("logged decisions: every propensity must be in (0, 1]")


@dataclass(frozen=True)
class TargetPolicy:
    """What the evaluated policy would do at each logged decision: its choices and their probabilities.

    ``actions[i]`` and ``probabilities[i]`` list the items the policy could show at row i's position given row i's
    context, with the probability of each (rows sum to one; pad with probability 0).
    """

    actions: np.ndarray  # [n, m]
    probabilities: np.ndarray  # [n, m]

    def propensity_of(self, logged: LoggedDecisions) -> np.ndarray:
        """π_target(logged action | context, position) per row."""
        return np.where(self.actions == logged.action[:, None], self.probabilities, 0.0).sum(axis=1)


@dataclass(frozen=True)
class PolicyValue:
    """An estimate of expected reward per shown item, with its bootstrap interval."""

    value: float
    lower: float
    upper: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "lower": self.lower, "upper": self.upper}


class ItemPositionClickRate:
    """The reward model of DR: each item's click rate at each position, shrunk towards the position's rate."""

    def __init__(self, logged: LoggedDecisions, rows: np.ndarray, prior_shows: float = REWARD_MODEL_PRIOR_SHOWS):
        position, action, reward = logged.position[rows], logged.action[rows], logged.reward[rows]
        self.positions = int(logged.position.max()) + 1
        self.items = np.unique(logged.action)
        column = np.searchsorted(self.items, action)
        self.shows = np.zeros((self.positions, len(self.items) + 1))  # the last column: items never logged
        self.clicks = np.zeros_like(self.shows)
        np.add.at(self.shows, (position, column), 1.0)
        np.add.at(self.clicks, (position, column), reward)
        position_rate = self.clicks.sum(axis=1) / np.maximum(self.shows.sum(axis=1), 1.0)
        self.rate = (self.clicks + prior_shows * position_rate[:, None]) / (self.shows + prior_shows)

    def predict(self, actions: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Click probability of each item in ``actions`` [n, m] at its row's position [n]."""
        column = np.minimum(np.searchsorted(self.items, actions), len(self.items) - 1)
        column = np.where(self.items[column] == actions, column, len(self.items))
        return self.rate[np.minimum(positions, self.positions - 1)[:, None], column]


def _doubly_robust_terms(logged: LoggedDecisions, target: TargetPolicy, weights: np.ndarray, folds: int, seed: int):
    """Per row: E_target[q̂] + w · (r − q̂(logged action)), with q̂ fitted on the other folds' slates."""
    slates = np.unique(logged.slate)
    fold_of_slate = dict(zip(slates.tolist(), np.random.default_rng(seed).permutation(len(slates)) % folds))
    fold = np.array([fold_of_slate[slate] for slate in logged.slate.tolist()])
    terms = np.empty(len(weights))
    for held_out in range(folds):
        rows = fold == held_out
        model = ItemPositionClickRate(logged, np.flatnonzero(~rows) if folds > 1 else np.flatnonzero(rows))
        positions = logged.position[rows]
        expected = (model.predict(target.actions[rows], positions) * target.probabilities[rows]).sum(axis=1)
        logged_estimate = model.predict(logged.action[rows][:, None], positions)[:, 0]
        terms[rows] = expected + weights[rows] * (logged.reward[rows] - logged_estimate)
    return terms


def estimate_policy_value(
    logged: LoggedDecisions,
    target: TargetPolicy,
    estimators: tuple[Estimator, ...] = ESTIMATORS,
    confidence: float = 0.95,
    resamples: int = 1000,
    folds: int = 2,
    seed: int = 0,
) -> dict[Estimator, PolicyValue]:
    """The target policy's expected reward per shown item, by each estimator, with bootstrap intervals."""
    found = _resampled_estimates(logged, target, estimators, resamples, folds, seed)
    return {name: _with_interval(value, resampled, confidence) for name, (value, resampled) in found.items()}


def estimate_difference(
    logged: LoggedDecisions,
    target: TargetPolicy,
    baseline: TargetPolicy,
    estimators: tuple[Estimator, ...] = ESTIMATORS,
    confidence: float = 0.95,
    resamples: int = 1000,
    folds: int = 2,
    seed: int = 0,
) -> dict[Estimator, PolicyValue]:
    """``target``'s value minus ``baseline``'s, by each estimator, with a paired bootstrap interval: both are
    estimated on the same resampled slates, so where the two policies agree their noise cancels."""
    found, against = (
        _resampled_estimates(logged, policy, estimators, resamples, folds, seed) for policy in (target, baseline)
    )
    return {
        name: _with_interval(found[name][0] - against[name][0], found[name][1] - against[name][1], confidence)
        for name in estimators
    }


def _resampled_estimates(
    logged: LoggedDecisions,
    target: TargetPolicy,
    estimators: tuple[Estimator, ...],
    resamples: int,
    folds: int,
    seed: int,
) -> dict[Estimator, tuple[float, np.ndarray]]:
    """Per estimator: the estimate, and its value on each bootstrap resample of the slates (the same resamples for
    every target policy and estimator with the same ``seed``)."""
    weights = target.propensity_of(logged) / logged.propensity
    per_row = {
        "ips": (weights * logged.reward, np.ones_like(weights)),
        "snips": (weights * logged.reward, weights),
        "dr": (_doubly_robust_terms(logged, target, weights, folds, seed), np.ones_like(weights)),
    }
    return {name: _bootstrap(logged.slate, *per_row[name], resamples, seed) for name in estimators}


def on_policy_value(
    logged: LoggedDecisions, confidence: float = 0.95, resamples: int = 1000, seed: int = 0
) -> PolicyValue:
    """The logging policy's own click-through per shown item, with its bootstrap interval."""
    value, resampled = _bootstrap(logged.slate, logged.reward, np.ones_like(logged.reward), resamples, seed)
    return _with_interval(value, resampled, confidence)


def _bootstrap(
    slate: np.ndarray, numerator: np.ndarray, denominator: np.ndarray, resamples: int, seed: int
) -> tuple[float, np.ndarray]:
    """Σ numerator / Σ denominator, and its value over each of ``resamples`` resampled sets of slates."""
    _, slate_index = np.unique(slate, return_inverse=True)
    slates = slate_index.max() + 1
    top, bottom = np.bincount(slate_index, numerator, slates), np.bincount(slate_index, denominator, slates)
    value = top.sum() / bottom.sum() if bottom.sum() else 0.0
    # Poisson bootstrap: each slate is drawn Poisson(1) times per resample, which for many slates behaves as
    # drawing them with replacement and costs a fraction of multinomial draws.
    draws = np.random.default_rng(seed).poisson(1.0, size=(resamples, slates)).astype(float)
    totals = draws @ bottom
    return float(value), np.divide(draws @ top, totals, out=np.zeros(resamples), where=totals > 0)


def _with_interval(value: float, resampled: np.ndarray, confidence: float) -> PolicyValue:
    """``value`` with the percentile interval of its resampled values."""
    tail = (1.0 - confidence) / 2.0
    lower, upper = np.quantile(resampled, [tail, 1.0 - tail])
    return PolicyValue(float(value), float(lower), float(upper))

"""Serving policies: which k of the model's best candidates a user is shown, in which order, and how likely that was.

- ``greedy``: the model's top k, best first; every shown item has propensity 1.
- ``epsilon_greedy``: with probability ε the slate is k of the model's top ``candidates`` drawn uniformly without
  replacement, in random order; otherwise the greedy slate. The propensity of a shown item at position j is exact:
  ``(1 − ε)·[it is the greedy item j] + ε / n``, n the candidates the draw chose from. Over each position's choices
  (the n candidates) they sum to one.

The draw (Python's ``random.Random``, seeded by the slate's request id) happens before the model is asked, so the
log alone reproduces what was shown and a greedy slate needs only the model's top k. The serving app applies a
policy to what the model ranked; evaluate uses the same distribution to ask what a challenger would have shown.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Literal

import numpy as np

PolicyName = Literal["greedy", "epsilon_greedy"]
POLICIES: tuple[PolicyName, ...] = ("greedy", "epsilon_greedy")


@dataclass(frozen=True)
class Slate:
    chosen: np.ndarray  # [k] indices into the model's ranked candidates, in the order shown
    propensities: np.ndarray  # [k] P(the policy shows that candidate at that position)
    explored: bool  # drawn at random from the candidates; otherwise the model's top k, in order

    def ranked_needed(self, k: int, candidates: int) -> int:
        """How many of the model's best items this slate needs ranked: all candidates when explored, else k."""
        return candidates if self.explored else k


def request_seed(request_id: str) -> int:
    """The random seed of a slate: its request id (a UUID) as a number."""
    return uuid.UUID(request_id).int % 2**63


@dataclass(frozen=True)
class SlatePolicy:
    name: PolicyName = "greedy"
    exploration: float = 0.0  # ε of epsilon_greedy
    candidates: int = 20  # how many of the model's best items epsilon_greedy draws from (at least k)

    @property
    def explores(self) -> bool:
        return self.name == "epsilon_greedy" and self.exploration > 0

    @property
    def share_explored(self) -> float:
        """The share of slates drawn at random: ε when the policy explores, else 0."""
        return self.exploration if self.explores else 0.0

    def candidates_for(self, k: int, available: int) -> int:
        """How many ranked items the model is asked for to show k (at most the ``available`` items)."""
        return min(max(k, self.candidates), available) if self.explores else k

    def choose(self, k: int, ranked: int, seed: int) -> Slate:
        """The slate of k shown out of ``ranked`` candidates (best first), and each shown item's propensity.

        Drawn before the model is asked, so that only an explored slate needs all candidates ranked.
        """
        greedy = np.arange(k)
        if not self.explores:
            return Slate(greedy, np.ones(k), explored=False)
        draw = random.Random(seed)
        explored = draw.random() < self.exploration
        chosen = np.array(draw.sample(range(ranked), k)) if explored else greedy
        propensities = self.exploration / ranked + (1.0 - self.exploration) * (chosen == greedy)
        return Slate(chosen, propensities, explored)

    def distribution(self, k: int, ranked: int) -> np.ndarray:
        """P(candidate c is shown at position j) as a [ranked, k] matrix: each column sums to one."""
        probabilities = np.full((ranked, k), self.exploration / ranked if self.explores else 0.0)
        probabilities[np.arange(k), np.arange(k)] += 1.0 - self.exploration if self.explores else 1.0
        return probabilities

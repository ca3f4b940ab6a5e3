"""Non-neural baselines, ranked with exactly the protocol the models are.

- Popularity: items by how often they occur, the floor any model must clear.
- EASE (Steck, 2019): a closed-form item-item linear model, B = I - P · diag(1/diag(P)) with
  P = (XᵀX + λI)⁻¹, which on leave-one-out benchmarks is as strong as many neural models. Its
  one hyper-parameter λ is chosen on the validation split; the chosen model is then refitted on
  train + validation, exactly as popularity counts train + validation, before scoring the test split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_tasks.contracts.metrics import PRIMARY_METRIC, ScoreFunction, evaluate_scores
from recsys_tasks.contracts.splits import LeaveOneOutSplits

log = logging.getLogger(__name__)

EASE_L2_GRID = (10.0, 50.0, 200.0, 500.0, 1000.0)


def popularity_scorer(splits: LeaveOneOutSplits) -> ScoreFunction:
    """Counts over everything but the test items (train + validation), so nothing leaks."""
    counts = np.zeros(splits.n_items + 1)
    for sequence in splits.sequences:
        np.add.at(counts, sequence[:-1], 1)

    def score(inputs: np.ndarray) -> np.ndarray:
        return np.broadcast_to(counts, (len(inputs), len(counts)))

    return score


def _interaction_matrix(histories: list[list[int]], n_items: int) -> sp.csr_matrix:
    """Users × item indices (column 0 is padding and stays empty), 1 where the user has the item."""
    rows = np.repeat(np.arange(len(histories)), [len(h) for h in histories])
    columns = np.concatenate([np.asarray(h, dtype=np.int64) for h in histories]) if histories else np.empty(0)
    matrix = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, columns)), shape=(len(histories), n_items + 1))
    matrix.data[:] = 1.0  # an item seen twice in a history still counts once
    return matrix


@dataclass(frozen=True)
class EASE:
    weights: np.ndarray  # [n_items + 1, n_items + 1], zero diagonal
    l2: float

    @classmethod
    def fit(cls, histories: list[list[int]], n_items: int, l2: float) -> EASE:
        matrix = _interaction_matrix(histories, n_items)
        # float32 halves the time and memory of the inversion (a 12k-item catalogue: ~30 s, 0.6 GB);
        # with λ ≥ 1 the matrix is well enough conditioned for it.
        gram = (matrix.T @ matrix).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] += l2
        precision = np.linalg.inv(gram)
        weights = -precision / np.diag(precision)[None, :]
        weights[np.diag_indices_from(weights)] = 0.0
        return cls(weights, l2)

    def scorer(self) -> ScoreFunction:
        """Scores from whole histories [B, H], 0-padded: pass ``seen`` as the model inputs, not the model's window."""

        def score(histories: np.ndarray) -> np.ndarray:
            multi_hot = np.zeros((len(histories), self.weights.shape[0]), np.float32)
            multi_hot[np.arange(len(histories))[:, None], histories] = 1.0
            multi_hot[:, 0] = 0.0
            return multi_hot @ self.weights

        return score


def tuned_ease(splits: LeaveOneOutSplits, grid: tuple[float, ...] = EASE_L2_GRID) -> tuple[EASE, dict[float, float]]:
    """EASE with λ chosen by validation NDCG@10, refitted on train + validation for the test split.

    Returns the refitted model and the validation NDCG@10 of every λ tried.
    """
    _, seen, targets = splits.holdout("validation")
    train = splits.train_histories()
    validation = {}
    for l2 in grid:
        metrics = evaluate_scores(EASE.fit(train, splits.n_items, l2).scorer(), seen, seen, targets, splits.n_items)
        validation[l2] = metrics[PRIMARY_METRIC]
        log.info("EASE λ=%g: validation NDCG@10 %.4f", l2, validation[l2])
    best = max(validation, key=validation.get)
    refitted = EASE.fit([sequence[:-1] for sequence in splits.sequences], splits.n_items, best)
    return refitted, validation

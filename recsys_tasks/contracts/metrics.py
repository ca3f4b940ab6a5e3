"""Full-ranking leave-one-out metrics.

Every catalogue item is ranked for every user; the items of the user's history are removed from
the ranking (they can never be recommended); ties are broken towards the higher item index, as
the S3-Rec/ICLRec evaluation code does (argpartition, then a descending sort). With that rule the
popularity baseline on Amazon Beauty reproduces the published protocol check (see
docs/experiments/2026-12-02-model-quality.md); and a model that scores everything alike still gets
no credit for ties. With one
held-out item per user, Recall@K equals HR@K; both are reported because people look for both names. Coverage counts the
distinct items in the users' top 10 (ties at the 10th place are broken arbitrarily there; no rank
metric depends on it).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

CUTOFFS = (5, 10, 20)
COVERAGE_CUTOFF = 10
PRIMARY_METRIC = "ndcg_at_10"
# The metrics people compare models by, with their printed names: ``RANK_METRICS`` where every value is an
# accuracy (plots, model card), ``SHOWN_METRICS`` in tables that also show catalogue coverage.
RANK_METRICS = {"hr_at_10": "HR@10", "ndcg_at_10": "NDCG@10", "recall_at_20": "Recall@20", "mrr": "MRR"}
SHOWN_METRICS = {**RANK_METRICS, "coverage_at_10": "Coverage@10"}

SCORES_PER_BATCH = 1 << 22
"""Most scores (users × catalogue) ranked at once, which bounds the working memory whatever the
catalogue's size; a fixed number of users per batch would need memory growing with the catalogue."""

ScoreFunction = Callable[[np.ndarray], np.ndarray]
"""Maps model inputs [B, L] to scores [B, n_items + 1] over item indices (column 0 is padding)."""


def exclude_seen(scores: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Set the scores of padding (index 0) and of every item in ``seen`` ([B, H], 0-padded) to -inf."""
    masked = scores.astype(np.float64, copy=True)
    masked[:, 0] = -np.inf
    masked[np.arange(len(scores))[:, None], seen] = -np.inf
    return masked


def ranks_of_targets(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """0-based rank of each target among all items, ties broken towards the higher index."""
    rows = np.arange(len(scores))
    target_scores = scores[rows, targets][:, None]
    higher = (scores > target_scores).sum(axis=1)
    tied_before = ((scores == target_scores) & (np.arange(scores.shape[1])[None, :] > targets[:, None])).sum(axis=1)
    return higher + tied_before


def summarise_ranks(ranks: np.ndarray, recommended: np.ndarray, n_items: int) -> dict[str, float]:
    metrics: dict[str, float] = {}
    for k in CUTOFFS:
        hit = ranks < k
        metrics[f"hr_at_{k}"] = float(hit.mean())
        metrics[f"ndcg_at_{k}"] = float(np.where(hit, 1.0 / np.log2(ranks + 2.0), 0.0).mean())
    metrics["recall_at_20"] = metrics["hr_at_20"]
    metrics["mrr"] = float((1.0 / (ranks + 1.0)).mean())
    metrics[f"coverage_at_{COVERAGE_CUTOFF}"] = float(len(np.unique(recommended)) / n_items)
    return metrics


def evaluate_scores(
    score: ScoreFunction,
    model_inputs: np.ndarray,
    seen: np.ndarray,
    targets: np.ndarray,
    n_items: int,
    batch_size: int | None = None,
) -> dict[str, float]:
    """Rank ``targets`` against the whole catalogue, ``batch_size`` users at a time (by default as
    many as keep a batch to ``SCORES_PER_BATCH`` scores), and summarise."""
    batch_size = batch_size or max(1, SCORES_PER_BATCH // (n_items + 1))
    ranks, recommended = [], []
    for start in range(0, len(targets), batch_size):
        batch = slice(start, start + batch_size)
        scores = exclude_seen(score(model_inputs[batch]), seen[batch])
        ranks.append(ranks_of_targets(scores, targets[batch]))
        top = np.argpartition(-scores, COVERAGE_CUTOFF, axis=1)[:, :COVERAGE_CUTOFF]
        # A user with fewer than COVERAGE_CUTOFF rankable items gets fewer recommendations, never excluded ones.
        recommended.append(top[np.isfinite(np.take_along_axis(scores, top, axis=1))])
    return summarise_ranks(np.concatenate(ranks), np.concatenate(recommended), n_items)

"""The replay set: which earlier training rows a model keeps to train on again next to new events.

``select_replay`` follows ADER (Mi et al., RecSys 2020): the budget is split over target items in
proportion to their rows, and within an item herding keeps the rows whose query vectors best
represent the item's mean; the ``loss`` rule keeps the rows the model predicts best instead, and
``random`` a uniform sample. A version keeps its replay set with its training state, so the next run
replays it and selects the next one from it and the new rows.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from recsys_tasks.contracts.splits import NextItemRows
from recsys_tasks.models.retrieval import NextItemRetrievalModel
from recsys_tasks.training.config import ReplayRule

log = logging.getLogger(__name__)

QUERY_BATCH = 1024
# Herding reads every candidate's query vector; on a large log a random sample of this many candidates per
# kept row stands for them all.
CANDIDATES_PER_KEPT_ROW = 20


def query_vectors(model: NextItemRetrievalModel, rows: NextItemRows) -> np.ndarray:
    """The model's query vector [rows, d] for each row's input (its target's context)."""
    width = model.encoder.config.max_length
    vectors = []
    for start in range(0, len(rows), QUERY_BATCH):
        batch = rows.take(np.arange(start, min(start + QUERY_BATCH, len(rows))), width)
        vectors.append(tf.cast(model.query_vectors(batch["inputs"]), tf.float32).numpy())
    return np.concatenate(vectors) if vectors else np.zeros((0, model.encoder.config.d_model), np.float32)


def next_item_losses(model: NextItemRetrievalModel, rows: NextItemRows) -> np.ndarray:
    """Each row's cross-entropy [rows] of its next item against every real item, scored as the model ranks."""
    width, n_items = model.encoder.config.max_length, model.encoder.config.n_items
    targets = rows.items[rows.ends].astype(np.int64)
    losses = []
    for start in range(0, len(rows), QUERY_BATCH):
        batch = np.arange(start, min(start + QUERY_BATCH, len(rows)))
        logits = model.ranking_scores(rows.take(batch, width)["inputs"])[:, 1 : n_items + 1]
        losses.append(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets[batch] - 1, logits=logits).numpy())
    return np.concatenate(losses) if losses else np.zeros(0, np.float32)


def _herding(vectors: np.ndarray, wanted: int) -> list[int]:
    """``wanted`` rows whose running mean best follows the mean of ``vectors`` (L2-normalised), chosen
    greedily (iCaRL's herding, as ADER selects exemplars). A row is chosen once: ADER's loop may pick a
    row again and stop short of the budget, which on logs with repeated windows leaves it half spent."""
    unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    mean = unit.mean(axis=0)
    total, chosen = np.zeros_like(mean), []
    available = np.ones(len(unit), bool)
    for step in range(1, min(wanted, len(unit)) + 1):
        # The row that brings the mean of the chosen rows closest to the mean of all.
        gaps = np.linalg.norm(mean - (total + unit) / step, axis=1)
        best = int(np.argmin(np.where(available, gaps, np.inf)))
        chosen.append(best)
        available[best] = False
        total += unit[best]
    return chosen


def select_replay(
    model: NextItemRetrievalModel, candidates: NextItemRows, size: int, rule: ReplayRule, seed: int
) -> NextItemRows:
    """The next replay set: ``size`` of ``candidates``' rows (one target each), compact.

    ``herding`` and ``loss`` split the budget over target items in proportion to their rows (a
    multinomial draw, as ADER). Within an item, ``herding`` picks rows by ``model``'s query vectors,
    ``loss`` the rows whose next item ``model`` predicts best (lowest cross-entropy). ``random``: a
    uniform sample.
    """
    rng = np.random.default_rng(seed)
    if size == 0:
        return candidates.subset(np.zeros(0, np.int64)).compact()
    if size >= len(candidates):
        return candidates.compact()
    if len(candidates) > CANDIDATES_PER_KEPT_ROW * size:
        candidates = candidates.subset(
            np.sort(rng.choice(len(candidates), CANDIDATES_PER_KEPT_ROW * size, replace=False))
        )
    if rule == "random":
        return candidates.subset(np.sort(rng.choice(len(candidates), size, replace=False))).compact()
    targets = candidates.items[candidates.ends]
    items, inverse, counts = np.unique(targets, return_inverse=True, return_counts=True)
    budgets = rng.multinomial(size, counts / counts.sum())
    if rule == "loss":
        losses = next_item_losses(model, candidates)

        def pick(rows: np.ndarray, wanted: int) -> np.ndarray:
            return rows[np.argsort(losses[rows], kind="stable")[:wanted]]

    else:
        vectors = query_vectors(model, candidates)

        def pick(rows: np.ndarray, wanted: int) -> np.ndarray:
            return rows[_herding(vectors[rows], wanted)]

    chosen = []
    for item_position in np.flatnonzero(budgets):
        chosen.extend(pick(np.flatnonzero(inverse == item_position), budgets[item_position]))
    log.info("replay set: %d rows over %d target items (%s)", len(chosen), int((budgets > 0).sum()), rule)
    return candidates.subset(np.sort(np.asarray(chosen, np.int64))).compact()

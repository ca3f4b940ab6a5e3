"""Continual adaptation: the previous model, grown to the new catalogue, trained on new events plus a replay set.

One update (``adapt_model``), as ADER (Mi et al., RecSys 2020) runs it:
1. the previous model's weights go into a model over the grown catalogue (``models.continual``);
2. it trains on the new rows and the replay set (older rows kept by the previous update), the replayed
   rows either trained on their next item or distilled towards the previous model's scores, with
   validation, early stopping and weight averaging as in fine-tuning;
3. the next replay set is selected from the new rows and the old replay set (``select_replay``).

The same functions serve the pipeline's adapt path and ``benchmarks/continual.py``.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf

from recsys_tasks.contracts.splits import NextItemRows
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.models.continual import AdaptingRetrievalModel, adaptive_distillation_weight, grow_item_table
from recsys_tasks.models.encoder import SequenceEncoder
from recsys_tasks.models.retrieval import NextItemRetrievalModel
from recsys_tasks.training.config import AdaptConfig, FinetuneConfig, ReplayRule
from recsys_tasks.training.finetune import TrainingOutcome, compile_for, train_with_validation

log = logging.getLogger(__name__)

QUERY_BATCH = 1024


def built(model: NextItemRetrievalModel) -> NextItemRetrievalModel:
    """``model`` with every weight created (Keras creates them on the first call)."""
    model.query_vectors(tf.zeros((1, model.encoder.config.max_length), tf.int32))
    return model


def fresh_model(config: EncoderConfig, item_frequencies: np.ndarray, seed: int) -> NextItemRetrievalModel:
    """A retrieval model initialised from ``seed``: what a retrain from scratch starts with."""
    tf.keras.utils.set_random_seed(seed)
    return built(NextItemRetrievalModel(SequenceEncoder(config), item_frequencies))


def plain_copy(model: NextItemRetrievalModel) -> NextItemRetrievalModel:
    """A retrieval model holding ``model``'s weights and nothing else (no teacher, no optimizer)."""
    config = model.encoder.config
    copy = built(NextItemRetrievalModel(SequenceEncoder(config), np.ones(config.n_items + 2)))
    grow_item_table(model, copy)  # the same catalogue: every weight copied as it is
    return copy


def query_vectors(model: NextItemRetrievalModel, rows: NextItemRows) -> np.ndarray:
    """The model's query vector [rows, d] for each row's input (its target's context)."""
    width = model.encoder.config.max_length
    vectors = []
    for start in range(0, len(rows), QUERY_BATCH):
        batch = rows.take(np.arange(start, min(start + QUERY_BATCH, len(rows))), width)
        vectors.append(tf.cast(model.query_vectors(batch["inputs"]), tf.float32).numpy())
    return np.concatenate(vectors) if vectors else np.zeros((0, model.encoder.config.d_model), np.float32)


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

    ``herding``: the budget is split over target items in proportion to their rows (a multinomial
    draw, as ADER), and within an item herding picks rows by ``model``'s query vectors. ``random``:
    a uniform sample.
    """
    rng = np.random.default_rng(seed)
    if size >= len(candidates):
        return candidates.compact()
    if rule == "random":
        return candidates.subset(np.sort(rng.choice(len(candidates), size, replace=False))).compact()
    targets = candidates.items[candidates.ends]
    items, inverse, counts = np.unique(targets, return_inverse=True, return_counts=True)
    budgets = rng.multinomial(size, counts / counts.sum())
    vectors = query_vectors(model, candidates)
    chosen = []
    for item_position in np.flatnonzero(budgets):
        rows = np.flatnonzero(inverse == item_position)
        chosen.extend(rows[_herding(vectors[rows], budgets[item_position])])
    log.info("replay set: %d rows over %d target items (herding)", len(chosen), int((budgets > 0).sum()))
    return candidates.subset(np.sort(np.asarray(chosen, np.int64))).compact()


def adapt_model(
    previous: NextItemRetrievalModel,
    new_rows: NextItemRows,
    replay: NextItemRows | None,
    n_items: int,
    item_frequencies: np.ndarray,
    holdout: tuple[np.ndarray, np.ndarray, np.ndarray],
    finetune: FinetuneConfig,
    adapt: AdaptConfig,
    tracker: RunTracker | None = None,
    jit_compile: bool = False,
) -> tuple[NextItemRetrievalModel, TrainingOutcome, NextItemRows]:
    """One update of ``previous`` on ``new_rows`` (+ the ``replay`` set) over a catalogue of ``n_items``:
    the trained model (without its teacher), how training went and the replay set for the next update."""
    started = time.perf_counter()
    old_items = previous.encoder.config.n_items
    replay = replay if replay is not None and len(replay) and adapt.replay_size else None
    teacher = previous if replay is not None and adapt.distillation else None
    weight = (
        adaptive_distillation_weight(adapt.distillation_weight, old_items, n_items, len(replay), len(new_rows))
        if teacher is not None
        else 0.0
    )
    tf.keras.utils.set_random_seed(finetune.seed)
    model = AdaptingRetrievalModel(
        SequenceEncoder(previous.encoder.config.model_copy(update={"n_items": n_items})),
        item_frequencies,
        teacher=teacher,
        distillation_weight=weight,
    )
    grow_item_table(previous, built(model))
    rows = new_rows if replay is None else new_rows.concatenate(replay.as_replayed())
    log.info(
        "adapting: %d new rows, %d replayed (%s), %d → %d items, distillation weight %.3f",
        len(new_rows),
        0 if replay is None else len(replay),
        "distilled" if teacher is not None else "next item",
        old_items,
        n_items,
        weight,
    )
    compile_for(model, rows, finetune, jit_compile)
    outcome = train_with_validation(model, rows, holdout, n_items, finetune, tracker)
    trained = plain_copy(model)
    candidates = new_rows if replay is None else new_rows.concatenate(replay)
    next_replay = select_replay(trained, candidates, adapt.replay_size, adapt.replay_rule, finetune.seed)
    outcome.seconds = round(time.perf_counter() - started, 2)
    return trained, outcome, next_replay

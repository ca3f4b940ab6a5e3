"""Continual adaptation: the previous model, grown to the new catalogue, trained on new events plus a replay set.

One update (``adapt_model``), as ADER (Mi et al., RecSys 2020) runs it:
1. the previous model's weights go into a model over the grown catalogue (``models.continual``);
   optionally its encoder's self-supervised pre-training continues on the new sequences first
   (``ContinuedPretraining``);
2. it trains on the new rows and the replay set (older rows kept by the previous update), the replayed
   rows either trained on their next item or distilled towards the previous model's scores, with
   validation, early stopping and weight averaging as in fine-tuning;
3. the next replay set is selected from the new rows and the old replay set (``select_replay``).

The same functions serve the pipeline's adapt path and ``benchmarks/continual.py``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from recsys_tasks.contracts.splits import NextItemRows
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.models.continual import AdaptingRetrievalModel, adaptive_distillation_weight, grow_item_table
from recsys_tasks.models.encoder import SequenceEncoder
from recsys_tasks.models.retrieval import NextItemRetrievalModel
from recsys_tasks.training.config import AdaptConfig, FinetuneConfig, PretrainConfig
from recsys_tasks.training.finetune import TrainingOutcome, compile_for, train_with_validation
from recsys_tasks.training.pretrain import compiled_pretraining_model, train_pretraining_epoch
from recsys_tasks.training.replay import select_replay

log = logging.getLogger(__name__)


def built(model: NextItemRetrievalModel) -> NextItemRetrievalModel:
    """``model`` with every weight created (Keras creates them on the first call)."""
    model.query_vectors(tf.zeros((1, model.encoder.config.max_length), tf.int32))
    return model


def fresh_model(config: EncoderConfig, item_frequencies: np.ndarray, seed: int) -> NextItemRetrievalModel:
    """A retrieval model initialised from ``seed``: what a retrain from scratch starts with."""
    tf.keras.utils.set_random_seed(seed)
    return built(NextItemRetrievalModel(SequenceEncoder(config), item_frequencies))


def empty_model(config: EncoderConfig) -> NextItemRetrievalModel:
    """A retrieval model of this shape with every weight created, to load trained weights into."""
    return built(NextItemRetrievalModel(SequenceEncoder(config), np.ones(config.n_items + 2)))


def plain_copy(model: NextItemRetrievalModel) -> NextItemRetrievalModel:
    """A retrieval model holding ``model``'s weights and nothing else (no teacher, no optimizer)."""
    copy = empty_model(model.encoder.config)
    grow_item_table(model, copy)  # the same catalogue: every weight copied as it is
    return copy


@dataclass(frozen=True)
class ContinuedPretraining:
    """Self-supervised pre-training to continue on the new sequences before an update fine-tunes."""

    config: PretrainConfig
    histories: np.ndarray
    """[sequences, max_length] left-padded item indices of the grown catalogue."""
    views: dict[str, np.ndarray]
    """``view_a`` and ``view_b``: a pair of augmented views per history, padded alike."""


def continue_pretraining(
    model: NextItemRetrievalModel, pretraining: ContinuedPretraining, jit_compile: bool
) -> list[dict[str, float]]:
    """``pretraining.config.epochs`` epochs of the pre-training objectives on ``model``'s encoder, in place
    (the objectives' own heads start afresh: a version keeps only the encoder); each epoch's losses."""
    config = pretraining.config
    objectives = compiled_pretraining_model(model.encoder, config, jit_compile)
    mask_index = model.encoder.config.mask_index
    return [
        train_pretraining_epoch(objectives, pretraining.histories, pretraining.views, mask_index, config, epoch)
        for epoch in range(config.epochs)
    ]


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
    attributes: tuple[np.ndarray, int] | None = None,
    pretraining: ContinuedPretraining | None = None,
) -> tuple[NextItemRetrievalModel, TrainingOutcome, NextItemRows]:
    """One update of ``previous`` on ``new_rows`` (+ the ``replay`` set) over a catalogue of ``n_items``
    (with ``attributes``: the grown catalogue's item → attribute table and its number of attributes;
    with ``pretraining``: its objectives first): the trained model (without its teacher), how training
    went and the replay set for the next update."""
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
    grown_shape = {"n_items": n_items}
    if attributes is not None:
        grown_shape |= {"n_attributes": attributes[1], "max_attributes": attributes[0].shape[1]}
    model = AdaptingRetrievalModel(
        SequenceEncoder(previous.encoder.config.model_copy(update=grown_shape)),
        item_frequencies,
        teacher=teacher,
        distillation_weight=weight,
    )
    grow_item_table(previous, built(model))
    if attributes is not None:
        model.encoder.set_item_attributes(attributes[0])
    if pretraining is not None:
        continue_pretraining(model, pretraining, jit_compile)
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

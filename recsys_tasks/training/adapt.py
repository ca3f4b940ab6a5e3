"""Adapt stage: continue the champion on the events after its watermark, without forgetting the older ones.

Reads the champion's training state (copied into the run by plan_training) and the run's sequences,
whose vocabulary extends the champion's (augment kept its indices). Training targets are the events
after the watermark; each row's input is the user's whole history before it. Next to them the
champion's replay set trains again, distilled towards the champion's scores when ``distillation`` is
on (``training.continual``). Validation ranks the validation item of the users active in the new
window (all users when none is). The model is exported like a fine-tuned one, with its own training
state and replay set, so the next run continues from it.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf
from pydantic import BaseModel

from recsys_tasks.contracts.layout import CHAMPION_STATE_DIR, EXPORTED_MODEL_DIR
from recsys_tasks.contracts.reports import TrainingPlan
from recsys_tasks.contracts.splits import LeaveOneOutSplits, NextItemRows
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.contracts.training_state import CHECKPOINT_PREFIX, TrainingState, read_replay, read_state
from recsys_tasks.errors import StageSkipped
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.models.encoder import count_parameters
from recsys_tasks.models.retrieval import NextItemRetrievalModel
from recsys_tasks.storage import RunDir
from recsys_tasks.training.accelerator import configure_accelerator, float32_policy
from recsys_tasks.training.config import AdaptConfig, FinetuneConfig
from recsys_tasks.training.continual import adapt_model, empty_model, plain_copy
from recsys_tasks.training.datasets import item_attribute_table
from recsys_tasks.training.finetune import export

log = logging.getLogger(__name__)


class AdaptSummary(BaseModel):
    model_uri: str
    champion_version: str | None
    new_rows: int
    replayed_rows: int
    next_replay_rows: int
    items_before: int
    items_after: int
    epochs_run: int
    best_epoch: int
    exported_epochs: list[int]
    validation: dict[str, float]
    seconds: float


def load_trained_model(folder, state: TrainingState) -> NextItemRetrievalModel:
    """The retrieval model of a training state, its weights restored from the checkpoint."""
    model = empty_model(EncoderConfig(**state.encoder))
    tf.train.Checkpoint(model=model).read(str(folder / CHECKPOINT_PREFIX)).assert_existing_objects_matched()
    return model


def _replay_rows(folder, max_length: int) -> NextItemRows:
    items, offsets = read_replay(folder)
    return NextItemRows.prefixes(items, offsets, max_length, np.diff(offsets) - 1)


def _fresh_validation(splits: LeaveOneOutSplits, watermark: int | None):
    """The validation holdout of the users whose validation item is new (all users when none is)."""
    inputs, seen, targets = splits.holdout("validation")
    if watermark is None:
        return inputs, seen, targets
    fresh = splits.held_out_timestamps("validation") > watermark
    if not fresh.any():
        log.info("no user's validation item is after the watermark: validating on every user")
        return inputs, seen, targets
    return inputs[fresh], seen[fresh], targets[fresh]


def adapt(
    run: RunDir,
    finetune: FinetuneConfig,
    config: AdaptConfig,
    plan: TrainingPlan,
    tracker: RunTracker | None = None,
) -> AdaptSummary:
    started = time.perf_counter()
    jit_compile = configure_accelerator(finetune.accelerator)
    splits = LeaveOneOutSplits.load(run)
    with run.reading_folder(CHAMPION_STATE_DIR) as folder:
        state = read_state(folder)
        previous = load_trained_model(folder, state)
        replay = _replay_rows(folder, splits.max_length)
    rows = splits.rows_after(plan.watermark)
    if not len(rows):
        raise StageSkipped(
            "every event after the champion's watermark is a held-out validation or test item: nothing to train on"
        )
    # An adapt run trains every weight, at its own learning rate when it has one.
    training = finetune.model_copy(
        update={"mode": "full", "learning_rate": config.learning_rate or finetune.learning_rate}
    )
    attributes, n_attributes, attribute_ids = item_attribute_table(run, splits.n_items, state.attribute_ids)
    model, outcome, next_replay = adapt_model(
        previous,
        rows,
        replay,
        splits.n_items,
        splits.item_frequencies(),
        _fresh_validation(splits, plan.watermark),
        training,
        config,
        tracker,
        jit_compile,
        (attributes, n_attributes) if previous.encoder.items.uses_attributes else None,
    )
    training_state = TrainingState(
        dataset_key=plan.dataset_key,
        mode="adapt",
        watermark=None if splits.timestamps is None else int(splits.timestamps.max()),
        parent_version=plan.champion_version,
        adapt_runs_since_retrain=plan.adapt_runs_since_retrain,
        window=plan.window,
        new_rows=len(rows),
        replay_rows=len(next_replay),
        encoder=model.encoder.config.model_dump(),
        attribute_ids=attribute_ids,
        finetune_mode="full",
        ranking_weight=0.0,
    )
    with float32_policy():
        exported = plain_copy(model)
    meta = {
        "finetune": training.model_dump(),
        "adapt": config.model_dump(),
        "trainable_parameters": count_parameters(exported.parameters()),
        "total_parameters": count_parameters(exported.parameters()),
        "exported_epochs": outcome.exported_epochs,
    }
    export(run, splits, exported, meta, training_state, next_replay)
    return AdaptSummary(
        model_uri=run.uri_of(EXPORTED_MODEL_DIR),
        champion_version=plan.champion_version,
        new_rows=len(rows),
        replayed_rows=len(replay) if config.replay_size else 0,
        next_replay_rows=len(next_replay),
        items_before=state.encoder["n_items"],
        items_after=splits.n_items,
        epochs_run=outcome.epochs_run,
        best_epoch=outcome.best_epoch,
        exported_epochs=outcome.exported_epochs,
        validation=outcome.validation,
        seconds=round(time.perf_counter() - started, 2),
    )

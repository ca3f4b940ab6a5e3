"""Finetune stage: adapt the pre-trained encoder to next-item retrieval with TFRS.

Modes (the trainable-parameter count of each is logged):
- ``full``: every weight trains.
- ``frozen``: the pre-trained backbone (item and position embeddings, attention, feed-forward) is
  frozen; only bottleneck adapters inside each block and the heads train.
- ``lora``: the backbone is frozen; low-rank updates of the attention projections and the heads train.
- ``head``: the whole encoder is frozen; only the heads train (a linear probe of the pre-trained model).

In the three frozen modes the encoder runs with ``frozen_dropout`` (lighter than pre-training's).

Training rows (``examples``): by default one per target item, holding the history before it, as
DuoRec and BSARec train; ``windows`` (a target at every position of a window of history) does a
fraction of the work per epoch on long histories and scores lower.

With ``ranking_weight`` > 0 a ranking head trains alongside retrieval (multi-task, see
models.retrieval); it predicts ratings where the data has varied ratings and no serving log, clicks otherwise
(against the items the serving log shows were passed over, where it has them).

The weights that are validated, kept and exported are a moving average of the last optimizer
steps (``average_steps``), which smooths the step-to-step noise of the softmax over the
catalogue.

After every epoch the model is ranked against the whole catalogue on the validation split;
the best epoch by NDCG@10 is kept and training stops after ``patience`` epochs without gain.
Then the average of the best epoch's weights and those of up to ``average_epochs`` epochs before
and after it (stochastic weight averaging over the plateau) is validated too, and exported when
it scores higher; otherwise the best epoch's weights stay.
The figures behind these defaults are in docs/experiments/2026-12-02-model-quality.md.
With ``refit`` the model is then trained afresh, with the same seed, on the training and
validation targets (each user's sequence but the test item) for as many epochs as the choice
needed, and the same epochs' weights are averaged and exported: the exported model has learnt
each user's newest interaction before the test item, as EASE and popularity count it too. Its
validation figures are those of the choosing run, since the refit has trained on validation.
The test split is never read here. The chosen model is exported as the folder the pyfunc loads.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf
from pydantic import BaseModel, Field

from recsys_tasks.contracts.exported_model import (
    ARTIFACT_FILES,
    HISTORY_ATTENTION_OUTPUT,
    ITEM_EMBEDDINGS,
    ITEM_VOCAB,
    MODEL_META,
    SAVED_MODEL,
    TRAINING_STATE,
    USER_EMBEDDING_OUTPUT,
)
from recsys_tasks.contracts.int8_variant import export_int8
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR, PRETRAINED_ENCODER_DIR, VOCAB_FILE
from recsys_tasks.contracts.metrics import PRIMARY_METRIC, evaluate_scores
from recsys_tasks.contracts.reports import TrainingPlan
from recsys_tasks.contracts.splits import LeaveOneOutSplits, NextItemRows
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.contracts.training_state import CHECKPOINT_PREFIX, TrainingState, write_state
from recsys_tasks.models.config import EncoderConfig, FinetuneMode
from recsys_tasks.models.encoder import SequenceEncoder, count_parameters
from recsys_tasks.models.retrieval import NextItemRetrievalModel
from recsys_tasks.storage import RunDir
from recsys_tasks.training.accelerator import configure_accelerator, float32_policy
from recsys_tasks.training.config import WIDTH_PER_ITEM_LORA_RANK, AdaptConfig, FinetuneConfig
from recsys_tasks.training.datasets import item_attribute_table
from recsys_tasks.training.distribution import DistributionKind, fit_epoch, is_chief, training_strategy
from recsys_tasks.training.pretrain import ENCODER_CHECKPOINT, ENCODER_CONFIG_FILE
from recsys_tasks.training.replay import select_replay

log = logging.getLogger(__name__)


class FinetuneSummary(BaseModel):
    model_uri: str
    mode: FinetuneMode
    epochs_run: int
    best_epoch: int
    exported_epochs: list[int] = Field(
        description="The epochs whose weights were averaged for export, or the best one."
    )
    validation: dict[str, float] = Field(description="Of the chosen weights, before any refit.")
    training_rows: int = Field(description="Rows (see the config's examples) each epoch trains on.")
    training_losses: list[float] = Field(description="Each epoch's mean training loss, before any refit.")
    refit_epochs: int = Field(0, description="Epochs of the refit on training + validation targets; 0 = none.")
    trainable_parameters: int
    total_parameters: int
    seconds: float


class _ServingModule(tf.Module):
    """What the SavedModel exposes: item-index histories → query vectors and their attention over the history."""

    def __init__(self, model: NextItemRetrievalModel, max_length: int):
        super().__init__()
        self.model = model
        history = tf.TensorSpec([None, max_length], tf.int32, name="history")

        def user_embedding(history):
            queries, attention = model.query_vectors_with_attention(history)
            return {
                USER_EMBEDDING_OUTPUT: tf.cast(queries, tf.float32),
                HISTORY_ATTENTION_OUTPUT: tf.cast(attention, tf.float32),
            }

        self.user_embedding = tf.function(user_embedding, input_signature=[history])
        if model.ranking_weight:
            self.rating = tf.function(
                model.predict_ratings, input_signature=[history, tf.TensorSpec([None], tf.int32, name="item")]
            )

    def signatures(self) -> dict:
        return {name: getattr(self, name) for name in ("user_embedding", "rating") if hasattr(self, name)}


def load_pretrained_encoder(
    run: RunDir,
    adapter_dim: int = 0,
    lora_rank: int = 0,
    item_lora_rank: int | None = 0,
    dropout: float | None = None,
) -> SequenceEncoder:
    """The pre-trained encoder, with new adapters or LoRA factors if asked, and another dropout rate if given.

    ``item_lora_rank=None`` scales the item table's LoRA rank with the encoder's width.
    """
    with run.reading_folder(PRETRAINED_ENCODER_DIR) as folder:
        config = EncoderConfig.model_validate_json((folder / ENCODER_CONFIG_FILE).read_text())
        if item_lora_rank is None:
            item_lora_rank = max(1, config.d_model // WIDTH_PER_ITEM_LORA_RANK)
        extra = {"adapter_dim": adapter_dim, "lora_rank": lora_rank, "item_lora_rank": item_lora_rank}
        if dropout is not None:
            extra["dropout"] = dropout
        encoder = SequenceEncoder(config.model_copy(update=extra))
        encoder(tf.zeros((1, config.max_length), tf.int32))
        # Adapters and LoRA factors are new and absent from the checkpoint; everything else must match.
        tf.train.Checkpoint(encoder=encoder).read(str(folder / ENCODER_CHECKPOINT)).assert_nontrivial_match()
    return encoder


def weight_average_momentum(average_steps: int, steps_per_epoch: int) -> float:
    """Momentum of the moving average of the weights, or 0 for none.

    tf-keras writes the average into the weights at the end of every ``fit``, that is of every
    epoch here, and the next epoch trains on from it. A horizon of at most a quarter of an epoch
    keeps the epoch's starting point under 2% of that average ((1 − 1/h)^(4h) ≈ e⁻⁴), so the
    averaging smooths the last steps' noise without holding training back.
    """
    horizon = min(average_steps, steps_per_epoch // 4)
    return 1.0 - 1.0 / horizon if horizon > 1 else 0.0


class EpochWeights:
    """The average of some epochs' weights, kept as one running sum.

    The sum adds the epochs in order, which gives exactly ``np.mean`` over them; integer weights
    never train, so the first epoch's stay.
    """

    def __init__(self):
        self.epochs: list[int] = []
        self._sum: list[np.ndarray] = []

    def add(self, epoch: int, weights: list[np.ndarray]) -> None:
        if not self._sum:
            self._sum = [weight.copy() for weight in weights]
        else:
            for total, weight in zip(self._sum, weights):
                if total.dtype.kind == "f":
                    total += weight
        self.epochs.append(epoch)

    def average(self) -> list[np.ndarray]:
        return [total / len(self.epochs) if total.dtype.kind == "f" else total for total in self._sum]


class WeightsAroundBest:
    """The average of the weights of the best epoch so far and of up to ``reach`` epochs before and after it.

    It holds the last ``reach`` + 1 epochs' weights (a best epoch's window starts among them) and
    one running sum, so memory does not grow with the number of epochs or the window.
    """

    def __init__(self, reach: int):
        self.reach = reach
        self.best_epoch = 0
        self._recent: deque[tuple[int, list[np.ndarray]]] = deque(maxlen=reach + 1)
        self._window = EpochWeights()

    @property
    def epochs(self) -> list[int]:
        return self._window.epochs

    def add(self, epoch: int, weights: list[np.ndarray], is_best: bool) -> None:
        self._recent.append((epoch, weights))
        if is_best:
            self.best_epoch, self._window = epoch, EpochWeights()
            for recent_epoch, recent_weights in self._recent:
                self._window.add(recent_epoch, recent_weights)
        elif self.epochs and epoch - self.best_epoch <= self.reach:
            self._window.add(epoch, weights)

    def average(self) -> list[np.ndarray]:
        return self._window.average()


def build_model(run: RunDir, splits: LeaveOneOutSplits, config: FinetuneConfig) -> NextItemRetrievalModel:
    """The pre-trained encoder with the mode's extra weights, inside the retrieval (+ ranking) model."""
    encoder = load_pretrained_encoder(
        run,
        adapter_dim=config.adapter_dim if config.mode == "frozen" else 0,
        lora_rank=config.lora_rank if config.mode == "lora" else 0,
        item_lora_rank=config.item_lora_rank if config.mode in ("frozen", "lora") else 0,
        dropout=None if config.mode == "full" else config.frozen_dropout,
    )
    model = NextItemRetrievalModel(
        encoder,
        splits.item_frequencies(),
        loss=config.loss,
        ranking_weight=config.ranking_weight,
        # The serving log's impressions make the head a click model, whatever the source's ratings.
        ranking_target="rating" if splits.ratings is not None and splits.shown_negatives is None else "click",
        mean_rating=splits.mean_training_rating(),
    )
    model.query_vectors(tf.zeros((1, splits.max_length), tf.int32))
    if config.ranking_weight:
        model.predict_ratings(tf.zeros((1, splits.max_length), tf.int32), tf.ones((1,), tf.int32))
    if config.mode in ("frozen", "lora"):
        encoder.freeze_backbone()
    elif config.mode == "head":
        encoder.trainable = False
    return model


def _compiled_model(
    run: RunDir, splits: LeaveOneOutSplits, config: FinetuneConfig, rows: NextItemRows, jit_compile: bool
) -> NextItemRetrievalModel:
    """A model initialised from the seed, compiled with Adam and a weight average sized to ``rows``' epochs."""
    tf.keras.utils.set_random_seed(config.seed)
    return compile_for(build_model(run, splits, config), rows, config, jit_compile)


def compile_for(model: NextItemRetrievalModel, rows: NextItemRows, config: FinetuneConfig, jit_compile: bool):
    """``model`` compiled with Adam and a moving average of its weights sized to ``rows``' epochs."""
    momentum = weight_average_momentum(config.average_steps, math.ceil(len(rows) / config.batch_size))
    optimizer = tf.keras.optimizers.Adam(config.learning_rate, use_ema=momentum > 0, ema_momentum=momentum)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    log.info("%s training rows, weight average momentum %.3f", f"{len(rows):,}", momentum)
    return model


class _Validation(tf.keras.callbacks.Callback):
    """Ranks a validation holdout (model inputs, items excluded from the ranking, targets) against the
    whole catalogue of ``n_items`` with the model's current weights.

    It ranks once when created (epoch 0, the model before fine-tuning) and after every epoch,
    where it adds the metrics to the epoch's logs as ``val_<name>`` and logs them; ``metrics``
    holds every epoch's.
    """

    def __init__(
        self,
        model: NextItemRetrievalModel,
        holdout: tuple[np.ndarray, np.ndarray, np.ndarray],
        n_items: int,
        epochs: int,
        tracker: RunTracker | None,
    ):
        super().__init__()
        self.set_model(model)
        self.n_items, self.epochs, self.tracker = n_items, epochs, tracker
        self.inputs, self.seen, self.targets = holdout
        self.metrics = {0: self.rank()}
        self.losses: list[float] = []

    @property
    def best_epoch(self) -> int:
        """The first of the epochs with the highest NDCG@10 so far (0: the model before fine-tuning)."""
        return max(self.metrics, key=lambda epoch: self.metrics[epoch][PRIMARY_METRIC])

    def rank(self) -> dict[str, float]:
        model, n_items = self.model, self.n_items

        def score(inputs):
            return model.ranking_scores(inputs).numpy()[:, : n_items + 1]

        return evaluate_scores(score, self.inputs, self.seen, self.targets, n_items)

    def on_epoch_end(self, epoch, logs=None):
        metrics, loss = self.rank(), self.model.epoch_loss()
        self.losses.append(loss)
        improved = metrics[PRIMARY_METRIC] > self.metrics[self.best_epoch][PRIMARY_METRIC]
        self.metrics[epoch] = metrics
        logs.update({f"val_{name}": value for name, value in metrics.items()})
        if self.tracker:
            self.tracker.log_metrics({"finetune_loss": loss, **{f"val_{k}": v for k, v in metrics.items()}}, step=epoch)
        log.info(
            "finetune epoch %d/%d  loss %.4f  val HR@10 %.4f  NDCG@10 %.4f%s",
            epoch,
            self.epochs,
            loss,
            metrics["hr_at_10"],
            metrics[PRIMARY_METRIC],
            "  (best)" if improved else "",
        )


class _EarlyStopping(tf.keras.callbacks.EarlyStopping):
    """Keras early stopping on validation NDCG@10, restoring the best weights at the end, whose first
    best is the model before fine-tuning (epoch 0)."""

    def __init__(self, patience: int, validation: _Validation):
        super().__init__(monitor=f"val_{PRIMARY_METRIC}", mode="max", patience=patience, restore_best_weights=True)
        self.validation = validation

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        # Keras would take the first epoch as the best so far even when it scores below the model it
        # started from; that model stays the one exported unless an epoch beats it.
        self.best, self.best_weights = self.validation.metrics[0][PRIMARY_METRIC], self.model.get_weights()

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if self.stopped_epoch:
            log.info("no validation gain for %d epochs: stopping", self.patience)


def _fit(
    model: NextItemRetrievalModel, rows: NextItemRows, config: FinetuneConfig, epochs: int, callbacks: list
) -> int:
    """Trains for up to ``epochs`` epochs, numbered from 1, each a pass over ``rows`` shuffled by (seed, epoch),
    calling ``callbacks`` as ``fit`` calls them; the number of epochs run."""
    # One fit per epoch, not one fit(epochs=...), which trains other weights from the same seeds: each
    # fit ends with a call of the training step that finds the data exhausted, yet still counts an
    # optimizer iteration (Adam's bias correction reads it) and touches some optimizer state; and each
    # fit writes the optimizer's moving average into the weights, so every epoch is validated, kept
    # and averaged on it, and the next epoch trains on from it.
    callback_list = tf.keras.callbacks.CallbackList(callbacks, model=model)
    callback_list.on_train_begin()
    epochs_run = 0
    for epoch in range(1, epochs + 1):
        callback_list.on_epoch_begin(epoch)
        fit_epoch(model, rows, config.batch_size, np.random.default_rng([config.seed, epoch]))
        epochs_run = epoch
        callback_list.on_epoch_end(epoch, {})
        if model.stop_training:
            break
    callback_list.on_train_end()
    return epochs_run


def _average_if_better(
    model: NextItemRetrievalModel,
    around_best: WeightsAroundBest,
    validation: _Validation,
    tracker: RunTracker | None,
) -> tuple[dict[str, float], list[int]]:
    """Validates the average of the weights around the best epoch and leaves it in ``model`` if it
    scores higher than the best epoch's weights (which ``model`` holds); the chosen weights' metrics and epochs."""
    best_epoch = validation.best_epoch
    best_metrics = validation.metrics[best_epoch]
    if len(around_best.epochs) <= 1:
        return best_metrics, [best_epoch]
    best_weights = model.get_weights()
    model.set_weights(around_best.average())
    averaged = validation.rank()
    keep_average = averaged[PRIMARY_METRIC] > best_metrics[PRIMARY_METRIC]
    log.info(
        "average of epochs %s: val NDCG@10 %.4f against %.4f for epoch %d alone: exporting %s",
        around_best.epochs,
        averaged[PRIMARY_METRIC],
        best_metrics[PRIMARY_METRIC],
        best_epoch,
        "the average" if keep_average else f"epoch {best_epoch}",
    )
    if tracker:
        tracker.log_metrics({f"val_averaged_{k}": v for k, v in averaged.items()})
    if keep_average:
        return averaged, around_best.epochs
    model.set_weights(best_weights)
    return best_metrics, [best_epoch]


def _refit(
    run: RunDir,
    splits: LeaveOneOutSplits,
    config: FinetuneConfig,
    epochs: list[int],
    jit_compile: bool,
    tracker: RunTracker | None,
) -> NextItemRetrievalModel:
    """A model trained afresh on training + validation targets up to the last of ``epochs``, those averaged."""
    rows = splits.next_item_rows(config.examples, held_out=1)
    model = _compiled_model(run, splits, config, rows, jit_compile)
    chosen = EpochWeights()

    def on_epoch_end(epoch: int, logs: dict) -> None:
        loss = model.epoch_loss()
        log.info("refit on training + validation targets, epoch %d/%d  loss %.4f", epoch, max(epochs), loss)
        if tracker:
            tracker.log_metrics({"refit_loss": loss}, step=epoch)
        if epoch in epochs:
            chosen.add(epoch, model.get_weights())

    _fit(model, rows, config, max(epochs), [tf.keras.callbacks.LambdaCallback(on_epoch_end=on_epoch_end)])
    model.set_weights(chosen.average())
    return model


def _log_parameters(
    model: NextItemRetrievalModel, config: FinetuneConfig, tracker: RunTracker | None
) -> tuple[int, int]:
    """(trainable, total) parameters of ``model``, logged with the config."""
    trainable = count_parameters(model.trainable_variables)
    total = count_parameters(model.parameters())
    log.info("fine-tuning (%s): %s of %s parameters trainable", config.mode, f"{trainable:,}", f"{total:,}")
    if tracker:
        tracker.log_params(config.model_dump(), prefix="finetune")
        tracker.log_metrics({"trainable_parameters": trainable, "total_parameters": total})
    return trainable, total


def _float32_copy(
    run: RunDir, splits: LeaveOneOutSplits, config: FinetuneConfig, trained: NextItemRetrievalModel
) -> NextItemRetrievalModel:
    """The same architecture built afresh under the float32 policy, holding ``trained``'s weights."""
    # Exported so: without the optimizer, whose moments and weight average would otherwise make up
    # most of the SavedModel.
    with float32_policy():
        model = build_model(run, splits, config)
    model.set_weights(trained.get_weights())
    return model


def export(
    run: RunDir,
    splits: LeaveOneOutSplits,
    model: NextItemRetrievalModel,
    meta: dict,
    training_state: TrainingState | None = None,
    replay: NextItemRows | None = None,
) -> None:
    """Writes the folder the pyfunc loads: SavedModel, item vectors (and their int8 form), vocabulary, ``meta``;
    and, given a ``training_state``, what the next run continues from (weights, vocabulary, ``replay``)."""
    encoder = model.encoder
    with run.writing_folder(EXPORTED_MODEL_DIR) as folder:
        if training_state is not None:
            state_folder = folder / ARTIFACT_FILES[TRAINING_STATE]
            write_state(state_folder, training_state, run.read_parquet(VOCAB_FILE), replay.windows() if replay else [])
            tf.train.Checkpoint(model=model).write(str(state_folder / CHECKPOINT_PREFIX))
        module = _ServingModule(model, splits.max_length)
        tf.saved_model.save(module, str(folder / ARTIFACT_FILES[SAVED_MODEL]), signatures=module.signatures())
        item_vectors = tf.cast(encoder.item_vectors(), tf.float32).numpy()[: splits.n_items + 1]
        np.save(folder / ARTIFACT_FILES[ITEM_EMBEDDINGS], item_vectors)
        export_int8(folder)
        pq.write_table(run.read_parquet(VOCAB_FILE).select(["index", "item_id"]), folder / ARTIFACT_FILES[ITEM_VOCAB])
        meta = {
            "max_length": splits.max_length,
            "n_items": splits.n_items,
            "encoder": encoder.config.model_dump(),
            **meta,
            "repeat_offset": float(model.repeat_offset.offset.numpy()),
        }
        (folder / ARTIFACT_FILES[MODEL_META]).write_text(json.dumps(meta, indent=2))


class TrainingOutcome(BaseModel):
    epochs_run: int
    losses: list[float] = Field(description="Each epoch's mean training loss.")
    best_epoch: int
    exported_epochs: list[int]
    validation: dict[str, float]
    seconds: float


def train_with_validation(
    model: NextItemRetrievalModel,
    rows: NextItemRows,
    holdout: tuple[np.ndarray, np.ndarray, np.ndarray],
    n_items: int,
    config: FinetuneConfig,
    tracker: RunTracker | None = None,
) -> TrainingOutcome:
    """Trains the compiled ``model`` on ``rows`` with validation on ``holdout`` after every epoch, early
    stopping and the weights around the best epoch averaged when that validates higher; ``model`` ends
    holding the chosen weights (those it started with when no epoch beats them)."""
    started = time.perf_counter()
    validation = _Validation(model, holdout, n_items, config.epochs, tracker)
    around_best = WeightsAroundBest(config.average_epochs)
    keep_around_best = tf.keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: around_best.add(epoch, model.get_weights(), validation.best_epoch == epoch)
    )
    callbacks = [validation, _EarlyStopping(config.patience, validation), keep_around_best]
    epochs_run = _fit(model, rows, config, config.epochs, callbacks)
    best_metrics, exported_epochs = _average_if_better(model, around_best, validation, tracker)
    return TrainingOutcome(
        epochs_run=epochs_run,
        losses=validation.losses,
        best_epoch=validation.best_epoch,
        exported_epochs=exported_epochs,
        validation=best_metrics,
        seconds=round(time.perf_counter() - started, 2),
    )


def _retrained_state(
    run: RunDir,
    splits: LeaveOneOutSplits,
    model: NextItemRetrievalModel,
    config: FinetuneConfig,
    plan: TrainingPlan,
    adapt: AdaptConfig | None,
) -> tuple[TrainingState, NextItemRows]:
    """The training state of a model trained from scratch on the whole history, and its first replay set."""
    adapt = adapt or AdaptConfig()
    rows = splits.rows_after(None)
    replay = select_replay(model, rows, adapt.replay_size, adapt.replay_rule, config.seed)
    state = TrainingState(
        dataset_key=plan.dataset_key,
        mode="retrain",
        watermark=None if splits.timestamps is None else int(splits.timestamps.max()),
        parent_version=None,
        adapt_runs_since_retrain=0,
        window=plan.window,
        new_rows=len(rows),
        replay_rows=len(replay),
        encoder=model.encoder.config.model_dump(),
        attribute_ids=item_attribute_table(run, splits.n_items)[2],
        finetune_mode=config.mode,
        ranking_weight=config.ranking_weight,
    )
    return state, replay


def finetune(
    run: RunDir,
    config: FinetuneConfig,
    tracker: RunTracker | None = None,
    plan: TrainingPlan | None = None,
    adapt: AdaptConfig | None = None,
    distribution: DistributionKind = "none",
) -> FinetuneSummary:
    """Fine-tunes the pre-trained encoder and exports it; given the run's ``plan``, with the training state
    (and a replay set of ``adapt.replay_size`` rows) that a later run continues from.

    Under a ``distribution`` over several workers, each trains its part of every batch and only the chief
    logs and exports."""
    strategy = training_strategy(distribution)
    chief = is_chief(strategy)
    tracker = tracker if chief else None
    jit_compile = configure_accelerator(config.accelerator)
    splits = LeaveOneOutSplits.load(run)
    rows = splits.next_item_rows(config.examples)
    with strategy.scope():
        model = _compiled_model(run, splits, config, rows, jit_compile)
        trainable, total = _log_parameters(model, config, tracker)
        outcome = train_with_validation(model, rows, splits.holdout("validation"), splits.n_items, config, tracker)
        refit_epochs = max(outcome.exported_epochs) if config.refit else 0
        if refit_epochs:  # 0: the pre-trained weights won, nothing to train again
            model = _refit(run, splits, config, outcome.exported_epochs, jit_compile, tracker)
    model = _float32_copy(run, splits, config, model)
    if chief:
        meta = {"finetune": config.model_dump(), "trainable_parameters": trainable, "total_parameters": total}
        state, replay = (None, None) if plan is None else _retrained_state(run, splits, model, config, plan, adapt)
        meta |= {"exported_epochs": outcome.exported_epochs, "refit_epochs": refit_epochs}
        export(run, splits, model, meta, state, replay)
    return FinetuneSummary(
        model_uri=run.uri_of(EXPORTED_MODEL_DIR),
        mode=config.mode,
        epochs_run=outcome.epochs_run,
        best_epoch=outcome.best_epoch,
        exported_epochs=outcome.exported_epochs,
        validation=outcome.validation,
        training_rows=len(rows),
        training_losses=outcome.losses,
        refit_epochs=refit_epochs,
        trainable_parameters=trainable,
        total_parameters=total,
        seconds=outcome.seconds,
    )

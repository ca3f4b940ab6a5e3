"""Pretrain stage: self-supervised pre-training of the sequence encoder.

Checkpoints after every epoch (model, optimizer, epoch counter) let a retried task resume where
the failed attempt stopped; each epoch's masking is seeded by (seed, epoch), so a resumed run
sees the same data a straight run would.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import tensorflow as tf
from pydantic import BaseModel

from recsys_tasks.contracts.layout import PRETRAIN_CHECKPOINTS, PRETRAINED_ENCODER_DIR
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.models.encoder import SequenceEncoder, count_parameters
from recsys_tasks.models.pretraining import PretrainingModel
from recsys_tasks.storage import RunDir
from recsys_tasks.training.accelerator import configure_accelerator
from recsys_tasks.training.config import PretrainConfig
from recsys_tasks.training.datasets import (
    PaddedArrays,
    cloze_inputs,
    contrastive_views,
    item_attribute_table,
)
from recsys_tasks.training.distribution import (
    DistributionKind,
    fit_epoch,
    is_chief,
    training_strategy,
    worker_folder_name,
)

log = logging.getLogger(__name__)

ENCODER_CHECKPOINT = "encoder"
ENCODER_CONFIG_FILE = "encoder_config.json"


class PretrainSummary(BaseModel):
    encoder_uri: str
    epochs: int
    resumed_from_epoch: int
    losses: dict[str, float]
    parameters: int
    seconds: float


def pretrain(
    run: RunDir, config: PretrainConfig, tracker: RunTracker | None = None, distribution: DistributionKind = "none"
) -> PretrainSummary:
    """Pre-trains the encoder and exports it where fine-tuning loads it; under a ``distribution`` over
    several workers, each trains its part of every batch and only the chief logs and exports."""
    strategy = training_strategy(distribution)
    chief = is_chief(strategy)
    tracker = tracker if chief else None
    tf.keras.utils.set_random_seed(config.seed)
    jit_compile = configure_accelerator(config.accelerator)
    splits = LeaveOneOutSplits.load(run)
    encoder_config, attributes = _encoder_config(run, splits, config)
    with strategy.scope():
        encoder = SequenceEncoder(encoder_config)
        encoder.set_item_attributes(attributes)
        model = compiled_pretraining_model(encoder, config, jit_compile)
    if tracker:
        tracker.log_params(encoder_config.model_dump(), prefix="encoder")
        tracker.log_params(config.model_dump(), prefix="pretrain")

    user_rows, view_a, view_b = contrastive_views(run, splits.max_length)
    histories = splits.padded_histories(2, splits.max_length)[user_rows]
    views = {"view_a": view_a, "view_b": view_b}
    manager, epoch = _restored_checkpoints(run.scratch(worker_folder_name(PRETRAIN_CHECKPOINTS, strategy)), model)
    resumed_from = int(epoch.numpy())

    started = time.perf_counter()
    losses: dict[str, float] = {}
    for current in range(resumed_from, config.epochs):
        losses = train_pretraining_epoch(model, histories, views, splits.mask_index, config, current)
        epoch.assign(current + 1)
        manager.save(checkpoint_number=current + 1)
        if tracker:
            tracker.log_metrics(losses, step=current + 1)

    if chief:
        _export_encoder(run, encoder, encoder_config, histories)
    return PretrainSummary(
        encoder_uri=run.uri_of(PRETRAINED_ENCODER_DIR),
        epochs=config.epochs,
        resumed_from_epoch=resumed_from,
        losses=losses,
        parameters=count_parameters(encoder.weights),
        seconds=round(time.perf_counter() - started, 2),
    )


def _encoder_config(run: RunDir, splits: LeaveOneOutSplits, config: PretrainConfig) -> tuple[EncoderConfig, np.ndarray]:
    """The encoder's config for ``splits``' catalogue, and the item attribute table it reads (no columns when
    attributes are off or absent)."""
    attributes, n_attributes, _ = item_attribute_table(run, splits.n_items)
    if not config.use_attributes:
        attributes, n_attributes = attributes[:, :0], 0
    encoder_config = EncoderConfig.of_size(
        config.model_size,
        n_items=splits.n_items,
        max_length=splits.max_length,
        dropout=config.dropout,
        filter_mix=config.filter_mix,
        n_attributes=n_attributes,
        max_attributes=attributes.shape[1],
    )
    return encoder_config, attributes


def compiled_pretraining_model(encoder: SequenceEncoder, config: PretrainConfig, jit_compile: bool) -> PretrainingModel:
    """The pre-training model around ``encoder``, with the config's loss weights, compiled with Adam."""
    model = PretrainingModel(
        encoder,
        cloze_weight=config.cloze_weight,
        contrastive_weight=config.contrastive_weight,
        attribute_weight=config.attribute_weight,
        autoregressive_weight=config.autoregressive_weight,
        temperature=config.temperature,
    )
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate), jit_compile=jit_compile)
    return model


def _restored_checkpoints(folder: Path, model: PretrainingModel) -> tuple[tf.train.CheckpointManager, tf.Variable]:
    """Checkpoints in ``folder`` of the model, its optimizer and the epochs done, with the newest one restored
    if any."""
    epoch = tf.Variable(0, dtype=tf.int64, name="epoch")
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, epoch=epoch)
    manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=2)
    if manager.latest_checkpoint:
        checkpoint.restore(manager.latest_checkpoint)
        log.info("resuming pre-training from %s (epoch %d)", manager.latest_checkpoint, int(epoch.numpy()))
    return manager, epoch


def train_pretraining_epoch(
    model: PretrainingModel,
    histories: np.ndarray,
    views: dict[str, np.ndarray],
    mask_index: int,
    config: PretrainConfig,
    current: int,
) -> dict[str, float]:
    """Epoch ``current`` (from 0): masking and batch order seeded by (seed, epoch); its losses, logged."""
    masked, labels = cloze_inputs(
        histories, config.mask_probability, mask_index, np.random.default_rng([config.seed, current])
    )
    arrays = PaddedArrays({"masked": masked, "labels": labels, **views})
    fit_epoch(model, arrays, config.batch_size, np.random.default_rng([config.seed, current, 1]))
    losses = {f"pretrain_{name}": value for name, value in model.epoch_losses().items()}
    log.info(
        "pretrain epoch %d/%d  %s",
        current + 1,
        config.epochs,
        "  ".join(f"{name.removeprefix('pretrain_')} {value:.4f}" for name, value in losses.items()),
    )
    return losses


def _export_encoder(
    run: RunDir, encoder: SequenceEncoder, encoder_config: EncoderConfig, histories: np.ndarray
) -> None:
    """Writes the encoder's weights and config where fine-tuning loads them."""
    with run.writing_folder(PRETRAINED_ENCODER_DIR) as folder:
        encoder(histories[:1])  # builds the weights when no epoch ran
        tf.train.Checkpoint(encoder=encoder).write(str(folder / ENCODER_CHECKPOINT))
        (folder / ENCODER_CONFIG_FILE).write_text(encoder_config.model_dump_json(indent=2))

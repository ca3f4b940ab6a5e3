"""Finetune stage: adapt the pre-trained encoder to next-item retrieval with TFRS.

Modes:
- ``full``: every weight trains.
- ``frozen``: the pre-trained backbone (embeddings, attention, feed-forward) is frozen; only
  bottleneck adapters inside each block and the query head train.

After every epoch the model is ranked against the whole catalogue on the validation split;
the best epoch by NDCG@10 is kept and training stops after ``patience`` epochs without gain.
The test split is never read here. The chosen model is exported as the folder the pyfunc loads.
"""

from __future__ import annotations

import json
import logging
import time

import numpy as np
import pyarrow.parquet as pq
import tensorflow as tf
from pydantic import BaseModel, ConfigDict, Field

from recsys_tasks.augmentation.augment import VOCAB_FILE
from recsys_tasks.evaluation.metrics import PRIMARY_METRIC, evaluate_scores
from recsys_tasks.models.config import EncoderConfig, FinetuneMode
from recsys_tasks.models.encoder import SequenceEncoder
from recsys_tasks.models.retrieval import NextItemRetrievalModel
from recsys_tasks.registry.tracking import RunTracker
from recsys_tasks.serving.pyfunc_model import ARTIFACT_FILES, ITEM_EMBEDDINGS, ITEM_VOCAB, MODEL_META, SAVED_MODEL
from recsys_tasks.storage import RunDir
from recsys_tasks.training.datasets import LeaveOneOutSplits
from recsys_tasks.training.pretrain import ENCODER_CHECKPOINT, ENCODER_CONFIG_FILE, PRETRAINED_ENCODER_DIR

log = logging.getLogger(__name__)

EXPORTED_MODEL_DIR = "finetune/model"


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: FinetuneMode = Field("full", description="Which weights train: all, or adapters + head only.")
    epochs: int = Field(20, ge=0, description="Most fine-tuning epochs; 0 exports the pre-trained model as is.")
    batch_size: int = Field(128, ge=1, description="Users per batch; every position of each is a training pair.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    adapter_dim: int = Field(16, ge=1, description="Adapter bottleneck width in frozen mode.")
    patience: int = Field(3, ge=1, description="Epochs without validation gain before stopping.")
    seed: int = Field(0, description="Seed of initialisation and shuffling.")


class FinetuneSummary(BaseModel):
    model_uri: str
    mode: FinetuneMode
    epochs_run: int
    best_epoch: int
    validation: dict[str, float]
    trainable_parameters: int
    total_parameters: int
    seconds: float


class _ServingModule(tf.Module):
    """What the SavedModel exposes: item-index histories → query vectors."""

    def __init__(self, model: NextItemRetrievalModel, max_length: int):
        super().__init__()
        self.model = model
        self.user_embedding = tf.function(
            lambda history: model.query_vectors(history, training=False),
            input_signature=[tf.TensorSpec([None, max_length], tf.int32, name="history")],
        )


def _count(variables) -> int:
    return int(sum(np.prod(v.shape) for v in variables))


def load_pretrained_encoder(run: RunDir, adapter_dim: int = 0) -> SequenceEncoder:
    with run.reading_folder(PRETRAINED_ENCODER_DIR) as folder:
        config = EncoderConfig.model_validate_json((folder / ENCODER_CONFIG_FILE).read_text())
        encoder = SequenceEncoder(config.model_copy(update={"adapter_dim": adapter_dim}))
        encoder(tf.zeros((1, config.max_length), tf.int32))
        # Adapters are new and absent from the checkpoint; everything else must match.
        tf.train.Checkpoint(encoder=encoder).read(str(folder / ENCODER_CHECKPOINT)).assert_nontrivial_match()
    return encoder


def finetune(run: RunDir, config: FinetuneConfig, tracker: RunTracker | None = None) -> FinetuneSummary:
    tf.keras.utils.set_random_seed(config.seed)
    splits = LeaveOneOutSplits.load(run)
    encoder = load_pretrained_encoder(run, adapter_dim=config.adapter_dim if config.mode == "frozen" else 0)
    model = NextItemRetrievalModel(encoder, splits.item_frequencies())
    model.query_vectors(tf.zeros((1, splits.max_length), tf.int32))
    if config.mode == "frozen":
        encoder.freeze_backbone()
    model.compile(optimizer=tf.keras.optimizers.Adam(config.learning_rate))
    trainable, total = _count(model.trainable_variables), _count(model.variables)
    log.info("fine-tuning (%s): %s of %s parameters trainable", config.mode, f"{trainable:,}", f"{total:,}")
    if tracker:
        tracker.log_params(config.model_dump(), prefix="finetune")
        tracker.log_metrics({"trainable_parameters": trainable, "total_parameters": total})

    validation_inputs, validation_seen, validation_targets = splits.holdout("validation")

    def validate() -> dict[str, float]:
        def score(inputs):
            return (model.query_vectors(inputs) @ tf.transpose(encoder.item_vectors())).numpy()[:, : splits.n_items + 1]

        return evaluate_scores(score, validation_inputs, validation_seen, validation_targets, splits.n_items)

    pairs = splits.next_item_pairs()
    started = time.perf_counter()
    best_metrics, best_epoch, best_weights = validate(), 0, model.get_weights()
    epochs_run = 0
    for epoch in range(1, config.epochs + 1):
        dataset = (
            tf.data.Dataset.from_tensor_slices(pairs)
            .shuffle(len(pairs["inputs"]), seed=config.seed + epoch)
            .batch(config.batch_size)
        )
        loss = model.fit(dataset, epochs=1, verbose=0).history["loss"][-1]
        metrics = validate()
        epochs_run = epoch
        if tracker:
            tracker.log_metrics({"finetune_loss": loss, **{f"val_{k}": v for k, v in metrics.items()}}, step=epoch)
        improved = metrics[PRIMARY_METRIC] > best_metrics[PRIMARY_METRIC]
        log.info(
            "finetune epoch %d/%d  loss %.4f  val HR@10 %.4f  NDCG@10 %.4f%s",
            epoch,
            config.epochs,
            loss,
            metrics["hr_at_10"],
            metrics[PRIMARY_METRIC],
            "  (best)" if improved else "",
        )
        if improved:
            best_metrics, best_epoch, best_weights = metrics, epoch, model.get_weights()
        elif epoch - best_epoch >= config.patience:
            log.info("no validation gain for %d epochs: stopping", config.patience)
            break
    model.set_weights(best_weights)

    with run.writing_folder(EXPORTED_MODEL_DIR) as folder:
        module = _ServingModule(model, splits.max_length)
        tf.saved_model.save(
            module, str(folder / ARTIFACT_FILES[SAVED_MODEL]), signatures={"user_embedding": module.user_embedding}
        )
        np.save(folder / ARTIFACT_FILES[ITEM_EMBEDDINGS], encoder.item_vectors().numpy()[: splits.n_items + 1])
        pq.write_table(run.read_parquet(VOCAB_FILE).select(["index", "item_id"]), folder / ARTIFACT_FILES[ITEM_VOCAB])
        meta = {
            "max_length": splits.max_length,
            "n_items": splits.n_items,
            "encoder": encoder.config.model_dump(),
            "finetune": config.model_dump(),
            "trainable_parameters": trainable,
            "total_parameters": total,
        }
        (folder / ARTIFACT_FILES[MODEL_META]).write_text(json.dumps(meta, indent=2))
    return FinetuneSummary(
        model_uri=run.uri_of(EXPORTED_MODEL_DIR),
        mode=config.mode,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        validation=best_metrics,
        trainable_parameters=trainable,
        total_parameters=total,
        seconds=round(time.perf_counter() - started, 2),
    )

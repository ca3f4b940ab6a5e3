"""What a registered version carries so that the next run can continue training it (TFX's warm start).

The folder ``training_state/`` of the exported model (``exported_model.ARTIFACT_FILES[TRAINING_STATE]``)::

    state.json          TrainingState: data set, watermark, mode, parent, the encoder's shape
    checkpoint.*        a TF checkpoint of the retrieval model's weights (``tf.train.Checkpoint(model=...)``)
    vocabulary.parquet  item index → item id and attribute ids, as the model was trained (indices are kept)
    replay.parquet      the replay set: one row per kept training row, its item indices (input, then target)

Serving never reads it; the plan_training stage downloads it from ``models:/<name>@champion`` into the run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from recsys_tasks.contracts.reports import TrainingMode

STATE_FILE = "state.json"
CHECKPOINT_PREFIX = "checkpoint"
VOCABULARY_FILE = "vocabulary.parquet"
REPLAY_FILE = "replay.parquet"


class TrainingState(BaseModel):
    """The version's lineage and what training it further needs to know."""

    dataset_key: str
    mode: TrainingMode
    watermark: int | None = Field(description="Last event timestamp of the history it trained on (unix seconds).")
    parent_version: str | None = Field(description="The champion an adapt run continued; None after a retrain.")
    adapt_runs_since_retrain: int = Field(ge=0)
    window: str | None = Field(None, description="The data set's period the run added, when incremental.")
    new_rows: int = Field(description="Training rows whose target was new to the parent (all rows after a retrain).")
    replay_rows: int = Field(description="Rows in replay.parquet, which the next adapt run replays.")
    encoder: dict = Field(description="EncoderConfig of the retrieval model (its shape).")
    attribute_ids: list[int] = Field(
        default_factory=list, description="The source attribute id of each attribute number from 1, as trained."
    )
    finetune_mode: str
    ranking_weight: float


def write_state(folder: Path, state: TrainingState, vocabulary: pa.Table, replay: list[np.ndarray]) -> None:
    """Everything but the checkpoint, which the training stage writes with TensorFlow."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / STATE_FILE).write_text(state.model_dump_json(indent=2))
    pq.write_table(vocabulary, folder / VOCABULARY_FILE)
    windows = pa.array([window.astype(np.int32) for window in replay], pa.list_(pa.int32()))
    pq.write_table(pa.table({"items": windows}), folder / REPLAY_FILE)


def read_state(folder: Path) -> TrainingState:
    return TrainingState.model_validate_json((folder / STATE_FILE).read_text())


def read_replay(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """The replay rows as (their item indices concatenated, row offsets)."""
    column = pq.read_table(folder / REPLAY_FILE)["items"].combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).astype(np.int32), column.offsets.to_numpy().astype(np.int64)


def has_state(folder: Path) -> bool:
    return (folder / STATE_FILE).is_file()

"""Tiny learnable sessions and a model trained on them, shared by the continual-training tests."""

from __future__ import annotations

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pytest

from recsys_tasks.contracts.splits import NextItemRows, _offsets
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.training.config import FinetuneConfig
from recsys_tasks.training.continual import compile_for, fresh_model
from recsys_tasks.training.finetune import train_with_validation

MAX_LENGTH = 6
FINETUNE = FinetuneConfig(epochs=4, batch_size=64, patience=4, learning_rate=3e-3, seed=0)


def chains(first_item: int, last_item: int, sessions: int, seed: int) -> NextItemRows:
    """Sessions walking a ring of items first_item..last_item one step at a time: the next item is learnable."""
    rng = np.random.default_rng(seed)
    span = last_item - first_item + 1
    sequences = [first_item + (rng.integers(span) + np.arange(rng.integers(3, 6))) % span for _ in range(sessions)]
    items = np.concatenate(sequences).astype(np.int32)
    return NextItemRows.prefixes(items, _offsets(np.array([len(s) for s in sequences])), MAX_LENGTH)


def ranking_holdout(rows: NextItemRows):
    batch = rows.take(np.arange(len(rows)), MAX_LENGTH)
    return batch["inputs"], np.zeros((len(rows), 1), np.int32), rows.items[rows.ends].astype(np.int64)


def hit_rate(model, rows: NextItemRows, n_items: int) -> float:
    inputs, _, targets = ranking_holdout(rows)
    inputs = np.where(inputs > model.encoder.config.n_items, 0, inputs)  # items the model never saw
    scores = (model.query_vectors(inputs).numpy() @ model.encoder.item_vectors().numpy().T)[:, 1 : n_items + 1]
    top = np.argsort(-scores, axis=1)[:, :5] + 1
    return float((top == targets[:, None]).any(axis=1).mean())


@pytest.fixture(scope="module")
def trained_on_old_items():
    rows = chains(1, 20, sessions=150, seed=0)
    model = fresh_model(EncoderConfig.of_size("tiny", n_items=20, max_length=MAX_LENGTH, dropout=0.0), np.ones(22), 0)
    compile_for(model, rows, FINETUNE, jit_compile=False)
    train_with_validation(model, rows, ranking_holdout(rows), 20, FINETUNE)
    return model, rows

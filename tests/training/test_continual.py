"""One continual update on tiny seeded data: replay selection, a grown catalogue, new items learnt."""

from __future__ import annotations

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pytest

from recsys_tasks.contracts.splits import NextItemRows, _offsets
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.training.config import AdaptConfig, FinetuneConfig
from recsys_tasks.training.continual import adapt_model, compile_for, fresh_model, select_replay
from recsys_tasks.training.finetune import train_with_validation

MAX_LENGTH = 6
FINETUNE = FinetuneConfig(epochs=4, batch_size=64, patience=4, learning_rate=3e-3, seed=0)


def _chains(first_item: int, last_item: int, sessions: int, seed: int) -> NextItemRows:
    """Sessions walking a ring of items first_item..last_item one step at a time: the next item is learnable."""
    rng = np.random.default_rng(seed)
    span = last_item - first_item + 1
    sequences = [first_item + (rng.integers(span) + np.arange(rng.integers(3, 6))) % span for _ in range(sessions)]
    items = np.concatenate(sequences).astype(np.int32)
    return NextItemRows.prefixes(items, _offsets(np.array([len(s) for s in sequences])), MAX_LENGTH)


def _holdout(rows: NextItemRows):
    batch = rows.take(np.arange(len(rows)), MAX_LENGTH)
    return batch["inputs"], np.zeros((len(rows), 1), np.int32), rows.items[rows.ends].astype(np.int64)


def _hit_rate(model, rows: NextItemRows, n_items: int) -> float:
    inputs, _, targets = _holdout(rows)
    inputs = np.where(inputs > model.encoder.config.n_items, 0, inputs)  # items the model never saw
    scores = (model.query_vectors(inputs).numpy() @ model.encoder.item_vectors().numpy().T)[:, 1 : n_items + 1]
    top = np.argsort(-scores, axis=1)[:, :5] + 1
    return float((top == targets[:, None]).any(axis=1).mean())


@pytest.fixture(scope="module")
def trained_on_old_items():
    rows = _chains(1, 20, sessions=150, seed=0)
    model = fresh_model(EncoderConfig.of_size("tiny", n_items=20, max_length=MAX_LENGTH, dropout=0.0), np.ones(22), 0)
    compile_for(model, rows, FINETUNE, jit_compile=False)
    train_with_validation(model, rows, _holdout(rows), 20, FINETUNE)
    return model, rows


def test_herding_spends_the_budget_in_proportion_to_each_target_items_rows(trained_on_old_items) -> None:
    model, rows = trained_on_old_items
    replay = select_replay(model, rows, size=60, rule="herding", seed=0)
    assert 55 <= len(replay) <= 60  # short of the budget only where an item has fewer rows than its share
    windows = {tuple(window) for window in replay.windows()}
    assert len(windows) <= len(replay) and windows <= {tuple(window) for window in rows.windows()}
    assert len(select_replay(model, rows, size=len(rows) + 5, rule="random", seed=0)) == len(rows)


@pytest.mark.parametrize("distillation", [False, True])
def test_an_update_grows_the_catalogue_learns_the_new_items_and_keeps_a_replay_set(
    trained_on_old_items, distillation: bool
) -> None:
    previous, old_rows = trained_on_old_items
    new_rows = _chains(21, 30, sessions=120, seed=1)
    replay = select_replay(previous, old_rows, size=80, rule="herding", seed=0)
    adapt = AdaptConfig(replay_size=80, distillation=distillation)
    model, outcome, next_replay = adapt_model(
        previous, new_rows, replay, 30, np.ones(32), _holdout(new_rows), FINETUNE, adapt
    )
    assert model.encoder.config.n_items == 30 and outcome.epochs_run >= 1
    assert _hit_rate(model, new_rows, 30) > 0.5 > _hit_rate(previous, new_rows, 20)
    assert _hit_rate(model, old_rows, 30) > 0.5  # the old chains are not forgotten
    targets = next_replay.items[next_replay.ends]
    assert len(next_replay) <= 80 and (targets <= 20).any() and (targets > 20).any()  # old and new rows kept

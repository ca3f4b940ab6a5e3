"""One continual update on tiny seeded data: replay selection, a grown catalogue, new items learnt."""

from __future__ import annotations

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pytest

from recsys_tasks.models.continual import grow_item_table
from recsys_tasks.training.config import AdaptConfig, PretrainConfig
from recsys_tasks.training.continual import ContinuedPretraining, adapt_model, continue_pretraining, empty_model
from recsys_tasks.training.replay import select_replay
from tests.training.conftest import FINETUNE, MAX_LENGTH, chains, hit_rate, ranking_holdout


@pytest.mark.parametrize("distillation", [False, True])
def test_an_update_grows_the_catalogue_learns_the_new_items_and_keeps_a_replay_set(
    trained_on_old_items, distillation: bool
) -> None:
    previous, old_rows = trained_on_old_items
    new_rows = chains(21, 30, sessions=120, seed=1)
    replay = select_replay(previous, old_rows, size=80, rule="herding", seed=0)
    adapt = AdaptConfig(replay_size=80, distillation=distillation)
    model, outcome, next_replay = adapt_model(
        previous, new_rows, replay, 30, np.ones(32), ranking_holdout(new_rows), FINETUNE, adapt
    )
    assert model.encoder.config.n_items == 30 and outcome.epochs_run >= 1
    assert hit_rate(model, new_rows, 30) > 0.5 > hit_rate(previous, new_rows, 20)
    assert hit_rate(model, old_rows, 30) > 0.5  # the old chains are not forgotten
    targets = next_replay.items[next_replay.ends]
    assert len(next_replay) <= 80 and (targets <= 20).any() and (targets > 20).any()  # old and new rows kept


def test_continued_pretraining_trains_the_new_items_rows_of_the_grown_encoder(trained_on_old_items) -> None:
    previous, _ = trained_on_old_items
    grown = empty_model(previous.encoder.config.model_copy(update={"n_items": 30}))
    grow_item_table(previous, grown)
    new_rows = chains(21, 30, sessions=120, seed=1)
    histories = new_rows.take(np.arange(len(new_rows)), MAX_LENGTH)["inputs"]
    config = PretrainConfig(model_size="tiny", epochs=3, learning_rate=3e-3, seed=0)
    new_item_rows = grown.encoder.item_vectors().numpy()[21:31]
    assert not new_item_rows.any()  # no attributes: new items start at zero
    losses = continue_pretraining(
        grown, ContinuedPretraining(config, histories, {"view_a": histories, "view_b": histories}), False
    )
    assert len(losses) == 3 and losses[-1]["pretrain_loss"] < losses[0]["pretrain_loss"]
    assert (np.linalg.norm(grown.encoder.item_vectors().numpy()[21:31], axis=1) > 0).all()

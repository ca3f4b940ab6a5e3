"""The replay set: herding and the loss rule spend the budget over target items in proportion to their rows."""

from __future__ import annotations

from collections import Counter

import numpy as np

from recsys_tasks.training.replay import next_item_losses, select_replay


def test_herding_spends_the_budget_in_proportion_to_each_target_items_rows(trained_on_old_items) -> None:
    model, rows = trained_on_old_items
    replay = select_replay(model, rows, size=60, rule="herding", seed=0)
    assert 55 <= len(replay) <= 60  # short of the budget only where an item has fewer rows than its share
    windows = {tuple(window) for window in replay.windows()}
    assert len(windows) <= len(replay) and windows <= {tuple(window) for window in rows.windows()}
    assert len(select_replay(model, rows, size=len(rows) + 5, rule="random", seed=0)) == len(rows)


def test_a_replay_set_of_size_zero_is_empty(trained_on_old_items) -> None:
    model, rows = trained_on_old_items
    assert len(select_replay(model, rows, size=0, rule="herding", seed=0)) == 0


def test_the_loss_rule_keeps_the_best_predicted_rows_of_each_target_item_in_herding_s_shares(
    trained_on_old_items,
) -> None:
    model, rows = trained_on_old_items
    by_loss = select_replay(model, rows, size=60, rule="loss", seed=0)
    by_herding = select_replay(model, rows, size=60, rule="herding", seed=0)
    targets, kept_targets = rows.items[rows.ends], by_loss.items[by_loss.ends]
    assert Counter(kept_targets.tolist()) == Counter(by_herding.items[by_herding.ends].tolist())
    losses, kept_losses = next_item_losses(model, rows), next_item_losses(model, by_loss)
    for item in np.unique(kept_targets):
        kept = np.sort(kept_losses[kept_targets == item])
        np.testing.assert_allclose(kept, np.sort(losses[targets == item])[: len(kept)], rtol=1e-5)

"""The replay set: herding spends the budget over target items in proportion to their rows."""

from __future__ import annotations

from recsys_tasks.training.replay import select_replay


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

"""Drift against the last accepted snapshot, which only data that passed the gate can become."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA
from recsys_tasks.errors import DataValidationError
from recsys_tasks.validation.config import DriftConfig
from recsys_tasks.validation.drift import SnapshotStore, drift_statistics, psi, take_snapshot
from recsys_tasks.validation.validate import DriftCheck, ValidationConfig, validate
from tests.validation.test_validate import START_OF_2024, clean_interactions, write_run

DATASET = "movielens-100k-/data/ml"


def interactions_with_a_busy_day(extra_users: int = 150, per_user: int = 6) -> pa.Table:
    """The clean data plus a crowd of new users all active on one day (a replayed log or a bot farm)."""
    columns = clean_interactions()
    for user in range(extra_users):
        for step in range(per_user):
            columns["user_id"].append(f"crowd-{user}")
            columns["item_id"].append((user * 7 + step) % 40)
            columns["timestamp"].append(START_OF_2024 + 10 * 86_400 + user * 10 + step)
            columns["rating"].append(3.0)
    return pa.table(columns, schema=INTERACTIONS_SCHEMA)


def test_psi_is_zero_for_equal_distributions_and_grows_with_the_shift():
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert 0 < psi([0.5, 0.5], [0.6, 0.4]) < psi([0.5, 0.5], [0.9, 0.1])


def test_unchanged_data_shows_no_drift():
    data = pl.from_arrow(pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))
    snapshot, items = take_snapshot(data, "run-1", top_items=10)
    drift = drift_statistics(data, snapshot, items)
    assert drift == pytest.approx(
        {"item_popularity_psi": 0.0, "history_length_psi": 0.0, "new_item_rate": 0.0, "daily_volume_ratio": 1.0}
    )


def test_new_items_and_a_busy_day_are_measured():
    baseline = pl.from_arrow(pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))
    snapshot, items = take_snapshot(baseline, "run-1", top_items=10)
    shifted = baseline.with_columns(
        pl.when(pl.col("user_id") == "user-0").then(999).otherwise(pl.col("item_id")).alias("item_id")
    )
    assert drift_statistics(shifted, snapshot, items)["new_item_rate"] == pytest.approx(6 / 300)
    busy = pl.from_arrow(interactions_with_a_busy_day())
    assert drift_statistics(busy, snapshot, items)["daily_volume_ratio"] > DriftConfig().max_daily_volume_ratio


def test_the_first_run_says_there_is_nothing_to_compare_and_becomes_the_baseline(tmp_path):
    store = SnapshotStore(str(tmp_path / "snapshots"))
    run = write_run(tmp_path, pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))

    summary = validate(run, ValidationConfig(), DriftCheck(store, DATASET, "run-1"))

    assert summary.drift is None and "nothing to compare with" in summary.drift_baseline
    snapshot, items = store.load(DATASET)
    assert snapshot.run_id == "run-1" and snapshot.rows == 300
    assert sorted(items["item_id"].to_pylist()) == list(range(40))


def test_a_busy_day_fails_the_gate_and_does_not_replace_the_baseline(tmp_path):
    store = SnapshotStore(str(tmp_path / "snapshots"))
    validate(
        write_run(tmp_path / "a", pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA)),
        ValidationConfig(),
        DriftCheck(store, DATASET, "run-1"),
    )
    same = validate(
        write_run(tmp_path / "b", pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA)),
        ValidationConfig(),
        DriftCheck(store, DATASET, "run-2"),
    )
    assert same.drift["item_popularity_psi"] == pytest.approx(0.0) and "run run-1" in same.drift_baseline
    assert store.load(DATASET)[0].run_id == "run-2"

    with pytest.raises(DataValidationError, match=r"drift: expect_column_max_to_be_between\(daily_volume_ratio\)"):
        validate(
            write_run(tmp_path / "c", interactions_with_a_busy_day()),
            ValidationConfig(),
            DriftCheck(store, DATASET, "run-3"),
        )
    assert store.load(DATASET)[0].run_id == "run-2"


def test_one_user_holding_most_interactions_fails_the_gate(tmp_path):
    columns = clean_interactions()
    bot_events = 200
    columns["user_id"] += ["bot"] * bot_events
    columns["item_id"] += [i % 40 for i in range(bot_events)]
    columns["timestamp"] += list(START_OF_2024 + 7 * 86_400 + np.arange(bot_events) * 3600)
    columns["rating"] += [5.0] * bot_events
    run = write_run(tmp_path, pa.table(columns, schema=INTERACTIONS_SCHEMA))
    with pytest.raises(
        DataValidationError,
        match=r"user_activity: one user holds too large a share .*: expect_column_max_to_be_between",
    ):
        validate(run, ValidationConfig())

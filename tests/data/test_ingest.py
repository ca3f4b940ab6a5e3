"""Ingest writes the canonical tables and, while raw ids are known, counts rows that look user/item swapped; an
incremental source appends one period a run to the data set's event store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from recsys_tasks.contracts.event_store import EventStore
from recsys_tasks.contracts.layout import INTERACTIONS_FILE, ITEMS_FILE, NEW_EVENTS_FILE, USERS_FILE, WINDOW_FILE
from recsys_tasks.contracts.reports import IngestWindow
from recsys_tasks.contracts.tables import CHANCE_SWAPPED_ROWS_COL, ITEMS_SCHEMA, LIKELY_SWAPPED_ROWS_COL
from recsys_tasks.data import sources
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.ingest import IngestSummary, ingest
from recsys_tasks.data.synthetic import SyntheticConfig, generate
from recsys_tasks.errors import ConfigError
from recsys_tasks.storage import RunDir
from tests.conftest import write_period_file


def sessions(swap_every: int = 0) -> pa.Table:
    """Users 1..40 each rate 12 items 1..60 in one session of 12 minutes; optionally user and item exchanged."""
    rows = [
        (str(user), (user * 7 + step) % 60 + 1, 1_700_000_000 + user * 86_400 + step * 60)
        for user in range(1, 41)
        for step in range(12)
    ]
    if swap_every:
        rows = [
            (str(item), int(user), time) if index % swap_every == 0 else (user, item, time)
            for index, (user, item, time) in enumerate(rows)
        ]
    users, items, times = zip(*rows)
    return pa.table({"user_id": users, "item_id": items, "timestamp": times, "rating": [1.0] * len(rows)})


def counted(interactions: pa.Table, tmp_path) -> tuple[int, int]:
    """(rows that look swapped, rows that would by chance) as ingest records them."""
    path = tmp_path / "events.parquet"
    pq.write_table(interactions, path)
    run = RunDir(str(tmp_path / "run"))
    ingest(run, IngestConfig(source="table", path=str(path)), b"key")
    users = run.read_parquet(USERS_FILE)
    assert pc.count_distinct(users["user_id"]).as_py() == users.num_rows
    return pc.sum(users[LIKELY_SWAPPED_ROWS_COL]).as_py(), pc.sum(users[CHANCE_SWAPPED_ROWS_COL]).as_py()


def test_a_clean_log_has_no_swapped_rows_beyond_chance(tmp_path):
    observed, by_chance = counted(sessions(), tmp_path)
    assert observed - by_chance <= 2


def test_user_and_item_exchanged_in_every_tenth_row_is_counted(tmp_path):
    observed, by_chance = counted(sessions(swap_every=10), tmp_path)
    assert observed - by_chance >= 0.05 * 480


def test_the_synthetic_generator_stays_far_below_the_gate(tmp_path):
    interactions, _ = generate(SyntheticConfig.preset("tiny", seed=0))
    observed, by_chance = counted(interactions, tmp_path)
    assert (observed - by_chance) / interactions.num_rows < 0.02


# --- incremental sources: one period a run, appended to the data set's event store --------------------------------

WEEK = 7 * 86_400
DAY_1 = datetime(2024, 1, 2, tzinfo=UTC)


def ingest_into(
    tmp_path: Path, run_name: str, config: IngestConfig, data_interval: tuple[datetime, datetime] | None = None
) -> tuple[IngestSummary, RunDir, EventStore]:
    """Ingest into a fresh run directory and the data set's event store under ``tmp_path``."""
    store = EventStore(str(tmp_path / "events"), "test-data-set")
    run = RunDir(str(tmp_path / "runs" / run_name))
    return ingest(run, config, b"key", store, data_interval), run, store


def periods_config(folder: Path) -> IngestConfig:
    return IngestConfig(source="periods", path=str(folder))


def test_period_files_are_taken_one_a_run_in_order_until_none_is_left(tmp_path):
    folder = tmp_path / "periods"
    write_period_file(folder, 0)
    write_period_file(folder, 1, first_item=21)  # items 41-60 are new
    write_period_file(folder, 2, sessions=10)

    first, run, store = ingest_into(tmp_path, "a", periods_config(folder))
    window = IngestWindow(**run.read_json(WINDOW_FILE))
    assert window == first.window
    assert (window.period, window.label, window.added, window.new_rows, window.history_rows) == (
        0,
        "period_0.txt",
        True,
        150,
        150,
    )
    assert (window.new_users, window.new_items, window.watermark_before) == (30, 40, None)
    assert (
        window.first_timestamp == sources.PERIOD_CLOCK_START and window.last_timestamp == window.first_timestamp + 149
    )
    store.accept(0)

    second, run, _ = ingest_into(tmp_path, "b", periods_config(folder))
    window = second.window
    assert (window.period, window.label, window.new_rows, window.new_users, window.new_items) == (
        1,
        "period_1.txt",
        150,
        30,
        20,
    )
    assert window.watermark_before == sources.PERIOD_CLOCK_START + 149
    assert window.first_timestamp == sources.PERIOD_CLOCK_START + sources.PERIOD_SECONDS
    assert run.read_parquet(INTERACTIONS_FILE).num_rows == second.rows == window.history_rows == 300
    assert run.read_parquet(NEW_EVENTS_FILE).equals(store.events(1))
    items = run.read_parquet(ITEMS_FILE)
    assert items["item_id"].to_pylist() == list(range(1, 61))
    assert items["attributes"].to_pylist() == [[]] * 60 and items.schema == ITEMS_SCHEMA
    assert run.read_parquet(USERS_FILE).num_rows == 60
    store.accept(1)

    third, _, _ = ingest_into(tmp_path, "c", periods_config(folder))
    assert (third.window.period, third.window.new_rows, third.window.history_rows) == (2, 50, 350)
    store.accept(2)

    exhausted, run, _ = ingest_into(tmp_path, "d", periods_config(folder))
    window = exhausted.window
    assert (window.period, window.added, window.new_rows, window.history_rows) == (None, False, 0, 350)
    assert window.note == f"all 3 period files of {folder} are ingested and accepted: nothing new"
    assert run.read_parquet(NEW_EVENTS_FILE).num_rows == 0 and run.read_parquet(INTERACTIONS_FILE).num_rows == 350
    assert len(store.partitions()) == 3


def test_a_period_ingested_again_adds_nothing_and_raw_ids_stay_out_of_the_store(tmp_path):
    folder = tmp_path / "periods"
    write_period_file(folder, 0)
    ingest_into(tmp_path, "a", periods_config(folder))

    # Not accepted yet (the gate has not judged it): the next run takes the same period.
    again, run, store = ingest_into(tmp_path, "b", periods_config(folder))

    assert (again.window.period, again.window.added, again.window.new_rows) == (0, False, 150)
    assert again.window.note == "period_0.txt is period 0 of test-data-set already: nothing added"
    assert [partition.rows for partition in store.partitions()] == [150]
    assert run.read_parquet(INTERACTIONS_FILE).num_rows == 150
    user_ids = store.read(accepted_only=False)["user_id"].to_pylist()
    assert all(len(user_id) == 32 and ":" not in user_id for user_id in user_ids)


def test_a_period_file_changed_after_it_was_accepted_is_refused(tmp_path):
    folder = tmp_path / "periods"
    write_period_file(folder, 0)
    _, _, store = ingest_into(tmp_path, "a", periods_config(folder))
    store.accept(0)
    write_period_file(folder, 0, sessions=31)

    with pytest.raises(ConfigError) as raised:
        ingest_into(tmp_path, "b", periods_config(folder))

    message = str(raised.value)
    assert "period_0.txt of test-data-set changed since it was ingested and accepted as period 0" in message
    assert "\n" not in message
    assert [(partition.period, partition.rows) for partition in store.partitions()] == [(0, 150)]


def test_a_fixed_file_replaces_its_period_while_the_gate_has_not_accepted_it(tmp_path):
    folder = tmp_path / "periods"
    write_period_file(folder, 0)
    ingest_into(tmp_path, "a", periods_config(folder))
    write_period_file(folder, 0, sessions=36)

    fixed, _, store = ingest_into(tmp_path, "b", periods_config(folder))

    assert (fixed.window.period, fixed.window.added, fixed.window.new_rows) == (0, True, 180)
    assert fixed.window.note == "period_0.txt replaced period 0 of test-data-set: 180 events"
    assert [(partition.period, partition.rows) for partition in store.partitions()] == [(0, 180)]


def hourly_events(tmp_path: Path, days: int = 3) -> Path:
    """A Parquet table: 10 users, one event an hour each from 2024-01-01 00:00 UTC for ``days`` days."""
    start = int(datetime(2024, 1, 1, tzinfo=UTC).timestamp())
    rows = [(f"user-{hour % 10}", hour % 50 + 1, start + hour * 3600) for hour in range(days * 24)]
    users, items, times = zip(*rows, strict=True)
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({"user_id": users, "item_id": items, "timestamp": times, "rating": [4.0] * len(rows)}), path
    )
    return path


def test_a_data_interval_window_takes_exactly_the_events_of_the_interval(tmp_path):
    path = hourly_events(tmp_path)
    config = IngestConfig(source="table", path=str(path), window="data_interval")

    summary, run, store = ingest_into(tmp_path, "a", config, (DAY_1, DAY_1 + timedelta(days=1)))

    new_events = run.read_parquet(NEW_EVENTS_FILE)
    times = new_events["timestamp"].to_pylist()
    # The event at the start is in, the one at the end (the next interval's first) is out.
    assert times == [int(DAY_1.timestamp()) + hour * 3600 for hour in range(24)]
    assert summary.window.label == "2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"
    assert (summary.window.period, summary.window.new_rows, summary.rows) == (0, 24, 24)
    assert store.partitions()[0].label == summary.window.label
    # The table's catalogue: every item of the source, not only those of the window.
    assert run.read_parquet(ITEMS_FILE).num_rows == 50

    # A zone other than UTC names the same moments.
    paris = timezone(timedelta(hours=1))
    again, _, _ = ingest_into(
        tmp_path, "b", config, (DAY_1.astimezone(paris), (DAY_1 + timedelta(days=1)).astimezone(paris))
    )
    assert (again.window.period, again.window.added) == (0, False)


def test_without_a_window_nothing_changes_and_no_store_is_involved(tmp_path):
    path = hourly_events(tmp_path)
    run = RunDir(str(tmp_path / "run"))

    summary = ingest(run, IngestConfig(source="table", path=str(path)), b"key")

    assert summary.rows == 72 and summary.window is None and summary.window_uri is None
    assert not run.exists(WINDOW_FILE) and not run.exists(NEW_EVENTS_FILE)
    assert not (tmp_path / "events").exists()


def test_an_interval_without_events_appends_nothing_and_a_window_needs_an_interval(tmp_path):
    config = IngestConfig(source="table", path=str(hourly_events(tmp_path)), window="data_interval")

    later = datetime(2024, 2, 1, tzinfo=UTC)
    summary, _, store = ingest_into(tmp_path, "a", config, (later, later + timedelta(days=1)))

    assert (summary.window.period, summary.window.new_rows) == (None, 0)
    assert summary.window.note.startswith("no events of table in the data interval 2024-02-01T00:00:00+00:00/")
    assert store.partitions() == []
    with pytest.raises(ConfigError, match="window 'data_interval' needs the run's data interval: Airflow passes it"):
        ingest_into(tmp_path, "b", config)
    with pytest.raises(ConfigError, match="is empty: its start must come before its end"):
        ingest_into(tmp_path, "c", config, (later, later))


def test_the_drifting_synthetic_set_gives_its_next_period_each_run(tmp_path):
    config = IngestConfig(source="synthetic", synthetic_size="drifting")

    first, _, store = ingest_into(tmp_path, "a", config)
    store.accept(0)
    second, run, _ = ingest_into(tmp_path, "b", config)

    assert (first.window.label, second.window.label) == ("period_0", "period_1")
    assert second.window.new_items == 20 and second.window.watermark_before < second.window.first_timestamp
    # Returning users: fewer users are new than the period has.
    assert 0 < second.window.new_users < store.partitions()[1].users
    assert second.rows == first.rows + second.window.new_rows == run.read_parquet(INTERACTIONS_FILE).num_rows
    assert run.read_parquet(ITEMS_FILE).num_rows == 320

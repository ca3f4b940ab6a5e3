"""The data gate runs real Great Expectations suites over small canonical tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pydantic
import pytest

from recsys_tasks.contracts.event_store import EventStore
from recsys_tasks.contracts.layout import (
    FEEDBACK_EVENTS_FILE,
    IMPRESSIONS_FILE,
    INTERACTIONS_FILE,
    ITEMS_FILE,
    NEW_EVENTS_FILE,
    USERS_FILE,
    WINDOW_FILE,
)
from recsys_tasks.contracts.reports import ValidationSummary
from recsys_tasks.contracts.tables import (
    CHANCE_SWAPPED_ROWS_COL,
    FEEDBACK_EVENTS_SCHEMA,
    IMPRESSIONS_SCHEMA,
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    LIKELY_SWAPPED_ROWS_COL,
    USERS_SCHEMA,
)
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.ingest import ingest
from recsys_tasks.errors import ConfigError, DataValidationError, StageSkipped
from recsys_tasks.storage import RunDir
from recsys_tasks.validation.drift import SnapshotStore
from recsys_tasks.validation.validate import DriftCheck, ValidationConfig, gini, validate
from tests.conftest import DIGINETICA_PERIODS, write_period_file

N_USERS = 50
INTERACTIONS_PER_USER = 6
N_ITEMS = 40
START_OF_2024 = 1_704_067_200

Columns = dict[str, list]


def clean_interactions() -> Columns:
    """50 users × 6 distinct items each, ratings 1..5, one event per user and hour in January 2024."""
    events = [(user, step) for user in range(N_USERS) for step in range(INTERACTIONS_PER_USER)]
    return {
        "user_id": [f"user-{user}" for user, _ in events],
        "item_id": [(user * 7 + step) % N_ITEMS for user, step in events],
        "timestamp": [START_OF_2024 + user * 3600 + step * 60 for user, step in events],
        "rating": [float(1 + (user + step) % 5) for user, step in events],
    }


def clean_items() -> pa.Table:
    return pa.table(
        {
            "item_id": list(range(N_ITEMS)),
            "title": [f"Item {item}" for item in range(N_ITEMS)],
            "attributes": [[item % 3, 3 + item % 4] for item in range(N_ITEMS)],
        },
        schema=ITEMS_SCHEMA,
    )


def write_run(tmp_path: Path, interactions: pa.Table) -> RunDir:
    run = RunDir(str(tmp_path / "run"))
    run.write_parquet(INTERACTIONS_FILE, interactions)
    run.write_parquet(ITEMS_FILE, clean_items())
    return run


def test_clean_data_passes_and_publishes_reports(tmp_path: Path) -> None:
    run = write_run(tmp_path, pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))

    summary = validate(run, ValidationConfig())

    assert summary.success
    assert summary.failed == []
    assert summary.evaluated > 0
    assert run.read_json("validation/result.json")["success"] is True
    assert summary.data_docs_uri.endswith("validation/data_docs/index.html")
    assert (tmp_path / "run/validation/data_docs/index.html").is_file()


def set_first_values(column: str, value: object, count: int = 5) -> Callable[[Columns], None]:
    def corrupt(columns: Columns) -> None:
        columns[column][:count] = [value] * count

    return corrupt


def duplicate_first_rows(count: int) -> Callable[[Columns], None]:
    def corrupt(columns: Columns) -> None:
        for values in columns.values():
            values.extend(values[:count])

    return corrupt


def add_user_with_one_interaction(columns: Columns) -> None:
    for name, value in {"user_id": "newcomer", "item_id": 1, "timestamp": START_OF_2024, "rating": 4.0}.items():
        columns[name].append(value)


def keep_first_rows(count: int) -> Callable[[Columns], None]:
    def corrupt(columns: Columns) -> None:
        for values in columns.values():
            del values[count:]

    return corrupt


def add_session_column(columns: Columns) -> None:
    columns["session_id"] = list(range(len(columns["user_id"])))


def drop_rating_column(columns: Columns) -> None:
    del columns["rating"]


def every_event_at_one_second(columns: Columns) -> None:
    columns["timestamp"] = [START_OF_2024] * len(columns["timestamp"])


def most_events_on_item_zero(columns: Columns) -> None:
    columns["item_id"] = [0 if index % 10 else item for index, item in enumerate(columns["item_id"])]


NEXT_WEEK = int(time.time()) + 7 * 86400

# corruption, whether the table keeps the canonical schema, texts the error must contain
CORRUPTIONS = {
    "null user ids": (set_first_values("user_id", None), True, ["expect_column_values_to_not_be_null(user_id)"]),
    "negative item ids": (
        set_first_values("item_id", -3),
        True,
        ["expect_column_values_to_be_between(item_id) — 5 of 300 rows outside [0, inf] (e.g. -3)"],
    ),
    "rating out of range": (
        set_first_values("rating", 7.5),
        True,
        ["expect_column_values_to_be_between(rating) — 5 of 300 rows outside [0, 5] (e.g. 7.5)"],
    ),
    "timestamp in the future": (
        set_first_values("timestamp", NEXT_WEEK),
        True,
        ["expect_column_values_to_be_between(timestamp) — 5 of 300 rows outside [788918400, ", f"(e.g. {NEXT_WEEK})"],
    ),
    "timestamp at 1970": (
        set_first_values("timestamp", 0),
        True,
        ["expect_column_values_to_be_between(timestamp) — 5 of 300 rows outside [788918400, ", "(e.g. 0)"],
    ),
    "flood of duplicated rows": (
        duplicate_first_rows(10),
        True,
        ["expect_compound_columns_to_be_unique(user_id,item_id,timestamp) — 20 of 310 rows repeated"],
    ),
    "user with one interaction": (
        add_user_with_one_interaction,
        True,
        ["user_activity: expect_column_values_to_be_between(n_interactions) — 1 of 51 rows outside [3, inf]"],
    ),
    "every event at one second": (
        every_event_at_one_second,
        True,
        [
            "statistics: too many events share one timestamp (no spread: their order would come from tie-breaks): "
            "expect_column_max_to_be_between(top_timestamp_share) — observed 1, expected [-inf, 0.5]",
            "statistics: too many users have all their events at one timestamp (their order would be lost)",
        ],
    ),
    "one item holds 90% of the events": (
        most_events_on_item_zero,
        True,
        [
            "item_activity: one item holds too large a share of all interactions: "
            "expect_column_max_to_be_between(share_of_interactions) — observed 0.9067, expected [-inf, 0.2]"
        ],
    ),
    "too few rows": (
        keep_first_rows(60),
        True,
        ["expect_table_row_count_to_be_between — observed 60, expected [100, 100000000]"],
    ),
    "extra column": (
        add_session_column,
        False,
        ["expect_table_columns_to_match_set — unexpected columns ['session_id']"],
    ),
    "missing column": (
        drop_rating_column,
        False,
        ["expect_table_columns_to_match_set — missing columns ['rating']", "(rating) — missing column rating"],
    ),
}


@pytest.mark.parametrize(("corrupt", "keep_schema", "expected_texts"), CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_data_fails_with_one_line_naming_the_problem(
    tmp_path: Path, corrupt: Callable[[Columns], None], keep_schema: bool, expected_texts: list[str]
) -> None:
    columns = clean_interactions()
    corrupt(columns)
    # Schema-breaking cases are written as they are: the gate, not pyarrow, must name the problem.
    interactions = pa.table(columns, schema=INTERACTIONS_SCHEMA) if keep_schema else pa.table(columns)
    run = write_run(tmp_path, interactions)

    with pytest.raises(DataValidationError) as raised:
        validate(run, ValidationConfig())

    message = str(raised.value)
    assert message.startswith("data validation failed: ")
    assert "\n" not in message
    for expected_text in expected_texts:
        assert expected_text in message
    assert message.endswith("validation/data_docs/index.html)")
    # The report is published even when the gate fails, so the failure can be inspected.
    assert run.read_json("validation/result.json")["success"] is False
    assert (tmp_path / "run/validation/data_docs/index.html").is_file()


def test_config_rejects_bounds_in_the_wrong_order() -> None:
    with pytest.raises(pydantic.ValidationError, match=r"min_rows \(500\) must not exceed max_rows \(100\)"):
        ValidationConfig(min_rows=500, max_rows=100)


def test_gini_is_zero_for_equal_counts_and_grows_as_one_item_takes_all() -> None:
    assert gini(np.array([5, 5, 5, 5])) == 0.0
    assert gini(np.array([0, 0, 0, 8])) == pytest.approx(0.75)
    assert gini(np.array([])) == 0.0


def test_the_concentration_bound_is_configurable(tmp_path: Path) -> None:
    run = write_run(tmp_path, pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))
    with pytest.raises(DataValidationError, match="interactions concentrate on a few items: "):
        validate(run, ValidationConfig(max_item_popularity_gini=0.01))


def test_rows_that_ingest_found_swapped_fail_the_gate_above_their_share(tmp_path: Path) -> None:
    run = write_run(tmp_path, pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))
    users = [f"user-{user}" for user in range(N_USERS)]
    observed = [7 if user < 5 else 0 for user in range(N_USERS)]  # 35 of 300 rows
    by_chance = [1 if user < 5 else 0 for user in range(N_USERS)]  # 5 of them would match by chance alone
    run.write_parquet(
        USERS_FILE,
        pa.table(
            {"user_id": users, LIKELY_SWAPPED_ROWS_COL: observed, CHANCE_SWAPPED_ROWS_COL: by_chance},
            schema=USERS_SCHEMA,
        ),
    )
    with pytest.raises(DataValidationError, match=r"user and item look swapped in some rows.* observed 0.1, expected"):
        validate(run, ValidationConfig())
    assert validate(run, ValidationConfig(max_likely_swapped_row_share=0.1)).success


# --- incremental runs: the gate judges the new period alone and accepts it in the event store ---------------------

DATASET = "test-data-set"


def judge(tmp_path: Path, run_name: str, config: IngestConfig, interval=None) -> tuple[RunDir, ValidationSummary]:
    """Ingest into a fresh run and validate it, with the drift check and event store of one data set."""
    store = EventStore(str(tmp_path / "events"), DATASET)
    run = RunDir(str(tmp_path / run_name))
    ingest(run, config, b"key", store, interval)
    drift_check = DriftCheck(SnapshotStore(str(tmp_path / "snapshots")), DATASET, run_name)
    return run, validate(run, ValidationConfig(), drift_check, events=store)


def test_good_periods_are_judged_alone_and_accepted_until_nothing_is_new(tmp_path: Path) -> None:
    folder = tmp_path / "periods"
    write_period_file(folder, 0)
    write_period_file(folder, 1)
    store = EventStore(str(tmp_path / "events"), DATASET)
    snapshots = SnapshotStore(str(tmp_path / "snapshots"))

    _, first = judge(tmp_path, "run-1", IngestConfig(source="periods", path=str(folder)))
    assert first.accepted_period == 0 and store.partitions()[0].accepted

    run, second = judge(tmp_path, "run-2", IngestConfig(source="periods", path=str(folder)))
    assert second.accepted_period == 1 and [partition.accepted for partition in store.partitions()] == [True, True]
    # Drift is of the new period against the last accepted one, not of the growing history.
    assert "run run-1" in second.drift_baseline and second.drift["new_item_rate"] == 0.0
    assert run.read_parquet(INTERACTIONS_FILE).num_rows == 300 and snapshots.load(DATASET)[0].rows == 150

    with pytest.raises(StageSkipped, match=f"all 2 period files of {folder} are ingested and accepted: nothing new"):
        judge(tmp_path, "run-3", IngestConfig(source="periods", path=str(folder)))


def daily_events(tmp_path: Path, bot_on_day: int) -> Path:
    """Three days of 30 users with 5 events each; on ``bot_on_day`` one more user makes 200 events."""
    rows = [
        (f"user-{user}", (user * 3 + step) % 40 + 1, START_OF_2024 + day * 86_400 + user * 600 + step * 60)
        for day in range(3)
        for user in range(30)
        for step in range(5)
    ]
    rows += [("bot", event % 40 + 1, START_OF_2024 + bot_on_day * 86_400 + 20_000 + event * 10) for event in range(200)]
    users, items, times = zip(*rows, strict=True)
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table({"user_id": users, "item_id": items, "timestamp": times, "rating": [4.0] * len(rows)}), path
    )
    return path


def test_a_rejected_period_is_not_accepted_and_no_later_history_holds_it(tmp_path: Path) -> None:
    config = IngestConfig(source="table", path=str(daily_events(tmp_path, bot_on_day=1)), window="data_interval")
    days = [datetime.fromtimestamp(START_OF_2024 + day * 86_400, UTC) for day in range(4)]
    store = EventStore(str(tmp_path / "events"), DATASET)

    judge(tmp_path, "day-0", config, (days[0], days[1]))
    with pytest.raises(DataValidationError, match="user_activity: one user holds too large a share"):
        judge(tmp_path, "day-1", config, (days[1], days[2]))
    assert [partition.accepted for partition in store.partitions()] == [True, False]
    assert SnapshotStore(str(tmp_path / "snapshots")).load(DATASET)[0].run_id == "day-0"

    run, summary = judge(tmp_path, "day-2", config, (days[2], days[3]))

    assert summary.accepted_period == 2
    history = run.read_parquet(INTERACTIONS_FILE)
    assert history.num_rows == 300 and history["timestamp"].to_pylist() == sorted(
        store.events(0)["timestamp"].to_pylist() + store.events(2)["timestamp"].to_pylist()
    )
    assert [partition.accepted for partition in store.partitions()] == [True, False, True]


def test_a_period_is_not_held_to_the_fewest_events_per_user_of_a_whole_history(tmp_path: Path) -> None:
    """Sessions of two actions: too short for leave-one-out as a whole data set, fine as a period of one."""
    write_period_file(tmp_path / "periods", 0, sessions=60, length=2)

    run, summary = judge(tmp_path, "run-1", IngestConfig(source="periods", path=str(tmp_path / "periods")))
    assert summary.accepted_period == 0

    whole = write_run(tmp_path / "whole", run.read_parquet(NEW_EVENTS_FILE))
    with pytest.raises(DataValidationError, match=r"user_activity: expect_column_values_to_be_between\(n_interactions"):
        validate(whole, ValidationConfig())
    with pytest.raises(ConfigError, match="holds period 0 of test-data-set: judging it needs that data set's event"):
        validate(run, ValidationConfig())


@pytest.mark.skipif(not DIGINETICA_PERIODS.is_dir(), reason="DIGINETICA periods are not in ../shared/data")
def test_the_first_two_real_diginetica_periods_pass_the_gate_one_a_run(tmp_path: Path) -> None:
    """Sessions of one or two actions abound: as periods they pass, and the second is measured against the first."""
    folder = tmp_path / "periods"
    folder.mkdir()
    for name in ("period_0.txt", "period_1.txt"):
        (folder / name).symlink_to(DIGINETICA_PERIODS / name)

    _, first = judge(tmp_path, "week-0", IngestConfig(source="periods", path=str(folder)))
    run, second = judge(tmp_path, "week-1", IngestConfig(source="periods", path=str(folder)))

    assert (first.accepted_period, second.accepted_period) == (0, 1)
    window = run.read_json(WINDOW_FILE)
    assert (window["new_rows"], window["new_users"], window["new_items"], window["history_rows"]) == (
        37_586,
        7_896,
        4_123,
        108_325,
    )
    assert second.drift["new_item_rate"] == pytest.approx(0.182, abs=0.001)


def write_serving_log(run: RunDir, propensity: float = 0.9, clicked_slates: int = 5, stray_event: bool = False) -> None:
    """Ten slates of two items each (propensities 0.9 and 0.1); the first ``clicked_slates`` have a click on top."""
    slates = [f"request-{n}" for n in range(10)]
    run.write_parquet(
        IMPRESSIONS_FILE,
        pa.table(
            {
                "request_id": [request for request in slates for _ in range(2)],
                "user_id": ["user-1"] * 20,
                "item_id": [1, 2] * 10,
                "position": [1, 2] * 10,
                "propensity": [propensity, 0.1] * 10,
                "timestamp": [START_OF_2024 + 86_400] * 20,
                "positive": [n < clicked_slates and position == 1 for n in range(10) for position in (1, 2)],
                "dismissed": [False] * 20,
            },
            schema=IMPRESSIONS_SCHEMA,
        ),
    )
    events = [(request, 1, "click") for request in slates[:clicked_slates]] + ([(slates[0], 3, "click")] * stray_event)
    run.write_parquet(
        FEEDBACK_EVENTS_FILE,
        pa.table(
            {
                "request_id": [request for request, _, _ in events],
                "item_id": [item for _, item, _ in events],
                "event": [kind for _, _, kind in events],
                "timestamp": [START_OF_2024 + 86_460] * len(events),
            },
            schema=FEEDBACK_EVENTS_SCHEMA,
        ),
    )


SERVING_LOG_FAULTS = {
    "a propensity of 0": (dict(propensity=0.0), "impressions: a propensity must be in (0, 1]"),
    "an event on an item its slate did not show": (
        dict(stray_event=True),
        "feedback_events: a feedback event names an item its slate did not show",
    ),
    "no click in any slate": (dict(clicked_slates=0), "feedback_statistics: share of slates with a click"),
    "a click in every slate": (dict(clicked_slates=10), "feedback_statistics: share of slates with a click"),
}


def test_a_sound_serving_log_passes_the_feedback_suites(tmp_path: Path) -> None:
    run = write_run(tmp_path, pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))
    write_serving_log(run)

    summary = validate(run, ValidationConfig())

    assert set(run.read_json("validation/result.json")["suites"]) >= {
        "impressions",
        "feedback_events",
        "feedback_statistics",
    }
    assert summary.success


@pytest.mark.parametrize(("fault", "named"), SERVING_LOG_FAULTS.values(), ids=SERVING_LOG_FAULTS.keys())
def test_a_faulty_serving_log_fails_the_gate_naming_its_suite(tmp_path: Path, fault: dict, named: str) -> None:
    run = write_run(tmp_path, pa.table(clean_interactions(), schema=INTERACTIONS_SCHEMA))
    write_serving_log(run, **fault)

    with pytest.raises(DataValidationError) as raised:
        validate(run, ValidationConfig(max_click_through=0.9))

    assert named in str(raised.value)

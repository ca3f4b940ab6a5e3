"""The data gate runs real Great Expectations suites over small canonical tables."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pydantic
import pytest

from recsys_tasks.contracts.layout import INTERACTIONS_FILE, ITEMS_FILE, USERS_FILE
from recsys_tasks.contracts.tables import (
    CHANCE_SWAPPED_ROWS_COL,
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    LIKELY_SWAPPED_ROWS_COL,
    USERS_SCHEMA,
)
from recsys_tasks.errors import DataValidationError
from recsys_tasks.storage import RunDir
from recsys_tasks.validation.validate import ValidationConfig, gini, validate

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

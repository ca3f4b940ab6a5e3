"""The Airflow adapter hands a task's data interval to the stages: a windowed ingest takes the run's interval."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsys_tasks.airflow_adapter import run_stage_in_airflow

START = pendulum.datetime(2024, 1, 2, tz="UTC")


def windowed_params(tmp_path: Path) -> dict:
    """A table of one event an hour on 2024-01-01 to 03, read by the data interval."""
    first = START.subtract(days=1).int_timestamp
    hours = range(72)
    path = tmp_path / "events.parquet"
    pq.write_table(
        pa.table(
            {
                "user_id": [f"user-{hour % 10}" for hour in hours],
                "item_id": [hour % 50 + 1 for hour in hours],
                "timestamp": [first + hour * 3600 for hour in hours],
                "rating": [4.0] * len(hours),
            }
        ),
        path,
    )
    return {"data_source": "table", "data_path": str(path), "data_window": "data_interval"}


@pytest.fixture
def airflow_task(adaptrec_home, monkeypatch) -> Path:
    """A home whose pseudonymisation key comes from the environment, as a worker's does."""
    monkeypatch.setenv("ADAPTREC_PSEUDONYMISATION_KEY", "test-key")
    return adaptrec_home


def test_a_scheduled_run_ingests_the_events_of_its_data_interval(airflow_task, tmp_path):
    context = {
        "params": windowed_params(tmp_path),
        "run_id": "scheduled__2024-01-02T00:00:00+00:00",
        "data_interval_start": START,
        "data_interval_end": START.add(days=1),
    }

    result = run_stage_in_airflow("ingest", context)

    assert result["window"]["label"] == "2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"
    assert result["window"]["new_rows"] == 24 and result["rows"] == 24
    assert list((airflow_task / "events").iterdir())[0].name.startswith("table-")


def test_a_run_without_a_data_interval_fails_a_windowed_ingest_in_one_line(airflow_task, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    context = {"params": windowed_params(tmp_path), "run_id": "manual__1", "data_interval_start": None}

    with pytest.raises(AirflowFailException, match="ingest: window 'data_interval' needs the run's data interval"):
        run_stage_in_airflow("ingest", context)

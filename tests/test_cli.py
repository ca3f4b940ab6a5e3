"""The ``recsys`` command: bad input gives one line naming the problem and exit status 2."""

from __future__ import annotations

import pytest

from recsys_tasks.contracts.layout import INTERACTIONS_FILE
from recsys_tasks.storage import RunDir
from tests.conftest import run_command


def assert_one_line_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    message = result.stderr.strip().splitlines()[-1]  # progress logs may come before it
    assert message.startswith("error:"), result.stderr
    for fragment in fragments:
        assert fragment in message, message


@pytest.mark.parametrize(
    ("arguments", "fragments"),
    [
        (["--set", "data_source=parquet"], ["data_source", "'movielens-25m', 'sequence' or 'table'"]),
        (["--set", "data_source=movielens-100k"], ["needs data_path"]),
        (["--set", "pretrain_epochs=-1"], ["pretrain_epochs", "greater than or equal to 0"]),
        (["--set", "colour=blue"], ["colour", "Extra inputs are not permitted"]),
        (["--conf", "{not json"], ["--conf is not valid JSON"]),
        (["--set", "data_source=movielens-100k", "--set", "data_path=/no/such/folder"], ["/no/such/folder/u.data"]),
    ],
)
def test_bad_params_and_paths(adaptrec_home, arguments, fragments):
    assert_one_line_error(run_command("recsys", "ingest", "--run-id", "cli-test", *arguments), *fragments)


def test_recommend_without_a_champion_says_what_to_do(adaptrec_home):
    result = run_command("recsys", "recommend", "--history", "1,2,3")
    assert_one_line_error(result, "has no 'champion' version", "make run")


def test_recommend_rejects_a_malformed_history(adaptrec_home):
    assert_one_line_error(run_command("recsys", "recommend", "--history", "1,two"), "comma-separated integer")


def test_a_stage_prints_its_summary_as_json(adaptrec_home):
    result = run_command("recsys", "ingest", "--run-id", "cli-test", "--set", "synthetic_size=tiny")
    assert result.returncode == 0, result.stderr
    assert '"source": "synthetic"' in result.stdout
    assert RunDir.for_run(str(adaptrec_home / "runs"), "cli-test").exists(INTERACTIONS_FILE)


def test_report_without_a_finished_run_says_what_to_do(adaptrec_home):
    assert_one_line_error(run_command("recsys", "report"), "no finished run under", "make run")


def test_a_stage_with_nothing_to_do_says_so_and_succeeds(adaptrec_home):
    result = run_command("recsys", "batch_recommend", "--run-id", "cli-test")
    assert result.returncode == 0, result.stderr
    assert "batch_recommend skipped: batch_recommendations is off for this run" in result.stdout


def test_validate_prints_its_verdict_not_the_data_library_log(adaptrec_home):
    assert run_command("recsys", "ingest", "--run-id", "cli-test", "--set", "synthetic_size=tiny").returncode == 0
    quiet = run_command("recsys", "validate", "--run-id", "cli-test", "--set", "synthetic_size=tiny")
    assert quiet.returncode == 0, quiet.stderr
    assert '"success": true' in quiet.stdout
    assert len(quiet.stderr.splitlines()) <= 4, quiet.stderr  # the stage line and the drift line
    asked = run_command(
        "recsys",
        "validate",
        "--run-id",
        "cli-test",
        "--set",
        "synthetic_size=tiny",
        env={"ADAPTREC_GREAT_EXPECTATIONS_LOG_LEVEL": "INFO"},
    )
    assert len(asked.stderr.splitlines()) > 100, asked.stderr  # Great Expectations' own INFO lines are back


def test_a_stage_takes_the_data_interval_from_the_command_line(adaptrec_home, tmp_path):
    path = tmp_path / "events.csv"
    path.write_text(
        "user_id,item_id,timestamp,rating\n"
        + "".join(f"u{h % 7},{h % 9 + 1},{1_704_067_200 + h * 3600},4\n" for h in range(72))
    )
    window = ["--set", "data_source=table", "--set", f"data_path={path}", "--set", "data_window=data_interval"]

    interval = ["--data-interval-start", "2024-01-02", "--data-interval-end", "2024-01-03T00:00:00+00:00"]

    result = run_command("recsys", "ingest", "--run-id", "cli-window", *window, *interval)

    assert result.returncode == 0, result.stderr
    assert '"label": "2024-01-02T00:00:00+00:00/2024-01-03T00:00:00+00:00"' in result.stdout
    assert '"new_rows": 24' in result.stdout
    only_start = run_command(
        "recsys", "ingest", "--run-id", "cli-window", *window, "--data-interval-start", "2024-01-02"
    )
    assert_one_line_error(only_start, "give both --data-interval-start and --data-interval-end, or neither")

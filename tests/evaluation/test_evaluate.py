"""The evaluate stage on a tiny trained run: an adapt run is also judged on its fresh and stability holdouts."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from recsys_tasks.contracts.layout import REPORT_FILE, SEQUENCES_FILE
from recsys_tasks.contracts.reports import CHAMPION, FRESH, MODEL, STABILITY, EvaluationReport
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.contracts.tracking import RunTracker, connect
from recsys_tasks.evaluation.config import EvaluateConfig
from recsys_tasks.evaluation.evaluate import evaluate
from recsys_tasks.pipeline import run_dir
from tests.conftest import tiny_champion, write_training_plan

# The users' mean metrics, which add up over a partition of the users (coverage does not: it counts distinct items).
MEAN_METRICS = ("hr_at_10", "ndcg_at_10", "recall_at_20", "mrr")
FAST = EvaluateConfig(latency_calls=3)


@pytest.fixture(scope="module")
def champion_home(tmp_path_factory, trained_tiny_run):
    """A home whose champion (version 1) is the session's tiny model, and the folder of the run it was trained in."""
    return tiny_champion(tmp_path_factory.mktemp("evaluate-home"), "night-1", trained_tiny_run), trained_tiny_run


def fresh_run(champion_home, run_id: str):
    """A copy of the trained run under ``run_id``, not yet evaluated."""
    settings, trained_run = champion_home
    shutil.copytree(trained_run, run_dir(run_id, settings).uri)
    return settings, run_dir(run_id, settings)


def test_an_adapt_run_is_ranked_with_the_champion_on_both_holdouts(champion_home):
    settings, run = fresh_run(champion_home, "adapt-night")
    test_times = LeaveOneOutSplits.load(run).held_out_timestamps("test")
    watermark = int(np.median(test_times))
    write_training_plan(run.uri, mode="adapt", champion_version="1", watermark=watermark, adapt_runs_since_retrain=1)
    tracker = RunTracker.for_airflow_run(settings, "adapt-night")

    report = evaluate(run, FAST, tracker.client, settings.model_name, tracker)

    fresh = int((test_times > watermark).sum())
    assert report.holdout_users == {FRESH: fresh, STABILITY: len(test_times) - fresh}
    assert sum(report.holdout_users.values()) == report.users and min(report.holdout_users.values()) > 0
    assert {holdout: set(rows) for holdout, rows in report.holdouts.items()} == {
        FRESH: {MODEL, CHAMPION},
        STABILITY: {MODEL, CHAMPION},
    }
    # Same protocol, same users: each holdout's mean, weighted by its users, adds up to the whole split's.
    for name in (MODEL, CHAMPION):
        for metric in MEAN_METRICS:
            combined = sum(report.holdouts[h][name][metric] * report.holdout_users[h] for h in (FRESH, STABILITY))
            assert combined / report.users == pytest.approx(report.metrics[name][metric], abs=1e-9), (name, metric)
    stored = EvaluationReport(**run.read_json(REPORT_FILE))
    assert (stored.holdouts, stored.holdout_users) == (report.holdouts, report.holdout_users)
    logged = tracker.client.get_run(tracker.run_id).data.metrics
    assert logged["champion_stability_ndcg_at_10"] == pytest.approx(report.holdouts[STABILITY][CHAMPION]["ndcg_at_10"])
    assert logged[f"{FRESH}_users"] == report.holdout_users[FRESH]


@pytest.mark.parametrize("plan", [None, "retrain"])
def test_a_retrain_or_a_run_without_a_plan_has_no_holdouts(champion_home, plan):
    settings, run = fresh_run(champion_home, f"retrain-{plan}")
    if plan is not None:
        write_training_plan(run.uri, mode=plan, champion_version="1", watermark=1_711_321_363)

    report = evaluate(run, FAST, connect(settings), settings.model_name)

    assert report.holdouts == {} and report.holdout_users == {}
    assert CHAMPION in report.metrics  # the champion is still ranked on the whole test split


def test_an_empty_holdout_is_left_out_with_a_log_line(champion_home, caplog):
    settings, run = fresh_run(champion_home, "adapt-nothing-new")
    latest = int(LeaveOneOutSplits.load(run).held_out_timestamps("test").max())
    write_training_plan(run.uri, mode="adapt", champion_version="1", watermark=latest)
    config = FAST.model_copy(update={"compare_with_champion": False})

    with caplog.at_level(logging.INFO, logger="recsys_tasks.evaluation.evaluate"):
        report = evaluate(run, config, connect(settings), settings.model_name)

    assert report.holdout_users == {STABILITY: report.users}
    assert set(report.holdouts) == {STABILITY} and set(report.holdouts[STABILITY]) == {MODEL}
    assert report.holdouts[STABILITY][MODEL] == pytest.approx(report.metrics[MODEL])
    assert "the fresh holdout has no test user" in caplog.text


def test_an_adapt_run_whose_sequences_lack_times_is_judged_on_the_whole_split_only(champion_home, caplog):
    settings, run = fresh_run(champion_home, "adapt-untimed")
    run.write_parquet(SEQUENCES_FILE, run.read_parquet(SEQUENCES_FILE).drop_columns(["timestamps"]))
    write_training_plan(run.uri, mode="adapt", champion_version="1", watermark=1_711_321_363)

    with caplog.at_level(logging.WARNING, logger="recsys_tasks.evaluation.evaluate"):
        report = evaluate(run, FAST, connect(settings), settings.model_name)

    assert report.holdouts == {} and CHAMPION in report.metrics
    assert "adapt run without timestamps in the sequences" in caplog.text

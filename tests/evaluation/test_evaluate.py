"""The evaluate stage on a tiny trained run: an adapt run is also judged on its fresh and stability holdouts."""

from __future__ import annotations

import logging
import shutil
import uuid
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pytest

from recsys_tasks.contracts.exported_model import SequentialRecommender
from recsys_tasks.contracts.feedback_store import FeedbackEvent, FeedbackStore, LoggedSlate, ShownItem
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR, REPORT_FILE, SEQUENCES_FILE
from recsys_tasks.contracts.reports import CHAMPION, FRESH, MODEL, STABILITY, EvaluationReport
from recsys_tasks.contracts.scoring import item_ids_of
from recsys_tasks.contracts.slate_policy import SlatePolicy, request_seed
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


def log_slates(model, histories: list[list[int]], store_uri: str, model_name: str, policy: SlatePolicy) -> None:
    """The slates ``model`` would have been served under ``policy`` (k = 3) for each history, in the feedback
    store as the serving app logs them; the user clicks a shown item when it is the history's own newest item's
    neighbour in the catalogue order (a fixed, policy-independent taste)."""
    rng = np.random.default_rng(5)
    slates, events = [], []
    for history in histories:
        request_id = str(uuid.UUID(int=int(rng.integers(2**62)), version=4))
        ranked = model.recommend([history[:-1]], [policy.candidates], [[]])[0]
        shown = policy.choose(3, policy.candidates, request_seed(request_id))
        items = [
            ShownItem(item_id=ranked.item_ids[index], position=n, score=ranked.scores[index], propensity=propensity)
            for n, (index, propensity) in enumerate(zip(shown.chosen.tolist(), shown.propensities.tolist()), start=1)
        ]
        served_at = datetime.now(UTC) - timedelta(hours=1)
        slates.append(
            LoggedSlate(
                request_id=request_id,
                served_at=served_at,
                user_pseudonym=None,
                model_name=model_name,
                model_version="1",
                variant="float32",
                policy=policy.name,
                exploration=policy.share_explored,
                candidates=policy.candidates,
                history=history[:-1],
                exclude=[],
                k=3,
                items=items,
            )
        )
        events += [
            FeedbackEvent(
                request_id=request_id, item_id=item.item_id, event="click", occurred_at=served_at, received_at=served_at
            )
            for item in items
            if abs(item.item_id - history[-1]) <= 3
        ]
    FeedbackStore.open(store_uri).write(slates, events)


def evaluated_with_a_serving_log(champion_home, run_id: str, users: int, policy: SlatePolicy, store_uri: str):
    """A fresh run evaluated with a feedback store holding the slates its own model served ``users`` users under
    ``policy``; the report and the run's tracker."""
    settings, run = fresh_run(champion_home, run_id)
    splits = LeaveOneOutSplits.load(run)
    item_ids = item_ids_of(run, splits.n_items)
    histories = [item_ids[sequence[sequence > 0]].tolist() for sequence in splits.sequences[:users]]
    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        model = SequentialRecommender.from_folder(folder)
    log_slates(model, histories, store_uri, settings.model_name, policy)
    tracker = RunTracker.for_airflow_run(settings, run_id)
    return evaluate(run, FAST, tracker.client, settings.model_name, tracker, feedback_uri=store_uri), run, tracker


def test_the_model_and_the_champion_are_judged_on_the_serving_log(champion_home, tmp_path):
    store_uri = f"sqlite:///{tmp_path / 'feedback.db'}"
    policy = SlatePolicy("epsilon_greedy", 0.3, 10)

    report, run, tracker = evaluated_with_a_serving_log(champion_home, "feedback-night", 300, policy, store_uri)

    off_policy = report.off_policy
    assert off_policy.reason is None and off_policy.slates_used == 300 and off_policy.shown == 900
    assert off_policy.clicks > 0
    # The run's model is the champion and logged the slates itself: every importance weight is one, so IPS is
    # exactly the logged click-through, for both.
    for name in (MODEL, CHAMPION):
        assert off_policy.estimates[name]["ips"].value == pytest.approx(off_policy.logged.value)
        assert set(off_policy.estimates[name]) == {"ips", "snips", "dr"}
    assert EvaluationReport(**run.read_json(REPORT_FILE)).off_policy == off_policy
    logged = mlflow.get_run(tracker.run_id).data.metrics
    assert logged["model_offpolicy_snips_value"] == pytest.approx(off_policy.estimates[MODEL]["snips"].value)


def test_a_greedy_serving_log_gives_no_estimate_and_says_why(champion_home, tmp_path):
    store_uri = f"sqlite:///{tmp_path / 'feedback.db'}"

    report, _, _ = evaluated_with_a_serving_log(champion_home, "greedy-night", 20, SlatePolicy("greedy"), store_uri)

    assert report.off_policy.slates == 20 and not report.off_policy.estimates
    assert "every logged slate was served greedily" in report.off_policy.reason

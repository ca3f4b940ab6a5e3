"""Registration tags a version with its lineage, read from the exported model's training state and the run's plan."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import mlflow
import pytest

from recsys_tasks import constants
from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, TRAINING_STATE
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
from recsys_tasks.contracts.reports import EvaluationReport, OffPolicyReport, PolicyEstimate, TrainingPlan
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.contracts.training_state import STATE_FILE
from recsys_tasks.pipeline import run_dir
from recsys_tasks.registry.model_card import publish_run_model_card
from recsys_tasks.registry.register import (
    keep_first_version,
    lineage_tags,
    logged_model_id,
    register,
    versions_of_run,
)
from recsys_tasks.settings import Settings
from tests.conftest import write_training_plan, write_training_state

LINEAGE_TAGS = {
    constants.TAG_DATASET,
    constants.TAG_TRAINING_MODE,
    constants.TAG_TRAINING_REASON,
    constants.TAG_PARENT_VERSION,
    constants.TAG_WINDOW,
    constants.TAG_WATERMARK,
    constants.TAG_REPLAY_ROWS,
    constants.TAG_NEW_ROWS,
    constants.TAG_ADAPT_RUNS,
}
REASON = "auto: 18% of the rows are new since version 3 (≤ 30%), 1 adapt run since the last retrain (< 4)"


def figures(value: float) -> dict[str, float]:
    return {"hr_at_10": value, "ndcg_at_10": value, "recall_at_20": value, "mrr": value}


# What the evaluate stage reports for an adapted model (the figures do not matter to registration).
REPORT = EvaluationReport(
    metrics={"model": figures(0.12), "champion": figures(0.11)},
    champion_version="3",
    users=400,
    items=200,
    holdouts={
        "fresh": {"model": figures(0.1432), "champion": figures(0.1)},
        "stability": {"model": figures(0.0987), "champion": figures(0.1)},
    },
    holdout_users={"fresh": 150, "stability": 250},
)


@pytest.fixture(scope="module")
def home(tmp_path_factory, trained_tiny_run) -> tuple[Settings, Path]:
    return Settings(home=tmp_path_factory.mktemp("register-home")), trained_tiny_run


def registered(home, run_id: str, plan: dict | None = None, state: dict | None = None):
    """Register a copy of the trained run as Airflow run ``run_id``, after writing its plan and training state."""
    settings, trained_run = home
    run = run_dir(run_id, settings)
    shutil.copytree(trained_run, run.uri)
    if plan is not None:
        write_training_plan(run.uri, **plan)
    if state is not None:
        write_training_state(run.uri, **state)
    else:  # as exported before versions carried a training state
        shutil.rmtree(f"{run.path(EXPORTED_MODEL_DIR)}/{ARTIFACT_FILES[TRAINING_STATE]}", ignore_errors=True)
    tracker = RunTracker.for_airflow_run(settings, run_id)
    registration = register(run, tracker.client, settings.model_name, tracker.run_id, run_id, REPORT)
    return run, tracker.client, registration


def test_an_adapted_version_carries_its_lineage_and_its_training_state(home, tmp_path):
    plan = {"mode": "adapt", "reason": REASON, "champion_version": "3", "watermark": 1_719_000_000, "window": "p4"}
    state = {
        "mode": "adapt",
        "parent_version": "3",
        "window": "p4",
        "watermark": 1_719_968_525,
        "new_rows": 640,
        "replay_rows": 3,
        "adapt_runs_since_retrain": 2,
    }
    run, client, registration = registered(home, "adapt-night", plan, state)
    retried = register(run, client, registration.model_name, registration.mlflow_run_id, "adapt-night", REPORT)

    assert (retried.version, retried.newly_registered) == (registration.version, False)
    tags = client.get_model_version(registration.model_name, registration.version).tags
    assert {tag: value for tag, value in tags.items() if tag in LINEAGE_TAGS} == {
        constants.TAG_DATASET: "synthetic-tiny-seed0",
        constants.TAG_TRAINING_MODE: "adapt",
        constants.TAG_TRAINING_REASON: REASON,
        constants.TAG_PARENT_VERSION: "3",
        constants.TAG_WINDOW: "p4",
        constants.TAG_WATERMARK: "1719968525",  # the version's own watermark (its state), not its parent's (plan)
        constants.TAG_REPLAY_ROWS: "3",
        constants.TAG_NEW_ROWS: "640",
        constants.TAG_ADAPT_RUNS: "2",
    }
    # The next adapt run downloads the state from the registered version.
    model = Path(mlflow.artifacts.download_artifacts(registration.model_uri, dst_path=str(tmp_path)))
    assert json.loads(next(model.rglob(STATE_FILE)).read_text())["parent_version"] == "3"

    card = publish_run_model_card(run, client, "synthetic-tiny-seed0", "adapt-night", registration, REPORT, None)
    text = mlflow.artifacts.load_text(card)
    training = text[text.index("## Training") : text.index("## Test metrics")]
    for line in (
        "- mode: adapt",
        f"- reason: {REASON}",
        "- parent version: version 3",
        "- window: p4",
        "- data watermark: 2024-07-03 01:02:05 UTC (1719968525)",
        "- new rows: 640",
        "- replay rows: 3",
        "| stability | 250 | model | 0.0987 | 0.0987 | 0.0987 | 0.0987 |",
        "| fresh | 150 | champion | 0.1000 |",
    ):
        assert line in training, line


def test_a_version_without_plan_or_training_state_has_no_lineage_tags_and_no_training_section(home):
    run, client, registration = registered(home, "old-night")

    tags = client.get_model_version(registration.model_name, registration.version).tags
    assert registration.newly_registered and not LINEAGE_TAGS & set(tags)
    assert tags[constants.TAG_AIRFLOW_RUN_ID] == "old-night"
    retrain_report = REPORT.model_copy(update={"holdouts": {}, "holdout_users": {}})
    card = publish_run_model_card(run, client, "synthetic-tiny-seed0", "old-night", registration, retrain_report, None)
    assert "## Training" not in mlflow.artifacts.load_text(card)


def test_of_two_overlapping_attempts_the_first_registered_version_is_the_runs_and_the_other_is_deleted(home):
    _, client, first = registered(home, "overlapping-night")
    # The other attempt searched before the first one registered, then registered a version of its own.
    _, _, other = registered(home, "overlapping-night-other-attempt")
    client.set_model_version_tag(other.model_name, other.version, constants.TAG_AIRFLOW_RUN_ID, "overlapping-night")
    created = client.get_model_version(other.model_name, other.version)

    kept = keep_first_version(client, first.model_name, "overlapping-night", created)

    assert str(kept.version) == first.version
    assert [str(v.version) for v in versions_of_run(client, first.model_name, "overlapping-night")] == [first.version]
    with pytest.raises(mlflow.MlflowException, match="not found"):
        client.get_logged_model(logged_model_id(created))
    # The first attempt, looking again, keeps its own version.
    own = client.get_model_version(first.model_name, first.version)
    assert str(keep_first_version(client, first.model_name, "overlapping-night", own).version) == first.version


def test_a_plan_without_training_state_gives_the_planned_mode_and_reason():
    plan = TrainingPlan(requested="auto", mode="retrain", reason="no champion yet", dataset_key="movielens-1m")
    assert lineage_tags(None, plan) == {
        constants.TAG_DATASET: "movielens-1m",
        constants.TAG_TRAINING_MODE: "retrain",
        constants.TAG_TRAINING_REASON: "no champion yet",
        constants.TAG_ADAPT_RUNS: "0",
    }
    assert lineage_tags(None, None) == {}


def test_the_model_card_shows_the_off_policy_estimates_or_why_there_are_none(home):
    run, client, registration = registered(home, "ope-night")
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    estimate = PolicyEstimate(value=0.0521, lower=0.0480, upper=0.0563)
    off_policy = OffPolicyReport(
        window_start=now - timedelta(days=7),
        window_end=now,
        slates=2400,
        slates_used=2350,
        shown=23500,
        clicks=1210,
        logged=PolicyEstimate(value=0.0515, lower=0.0489, upper=0.0541),
        estimates={"model": {"snips": estimate}, "champion": {"snips": estimate}},
        differences={"snips": PolicyEstimate(value=0.0, lower=-0.0012, upper=0.0011)},
    )
    with_estimates = REPORT.model_copy(update={"off_policy": off_policy})
    without = REPORT.model_copy(
        update={"off_policy": off_policy.model_copy(update={"estimates": {}, "reason": "no slate was logged"})}
    )

    text = mlflow.artifacts.load_text(
        publish_run_model_card(run, client, "synthetic-tiny-seed0", "ope-night", registration, with_estimates, None)
    )
    section = text[text.index("## Off-policy estimates") : text.index("## Serving variants")]
    assert "2,350 logged slates (23,500 shown items, 1,210 clicked or bought)" in section
    assert "| champion | snips | 0.0521 | [0.0480, 0.0563] |" in section
    assert "| model − champion (paired) | snips | +0.0000 | [-0.0012, +0.0011] |" in section
    text = mlflow.artifacts.load_text(
        publish_run_model_card(run, client, "synthetic-tiny-seed0", "ope-night", registration, without, None)
    )
    assert "None for 2026-11-26 12:00 – 2026-12-03 12:00 UTC: no slate was logged." in text

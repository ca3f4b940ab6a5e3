"""The pipeline factory: stage lookup, the end-of-run summary, and what it hands an incremental run's stages."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from recsys_tasks.contracts.event_store import EventStore
from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, MODEL_META, TRAINING_STATE
from recsys_tasks.contracts.layout import SEQUENCES_FILE
from recsys_tasks.contracts.training_state import read_state
from recsys_tasks.errors import ConfigError
from recsys_tasks.pipeline import STAGES, run_pipeline, run_stage
from recsys_tasks.reporting import render_summary
from recsys_tasks.settings import Settings


def test_an_unknown_stage_is_refused():
    with pytest.raises(ConfigError, match="unknown stage 'deploy'"):
        run_stage("deploy", {}, "run")
    assert list(STAGES)[0] == "ingest" and list(STAGES)[-1] == "report"


def test_the_summary_shows_the_model_first_and_the_gate_reasons():
    summary = {
        "run_id": "r1",
        "users": 10,
        "items": 5,
        "metrics": {
            name: {m: value for m in ("hr_at_10", "ndcg_at_10", "recall_at_20", "mrr", "coverage_at_10")}
            for name, value in (("champion", 0.3), ("model", 0.2), ("popularity", 0.1))
        },
        "data_gate": {"expectations": 21, "drift": {"new_item_rate": 0.25}, "baseline": "run r0", "data_docs": "x"},
        "gate": {"passed": False, "reasons": ["no_regression_vs_champion: FAIL"], "champion_before": "3"},
        "registration": {"model_name": "m", "version": "4"},
        "champion_uri": "models:/m@champion",
        "tracking_uri": "sqlite:///x.db",
        "how_to_look": {"MLflow UI": "make mlflow-ui"},
    }
    text = render_summary(summary)
    assert text.index("│ model") < text.index("│ popularity") < text.index("│ champion")
    assert "Gate REJECTED: m version 4 — champion stays at 3" in text
    assert "no_regression_vs_champion: FAIL" in text
    assert "Data gate: all 21 expectations passed; drift: new item rate 0.250" in text


def test_the_drifting_stream_runs_a_period_a_run_through_ingest_and_the_gate(adaptrec_home):
    """The factory hands ingest and validate the data set's event store: each run adds the next accepted period."""
    settings = Settings(home=adaptrec_home)
    params = {"synthetic_size": "drifting"}
    for run_id, period in (("week-0", 0), ("week-1", 1)):
        ingested = run_stage("ingest", params, run_id, settings)
        validated = run_stage("validate", params, run_id, settings, upstream=ingested)
        assert ingested["window"]["period"] == validated["accepted_period"] == period

    store = EventStore(settings.resolved_events_uri, "synthetic-drifting-seed0")
    assert [partition.accepted for partition in store.partitions()] == [True, True]
    assert ingested["rows"] == store.read().num_rows and ingested["window"]["new_items"] == 20


ADAPTING = {
    "synthetic_size": "drifting",
    "batch_recommendations": False,
    "model_size": "tiny",
    "pretrain_epochs": 1,
    "finetune_epochs": 3,
    "adaptation": {"replay_size": 100, "learning_rate": 2e-3},
    # Every version is crowned, so that the next run's plan reads the adapted one (the gate has tests of its own).
    "min_lift_over_popularity": 0.0,
    "max_regression_vs_champion": 1.0,
}


def _training_targets_after(run_dir: str, watermark: int) -> int:
    """Counted from the stored sequences: targets (not a user's first, validation or test item) after the watermark."""
    sequences = pl.read_parquet(f"{run_dir}/{SEQUENCES_FILE}")
    return sum(sum(1 for time in times[1:-2] if time > watermark) for times in sequences["timestamps"].to_list())


@pytest.fixture(scope="module")
def two_weeks(tmp_path_factory):
    """Two runs over consecutive periods of the drifting stream: the first retrains, the second adapts."""
    settings = Settings(home=tmp_path_factory.mktemp("continual"))
    first = run_pipeline(ADAPTING, "week-0", settings)
    second = run_pipeline(ADAPTING, "week-1", settings)
    return settings, first, second


def test_the_first_run_retrains_and_the_next_adapts_from_the_champion(two_weeks):
    settings, first, second = two_weeks
    assert (
        first["plan_training"]["mode"] == "retrain"
        and first["plan_training"]["reason"] == "no champion to continue from"
    )
    assert "adapt" not in first and "pretrain" not in second and "finetune" not in second
    plan, adapted = second["plan_training"], second["adapt"]
    assert plan["mode"] == "adapt" and plan["champion_version"] == first["register"]["version"]
    assert plan["adapt_runs_since_retrain"] == 1 and plan["window"] == "period_1"
    # Only the new window's events are targets (counted from the sequences), next to the champion's replay set.
    assert adapted["new_rows"] == _training_targets_after(second["adapt"]["run_dir"], plan["watermark"]) > 0
    state = read_state(Path(first["finetune"]["model_uri"]) / ARTIFACT_FILES[TRAINING_STATE])
    assert adapted["replayed_rows"] == state.replay_rows == 100
    assert adapted["items_after"] > adapted["items_before"] == state.encoder["n_items"]  # new items got rows
    assert second["evaluate"]["champion_version"] == first["register"]["version"]


def test_the_adapted_model_beats_the_never_updated_one_on_the_newest_period(two_weeks):
    _, _, second = two_weeks
    metrics = second["evaluate"]["metrics"]
    assert metrics["model"]["ndcg_at_10"] > metrics["champion"]["ndcg_at_10"]


def test_the_adapted_version_carries_its_lineage_for_the_next_run(two_weeks):
    _, first, second = two_weeks
    state = read_state(Path(second["adapt"]["model_uri"]) / ARTIFACT_FILES[TRAINING_STATE])
    assert state.mode == "adapt" and state.parent_version == first["register"]["version"]
    assert state.adapt_runs_since_retrain == 1 and state.window == "period_1"
    assert state.watermark > second["plan_training"]["watermark"]
    assert state.replay_rows <= 100 and state.encoder["n_items"] == second["adapt"]["items_after"]
    meta = json.loads((Path(second["adapt"]["model_uri"]) / ARTIFACT_FILES[MODEL_META]).read_text())
    assert meta["finetune"]["learning_rate"] == 2e-3  # the adapt run's own rate, not fine-tuning's 1e-3


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"model_size": "small"}, "champion v2 has d_model=32, this run trains d_model=64"),
        ({"seed": 1}, "champion v2 was trained on synthetic-drifting-seed0, this run reads synthetic-drifting-seed1"),
        ({"max_drift_to_adapt": 0.0}, "drift: item-popularity PSI"),
        ({"retrain_every": 1}, "retrain_every=1 reached: 1 adapt runs since a retrain"),
    ],
)
def test_auto_retrains_and_says_why_when_the_champion_cannot_be_continued(two_weeks, change, reason):
    settings, _, second = two_weeks
    params = {**ADAPTING, **change}
    if "seed" not in change:  # the same data set: a third week's period to plan for
        run_stage("ingest", params, "week-2", settings)
        run_stage("validate", params, "week-2", settings)
    else:
        run_stage("ingest", params, "other-data", settings)
        run_stage("validate", params, "other-data", settings)
    plan = run_stage("plan_training", params, "week-2" if "seed" not in change else "other-data", settings)
    assert second["promote"]["champion_after"] == "2", "the adapted version is the champion these plans read"
    assert plan["mode"] == "retrain" and plan["reason"].startswith(reason), plan["reason"]


def test_forcing_adapt_on_an_incompatible_champion_is_a_one_line_error(two_weeks):
    settings, _, _ = two_weeks
    params = {**ADAPTING, "model_size": "small", "training_mode": "adapt"}
    run_stage("ingest", params, "week-2", settings)
    run_stage("validate", params, "week-2", settings)
    with pytest.raises(ConfigError, match="training_mode=adapt cannot continue the champion: champion v2 has d_model"):
        run_stage("plan_training", params, "week-2", settings)


def test_a_retried_adapt_task_and_registration_leave_one_version(two_weeks):
    settings, _, second = two_weeks
    again = run_stage("adapt", ADAPTING, "week-1", settings)
    registered = run_stage("register", ADAPTING, "week-1", settings)
    assert again["new_rows"] == second["adapt"]["new_rows"]
    assert registered["version"] == second["register"]["version"] and not registered["newly_registered"]

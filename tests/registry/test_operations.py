"""recsys registry: status and lineage, manual promote and rollback with a recorded reason, compare two versions."""

from __future__ import annotations

import pytest

from recsys_tasks.constants import CHAMPION_ALIAS, TAG_MANUAL_MOVE
from recsys_tasks.contracts.layout import REPORT_FILE
from recsys_tasks.contracts.registry import version_with_alias
from recsys_tasks.contracts.reports import EvaluationReport
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.errors import RegistryError
from recsys_tasks.pipeline import run_dir, run_stage
from recsys_tasks.registry.dashboard import VersionSummary
from recsys_tasks.registry.operations import champion_lineage, compare, lineage, move_champion, status
from recsys_tasks.registry.register import register
from tests.conftest import TINY_PARAMS, home_with_trained_run, run_command, write_training_plan, write_training_state


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, trained_tiny_run):
    """One trained run (the session's tiny run, copied) registered twice (as two nightly runs would: a retrain,
    then an adaptation of it on the next window), champion on version 2."""
    settings = home_with_trained_run(tmp_path_factory.mktemp("operations-home"), "night-1", trained_tiny_run)
    run_stage("evaluate", TINY_PARAMS, "night-1", settings)
    run = run_dir("night-1", settings)
    report = EvaluationReport(**run.read_json(REPORT_FILE))
    tracker = RunTracker.for_airflow_run(settings, "night-1")
    lineages = {
        "night-1": {"mode": "retrain", "window": "p1", "replay_rows": 5},
        "night-2": {"mode": "adapt", "parent_version": "1", "window": "p2", "replay_rows": 1_500},
    }
    for airflow_run, lineage_of_run in lineages.items():
        write_training_plan(run.uri, mode=lineage_of_run["mode"], reason=f"{airflow_run}'s plan")
        write_training_state(run.uri, **lineage_of_run)
        register(run, tracker.client, settings.model_name, tracker.run_id, airflow_run, report)
    tracker.client.set_registered_model_alias(settings.model_name, CHAMPION_ALIAS, "2")
    return settings, tracker.client, run, report


def test_status_lists_versions_newest_first_with_aliases(two_versions):
    settings, client, _, _ = two_versions
    rows = status(client, settings.model_name)
    assert [row["version"] for row in rows] == ["2", "1"]
    assert rows[0]["aliases"] == ["challenger", "champion"] and rows[1]["aliases"] == []
    assert rows[0]["airflow_run_id"] == "night-2" and rows[1]["gate"] == "not judged"


def test_status_shows_each_version_s_lineage_and_the_champion_s_chain(two_versions):
    settings, client, _, _ = two_versions
    rows = status(client, settings.model_name)
    assert [(row["mode"], row["parent"], row["window"], row["replay_rows"]) for row in rows] == [
        ("adapt", "v1", "p2", "1,500"),
        ("retrain", "", "p1", "5"),
    ]
    assert champion_lineage(client, settings.model_name) == "lineage of champion: v2 adapt ← v1 retrain"


def test_a_lineage_chain_ends_at_a_missing_parent_or_a_circle():
    def version(number: int, mode: str | None, parent: str | None) -> VersionSummary:
        return VersionSummary(
            version=number,
            aliases=[],
            created="2026-12-01T00:00:00Z",
            gate_status="passed",
            gate_checks=[],
            test_metrics={},
            airflow_run_id=None,
            mlflow_run_id=None,
            finetune_mode=None,
            trainable_parameters=None,
            manual_move=None,
            training_mode=mode,
            parent_version=parent,
        )

    versions = [version(5, "adapt", "4"), version(4, "adapt", "2"), version(3, "adapt", "3"), version(1, None, None)]
    assert lineage(versions, "5") == "v5 adapt ← v4 adapt ← v2 (not in the registry)"
    assert lineage(versions, "3") == "v3 adapt ← v3 (again: the parent tags go in a circle)"
    assert lineage(versions, "1") == "v1 (no lineage)"


def test_refused_moves_change_nothing(two_versions):
    settings, client, _, _ = two_versions
    for version, reason, rollback, message in [
        ("9", "typo", False, "has no version 9"),
        ("1", "  ", True, "needs a --reason"),
        ("2", "again", False, "already holds champion"),
    ]:
        with pytest.raises(RegistryError, match=message):
            move_champion(client, settings.model_name, version, reason, rollback)
    assert str(version_with_alias(client, settings.model_name).version) == "2"


def test_rollback_records_why_and_a_rollback_forward_is_refused(two_versions):
    settings, client, _, _ = two_versions
    assert move_champion(client, settings.model_name, "1", "v2 broke the carousel", rollback=True) == "2"
    champion = version_with_alias(client, settings.model_name)
    assert str(champion.version) == "1"
    assert (
        "rollback from 2" in champion.tags[TAG_MANUAL_MOVE]
        and "v2 broke the carousel" in champion.tags[TAG_MANUAL_MOVE]
    )
    with pytest.raises(RegistryError, match="older version"):
        move_champion(client, settings.model_name, "2", "undo", rollback=True)
    assert move_champion(client, settings.model_name, "2", "fixed upstream", rollback=False) == "1"


def test_compare_ranks_the_run_test_split_like_the_evaluate_stage(two_versions):
    settings, client, run, report = two_versions
    results = compare(client, settings.model_name, ["1", "2"], run)
    assert results["1"] == results["2"]  # the same model registered twice
    assert results["1"]["ndcg_at_10"] == pytest.approx(report.metrics["model"]["ndcg_at_10"], abs=1e-6)


def test_the_cli_shows_status_and_refuses_with_one_line(two_versions):
    settings, *_ = two_versions
    env = {"ADAPTREC_HOME": str(settings.resolved_home)}
    shown = run_command("recsys", "registry", "status", env=env)
    assert shown.returncode == 0 and "night-2" in shown.stdout, shown.stderr
    assert "lineage of champion: v2 adapt ← v1 retrain" in shown.stdout
    refused = run_command("recsys", "registry", "rollback", "7", "--reason", "x", env=env)
    assert refused.returncode == 2 and refused.stderr.strip().splitlines()[-1].endswith("has no version 7")

"""Soak: ten consecutive runs on the Celery + PostgreSQL + MLflow-server deployment, against one registry.

Not part of ``make test`` (the file name keeps pytest from collecting it); ``make bench-deployment`` runs it
and tabulates what it records. The runs alternate good data, a corrupted file and a deliberately bad model
(no training at all), each triggered through the REST API once the one before has finished. Every run must
end as its kind should, and the resident memory of the scheduler, the api-server, the dag-processor and the
workers (each with its child processes) must not grow beyond ``MEMORY_GROWTH_BOUND`` from the first run to the
last.
"""

from __future__ import annotations

import time

import psutil

from recsys_tasks import constants
from tests.corrupted_inputs import CORPUS
from tests.dags.test_celery_deployment import CONF, RUN_WITHIN_S, api_client, deployment, task_instances
from tests.services import wait_for

__all__ = ["deployment"]  # the fixture, imported so that this module's test can ask for it

RUNS = ["good", "corrupted", "bad"] * 3 + ["good"]
GOOD = {**CONF, "pretrain_epochs": 2, "training_mode": "retrain"}
BAD = {**GOOD, "pretrain_epochs": 0, "finetune_epochs": 0}  # an untrained encoder: every gate must refuse it
CORRUPTED_CASE = "ratings out of range"  # stopped by the data gate (validate), with its expectation named
WATCHED = ("scheduler", "api-server", "dag-processor", "worker-cpu", "worker-gpu")
# Python services settle after their first runs (imports, caches, connection pools); a leak grows run after run.
MEMORY_GROWTH_BOUND = 0.25


def resident_mib(process: psutil.Process) -> float:
    """Resident memory of ``process`` and all its descendants, in MiB."""
    total = 0
    for member in [process, *process.children(recursive=True)]:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return round(total / 2**20, 1)


def conf_of(kind: str, folder) -> dict:
    if kind == "good":
        return GOOD
    if kind == "bad":
        return BAD
    case = next(case for case in CORPUS if case.kind == CORRUPTED_CASE)
    return {**GOOD, **case.write(folder)}


def outcome_is_expected(kind: str, state: str, tasks: dict[str, dict], new_versions: int, moved: bool, passed) -> bool:
    """Whether a run of ``kind`` ended as it must: a good or bad run registers exactly one version and moves the
    champion only when the gate passed (a bad model never passes); a corrupted one fails at validate and
    nothing after it runs."""
    if kind == "corrupted":
        ran_after = {
            task for task, ti in tasks.items() if task not in ("ingest", "validate") and ti["state"] == "success"
        }
        return state == "failed" and tasks["validate"]["state"] == "failed" and not ran_after and new_versions == 0
    gate_decided = passed is not None and moved == passed
    return state == "success" and new_versions == 1 and gate_decided and (kind == "good" or not passed)


def test_ten_consecutive_runs(deployment, tmp_path, record_property):
    from mlflow import MlflowClient

    client = api_client(deployment)
    logs = deployment["processes"].logs
    wait_for("the DAG parsed", lambda: client.get(f"/dags/{constants.DAG_ID}").status_code == 200, 240, logs)
    assert client.patch(f"/dags/{constants.DAG_ID}", json={"is_paused": False}).status_code == 200
    registry = MlflowClient(deployment["mlflow"], registry_uri=deployment["mlflow"])
    processes = {name: psutil.Process(deployment["processes"].running[name].pid) for name in WATCHED}

    def versions() -> int:
        return len(registry.search_model_versions(f"name = '{constants.REGISTERED_MODEL_NAME}'"))

    def champion() -> str | None:
        try:
            return registry.get_model_version_by_alias(constants.REGISTERED_MODEL_NAME, "champion").version
        except Exception:  # no registered model or no alias yet
            return None

    rows = []
    for number, kind in enumerate(RUNS, start=1):
        before_versions, before_champion = versions(), champion()
        started = time.monotonic()
        conf = conf_of(kind, tmp_path / f"run-{number}")
        created = client.post(f"/dags/{constants.DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
        assert created.status_code == 200, created.text
        run_id = created.json()["dag_run_id"]
        state = wait_for(
            f"run {number} ({kind}) finishing",
            lambda run_id=run_id: (
                (s := client.get(f"/dags/{constants.DAG_ID}/dagRuns/{run_id}").json()["state"]) in ("success", "failed")
                and s
            ),
            RUN_WITHIN_S,
            logs,
        )
        seconds = round(time.monotonic() - started, 1)
        tasks = task_instances(client, run_id)
        new_versions = versions() - before_versions
        passed = None
        if new_versions:
            newest = registry.get_model_version(constants.REGISTERED_MODEL_NAME, str(versions()))
            status = newest.tags.get(constants.TAG_GATE_STATUS)
            passed = None if status is None else status == "passed"
        moved = champion() != before_champion
        failed_tasks = sorted(task for task, ti in tasks.items() if ti["state"] == "failed")
        rows.append(
            {
                "run": number,
                "kind": kind,
                "state": state,
                "seconds": seconds,
                "failed_tasks": failed_tasks,
                "new_versions": new_versions,
                "champion": champion(),
                "champion_moved": moved,
                "gate_passed": passed,
                "expected": outcome_is_expected(kind, state, tasks, new_versions, moved, passed),
                "resident_mib": {name: resident_mib(process) for name, process in processes.items()},
            }
        )
    record_property("runs", rows)
    record_property("good_conf", GOOD)
    record_property("memory_growth_bound", MEMORY_GROWTH_BOUND)
    assert [row["run"] for row in rows if not row["expected"]] == []
    for name in WATCHED:
        first, last = rows[0]["resident_mib"][name], rows[-1]["resident_mib"][name]
        assert last <= first * (1 + MEMORY_GROWTH_BOUND), f"{name}: {first} MiB after run 1, {last} MiB after run 10"

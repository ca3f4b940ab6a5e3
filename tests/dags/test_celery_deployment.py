"""The DAG on a production-shaped deployment, on loopback: Airflow's CeleryExecutor on PostgreSQL and Redis with
a scheduler, a dag-processor, an api-server and two Celery workers (the default queue and the training queue), an
MLflow tracking server on PostgreSQL serving artifacts over HTTP. A client triggers a run through the REST API;
the training-queue worker is killed in the middle of pre-training, and a new one finishes the run.

Needs PostgreSQL 15 and redis-server (``.ci/run`` installs them); skipped with the reason when they are missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from recsys_tasks import constants
from tests.conftest import VENV_BIN, free_port, run_command
from tests.services import PG_BIN, Processes, start_postgres, wait_for

USER, PASSWORD = "admin", "deploy-test-password"
# Small, yet with enough pre-training epochs to stop the worker after the first checkpoint and before the last.
CONF = {"synthetic_size": "tiny", "model_size": "tiny", "max_length": 20, "pretrain_epochs": 10, "finetune_epochs": 3}
RUN_WITHIN_S = 900


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[dict]:
    missing = [
        name
        for name, found in (
            ("PostgreSQL 15", (PG_BIN / "initdb").exists()),
            ("redis-server", shutil.which("redis-server")),
        )
        if not found
    ]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not installed (.ci/run installs them with apt)")
    root = tmp_path_factory.mktemp("celery-deployment")
    logs = root / "logs"
    logs.mkdir()
    pg, redis, mlflow_port, api = (free_port() for _ in range(4))
    database = f"postgresql+psycopg2://postgres@127.0.0.1:{pg}"
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"{database}/airflow",
        "AIRFLOW__CELERY__BROKER_URL": f"redis://127.0.0.1:{redis}/0",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://postgres@127.0.0.1:{pg}/airflow",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{api}/execution/",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(root / "passwords.json"),
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "recsys_tasks.airflow_adapter.worker_hostname",
        # A task whose worker died is failed (and retried) after this many seconds without a heartbeat.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
        "ADAPTREC_HOME": str(root / "adaptrec"),
        "ADAPTREC_SCHEDULE": "none",
        "ADAPTREC_TRAINING_QUEUE": "gpu",
        "ADAPTREC_EXECUTOR": "celery",
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
    }
    (root / "passwords.json").write_text(json.dumps({USER: PASSWORD}))
    processes = Processes(logs, env)
    # Outside pytest's temporary folders, which only their owner may enter: the cluster runs as postgres.
    cluster = Path(tempfile.mkdtemp(prefix="adaptrec-pg-"))
    try:
        start_postgres(processes, pg, cluster, ("airflow", "mlflow"))
        processes.start(
            "redis", "redis-server", "--port", str(redis), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"
        )
        for command in (("airflow", "db", "migrate"), ("airflow", "pools", "set", "gpu", "1", "training")):
            result = run_command(*command, env=env)
            assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        processes.start(
            "mlflow",
            str(VENV_BIN / "mlflow"),
            "server",
            "--backend-store-uri",
            f"postgresql://postgres@127.0.0.1:{pg}/mlflow",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "mlflow-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        )
        airflow = str(VENV_BIN / "airflow")
        processes.start("api-server", airflow, "api-server", "--host", "127.0.0.1", "--port", str(api))
        processes.start("scheduler", airflow, "scheduler")
        processes.start("dag-processor", airflow, "dag-processor")
        start_worker(processes, "cpu", "default")
        start_worker(processes, "gpu", "gpu")
        yield {
            "processes": processes,
            "api": f"http://127.0.0.1:{api}",
            "mlflow": env["MLFLOW_TRACKING_URI"],
            "env": env,
            "home": root / "adaptrec",
        }
    finally:
        processes.stop_all()
        shutil.rmtree(cluster, ignore_errors=True)


def start_worker(processes: Processes, name: str, queue: str) -> None:
    processes.start(
        f"worker-{name}",
        str(VENV_BIN / "airflow"),
        "celery",
        "worker",
        "--queues",
        queue,
        "--concurrency",
        "1",
        "--celery-hostname",
        f"{name}@%h",
        env={"ADAPTREC_WORKER_NAME": f"{name}-worker"},
    )


def api_client(deployment: dict) -> httpx.Client:
    """Authenticated as a REST client would be: a JWT from the simple auth manager's token endpoint."""
    base = deployment["api"]
    token = wait_for(
        "the api-server issuing a token",
        lambda: (
            httpx.post(f"{base}/auth/token", json={"username": USER, "password": PASSWORD}, timeout=30)
            .json()
            .get("access_token")
        ),
        180,
        deployment["processes"].logs,
    )
    return httpx.Client(base_url=f"{base}/api/v2", headers={"Authorization": f"Bearer {token}"}, timeout=60)


def task_instances(client: httpx.Client, run_id: str) -> dict[str, dict]:
    response = client.get(f"/dags/{constants.DAG_ID}/dagRuns/{run_id}/taskInstances")
    return {ti["task_id"]: ti for ti in response.json()["task_instances"]}


@pytest.fixture(scope="module")
def finished_run(deployment) -> tuple[httpx.Client, str]:
    client = api_client(deployment)
    logs = deployment["processes"].logs
    wait_for(
        "the dag-processor parsing the DAG",
        lambda: client.get(f"/dags/{constants.DAG_ID}").status_code == 200,
        240,
        logs,
    )
    assert client.patch(f"/dags/{constants.DAG_ID}", json={"is_paused": False}).status_code == 200
    created = client.post(f"/dags/{constants.DAG_ID}/dagRuns", json={"logical_date": None, "conf": CONF})
    assert created.status_code == 200, created.text
    run_id = created.json()["dag_run_id"]
    checkpoints = deployment["home"] / "runs"
    wait_for(
        "pre-training writing its first checkpoint",
        lambda: any(checkpoints.glob("*/pretrain/checkpoints/ckpt-1.index")),
        RUN_WITHIN_S,
        logs,
    )
    deployment["processes"].kill("worker-gpu")  # mid pre-training: the task loses its worker
    start_worker(deployment["processes"], "gpu", "gpu")
    state = wait_for(
        "the run finishing",
        lambda: (
            (s := client.get(f"/dags/{constants.DAG_ID}/dagRuns/{run_id}").json()["state"]) in ("success", "failed")
            and s
        ),
        RUN_WITHIN_S,
        logs,
    )
    assert state == "success", json.dumps(task_instances(client, run_id), indent=1)[-3000:]
    return client, run_id


def test_training_tasks_ran_on_the_training_queue_worker_and_the_rest_did_not(finished_run):
    client, run_id = finished_run
    ran = {task: ti for task, ti in task_instances(client, run_id).items() if ti["state"] == "success"}
    training = {"pretrain", "finetune", "evaluate"}
    assert training <= ran.keys() and {"ingest", "register", "promote"} <= ran.keys()
    for task, ti in ran.items():
        expected = ("gpu", "gpu-worker") if task in training else ("default", "cpu-worker")
        assert (ti["queue"], ti["hostname"]) == expected, task


def test_the_killed_pretraining_was_retried_and_resumed_from_its_checkpoint(finished_run, deployment):
    client, run_id = finished_run
    pretrain = task_instances(client, run_id)["pretrain"]
    assert pretrain["try_number"] == 2
    log = client.get(f"/dags/{constants.DAG_ID}/dagRuns/{run_id}/taskInstances/pretrain/logs/2").text
    assert "resuming pre-training from" in log


def test_one_version_is_registered_and_crowned_through_the_mlflow_server(finished_run, deployment):
    from mlflow import MlflowClient

    client = MlflowClient(deployment["mlflow"], registry_uri=deployment["mlflow"])
    versions = client.search_model_versions(f"name = '{constants.REGISTERED_MODEL_NAME}'")
    assert len(versions) == 1
    champion = client.get_model_version_by_alias(constants.REGISTERED_MODEL_NAME, "champion")
    assert champion.version == versions[0].version
    # Artifacts live in the server's store, reached over HTTP, not in a path the workers share.
    run = client.get_run(champion.run_id)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    answer = run_command(
        "recsys", "recommend", "--history", "1,2,3", "--k", "5", "--variant", "int8", env=deployment["env"]
    )
    assert answer.returncode == 0, answer.stdout + answer.stderr
    assert "@champion: top 5" in answer.stdout and re.search(r"│\s+5 │", answer.stdout), answer.stdout  # rank 5


def test_the_next_plan_fetches_only_the_champions_training_state_over_http(finished_run, deployment, tmp_path):
    from mlflow import MlflowClient

    from recsys_tasks.registry.plan import download_training_state

    client = MlflowClient(deployment["mlflow"], registry_uri=deployment["mlflow"])
    champion = client.get_model_version_by_alias(constants.REGISTERED_MODEL_NAME, "champion")
    state, folder = download_training_state(client, constants.REGISTERED_MODEL_NAME, champion.version, tmp_path)
    assert state.mode == "retrain" and state.parent_version is None
    downloaded = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert downloaded and all(folder in path.parents for path in downloaded), downloaded

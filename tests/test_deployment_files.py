"""docker/: the compose file and the Helm values, validated as far as this machine can (no Docker daemon, no cluster).

The compose file goes through ``docker-compose config`` (Debian's docker-compose needs no daemon for it); the
Helm values through the official Airflow chart's values.schema.json. Both must name only real settings, and
the training pods they describe must get their GPUs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from recsys_tasks.airflow_adapter import training_executor_config
from recsys_tasks.serving.app import ServingConfig
from recsys_tasks.settings import Settings

DOCKER = Path(__file__).resolve().parents[1] / "docker"
COMPOSE = DOCKER / "compose.yaml"
HELM_VALUES = DOCKER / "helm" / "values.yaml"
# The chart's own schema (apache/airflow, chart/values.schema.json of the chart whose default Airflow is 3.0.5),
# minified and kept beside the values it checks: CI needs no network for it.
CHART_SCHEMA = DOCKER / "helm" / "airflow-chart-values.schema.json"
SECRETS = {
    "ADAPTREC_PSEUDONYMISATION_KEY": "key",
    "AIRFLOW_JWT_SECRET": "jwt",
    "POSTGRES_PASSWORD": "postgres",
    "MINIO_ROOT_PASSWORD": "minio",
    "AIRFLOW_ADMIN_PASSWORD": "admin",
    "ADAPTREC_SERVING_TOKEN": "serving-token-0123456789",
}
STACK = {
    "postgres",
    "redis",
    "minio",
    "mlflow",
    "airflow-init",
    "airflow-api-server",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "worker-cpu",
    "worker-gpu",
    "serving",
}


def docker_compose_config(env: dict[str, str]) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not installed (.ci/run installs it with apt)")
    clean = {name: value for name, value in os.environ.items() if name not in SECRETS}
    return subprocess.run(
        ["docker-compose", "-f", str(COMPOSE), "config"], env=clean | env, capture_output=True, text=True, timeout=60
    )


@pytest.fixture(scope="module")
def compose_services() -> dict:
    result = docker_compose_config(SECRETS)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)["services"]


def is_declared(variable: str) -> bool:
    """Whether an ADAPTREC_ variable names a setting (ADAPTREC_SERVING_: a serving option)."""
    if variable.startswith("ADAPTREC_SERVING_"):
        return variable.removeprefix("ADAPTREC_SERVING_").lower() in ServingConfig.model_fields
    return variable.removeprefix("ADAPTREC_").lower() in Settings.model_fields


def settings_of(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a container with ``environment`` reads; each ADAPTREC_ variable must name a setting."""

    def is_setting(name: str) -> bool:
        return name.startswith("ADAPTREC_") or name == "MLFLOW_TRACKING_URI"

    for name in filter(is_setting, list(os.environ)):
        monkeypatch.delenv(name)
    ours = {name: value for name, value in environment.items() if is_setting(name)}
    unknown = {name for name in ours if name.startswith("ADAPTREC_") and not is_declared(name)}
    assert not unknown, f"not settings: {sorted(unknown)}"
    for name, value in ours.items():
        monkeypatch.setenv(name, value)
    return Settings()


def queue_of(command: list[str]) -> str:
    return command[command.index("--queues") + 1]


def test_the_compose_file_describes_the_whole_stack_with_a_gpu_worker_on_the_training_queue(
    compose_services, monkeypatch
):
    assert set(compose_services) >= STACK
    gpu, cpu = compose_services["worker-gpu"], compose_services["worker-cpu"]
    assert gpu["deploy"]["resources"]["reservations"]["devices"] == [
        {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    ]
    settings = settings_of(gpu["environment"], monkeypatch)
    assert queue_of(gpu["command"]) == settings.training_queue == "gpu"
    assert settings.distribution == "mirrored"
    assert queue_of(cpu["command"]) == "default"
    assert settings.resolved_tracking_uri == "http://mlflow:5000"
    mlflow = " ".join(compose_services["mlflow"]["command"])
    assert "--serve-artifacts" in mlflow and "--artifacts-destination s3://mlflow" in mlflow
    serving = compose_services["serving"]
    assert serving["command"][:2] == ["recsys", "serve"]
    assert settings_of(serving["environment"], monkeypatch).resolved_tracking_uri == "http://mlflow:5000"


def test_every_airflow_component_reads_the_same_settings(compose_services, monkeypatch):
    airflow = {name: service for name, service in compose_services.items() if name.startswith(("airflow", "worker"))}
    shared = {
        name: {key: value for key, value in service["environment"].items() if key != "ADAPTREC_DISTRIBUTION"}
        for name, service in airflow.items()
        if name != "airflow-init"
    }
    assert len({json.dumps(environment, sort_keys=True) for environment in shared.values()}) == 1
    assert settings_of(shared["airflow-scheduler"], monkeypatch).executor == "celery"


def test_the_compose_file_refuses_to_start_without_its_secrets():
    missing = "AIRFLOW_JWT_SECRET"
    result = docker_compose_config({name: value for name, value in SECRETS.items() if name != missing})
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


@pytest.fixture(scope="module")
def chart_validator() -> Draft7Validator:
    return Draft7Validator(json.loads(CHART_SCHEMA.read_text()))


def test_the_helm_values_follow_the_official_chart_schema(chart_validator):
    values = yaml.safe_load(HELM_VALUES.read_text())
    assert [error.message for error in chart_validator.iter_errors(values)] == []
    assert values["executor"] == "KubernetesExecutor"


def test_the_chart_schema_refuses_values_the_chart_cannot_take(chart_validator):
    values = yaml.safe_load(HELM_VALUES.read_text())
    unquoted_number = [*values["env"], {"name": "ADAPTREC_TRAINING_GPUS", "value": 2}]  # YAML's classic slip
    for broken in ({**values, "env": unquoted_number}, {**values, "executor": "Kubernetes"}):
        assert list(chart_validator.iter_errors(broken))


def test_the_helm_values_give_the_training_pods_their_gpus_on_gpu_nodes(monkeypatch):
    values = yaml.safe_load(HELM_VALUES.read_text())
    settings = settings_of({variable["name"]: variable["value"] for variable in values["env"]}, monkeypatch)
    pod = training_executor_config(settings)["pod_override"]
    container = pod.spec.containers[0]
    assert container.image == f"{values['images']['airflow']['repository']}:{values['images']['airflow']['tag']}"
    assert container.resources.limits == {"nvidia.com/gpu": "1"}
    assert pod.spec.node_selector == {"nvidia.com/gpu.present": "true"}
    assert [(t.key, t.effect) for t in pod.spec.tolerations] == [("nvidia.com/gpu", "NoSchedule")]
    mounts = {mount["mountPath"] for mount in values["volumeMounts"]}
    assert str(settings.resolved_home) in mounts  # every task pod sees the runs

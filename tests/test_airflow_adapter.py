"""The Airflow adapter hands a task's data interval to the stages (a windowed ingest takes the run's interval) and
gives the training tasks their pod under the KubernetesExecutor."""

from __future__ import annotations

from pathlib import Path

import pendulum
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from recsys_tasks.airflow_adapter import dag_schedule, run_stage_in_airflow, training_executor_config
from recsys_tasks.settings import Settings

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


def test_under_kubernetes_the_training_pod_gets_the_worker_image_gpus_nodes_and_tolerations(monkeypatch):
    from airflow.providers.cncf.kubernetes.pod_generator import PodGenerator
    from kubernetes.client import models as k8s

    monkeypatch.setenv("ADAPTREC_EXECUTOR", "kubernetes")
    monkeypatch.setenv("ADAPTREC_WORKER_IMAGE", "registry.example/adaptrec-worker:1.2")
    monkeypatch.setenv("ADAPTREC_TRAINING_GPUS", "2")
    monkeypatch.setenv("ADAPTREC_TRAINING_MEMORY", "32Gi")
    monkeypatch.setenv("ADAPTREC_TRAINING_NODE_SELECTOR", '{"accelerator": "nvidia-h100"}')
    monkeypatch.setenv("ADAPTREC_TRAINING_TOLERATIONS", '[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]')
    override = training_executor_config(Settings())["pod_override"]
    # A pod template as the Helm chart's workers have: the override keeps what it does not set.
    template = k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(labels={"component": "worker"}),
        spec=k8s.V1PodSpec(
            containers=[
                k8s.V1Container(
                    name="base",
                    image="apache/airflow:3.3.0",
                    env=[k8s.V1EnvVar(name="ADAPTREC_HOME", value="/data/adaptrec")],
                    resources=k8s.V1ResourceRequirements(requests={"memory": "8Gi"}),
                )
            ]
        ),
    )
    pod = PodGenerator.reconcile_pods(template, override)
    assert PodGenerator.deserialize_model_dict(PodGenerator.serialize_pod(pod)) == pod  # as the executor stores it
    (container,) = pod.spec.containers
    assert container.image == "registry.example/adaptrec-worker:1.2"
    assert container.resources.limits == {"nvidia.com/gpu": "2"}
    assert container.resources.requests == {"cpu": "4", "memory": "32Gi"}  # resources are replaced as a whole
    assert container.env == template.spec.containers[0].env and pod.metadata.labels == {"component": "worker"}
    assert pod.spec.node_selector == {"accelerator": "nvidia-h100"}
    assert pod.spec.tolerations == [k8s.V1Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")]


def test_other_executors_and_cpu_pods_ask_for_no_gpu():
    assert training_executor_config(Settings(executor="celery")) == {}
    cpu_pod = training_executor_config(Settings(executor="kubernetes", training_gpus=0))["pod_override"]
    assert cpu_pod.spec.containers[0].resources.limits is None and cpu_pod.spec.tolerations is None


def test_a_malformed_toleration_is_refused_naming_the_field():
    with pytest.raises(ValidationError, match="training_tolerations.0.operator"):
        Settings(executor="kubernetes", training_tolerations=[{"key": "gpu", "operator": "Sometimes"}])


def test_the_schedule_is_the_clock_the_trigger_asset_both_or_neither():
    from airflow.sdk import Asset
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    upstream = "s3://lake/events"
    assert isinstance(dag_schedule(Settings(schedule="0 3 * * *")), CronDataIntervalTimetable)
    assert isinstance(dag_schedule(Settings(trigger_asset=upstream)), AssetOrTimeSchedule)
    assert dag_schedule(Settings(schedule="none", trigger_asset=upstream)) == Asset(upstream)
    assert dag_schedule(Settings(schedule="None")) is None  # only triggered runs

"""Airflow's side of the pipeline: the Params form, the task context, secrets, and what a failure means.

Bad input (``AdaptRecError`` that is not retryable) fails the task at once; an outage is left to the
task's retries; ``StageSkipped`` skips it. Imported when Airflow parses the DAG: light on purpose.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from recsys_tasks.params import PipelineParams
from recsys_tasks.pipeline import run_stage
from recsys_tasks.settings import Settings, get_settings


def airflow_params() -> dict[str, Any]:
    """Airflow ``Param``s generated from PipelineParams, so the UI form and the validation agree."""
    from airflow.sdk import Param

    schema = PipelineParams.model_json_schema()
    defaults = PipelineParams().model_dump(mode="json")
    params = {}
    for name, field in schema["properties"].items():
        if "$ref" in field:  # a nested model (column_mapping): inline it, Airflow resolves no references
            field = {**schema["$defs"][field["$ref"].rsplit("/", 1)[-1]], "description": field.get("description")}
        spec = {key: value for key, value in field.items() if key not in ("default", "title", "anyOf")}
        if "anyOf" in field:  # Optional[...] → a nullable JSON-schema type
            spec["type"] = [option["type"] for option in field["anyOf"]]
        if "enum" in field:
            spec.setdefault("type", "string")
        params[name] = Param(defaults[name], title=name.replace("_", " "), **spec)
    return params


def dag_schedule(settings: Settings):
    """The schedule's cron with whole data intervals (a windowed ingest reads the previous [start, end)), or
    it or the trigger asset's events when ``settings.trigger_asset`` is set; with the schedule ``none``, the
    trigger asset alone or nothing (runs start only when triggered)."""
    from airflow.sdk import Asset
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    asset = None if settings.trigger_asset is None else Asset(settings.trigger_asset)
    if settings.schedule.lower() == "none":
        return asset
    cron = CronDataIntervalTimetable(settings.schedule, timezone="UTC")
    return cron if asset is None else AssetOrTimeSchedule(timetable=cron, assets=asset)


def training_executor_config(settings: Settings) -> dict[str, Any]:
    """Executor settings of the training tasks. Under the KubernetesExecutor, a pod override that runs them on
    the worker image with ``training_gpus`` GPUs, its CPU and memory requests, on the selected nodes, tolerating
    their taints. Airflow merges it into the pod template (the container must be named ``base``); the override's
    resources replace the template's as a whole, so it states every request. Other executors need nothing."""
    if settings.executor != "kubernetes":
        return {}
    from kubernetes.client import models as k8s

    resources = k8s.V1ResourceRequirements(
        requests={"cpu": settings.training_cpus, "memory": settings.training_memory},
        limits={"nvidia.com/gpu": str(settings.training_gpus)} if settings.training_gpus else None,
    )
    tolerations = [k8s.V1Toleration(**t.model_dump(exclude_none=True)) for t in settings.training_tolerations]
    spec = k8s.V1PodSpec(
        containers=[k8s.V1Container(name="base", image=settings.worker_image, resources=resources)],
        node_selector=settings.training_node_selector or None,
        tolerations=tolerations or None,
    )
    return {"pod_override": k8s.V1Pod(spec=spec)}


def worker_hostname() -> str:
    """The host Airflow records for a task instance (``AIRFLOW__CORE__HOSTNAME_CALLABLE`` names this function):
    ``ADAPTREC_WORKER_NAME`` when the worker sets it, so that workers sharing a host (a CPU and a GPU Celery
    worker on one machine) are told apart; else the host's fully qualified name."""
    return os.environ.get("ADAPTREC_WORKER_NAME") or socket.getfqdn()


def record_ingested_events(asset, result: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """Attach what ingest read (data set, period, new rows) to the event the task emits for ``asset``."""
    window = result.get("window") or {}
    context["outlet_events"][asset].extra = {
        "dataset": context["params"].get("data_source"),
        "dataset_key": window.get("dataset_key"),
        "period": window.get("period"),
        "new_rows": window.get("new_rows", result.get("rows")),
        "run_dir": result.get("run_dir"),
    }


def _settings_with_airflow_secrets() -> Settings:
    """Settings, with the pseudonymisation key from Airflow's connections when the environment has none."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from recsys_tasks.privacy import AIRFLOW_CONNECTION_ID

    settings = get_settings()
    if settings.pseudonymisation_key is not None:
        return settings
    try:
        password = Connection.get(AIRFLOW_CONNECTION_ID).password
    except AirflowNotFoundException:
        return settings
    return settings.model_copy(update={"pseudonymisation_key": SecretStr(password)}) if password else settings


def run_stage_in_airflow(stage: str, context: Mapping[str, Any], upstream: Mapping[str, Any] | None = None) -> dict:
    """Run ``stage`` for the task's run with the run's Params, reading where ``upstream`` (its XCom) wrote."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from recsys_tasks.errors import AdaptRecError, StageSkipped

    # A manually triggered run may have no data interval; only a windowed ingest needs one, and says so.
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    data_interval = (start, end) if start is not None and end is not None else None
    try:
        return run_stage(
            stage, context["params"], context["run_id"], _settings_with_airflow_secrets(), upstream, data_interval
        )
    except StageSkipped as exc:
        raise AirflowSkipException(f"{stage}: {exc}") from None
    except AdaptRecError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(f"{stage}: {exc}") from None

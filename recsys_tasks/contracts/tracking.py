"""One MLflow run per Airflow run: every stage of a pipeline run logs to the same MLflow run.

The run is found by its ``adaptrec.airflow_run_id`` tag, so a retried task (or a later task in
another process) appends to it instead of starting a second one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import mlflow
import requests
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recsys_tasks.constants import TAG_AIRFLOW_RUN_ID
from recsys_tasks.errors import RegistryError
from recsys_tasks.settings import Settings

_MAX_PARAM_LENGTH = 6000


def _check_reachable(tracking_uri: str) -> None:
    scheme = urlparse(tracking_uri).scheme
    if scheme in ("http", "https"):
        try:
            requests.get(f"{tracking_uri.rstrip('/')}/health", timeout=5).raise_for_status()
        except requests.RequestException as exc:
            raise RegistryError(
                f"MLflow tracking server {tracking_uri} cannot be reached ({type(exc).__name__}): "
                "start it or point MLFLOW_TRACKING_URI at a running server"
            ) from None
    elif scheme == "sqlite":
        database = Path(urlparse(tracking_uri).path)
        if not database.parent.is_dir():
            raise RegistryError(
                f"MLflow database folder {database.parent} does not exist: create it or fix MLFLOW_TRACKING_URI"
            )


def connect(settings: Settings) -> MlflowClient:
    """Point MLflow at the configured stores and prove they answer, with a one-line error if not."""
    if settings.tracking_uri is None:
        settings.resolved_home.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_tracking_uri
    _check_reachable(uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    try:
        client.search_experiments(max_results=1)
    except MlflowException as exc:
        raise RegistryError(f"MLflow at {uri} cannot be used: {exc.message.splitlines()[0]}") from None
    return client


def mlflow_run_of(client: MlflowClient, experiment_id: str, airflow_run_id: str) -> str | None:
    """The id of the MLflow run that the Airflow run ``airflow_run_id`` logs to, or None before it has one."""
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{TAG_AIRFLOW_RUN_ID}` = '{airflow_run_id}'", max_results=1
    )
    return found[0].info.run_id if found else None


class RunTracker:
    """Logs params, per-epoch metrics and artifacts to the MLflow run of one Airflow run."""

    def __init__(self, client: MlflowClient, run_id: str):
        self.client = client
        self.run_id = run_id

    @classmethod
    def for_airflow_run(cls, settings: Settings, airflow_run_id: str) -> RunTracker:
        client = connect(settings)
        experiment = client.get_experiment_by_name(settings.experiment_name)
        root = settings.resolved_artifact_root
        location = None if root is None else f"{root}/{settings.experiment_name}"
        experiment_id = (
            experiment.experiment_id
            if experiment
            else client.create_experiment(settings.experiment_name, artifact_location=location)
        )
        existing = mlflow_run_of(client, experiment_id, airflow_run_id)
        if existing is not None:
            return cls(client, existing)
        run = client.create_run(experiment_id, run_name=airflow_run_id, tags={TAG_AIRFLOW_RUN_ID: airflow_run_id})
        return cls(client, run.info.run_id)

    def log_params(self, params: dict[str, Any], prefix: str) -> None:
        flat = {f"{prefix}.{key}": str(value)[:_MAX_PARAM_LENGTH] for key, value in params.items()}
        logged = self.client.get_run(self.run_id).data.params
        # Params are write-once in MLflow; a retried task logs only what is not there yet.
        fresh = [Param(key, value) for key, value in flat.items() if key not in logged]
        if fresh:
            self.client.log_batch(self.run_id, params=fresh)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(
            self.run_id, metrics=[Metric(key, float(value), now, step or 0) for key, value in metrics.items()]
        )

    def log_artifacts(self, local_dir: str | Path, artifact_path: str) -> None:
        self.client.log_artifacts(self.run_id, str(local_dir), artifact_path)

    def log_dict(self, dictionary: dict, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, dictionary, artifact_file)

    def log_figure(self, figure, artifact_file: str) -> None:
        self.client.log_figure(self.run_id, figure, artifact_file)

    def set_tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

"""Where the pipeline keeps its state. Embedded defaults need no service: SQLite + local folders.

Every value can be overridden by environment variables (``ADAPTREC_HOME``, ``ADAPTREC_RUNS_URI``,
``ADAPTREC_EVENTS_URI``, ``ADAPTREC_FEEDBACK_URI``, ``MLFLOW_TRACKING_URI``, ``ADAPTREC_ARTIFACT_ROOT``,
``ADAPTREC_MODEL_NAME``) so the same code runs against an MLflow server with a database and object store in
production.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from recsys_tasks import constants


class Toleration(BaseModel):
    """A Kubernetes toleration for the training pods (GPU nodes are usually tainted)."""

    model_config = ConfigDict(extra="forbid")

    key: str
    operator: Literal["Equal", "Exists"] = "Exists"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADAPTREC_", extra="ignore", populate_by_name=True)

    home: Path = Field(default=Path(".adaptrec"), description="Root of the embedded default stores.")
    runs_uri: str | None = Field(default=None, description="Local path or fsspec URI holding one folder per run.")
    snapshots_uri: str | None = Field(default=None, description="Accepted data snapshots (drift baselines).")
    events_uri: str | None = Field(
        default=None, description="Event stores of incremental data sets: one folder per data set, one per period."
    )
    feedback_uri: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the feedback store (served slates and user feedback), e.g. "
        "postgresql+psycopg://user:password@host/adaptrec_feedback; default: SQLite in the home.",
    )
    tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("MLFLOW_TRACKING_URI", "ADAPTREC_TRACKING_URI"),
        description="MLflow tracking and registry URI.",
    )
    artifact_root: str | None = Field(default=None, description="Artifact location for new MLflow experiments.")
    model_name: str = constants.REGISTERED_MODEL_NAME
    experiment_name: str = constants.EXPERIMENT_NAME
    mode: Literal["embedded", "production"] = Field(
        default="embedded", description="production refuses to generate secrets (e.g. the pseudonymisation key)."
    )
    pseudonymisation_key: SecretStr | None = Field(default=None, description="HMAC key for user ids.")
    schedule: str = Field(
        default="@daily",
        description="Cron expression or preset of the nightly DAG; none: no clock, only runs triggered from the UI, "
        "the REST API or the trigger asset.",
    )
    trigger_asset: str | None = Field(
        default=None,
        description="URI of an Airflow Asset an upstream producer updates when new data lands; runs start on its "
        "events as well as on the schedule.",
    )
    training_queue: str = Field(default="default", description="Executor queue of the training tasks (GPU workers).")
    executor: Literal["local", "celery", "kubernetes"] = Field(
        default="local",
        description="Airflow executor the DAG is deployed on; kubernetes gives the training tasks a GPU pod override.",
    )
    worker_image: str = Field(
        default="adaptrec-worker:latest", description="Image of the training pods (docker/Dockerfile builds it)."
    )
    training_gpus: int = Field(default=1, ge=0, le=16, description="nvidia.com/gpu limit of a training pod.")
    training_cpus: str = Field(default="4", description="CPU request of a training pod (Kubernetes quantity).")
    training_memory: str = Field(default="16Gi", description="Memory request of a training pod (Kubernetes quantity).")
    training_node_selector: dict[str, str] = Field(
        default_factory=dict, description="Node labels a training pod must run on (JSON object)."
    )
    training_tolerations: list[Toleration] = Field(
        default_factory=list, description="Taints a training pod tolerates (JSON list of tolerations)."
    )
    distribution: Literal["none", "mirrored", "multi_worker"] = Field(
        default="none",
        description="TensorFlow strategy of pretrain and finetune: mirrored = the GPUs of one worker; multi_worker = "
        "the workers TF_CONFIG names, each running the same stage command on the same run.",
    )
    great_expectations_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="WARNING",
        description="Log level of Great Expectations in the validate stage; INFO brings back its ~600 lines a run.",
    )
    mlflow_ui_url: str = Field(
        default="http://127.0.0.1:5000",
        description="MLflow UI that the Airflow plugin links to (`make mlflow-ui` serves the default).",
    )

    @field_validator("trigger_asset")
    @classmethod
    def _not_our_own_asset(cls, uri: str | None) -> str | None:
        if uri == constants.EVENTS_ASSET_URI:
            raise ValueError(f"{uri} is the asset this DAG's ingest updates: triggering on it would loop run after run")
        return uri

    @cached_property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def resolved_runs_uri(self) -> str:
        return self.runs_uri or str(self.resolved_home / "runs")

    @property
    def resolved_snapshots_uri(self) -> str:
        return self.snapshots_uri or str(self.resolved_home / "snapshots")

    @property
    def resolved_events_uri(self) -> str:
        return self.events_uri or str(self.resolved_home / "events")

    @property
    def resolved_feedback_uri(self) -> str:
        return self.feedback_uri or f"sqlite:///{self.resolved_home / 'feedback.db'}"

    @property
    def resolved_tracking_uri(self) -> str:
        return self.tracking_uri or f"sqlite:///{self.resolved_home / 'mlflow.db'}"

    @property
    def resolved_artifact_root(self) -> str | None:
        """Where new experiments keep artifacts: the setting, else the server's own store when tracking goes to
        an MLflow server (clients then reach artifacts over HTTP only), else a folder of the home."""
        if self.artifact_root:
            return self.artifact_root
        if self.resolved_tracking_uri.startswith(("http://", "https://")):
            return None
        return (self.resolved_home / "mlartifacts").as_uri()


def get_settings() -> Settings:
    return Settings()

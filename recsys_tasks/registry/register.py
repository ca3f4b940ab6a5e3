"""Register stage: log the exported model as an MLflow pyfunc and register a new version.

Idempotent per Airflow run: the version is tagged with the run id, and a retried task that finds
such a version returns it instead of registering a second one. Two attempts that overlap (a task whose
worker lost its heartbeat while it was registering, an HTTP request the client sent twice) each look
again after registering: the lowest version of the run is the run's, and an attempt whose own version
is not deletes it, unaliased, before any alias points to it.

The version is also tagged with its lineage (``adaptrec.dataset``, ``adaptrec.training.*``,
``adaptrec.lineage.*``): read from the training state the exported model carries and from the run's
training plan, when they exist. A model trained before either existed gets no lineage tags.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

from recsys_tasks.constants import (
    CHALLENGER_ALIAS,
    TAG_ADAPT_RUNS,
    TAG_AIRFLOW_RUN_ID,
    TAG_DATASET,
    TAG_FINETUNE_MODE,
    TAG_NEW_ROWS,
    TAG_PARENT_VERSION,
    TAG_REPLAY_ROWS,
    TAG_TEST_METRIC_PREFIX,
    TAG_TRAINABLE_PARAMETERS,
    TAG_TRAINING_MODE,
    TAG_TRAINING_REASON,
    TAG_WATERMARK,
    TAG_WINDOW,
)
from recsys_tasks.contracts import exported_model
from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, ITEM_VOCAB, MODEL_META, TRAINING_STATE, VARIANTS
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR, TRAINING_PLAN_FILE
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.contracts.reports import MODEL, EvaluationReport, Registration, TrainingPlan
from recsys_tasks.contracts.training_state import TrainingState, has_state, read_state
from recsys_tasks.storage import RunDir

log = logging.getLogger(__name__)

# What a consumer needs to load the pyfunc, pinned to what trained it.
_SERVING_REQUIREMENTS = ("mlflow", "tensorflow", "ai-edge-litert", "numpy", "pandas", "pyarrow")
_MODEL_ARTIFACT = "model"
# Declared, not inferred: `k` and `exclude` are optional (the model's default k is 10) and ids are 64-bit integers.
SIGNATURE = ModelSignature(
    inputs=Schema(
        [
            ColSpec(Array(DataType.long), "history"),
            ColSpec(DataType.long, "k", required=False),
            ColSpec(Array(DataType.long), "exclude", required=False),
        ]
    ),
    outputs=Schema(
        [
            ColSpec(Array(DataType.long), "item_ids"),
            ColSpec(Array(DataType.double), "scores"),
            ColSpec(Array(DataType.long), "because"),
        ]
    ),
)


def _requirements() -> list[str]:
    return [f"{package}=={importlib.metadata.version(package)}" for package in _SERVING_REQUIREMENTS]


def read_plan(run: RunDir) -> TrainingPlan | None:
    """The run's training plan; None for a run without one (trained before plans existed: a retrain)."""
    return TrainingPlan(**run.read_json(TRAINING_PLAN_FILE)) if run.exists(TRAINING_PLAN_FILE) else None


def read_training_state(model_folder: Path) -> TrainingState | None:
    """The training state an exported model folder carries; None for a model exported without one."""
    folder = model_folder / ARTIFACT_FILES[TRAINING_STATE]
    return read_state(folder) if has_state(folder) else None


def lineage_tags(state: TrainingState | None, plan: TrainingPlan | None) -> dict[str, str]:
    """The lineage tags of a version: what its training state records, the plan's reason, and, for a model
    without a training state, what its plan set out to do. Tags without a value are left out."""
    planned = {}
    if plan is not None:
        planned = {
            TAG_DATASET: plan.dataset_key,
            TAG_TRAINING_MODE: plan.mode,
            TAG_PARENT_VERSION: plan.champion_version if plan.mode == "adapt" else None,
            TAG_WINDOW: plan.window,
            TAG_ADAPT_RUNS: plan.adapt_runs_since_retrain,
        }
    trained = {}
    if state is not None:
        trained = {
            TAG_DATASET: state.dataset_key,
            TAG_TRAINING_MODE: state.mode,
            TAG_PARENT_VERSION: state.parent_version,
            TAG_WINDOW: state.window,
            TAG_WATERMARK: state.watermark,
            TAG_REPLAY_ROWS: state.replay_rows,
            TAG_NEW_ROWS: state.new_rows,
            TAG_ADAPT_RUNS: state.adapt_runs_since_retrain,
        }
    # The state records what training did, so it wins over the plan, which said what training would do.
    values = planned | trained | {TAG_TRAINING_REASON: plan.reason if plan is not None else None}
    return {tag: str(value) for tag, value in values.items() if value is not None}


def versions_of_run(client: MlflowClient, model_name: str, airflow_run_id: str) -> list:
    """The versions tagged with ``airflow_run_id``, oldest first."""
    versions = client.search_model_versions(
        f"name = '{model_name}' and tags.`{TAG_AIRFLOW_RUN_ID}` = '{airflow_run_id}'"
    )
    return sorted(versions, key=lambda version: int(version.version))


def existing_version(client: MlflowClient, model_name: str, airflow_run_id: str):
    versions = versions_of_run(client, model_name, airflow_run_id)
    return versions[0] if versions else None


def keep_first_version(client: MlflowClient, model_name: str, airflow_run_id: str, created):
    """The run's version once ``created`` exists: the oldest one tagged with the run. ``created`` is deleted (with
    the logged model behind it) when another attempt registered the run first."""
    first = existing_version(client, model_name, airflow_run_id)
    if first is None or str(first.version) == str(created.version):
        return created
    log.warning(
        "another attempt of run %s registered %s version %s first; deleting this attempt's version %s",
        airflow_run_id,
        model_name,
        first.version,
        created.version,
    )
    client.delete_model_version(model_name, created.version)
    if logged_model := logged_model_id(created):
        client.delete_logged_model(logged_model)
    return first


def logged_model_id(version) -> str | None:
    """The id of the logged model a version was registered from: MLflow 3 leaves ``model_id`` empty on a version
    registered from a ``models:/<model id>`` URI, and keeps that URI as its source."""
    source = version.source or ""
    return version.model_id or (source.removeprefix("models:/") if source.startswith("models:/m-") else None)


def register(
    run: RunDir,
    client: MlflowClient,
    model_name: str,
    mlflow_run_id: str,
    airflow_run_id: str,
    report: EvaluationReport,
) -> Registration:
    found = existing_version(client, model_name, airflow_run_id)
    if found is not None:
        log.info("run %s already registered %s version %s; reusing it", airflow_run_id, model_name, found.version)
        return Registration(
            model_name=model_name,
            version=str(found.version),
            model_uri=version_uri(model_name, found.version),
            mlflow_run_id=found.run_id,
            newly_registered=False,
        )

    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        # A model exported before training states existed has no training_state folder: MLflow refuses a missing
        # artifact, and serving never reads it (only an adapt run continuing this version would).
        artifacts = {
            key: str(folder / name)
            for key, name in ARTIFACT_FILES.items()
            if key != TRAINING_STATE or (folder / name).exists()
        }
        meta = json.loads((folder / ARTIFACT_FILES[MODEL_META]).read_text())
        lineage = lineage_tags(read_training_state(folder), read_plan(run))
        known_items = pd.read_parquet(folder / ARTIFACT_FILES[ITEM_VOCAB], columns=["item_id"])["item_id"]
        example = pd.DataFrame(
            {"history": [known_items[:3].tolist()], "k": [10], "exclude": [known_items[3:4].tolist()]}
        )
        with mlflow.start_run(run_id=mlflow_run_id):
            info = mlflow.pyfunc.log_model(
                name=_MODEL_ARTIFACT,
                python_model=exported_model.__file__,
                artifacts=artifacts,
                signature=SIGNATURE,
                input_example=example,
                # Declared so that consumers may pick {"variant": "int8"} at load time.
                model_config={"variant": VARIANTS[0]},
                pip_requirements=_requirements(),
            )
    version = mlflow.register_model(
        info.model_uri,
        model_name,
        tags={
            TAG_AIRFLOW_RUN_ID: airflow_run_id,
            TAG_FINETUNE_MODE: meta["finetune"]["mode"],
            TAG_TRAINABLE_PARAMETERS: str(meta["trainable_parameters"]),
            **{f"{TAG_TEST_METRIC_PREFIX}{k}": f"{v:.5f}" for k, v in report.metrics[MODEL].items()},
            **lineage,
        },
    )
    kept = keep_first_version(client, model_name, airflow_run_id, version)
    client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, kept.version)
    log.info("registered %s version %s as %s", model_name, kept.version, CHALLENGER_ALIAS)
    return Registration(
        model_name=model_name,
        version=str(kept.version),
        model_uri=version_uri(model_name, kept.version),
        mlflow_run_id=kept.run_id,
        newly_registered=str(kept.version) == str(version.version),
    )

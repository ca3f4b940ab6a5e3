"""Register stage: log the exported model as an MLflow pyfunc and register a new version.

Idempotent per Airflow run: the version is tagged with the run id, and a retried task that finds
such a version returns it instead of registering a second one.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging

import mlflow
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import Array

from recsys_tasks.constants import (
    CHALLENGER_ALIAS,
    TAG_AIRFLOW_RUN_ID,
    TAG_FINETUNE_MODE,
    TAG_TEST_METRIC_PREFIX,
    TAG_TRAINABLE_PARAMETERS,
)
from recsys_tasks.contracts import exported_model
from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, ITEM_VOCAB, MODEL_META, VARIANTS
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.contracts.reports import MODEL, EvaluationReport, Registration
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


def existing_version(client: MlflowClient, model_name: str, airflow_run_id: str):
    versions = client.search_model_versions(
        f"name = '{model_name}' and tags.`{TAG_AIRFLOW_RUN_ID}` = '{airflow_run_id}'"
    )
    return versions[0] if versions else None


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
        artifacts = {key: str(folder / name) for key, name in ARTIFACT_FILES.items()}
        meta = json.loads((folder / ARTIFACT_FILES[MODEL_META]).read_text())
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
        },
    )
    client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, version.version)
    log.info("registered %s version %s as %s", model_name, version.version, CHALLENGER_ALIAS)
    return Registration(
        model_name=model_name,
        version=str(version.version),
        model_uri=version_uri(model_name, version.version),
        mlflow_run_id=mlflow_run_id,
        newly_registered=True,
    )

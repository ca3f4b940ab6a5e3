"""Looking up the registered model's aliases without changing anything."""

from __future__ import annotations

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recsys_tasks.constants import CHAMPION_ALIAS


def version_with_alias(client: MlflowClient, model_name: str, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    """The version holding ``alias``, or None when the model or the alias does not exist yet."""
    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(alias)
    return client.get_model_version(model_name, version) if version is not None else None


def model_uri(model_name: str, alias: str = CHAMPION_ALIAS) -> str:
    return f"models:/{model_name}@{alias}"

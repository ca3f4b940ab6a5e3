"""Registry naming: ``models:/`` URIs of a registered model, and reading its aliases without changing anything.

Light on purpose (MLflow is imported by the lookup only): the summary, the CLI and the DAG name models too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from recsys_tasks.constants import CHAMPION_ALIAS

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient


def model_uri(model_name: str, alias: str = CHAMPION_ALIAS) -> str:
    """Whatever version holds ``alias`` when the URI is loaded."""
    return f"models:/{model_name}@{alias}"


def version_uri(model_name: str, version: str | int) -> str:
    """Exactly one version, wherever the aliases have moved since."""
    return f"models:/{model_name}/{version}"


def version_with_alias(client: MlflowClient, model_name: str, alias: str = CHAMPION_ALIAS) -> ModelVersion | None:
    """The version holding ``alias``, or None when the model or the alias does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = model.aliases.get(alias)
    return client.get_model_version(model_name, version) if version is not None else None

"""The consumer side: load ``models:/<name>@<alias>`` from the registry and ask for recommendations."""

from __future__ import annotations

import pandas as pd

from recsys_tasks.constants import CHAMPION_ALIAS
from recsys_tasks.errors import RegistryError
from recsys_tasks.settings import Settings


class NoModelVersionError(RegistryError):
    """The alias a consumer asked for points at no version (yet)."""

    retryable = False


def recommend(
    settings: Settings, history: list[int], k: int, alias: str = CHAMPION_ALIAS, variant: str = "float32"
) -> pd.DataFrame:
    """Top-k items for one history, as (rank, item_id, score, because) rows, from ``variant`` of the version
    holding ``alias`` (the int8 variant loads without TensorFlow)."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from recsys_tasks.contracts.registry import model_uri, version_with_alias
    from recsys_tasks.contracts.tracking import connect

    client = connect(settings)
    if version_with_alias(client, settings.model_name, alias) is None:
        raise NoModelVersionError(
            f"{settings.model_name} has no '{alias}' version in {settings.resolved_tracking_uri} yet: "
            "run the pipeline (make run) until a model passes the gate"
        )
    model = mlflow.pyfunc.load_model(model_uri(settings.model_name, alias), model_config={"variant": variant})
    try:
        prediction = model.predict(pd.DataFrame({"history": [history], "k": [k]}))
    except MlflowException as exc:
        raise RegistryError(f"the model refused the request: {exc.message.splitlines()[0]}") from None
    row = prediction.iloc[0]
    return pd.DataFrame(
        {
            "rank": range(1, len(row["item_ids"]) + 1),
            "item_id": row["item_ids"],
            "score": row["scores"],
            "because": row["because"],
        }
    )

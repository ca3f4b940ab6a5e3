"""Batch consumer: top-k recommendations for every known user from the newly promoted champion.

It loads the champion exactly as a downstream service does (``models:/<name>/<version>`` of the
version the gate just crowned, through the registered pyfunc) and writes one Parquet row per
(user, rank), so a retried task rewrites the same file.
"""

from __future__ import annotations

import logging

import mlflow
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel
from rich.progress import Progress

from recsys_tasks.contracts.layout import RECOMMENDATIONS_FILE
from recsys_tasks.contracts.scoring import item_ids_of
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.serving.config import BatchRecommendConfig
from recsys_tasks.storage import RunDir

log = logging.getLogger(__name__)


class BatchSummary(BaseModel):
    recommendations_uri: str
    model_uri: str
    users: int
    rows: int


def batch_recommend(run: RunDir, model_uri: str, config: BatchRecommendConfig) -> BatchSummary:
    """Every user of this run's data, with their whole history, ranked by the model at ``model_uri``."""
    model = mlflow.pyfunc.load_model(model_uri)
    splits = LeaveOneOutSplits.load(run)
    item_ids = item_ids_of(run, splits.n_items)
    users, histories = splits.user_ids, [item_ids[sequence].tolist() for sequence in splits.sequences]
    columns: dict[str, list] = {"user_id": [], "rank": [], "item_id": [], "score": [], "because": []}
    with Progress(transient=True) as progress:
        task = progress.add_task("batch recommendations", total=len(users))
        for start in range(0, len(users), config.batch_size):
            batch = slice(start, start + config.batch_size)
            requests = pd.DataFrame({"history": histories[batch], "k": config.k})
            answer = model.predict(requests)
            for user, recommended, scores, because in zip(
                users[batch], answer["item_ids"], answer["scores"], answer["because"]
            ):
                columns["user_id"] += [user] * len(recommended)
                columns["rank"] += range(1, len(recommended) + 1)
                columns["item_id"] += list(recommended)
                columns["score"] += list(scores)
                columns["because"] += list(because)
            progress.advance(task, len(requests))
    table = pa.table(
        {
            "user_id": pa.array(columns["user_id"], pa.string()),
            "rank": pa.array(columns["rank"], pa.int16()),
            "item_id": pa.array(columns["item_id"], pa.int64()),
            "score": pa.array(columns["score"], pa.float32()),
            "because": pa.array(columns["because"], pa.int64()),
        }
    )
    uri = run.write_parquet(RECOMMENDATIONS_FILE, table)
    log.info("wrote %d recommendations for %d users from %s to %s", table.num_rows, len(users), model_uri, uri)
    return BatchSummary(recommendations_uri=uri, model_uri=model_uri, users=len(users), rows=table.num_rows)

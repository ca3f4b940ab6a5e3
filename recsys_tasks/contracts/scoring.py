"""Scoring a run's item indices with an exported model, which may know a different catalogue."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from recsys_tasks.contracts.layout import VOCAB_FILE
from recsys_tasks.contracts.metrics import ScoreFunction
from recsys_tasks.storage import RunDir

if TYPE_CHECKING:  # MLflow and TensorFlow: imported by whoever loads the model
    from recsys_tasks.contracts.exported_model import SequentialRecommender


def item_ids_of(run: RunDir, n_items: int) -> np.ndarray:
    """The external item id of every item index of this run (index 0, the padding, maps to 0)."""
    vocabulary = run.read_parquet(VOCAB_FILE)
    item_ids = np.zeros(n_items + 1, dtype=np.int64)
    item_ids[vocabulary["index"].to_numpy()] = vocabulary["item_id"].to_numpy()
    return item_ids


def recommender_scorer(model: SequentialRecommender, item_ids: np.ndarray) -> ScoreFunction:
    """Score this run's item indices with a model that may know a different catalogue.

    ``item_ids[i]`` is the external id of this run's index i. Inputs are this run's indices.
    """
    own_index = np.asarray([model.index_of.get(int(item), 0) for item in item_ids])
    own_index[0] = 0
    known = own_index > 0

    def score(inputs: np.ndarray) -> np.ndarray:
        histories = [[int(i) for i in own_index[row] if i] for row in inputs]
        own_scores = model.score_indices(model.pad(histories))
        return np.where(known[None, :], own_scores[:, own_index], -np.inf)

    return score

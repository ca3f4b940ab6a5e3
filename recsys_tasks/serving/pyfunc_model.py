"""The registered model, as MLflow "models from code": this file is logged with the model.

It is self-contained on purpose: it imports only numpy, pandas, TensorFlow and MLflow, never
``recsys_tasks``, and loads a TF SavedModel plus plain arrays; no Python object of the training
process is pickled. A consumer needs only the pinned requirements logged with the model.

Input: a DataFrame with ``history`` (list of item ids, oldest first) and optionally ``k``.
Output: per row, ``item_ids`` (k ids, best first, none from the history) and their ``scores``.
"""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

DEFAULT_K = 10
SAVED_MODEL, ITEM_EMBEDDINGS, ITEM_VOCAB, MODEL_META = "saved_model", "item_embeddings", "item_vocab", "model_meta"
ARTIFACT_FILES = {
    SAVED_MODEL: "saved_model",
    ITEM_EMBEDDINGS: "item_embeddings.npy",
    ITEM_VOCAB: "item_vocab.parquet",
    MODEL_META: "model_meta.json",
}


class SequentialRecommender(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        self.load_artifacts(context.artifacts)

    @classmethod
    def from_folder(cls, folder) -> SequentialRecommender:
        """Load an exported model folder directly (what the evaluate stage scores)."""
        model = cls()
        model.load_artifacts({key: f"{folder}/{name}" for key, name in ARTIFACT_FILES.items()})
        return model

    def load_artifacts(self, artifacts: dict[str, str]) -> None:
        import tensorflow as tf

        self._user_embedding = tf.saved_model.load(artifacts[SAVED_MODEL]).signatures["user_embedding"]
        self.item_vectors = np.load(artifacts[ITEM_EMBEDDINGS])
        vocabulary = pd.read_parquet(artifacts[ITEM_VOCAB], columns=["index", "item_id"])
        self.item_ids = np.zeros(len(self.item_vectors), dtype=np.int64)
        self.item_ids[vocabulary["index"].to_numpy()] = vocabulary["item_id"].to_numpy()
        self.index_of = dict(zip(vocabulary["item_id"].tolist(), vocabulary["index"].tolist()))
        with open(artifacts[MODEL_META]) as fh:
            self.max_length = int(json.load(fh)["max_length"])

    @property
    def n_items(self) -> int:
        return len(self.item_vectors) - 1

    def to_indices(self, history) -> list[int]:
        """External ids → model indices; ids the model has never seen are skipped."""
        return [self.index_of[item] for item in history if item in self.index_of]

    def pad(self, histories: list[list[int]]) -> np.ndarray:
        padded = np.zeros((len(histories), self.max_length), dtype=np.int32)
        for row, history in enumerate(histories):
            tail = history[-self.max_length :]
            if tail:
                padded[row, -len(tail) :] = tail
        return padded

    def score_indices(self, padded_histories: np.ndarray) -> np.ndarray:
        """Scores [B, n_items + 1] of every item index for padded index histories [B, max_length]."""
        import tensorflow as tf

        outputs = self._user_embedding(history=tf.constant(padded_histories, tf.int32))
        users = next(iter(outputs.values())).numpy()
        return users @ self.item_vectors.T

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "history" not in frame:
            raise MlflowException("input needs a 'history' column of item id lists", INVALID_PARAMETER_VALUE)
        default_k = int((params or {}).get("k", DEFAULT_K))
        ks = frame["k"].fillna(default_k).astype(int).tolist() if "k" in frame else [default_k] * len(frame)
        histories = []
        for row, (history, k) in enumerate(zip(frame["history"], ks)):
            indices = self.to_indices([int(item) for item in history])
            if not indices:
                raise MlflowException(f"row {row}: history has no item this model knows", INVALID_PARAMETER_VALUE)
            if not 1 <= k <= self.n_items - len(set(indices)):
                raise MlflowException(
                    f"row {row}: k={k} is outside 1..{self.n_items - len(set(indices))}", INVALID_PARAMETER_VALUE
                )
            histories.append(indices)

        scores = self.score_indices(self.pad(histories)).astype(np.float64)
        scores[:, 0] = -np.inf
        recommended_ids, recommended_scores = [], []
        for row, (history, k) in enumerate(zip(histories, ks)):
            scores[row, history] = -np.inf
            best = np.argpartition(-scores[row], k - 1)[:k]
            best = best[np.argsort(-scores[row, best], kind="stable")]
            recommended_ids.append(self.item_ids[best].tolist())
            recommended_scores.append(scores[row, best].tolist())
        return pd.DataFrame({"item_ids": recommended_ids, "scores": recommended_scores})


mlflow.models.set_model(SequentialRecommender())

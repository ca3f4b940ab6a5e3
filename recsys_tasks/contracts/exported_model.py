"""The registered model, as MLflow "models from code": this file is logged with the model.

It is self-contained on purpose: it imports only numpy, pandas, MLflow and TensorFlow (or LiteRT), never
``recsys_tasks``, and loads a TF SavedModel plus plain arrays; no Python object of the training
process is pickled. A consumer needs only the pinned requirements logged with the model.

Input: a DataFrame with ``history`` (list of item ids, oldest first), optionally ``k`` and
``exclude`` (item ids never to recommend, besides the history).
Output: per row, ``item_ids`` (k ids, best first), their ``scores``, and ``because``: for each
recommended item, the history item that contributed most to it (the newest position's attention
to that history item, times how close the two items are), so a page can say "because you viewed X".

Two variants ship in every version, chosen at load time with
``mlflow.pyfunc.load_model(uri, model_config={"variant": "int8"})``: ``float32`` (the default)
and ``int8``, a TFLite encoder with int8 weights plus an int8 item table with one scale per item.
"""

from __future__ import annotations

import json
import threading
from typing import NamedTuple

import mlflow
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

DEFAULT_K = 10
SAVED_MODEL, ITEM_EMBEDDINGS, ITEM_VOCAB, MODEL_META = "saved_model", "item_embeddings", "item_vocab", "model_meta"
INT8_ENCODER, INT8_ITEM_EMBEDDINGS = "int8_encoder", "int8_item_embeddings"
# What the next run continues training from (recsys_tasks.contracts.training_state); serving never reads it.
TRAINING_STATE = "training_state"
ARTIFACT_FILES = {
    SAVED_MODEL: "saved_model",
    ITEM_EMBEDDINGS: "item_embeddings.npy",
    ITEM_VOCAB: "item_vocab.parquet",
    MODEL_META: "model_meta.json",
    INT8_ENCODER: "user_embedding_int8.tflite",
    INT8_ITEM_EMBEDDINGS: "item_embeddings_int8.npz",
    TRAINING_STATE: "training_state",
}
# The SavedModel's serving signature and its outputs.
USER_EMBEDDING_SIGNATURE = "user_embedding"
USER_EMBEDDING_OUTPUT, HISTORY_ATTENTION_OUTPUT = "user_embedding", "history_attention"
VARIANTS = ("float32", "int8")


class Recommendation(NamedTuple):
    """One user's answer: k item ids best first, their scores, and the history item behind each."""

    item_ids: list[int]
    scores: list[float]
    because: list[int]


def _refuse(message: str) -> MlflowException:
    return MlflowException(message, INVALID_PARAMETER_VALUE)


class SequentialRecommender(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        variant = (context.model_config or {}).get("variant", VARIANTS[0])
        self.load_artifacts(context.artifacts, variant)

    @classmethod
    def from_folder(cls, folder, variant: str = VARIANTS[0]) -> SequentialRecommender:
        """Load an exported model folder directly (what the evaluate stage scores)."""
        model = cls()
        model.load_artifacts({key: f"{folder}/{name}" for key, name in ARTIFACT_FILES.items()}, variant)
        return model

    def load_artifacts(self, artifacts: dict[str, str], variant: str = VARIANTS[0]) -> None:
        if variant not in VARIANTS:
            raise _refuse(f"unknown model variant {variant!r}: choose one of {', '.join(VARIANTS)}")
        self.variant = variant
        if variant == "int8":
            self._load_int8(artifacts)
        else:
            import tensorflow as tf

            self._user_embedding = tf.saved_model.load(artifacts[SAVED_MODEL]).signatures[USER_EMBEDDING_SIGNATURE]
            self.item_vectors = np.load(artifacts[ITEM_EMBEDDINGS])
        vocabulary = pd.read_parquet(artifacts[ITEM_VOCAB], columns=["index", "item_id"])
        self.item_ids = np.zeros(len(self.item_vectors), dtype=np.int64)
        self.item_ids[vocabulary["index"].to_numpy()] = vocabulary["item_id"].to_numpy()
        self.index_of = dict(zip(vocabulary["item_id"].tolist(), vocabulary["index"].tolist()))
        with open(artifacts[MODEL_META]) as fh:
            meta = json.load(fh)
        self.max_length = int(meta["max_length"])
        # Versions trained before the offset existed have none: no change to their scores.
        self.repeat_offset = float(meta.get("repeat_offset", 0.0))
        norms = np.linalg.norm(self.item_vectors, axis=1, keepdims=True)
        self._unit_item_vectors = self.item_vectors / np.maximum(norms, 1e-12)

    def _load_int8(self, artifacts: dict[str, str]) -> None:
        # LiteRT, TensorFlow Lite's successor: the int8 variant serves without TensorFlow at all.
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=artifacts[INT8_ENCODER], num_threads=1)
        runner = interpreter.get_signature_runner(USER_EMBEDDING_SIGNATURE)
        lock = threading.Lock()  # a TFLite interpreter serves one call at a time

        def user_embedding(history):
            with lock:
                return runner(history=np.asarray(history, dtype=np.int32))

        self._user_embedding = user_embedding
        with np.load(artifacts[INT8_ITEM_EMBEDDINGS]) as table:
            # Stored as int8 (a quarter of the size); scored in float32, which NumPy multiplies fastest.
            self.item_vectors = table["values"].astype(np.float32) * table["scales"][:, None]

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

    def encode(self, padded_histories: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """User vectors [B, d] and the newest position's attention over each history position [B, max_length]."""
        outputs = self._user_embedding(history=padded_histories)
        return np.asarray(outputs[USER_EMBEDDING_OUTPUT]), np.asarray(outputs[HISTORY_ATTENTION_OUTPUT])

    def score_indices(self, padded_histories: np.ndarray, consumed: np.ndarray | None = None) -> np.ndarray:
        """Scores [B, n_items + 1] of every item index for padded index histories [B, max_length].

        The items of ``consumed`` [B, any] (0-padded; default: the histories) get the learned repeat
        offset: what ranking that does not drop the user's items sees. ``recommend`` drops them.
        """
        scores = self.encode(padded_histories)[0] @ self.item_vectors.T
        if self.repeat_offset:
            consumed = padded_histories if consumed is None else consumed
            has = np.zeros(scores.shape, dtype=bool)
            has[np.arange(len(scores))[:, None], consumed] = True
            has[:, 0] = False
            scores[has] += self.repeat_offset
        return scores

    def because(self, padded_history: np.ndarray, attention: np.ndarray, recommended: np.ndarray) -> np.ndarray:
        """For each recommended index, the history index that contributed most to it.

        Contribution = attention of the newest position to the history item × the cosine of the
        two items, floored at 0; an item close to nothing in the history falls back to the most
        attended history item.
        """
        present = padded_history != 0
        history, weights = padded_history[present], attention[present]
        closeness = self._unit_item_vectors[recommended] @ self._unit_item_vectors[history].T  # [k, history]
        contribution = weights[None, :] * np.maximum(closeness, 0.0)
        best = np.where(contribution.max(axis=1) > 0, contribution.argmax(axis=1), weights.argmax())
        return history[best]

    def _indexed_rows(self, histories: list, ks: list[int], exclusions: list) -> list[tuple[list[int], list[int], int]]:
        """(history indices, excluded indices, k) per row, refusing a row the model cannot answer."""
        rows = []
        for row, (history, k, exclude) in enumerate(zip(histories, ks, exclusions)):
            indices = self.to_indices([int(item) for item in history])
            if not indices:
                raise _refuse(f"row {row}: history has no item this model knows")
            excluded = self.to_indices([int(item) for item in exclude]) if exclude is not None else []
            available = self.n_items - len(set(indices) | set(excluded))
            if not 1 <= k <= available:
                raise _refuse(f"row {row}: k={k} is outside 1..{available}")
            rows.append((indices, excluded, k))
        return rows

    def recommend(self, histories: list, ks: list[int], exclusions: list) -> list[Recommendation]:
        """Top-k per user from plain lists of external ids: ``predict`` without the DataFrames.

        What a server that validates its own requests calls (``exclusions`` rows may be None).
        """
        rows = self._indexed_rows(histories, ks, exclusions)
        padded = self.pad([history for history, _, _ in rows])
        users, attention = self.encode(padded)
        scores = users @ self.item_vectors.T
        scores[:, 0] = -np.inf
        answers = []
        for row, (history, excluded, k) in enumerate(rows):
            scores[row, history] = -np.inf
            scores[row, excluded] = -np.inf
            best = np.argpartition(-scores[row], k - 1)[:k]
            best = best[np.argsort(-scores[row, best], kind="stable")]
            because = self.because(padded[row], attention[row], best)
            answers.append(
                Recommendation(
                    self.item_ids[best].tolist(), scores[row, best].tolist(), self.item_ids[because].tolist()
                )
            )
        return answers

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        frame = model_input if isinstance(model_input, pd.DataFrame) else pd.DataFrame(model_input)
        if "history" not in frame:
            raise _refuse("input needs a 'history' column of item id lists")
        default_k = int((params or {}).get("k", DEFAULT_K))
        ks = frame["k"].fillna(default_k).astype(int).tolist() if "k" in frame else [default_k] * len(frame)
        exclusions = frame["exclude"].tolist() if "exclude" in frame else [None] * len(frame)
        answers = self.recommend(frame["history"].tolist(), ks, exclusions)
        return pd.DataFrame(answers, columns=list(Recommendation._fields))


mlflow.models.set_model(SequentialRecommender())

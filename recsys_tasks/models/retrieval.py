"""Next-item retrieval, optionally multi-task with a ranking head, with TensorFlow Recommenders.

Query tower: the sequence encoder with causal attention, read at every position, then a head.
Candidate tower: the encoder's item representations. Every non-padding position of every history
is a training pair (prefix → next item), as in SASRec. Two retrieval losses:

- ``full_softmax`` (default): a softmax over the whole catalogue, as in SASRec+CE, DuoRec and
  BSARec. Exact, and on catalogues up to a few hundred thousand items affordable on CPU.
- ``in_batch``: ``tfrs.tasks.Retrieval`` scores each query against the batch's next items only,
  for catalogues too large to score whole at every step. Duplicated next items are not counted as
  negatives (remove_accidental_hits), and the log of each item's sampling probability is
  subtracted so that popular items are not over-penalised (logQ correction).

Items the user already has get one learned score offset (``RepeatOffset``), trained with the
full-softmax loss: whether people come back to an item is learned from the data (strongly negative
where nobody rates a movie twice, positive where re-purchases are common), so the encoder's vectors
need not spend capacity on pushing the history down.

Multi-task (the TFRS multitask pattern): a ranking head on the same query and item vectors,
trained through ``tfrs.tasks.Ranking`` with its own loss weight. With explicit ratings it
regresses the rating of the next item (MSE, reported as RMSE); with implicit data, or with the
serving log's impressions, it classifies the true next item against an item the user was shown and
passed over, or a random item where there was none (a click model, binary cross-entropy).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_tasks.models.config import RetrievalLoss
from recsys_tasks.models.encoder import SequenceEncoder
from recsys_tasks.models.losses import PER_EXAMPLE, replica_share

RankingTarget = Literal["rating", "click"]


class QueryHead(tf.keras.layers.Layer):
    """A residual projection of the encoder output; starts as the identity."""

    def build(self, input_shape):
        self.projection = tf.keras.layers.Dense(int(input_shape[-1]), kernel_initializer="zeros", name="projection")
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.projection(inputs)


class RepeatOffset(tf.keras.layers.Layer):
    """One learned number added to the score of every item the user already has (RepeatNet's
    repeat-or-explore choice at its simplest). Starts at 0, i.e. no opinion."""

    # Adam moves a weight by about the learning rate per step, whatever its gradient: a single
    # number that must travel several logits would need thousands of steps, so it is stored scaled down.
    SCALE = 10.0

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Shape-free, so made here: the weight exists before the first training step.
        self.scaled_offset = self.add_weight(name="scaled_offset", shape=(), initializer="zeros")

    @property
    def offset(self) -> tf.Tensor:
        return self.scaled_offset * self.SCALE

    def call(self, logits, cells):
        """``logits`` [N, items] plus the offset at each (row, column) of ``cells`` [P, 2] (no duplicates)."""
        offsets = tf.fill(tf.shape(cells)[:1], tf.cast(self.offset, logits.dtype))
        return tf.tensor_scatter_nd_add(logits, cells, offsets)


def prefix_item_cells(inputs: tf.Tensor, is_target: tf.Tensor, n_items: int) -> tf.Tensor:
    """(query row, item column) [P, 2] of each distinct real item in each training query's prefix.

    Query rows are the positions where ``is_target`` holds, in row-major order (as boolean_mask
    takes them); the prefix of position t is ``inputs[:, : t + 1]``; column = item index − 1.
    """
    positions = tf.range(tf.shape(inputs)[1])
    earlier = positions[None, :] < positions[:, None]  # [s, s']: s' comes before s
    repeated = tf.reduce_any((inputs[:, :, None] == inputs[:, None, :]) & earlier[None], axis=2)
    counted = (inputs > 0) & (inputs <= n_items) & ~repeated  # [B, s]: first occurrence of a real item
    in_prefix = positions[None, :] <= positions[:, None]  # [t, s]: s is in the prefix of t
    pairs = tf.where(is_target[:, :, None] & in_prefix[None] & counted[:, None, :])  # [P, (b, t, s)]
    query_row = tf.reshape(tf.cumsum(tf.reshape(tf.cast(is_target, tf.int64), [-1])) - 1, tf.shape(is_target))
    rows = tf.gather_nd(query_row, pairs[:, :2])
    columns = tf.cast(tf.gather_nd(inputs, tf.stack([pairs[:, 0], pairs[:, 2]], axis=1)), tf.int64) - 1
    return tf.stack([rows, columns], axis=1)


class RankingHead(tf.keras.layers.Layer):
    """Scores one (query, item) pair: an MLP over [query, item, query ⊙ item] → one number."""

    def __init__(self, hidden_units: int = 64, initial_score: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.hidden_units, self.initial_score = hidden_units, initial_score
        self.hidden = tf.keras.layers.Dense(hidden_units, activation="relu", name="hidden")
        # Starting at the mean rating spares the head hundreds of steps of learning an offset.
        self.score = tf.keras.layers.Dense(
            1, bias_initializer=tf.keras.initializers.Constant(initial_score), name="score"
        )

    def call(self, queries, items):
        features = tf.concat([queries, items, queries * items], axis=-1)
        return tf.squeeze(tf.cast(self.score(self.hidden(features)), tf.float32), axis=-1)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "initial_score": self.initial_score}


class NextItemRetrievalModel(tfrs.models.Model):
    def __init__(
        self,
        encoder: SequenceEncoder,
        item_frequencies: np.ndarray,
        *,
        loss: RetrievalLoss = "full_softmax",
        ranking_weight: float = 0.0,
        ranking_target: RankingTarget = "click",
        mean_rating: float = 0.0,
    ):
        super().__init__()
        self.encoder = encoder
        self.head = QueryHead(name="query_head")
        # float32 under mixed precision too: it adds to the float32 logits of the loss.
        self.repeat_offset = RepeatOffset(dtype="float32", name="repeat_offset")
        self.retrieval_loss = loss
        probabilities = item_frequencies / max(item_frequencies.sum(), 1)
        # Unseen items get the smallest observed probability, so log() stays finite.
        floor = probabilities[probabilities > 0].min() if (probabilities > 0).any() else 1.0
        self.sampling_probability = tf.constant(np.maximum(probabilities, floor), tf.float32)
        # A mean (not TFRS's default sum) keeps the loss comparable across batch sizes and sequence lengths.
        self.retrieval_task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=PER_EXAMPLE),
            remove_accidental_hits=True,
        )
        self.ranking_weight = ranking_weight
        self.ranking_target = ranking_target
        if ranking_weight:
            self.ranking_head = RankingHead(
                initial_score=mean_rating if ranking_target == "rating" else 0.0, name="ranking_head"
            )
            self.ranking_task = (
                tfrs.tasks.Ranking(
                    loss=tf.keras.losses.MeanSquaredError(reduction=PER_EXAMPLE),
                    metrics=[tf.keras.metrics.RootMeanSquaredError("rmse")],
                )
                if ranking_target == "rating"
                else tfrs.tasks.Ranking(
                    loss=tf.keras.losses.BinaryCrossentropy(from_logits=True, reduction=PER_EXAMPLE),
                    metrics=[tf.keras.metrics.AUC(from_logits=True, name="auc")],
                )
            )
        self.loss_trackers = {name: tf.keras.metrics.Mean(name=f"{name}_loss") for name in ("retrieval", "ranking")}

    def parameters(self) -> list[tf.Variable]:
        """The model's weights, without the loss trackers' counters."""
        heads = [self.head, self.repeat_offset] + ([self.ranking_head] if self.ranking_weight else [])
        return [*self.encoder.weights, *(weight for head in heads for weight in head.weights)]

    def epoch_loss(self) -> float:
        """The training loss averaged over the epoch (TFRS reports ``loss`` as the last batch's alone)."""
        loss = float(self.loss_trackers["retrieval"].result())
        if self.ranking_weight:
            loss += self.ranking_weight * float(self.loss_trackers["ranking"].result())
        return loss

    def query_vectors(self, histories, training=False):
        """One query vector per history: the encoder's output at the newest position."""
        return self.head(self.encoder(histories, causal=True, training=training, newest_only=True)[:, -1])

    def ranking_scores(self, histories):
        """Scores [B, vocabulary] of every index after each history [B, L]: query · item vector, plus the
        learnt repeat offset on the history's own items (ranking that does not exclude the history needs it;
        where the history is excluded it changes nothing)."""
        scores = tf.cast(
            tf.matmul(self.query_vectors(histories), self.encoder.item_vectors(), transpose_b=True), tf.float32
        )
        histories = tf.cast(histories, tf.int64)
        cells = tf.where(histories > 0)
        in_history = tf.tensor_scatter_nd_update(
            tf.zeros_like(scores),
            tf.stack([cells[:, 0], tf.gather_nd(histories, cells)], axis=1),
            tf.ones(tf.shape(cells)[:1], scores.dtype),
        )
        return scores + in_history * tf.cast(self.repeat_offset.offset, scores.dtype)

    def query_vectors_with_attention(self, histories):
        """Query vectors [B, d] and how much the newest position attends to each history position [B, L].

        The attention is the last block's, averaged over heads: the weights that mixed the history
        into the query, which is what "because you viewed X" explanations read.
        """
        hidden, attention = self.encoder(
            histories, causal=True, training=False, return_attention=True, newest_only=True
        )
        return self.head(hidden[:, -1]), tf.reduce_mean(attention[:, :, -1, :], axis=1)

    def predict_ratings(self, histories, items):
        """The ranking head's score of ``items`` [B] after ``histories`` [B, L] (a rating, or a click logit)."""
        item_vectors = tf.cast(self.encoder.items(items), self.encoder.compute_dtype)
        return self.ranking_head(self.query_vectors(histories), item_vectors)

    def compute_loss(self, features, training=False):
        targets = features["targets"]
        is_target = tf.greater(targets, 0)
        hidden = self.encoder(features["inputs"], causal=True, training=training)
        queries = self.head(tf.boolean_mask(hidden, is_target))
        next_items = tf.boolean_mask(targets, is_target)
        item_vectors = self.encoder.item_vectors()
        if self.retrieval_loss == "full_softmax":
            cells = prefix_item_cells(features["inputs"], is_target, self.encoder.config.n_items)
            retrieval = self._full_softmax_loss(queries, next_items, item_vectors, cells)
        else:
            retrieval = tf.reduce_mean(
                self.retrieval_task(
                    queries,
                    tf.gather(item_vectors, next_items),
                    candidate_ids=next_items,
                    candidate_sampling_probability=tf.gather(self.sampling_probability, next_items),
                    compute_metrics=False,
                )
            )
        self.loss_trackers["retrieval"].update_state(retrieval)
        if not self.ranking_weight:
            return replica_share(retrieval)
        ranking = self._ranking_loss(queries, next_items, item_vectors, features, is_target, training)
        self.loss_trackers["ranking"].update_state(ranking)
        return replica_share(retrieval + self.ranking_weight * ranking)

    def catalogue_logits(self, queries, item_vectors, history_cells):
        """Scores [N, n_items] of every real item (padding and [MASK] are no candidates) for each query, the
        items already in each prefix (``history_cells``) with the repeat offset added; column = index − 1."""
        n_items = self.encoder.config.n_items
        logits = tf.cast(tf.matmul(queries, item_vectors[1 : n_items + 1], transpose_b=True), tf.float32)
        return self.repeat_offset(logits, history_cells)

    def _full_softmax_loss(self, queries, next_items, item_vectors, history_cells):
        """Cross-entropy of each next item against every real item."""
        logits = self.catalogue_logits(queries, item_vectors, history_cells)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=next_items - 1, logits=logits))

    def _ranking_loss(self, queries, next_items, item_vectors, features, is_target, training):
        if self.ranking_target == "rating":
            labels = tf.boolean_mask(features["ratings"], is_target)
            predictions = self.ranking_head(queries, tf.gather(item_vectors, next_items))
            return tf.reduce_mean(
                self.ranking_task(labels=labels, predictions=predictions, compute_metrics=not training)
            )
        # Implicit feedback: the true next item is a click; a shown item the user passed over is not, and where the
        # serving log has none, a uniformly drawn item stands in.
        negatives = tf.random.uniform(tf.shape(next_items), 1, self.encoder.config.n_items + 1, dtype=next_items.dtype)
        if "shown_negatives" in features:
            shown = tf.cast(tf.boolean_mask(features["shown_negatives"], is_target), next_items.dtype)
            negatives = tf.where(shown > 0, shown, negatives)
        items = tf.concat([next_items, negatives], axis=0)
        labels = tf.concat([tf.ones_like(next_items, tf.float32), tf.zeros_like(negatives, tf.float32)], axis=0)
        predictions = self.ranking_head(tf.concat([queries, queries], axis=0), tf.gather(item_vectors, items))
        return tf.reduce_mean(self.ranking_task(labels=labels, predictions=predictions, compute_metrics=not training))

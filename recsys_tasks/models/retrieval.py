"""Next-item retrieval with TensorFlow Recommenders.

Query tower: the sequence encoder with causal attention, read at every position, then a head.
Candidate tower: the encoder's item embedding table. Every non-padding position of every history
is a training pair (prefix → next item), as in SASRec, and ``tfrs.tasks.Retrieval`` scores each
query against all the batch's next items. Duplicated next items are not counted as negatives
(remove_accidental_hits), and the log of each item's sampling probability is subtracted so that
popular items are not over-penalised by in-batch sampling (logQ correction).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_tasks.models.encoder import SequenceEncoder


class QueryHead(tf.keras.layers.Layer):
    """A residual projection of the encoder output; starts as the identity."""

    def build(self, input_shape):
        self.projection = tf.keras.layers.Dense(int(input_shape[-1]), kernel_initializer="zeros", name="projection")
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.projection(inputs)


class NextItemRetrievalModel(tfrs.models.Model):
    def __init__(self, encoder: SequenceEncoder, item_frequencies: np.ndarray):
        super().__init__()
        self.encoder = encoder
        self.head = QueryHead(name="query_head")
        probabilities = item_frequencies / max(item_frequencies.sum(), 1)
        # Unseen items get the smallest observed probability, so log() stays finite.
        floor = probabilities[probabilities > 0].min() if (probabilities > 0).any() else 1.0
        self.sampling_probability = tf.constant(np.maximum(probabilities, floor), tf.float32)
        # A mean (not TFRS's default sum) keeps the loss comparable across batch sizes and sequence lengths.
        self.task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True), remove_accidental_hits=True
        )

    def query_vectors(self, histories, training=False):
        """One query vector per history: the encoder's output at the newest position."""
        return self.head(self.encoder(histories, causal=True, training=training)[:, -1])

    def compute_loss(self, features, training=False):
        targets = features["targets"]
        is_target = tf.greater(targets, 0)
        hidden = self.encoder(features["inputs"], causal=True, training=training)
        queries = self.head(tf.boolean_mask(hidden, is_target))
        next_items = tf.boolean_mask(targets, is_target)
        candidates = tf.gather(self.encoder.item_vectors(), next_items)
        return self.task(
            queries,
            candidates,
            candidate_ids=next_items,
            candidate_sampling_probability=tf.gather(self.sampling_probability, next_items),
            compute_metrics=False,
        )

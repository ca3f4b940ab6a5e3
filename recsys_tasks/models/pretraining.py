"""Self-supervised pre-training: masked-item prediction + contrastive views, on one encoder.

- Cloze (BERT4Rec/S3-Rec): some history positions are replaced by [MASK]; the encoder, attending
  both ways, predicts each hidden item with a softmax over the whole catalogue (tied embeddings).
- Contrastive (CL4SRec): two augmented views of the same history should map to nearby vectors
  and away from the other users' views in the batch. ``tfrs.tasks.Retrieval`` is exactly that
  in-batch softmax, so it is reused with a temperature.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_tasks.models.encoder import SequenceEncoder


class PretrainingModel(tfrs.models.Model):
    def __init__(self, encoder: SequenceEncoder, *, cloze_weight: float, contrastive_weight: float, temperature: float):
        super().__init__()
        self.encoder = encoder
        self.cloze_weight = cloze_weight
        self.contrastive_weight = contrastive_weight
        self.projection = tf.keras.layers.Dense(encoder.config.d_model, name="contrastive_projection")
        self.contrastive_task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True),  # mean, so the weights compare
            temperature=temperature,
            name="contrastive",
        )
        self.cloze_loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.cloze_tracker = tf.keras.metrics.Mean(name="cloze_loss")
        self.contrastive_tracker = tf.keras.metrics.Mean(name="contrastive_loss")

    def _view_vector(self, view, training):
        last = self.encoder(view, causal=True, training=training)[:, -1]
        return tf.math.l2_normalize(self.projection(last), axis=-1)

    def compute_loss(self, features, training=False):
        hidden = self.encoder(features["masked"], causal=False, training=training)
        labels = features["labels"]
        is_masked = tf.greater(labels, 0)
        logits = tf.matmul(tf.boolean_mask(hidden, is_masked), self.encoder.item_vectors(), transpose_b=True)
        cloze = self.cloze_loss(tf.boolean_mask(labels, is_masked), logits)

        contrastive = self.contrastive_task(
            self._view_vector(features["view_a"], training),
            self._view_vector(features["view_b"], training),
            compute_metrics=False,
        )
        self.cloze_tracker.update_state(cloze)
        self.contrastive_tracker.update_state(contrastive)
        return self.cloze_weight * cloze + self.contrastive_weight * contrastive

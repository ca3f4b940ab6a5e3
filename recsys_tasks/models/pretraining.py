"""Self-supervised pre-training on one encoder: masked items, item attributes, contrastive views.

- Cloze (BERT4Rec/S3-Rec): some history positions are replaced by [MASK]; the encoder, attending
  both ways, predicts each hidden item with a softmax over the whole catalogue (tied embeddings).
- Masked attribute prediction (S3-Rec's MAP): from the same masked positions, predict the hidden
  item's attributes, scored against the attribute embeddings, so the context alone must carry
  what kind of item is missing. A softmax over the attributes against the item's attributes
  (each an equal share) keeps the loss on the scale of the Cloze loss whatever the number of
  attributes; a per-attribute sigmoid would average to almost nothing over hundreds of absent ones.
- Autoregressive (next item on augmented views): the encoder, attending causally, predicts each
  next item of a crop/mask/reorder view of a history (softmax over the catalogue). It pre-trains
  exactly the function fine-tuning adapts, on noisier inputs than fine-tuning will see, which is
  what CL4SRec-style augmentation relies on; a [MASK] in a view is never a target.
- Contrastive (CL4SRec): two augmented views of the same history should map to nearby vectors
  and away from the other users' views in the batch. ``tfrs.tasks.Retrieval`` is exactly that
  in-batch softmax, so it is reused with a temperature.
"""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_tasks.models.encoder import SequenceEncoder
from recsys_tasks.models.losses import PER_EXAMPLE, replica_share


class PretrainingModel(tfrs.models.Model):
    def __init__(
        self,
        encoder: SequenceEncoder,
        *,
        cloze_weight: float,
        contrastive_weight: float,
        attribute_weight: float,
        autoregressive_weight: float,
        temperature: float,
    ):
        super().__init__()
        self.encoder = encoder
        # One table read by both the loss and its report, keyed like the trackers.
        self.objective_weights = {
            "cloze": cloze_weight,
            # Without attributes in the data there is nothing to predict.
            "attribute": attribute_weight if encoder.items.uses_attributes else 0.0,
            "autoregressive": autoregressive_weight,
            "contrastive": contrastive_weight,
        }
        if not any(self.objective_weights.values()):
            raise ValueError(
                "every pre-training objective has weight 0 (attribute prediction counts only when items have "
                "attributes): give one of cloze, attribute, autoregressive or contrastive a weight above 0"
            )
        self.projection = tf.keras.layers.Dense(encoder.config.d_model, name="contrastive_projection")
        self.attribute_projection = tf.keras.layers.Dense(encoder.config.d_model, name="attribute_projection")
        self.contrastive_task = tfrs.tasks.Retrieval(
            loss=tf.keras.losses.CategoricalCrossentropy(from_logits=True, reduction=PER_EXAMPLE),
            temperature=temperature,
            name="contrastive",
        )
        self.trackers = {name: tf.keras.metrics.Mean(name=f"{name}_loss") for name in self.objective_weights}

    def epoch_losses(self) -> dict[str, float]:
        """Each weighted objective's mean over the epoch (``<name>_loss``) and their weighted sum (``loss``).

        TFRS reports ``loss`` as the last batch's alone; the trackers average the whole epoch (Keras
        resets them when an epoch starts).
        """
        weights = self.objective_weights
        means = {name: float(self.trackers[name].result()) for name, weight in weights.items() if weight}
        return {
            **{f"{name}_loss": value for name, value in means.items()},
            "loss": sum(weights[name] * value for name, value in means.items()),
        }

    def _view_vector(self, view, training):
        last = self.encoder(view, causal=True, training=training)[:, -1]
        return tf.math.l2_normalize(self.projection(last), axis=-1)

    def _attribute_loss(self, masked_hidden, masked_items):
        items = self.encoder.items
        attribute_ids = tf.gather(items.item_attributes, masked_items)  # [M, max_attributes], 0 pads
        targets = tf.reduce_max(tf.one_hot(attribute_ids, items.n_attributes + 1), axis=1)[:, 1:]
        has_attributes = tf.reduce_sum(targets, axis=1) > 0
        targets = tf.boolean_mask(targets, has_attributes)
        logits = tf.matmul(
            self.attribute_projection(tf.boolean_mask(masked_hidden, has_attributes)),
            tf.cast(items.attribute_embedding.embeddings[1:], masked_hidden.dtype),
            transpose_b=True,
        )
        shares = targets / tf.reduce_sum(targets, axis=1, keepdims=True)
        losses = tf.nn.softmax_cross_entropy_with_logits(labels=shares, logits=tf.cast(logits, tf.float32))
        # A batch whose masked items carry no attributes at all contributes nothing (not NaN).
        return tf.math.divide_no_nan(tf.reduce_sum(losses), tf.cast(tf.size(losses), tf.float32))

    def _catalogue_cross_entropy(self, hidden, items):
        """Mean softmax cross-entropy of ``items`` (real item indices) given ``hidden`` [N, d] over every index."""
        logits = tf.matmul(hidden, self.encoder.item_vectors(), transpose_b=True)
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=items, logits=tf.cast(logits, tf.float32))
        )

    def _autoregressive_loss(self, view, training):
        hidden = self.encoder(view[:, :-1], causal=True, training=training)
        next_items = view[:, 1:]
        is_target = tf.logical_and(tf.greater(next_items, 0), tf.not_equal(next_items, self.encoder.config.mask_index))
        return self._catalogue_cross_entropy(tf.boolean_mask(hidden, is_target), tf.boolean_mask(next_items, is_target))

    def compute_loss(self, features, training=False):
        weights, losses = self.objective_weights, {}
        if weights["cloze"] or weights["attribute"]:  # both read the bidirectional pass over masked histories
            hidden = self.encoder(features["masked"], causal=False, training=training)
            labels = features["labels"]
            is_masked = tf.greater(labels, 0)
            masked_hidden, masked_items = tf.boolean_mask(hidden, is_masked), tf.boolean_mask(labels, is_masked)
        if weights["cloze"]:
            losses["cloze"] = self._catalogue_cross_entropy(masked_hidden, masked_items)
        if weights["attribute"]:
            losses["attribute"] = self._attribute_loss(masked_hidden, masked_items)
        if weights["autoregressive"]:
            losses["autoregressive"] = self._autoregressive_loss(features["view_a"], training)
        if weights["contrastive"]:
            # A mean, so the objectives' weights compare.
            losses["contrastive"] = tf.reduce_mean(
                self.contrastive_task(
                    self._view_vector(features["view_a"], training),
                    self._view_vector(features["view_b"], training),
                    compute_metrics=False,
                )
            )
        for name, value in losses.items():
            self.trackers[name].update_state(value)
        return replica_share(sum(weights[name] * value for name, value in losses.items()))

"""Continuing a trained retrieval model on new events: a larger item table, and memory of the old ones.

- ``grow_item_table``: the trained model's weights in a model whose catalogue has more items. Old
  items keep their index and rows; the rows of new items start at zero, so a new item's vector is
  the mean of its attribute embeddings (its kind), or the zero vector for data without attributes
  (it scores 0 for every query until it is trained), never random noise; [MASK] keeps its row at
  the table's new end.
- ``AdaptingRetrievalModel``: next-item retrieval whose batches mix new rows with replayed older
  rows (``replayed`` flags). Without a teacher every row trains with the next-item loss (experience
  replay). With a teacher (the model being continued, frozen) the replayed rows are instead
  distilled towards the teacher's softmax over the items it knew, as ADER does (Mi et al., RecSys
  2020): cross-entropy between the teacher's and the student's distributions over the old items.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recsys_tasks.constants import PAD_INDEX
from recsys_tasks.models.losses import replica_share
from recsys_tasks.models.retrieval import NextItemRetrievalModel, prefix_item_cells


def _without_model_scope(name: str) -> str:
    """A variable's name below its model's own scope (``sequence_encoder_3/items/...`` → ``items/...``)."""
    return name.split("/", 1)[-1]


def grow_item_table(trained: NextItemRetrievalModel, grown: NextItemRetrievalModel) -> None:
    """Copy ``trained``'s weights into ``grown``, built alike but for a catalogue at least as large.

    Tables with a row per vocabulary index (padding, items, [MASK]) keep their padding and item rows,
    get zero rows for the new items and their [MASK] row at the end; the attribute table keeps its
    rows and gets zero rows for new attributes; every other weight must have the same shape.
    """
    old_items, new_items = trained.encoder.config.n_items, grown.encoder.config.n_items
    if new_items < old_items:
        raise ValueError(f"the catalogue shrank from {old_items} to {new_items} items: the new table must extend it")
    # Paired by name: Keras lists trainable weights before frozen ones, so the order depends on what is frozen.
    old_weights = {_without_model_scope(weight.name): weight for weight in trained.parameters()}
    new_weights = {_without_model_scope(weight.name): weight for weight in grown.parameters()}
    if len(old_weights) != len(trained.parameters()):
        raise ValueError("two weights of the trained model share a name below the model: they cannot be paired")
    if old_weights.keys() != new_weights.keys():
        differ = sorted(old_weights.keys() ^ new_weights.keys())
        raise ValueError(f"the models differ in shape: weights {', '.join(differ)} are in one only")
    for name, old in old_weights.items():
        new = new_weights[name]
        value = old.numpy()
        if tuple(old.shape) == tuple(new.shape):
            new.assign(value)
            continue
        grown_value = np.zeros(new.shape, value.dtype)
        if old.shape[0] == old_items + 2 and new.shape[0] == new_items + 2 and old.shape[1:] == new.shape[1:]:
            grown_value[: old_items + 1] = value[: old_items + 1]
            grown_value[-1] = value[-1]
        elif "attribute_embedding" in name and old.shape[0] < new.shape[0] and old.shape[1:] == new.shape[1:]:
            grown_value[: len(value)] = value
        elif "item_attributes" in name:
            continue  # the item → attribute map is the new catalogue's, set by the caller
        else:
            raise ValueError(f"weight {name} changed shape from {tuple(old.shape)} to {tuple(new.shape)}")
        new.assign(grown_value)


class AdaptingRetrievalModel(NextItemRetrievalModel):
    """Full-softmax retrieval over new and replayed rows, the replayed ones optionally distilled.

    ``features["replayed"]`` [B, L] is 1 on every position of a replayed row. ``distillation_weight``
    scales the distillation loss against the next-item loss of the new rows (ADER's λ).
    """

    def __init__(
        self,
        encoder,
        item_frequencies: np.ndarray,
        *,
        teacher: NextItemRetrievalModel | None = None,
        distillation_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(encoder, item_frequencies, loss="full_softmax", **kwargs)
        if teacher is not None:
            teacher.trainable = False
        self.teacher, self.distillation_weight = teacher, distillation_weight
        self.loss_trackers["distillation"] = tf.keras.metrics.Mean(name="distillation_loss")

    def compute_loss(self, features, training=False):
        inputs, targets = features["inputs"], features["targets"]
        is_target = tf.greater(targets, 0)
        hidden = self.encoder(inputs, causal=True, training=training)
        queries = self.head(tf.boolean_mask(hidden, is_target))
        next_items = tf.boolean_mask(targets, is_target)
        cells = prefix_item_cells(inputs, is_target, self.encoder.config.n_items)
        logits = self.catalogue_logits(queries, self.encoder.item_vectors(), cells)
        next_item_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=next_items - 1, logits=logits)
        if self.teacher is None:
            loss = tf.reduce_mean(next_item_loss)
            self.loss_trackers["retrieval"].update_state(loss)
            return replica_share(loss)
        replayed = tf.boolean_mask(tf.greater(features["replayed"], 0), is_target)
        new = tf.logical_not(replayed)
        retrieval = tf.math.divide_no_nan(
            tf.reduce_sum(tf.where(new, next_item_loss, 0.0)), tf.reduce_sum(tf.cast(new, tf.float32))
        )
        replayed_logits = tf.boolean_mask(logits, replayed)
        distillation = self._distillation_loss(inputs, is_target, features["replayed"], replayed_logits)
        self.loss_trackers["retrieval"].update_state(retrieval)
        self.loss_trackers["distillation"].update_state(distillation)
        return replica_share(retrieval + self.distillation_weight * distillation)

    def _distillation_loss(self, inputs, is_target, replayed, student_logits):
        """Cross-entropy of the student's softmax over the teacher's items against the teacher's, on the
        targets of the replayed rows (``student_logits``: theirs, in row-major order)."""
        rows = tf.reduce_any(tf.greater(replayed, 0), axis=1)
        teacher_items = self.teacher.encoder.config.n_items
        # Replayed rows hold old items only; anything newer is unknown to the teacher and reads as padding.
        teacher_inputs = tf.boolean_mask(inputs, rows)
        teacher_inputs = tf.where(teacher_inputs > teacher_items, tf.cast(PAD_INDEX, inputs.dtype), teacher_inputs)
        teacher_is_target = tf.boolean_mask(is_target, rows)
        hidden = self.teacher.encoder(teacher_inputs, causal=True, training=False)
        queries = self.teacher.head(tf.boolean_mask(hidden, teacher_is_target))
        cells = prefix_item_cells(teacher_inputs, teacher_is_target, teacher_items)
        teacher_logits = self.teacher.catalogue_logits(queries, self.teacher.encoder.item_vectors(), cells)
        per_target = tf.nn.softmax_cross_entropy_with_logits(
            labels=tf.stop_gradient(tf.nn.softmax(teacher_logits)), logits=student_logits[:, :teacher_items]
        )
        return tf.math.divide_no_nan(tf.reduce_sum(per_target), tf.cast(tf.size(per_target), tf.float32))

    def epoch_loss(self) -> float:
        loss = float(self.loss_trackers["retrieval"].result())
        if self.teacher is not None:
            loss += self.distillation_weight * float(self.loss_trackers["distillation"].result())
        return loss


def adaptive_distillation_weight(base: float, old_items: int, items: int, replayed: int, new: int) -> float:
    """ADER's λ_t = λ_base · √(|I_old| / |I| · |E| / |D|): more weight on memory when few items are new
    and the replay set is large against the new data."""
    if not replayed or not new:
        return 0.0
    return base * float(np.sqrt(old_items / items * replayed / new))

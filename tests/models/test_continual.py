"""A trained model grown to a larger catalogue, and the loss of new plus replayed rows."""

from __future__ import annotations

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pytest
import tensorflow as tf

from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.models.continual import AdaptingRetrievalModel, adaptive_distillation_weight, grow_item_table
from recsys_tasks.models.encoder import SequenceEncoder
from recsys_tasks.models.retrieval import NextItemRetrievalModel

CONFIG = EncoderConfig.of_size("tiny", n_items=6, max_length=4, n_attributes=3, max_attributes=1, dropout=0.0)


def _model(config: EncoderConfig, seed: int, model_class=NextItemRetrievalModel, **kwargs) -> NextItemRetrievalModel:
    tf.keras.utils.set_random_seed(seed)
    model = model_class(SequenceEncoder(config), np.ones(config.n_items + 2), **kwargs)
    model.query_vectors(tf.zeros((1, config.max_length), tf.int32))
    return model


def test_a_grown_table_keeps_old_rows_moves_mask_and_starts_new_items_at_their_attributes() -> None:
    trained = _model(CONFIG, seed=0)
    trained.encoder.set_item_attributes(np.array([[0], [1], [1], [2], [2], [3], [3], [0]]))
    grown = _model(CONFIG.model_copy(update={"n_items": 8}), seed=1)
    grow_item_table(trained, grown)
    grown.encoder.set_item_attributes(np.array([[0], [1], [1], [2], [2], [3], [3], [2], [0], [0]]))

    old_ids = trained.encoder.items.id_embedding.embeddings.numpy()
    new_ids = grown.encoder.items.id_embedding.embeddings.numpy()
    np.testing.assert_array_equal(new_ids[:7], old_ids[:7])  # padding and items 1..6
    np.testing.assert_array_equal(new_ids[9], old_ids[7])  # [MASK] moved to the end
    np.testing.assert_array_equal(new_ids[7:9], 0.0)
    attributes = grown.encoder.items.attribute_embedding.embeddings.numpy()
    vectors = grown.encoder.item_vectors().numpy()
    np.testing.assert_allclose(vectors[7], attributes[2])  # new item 7 = its attribute's embedding
    np.testing.assert_allclose(vectors[8], 0.0)  # new item 8 has no attribute: neutral, not noise
    np.testing.assert_allclose(vectors[1:7], trained.encoder.item_vectors().numpy()[1:7], rtol=1e-6)
    history = tf.constant([[0, 1, 2, 3]])
    np.testing.assert_allclose(grown.query_vectors(history), trained.query_vectors(history), rtol=1e-5)


def test_a_smaller_catalogue_or_another_shape_is_refused() -> None:
    trained = _model(CONFIG, seed=0)
    with pytest.raises(ValueError, match="shrank from 6 to 5 items"):
        grow_item_table(trained, _model(CONFIG.model_copy(update={"n_items": 5}), seed=0))
    with pytest.raises(ValueError, match="changed shape"):
        grow_item_table(trained, _model(CONFIG.model_copy(update={"d_model": 64}), seed=0))


BATCH = {
    "inputs": tf.constant([[0, 1, 2, 3], [0, 0, 4, 5]]),
    "targets": tf.constant([[0, 2, 3, 4], [0, 0, 5, 6]]),
    "replayed": tf.constant([[0, 0, 0, 0], [1, 1, 1, 1]]),
}


def _gradient_norm(model: AdaptingRetrievalModel, loss_of) -> float:
    with tf.GradientTape() as tape:
        loss = loss_of(model)
    gradients = tape.gradient(loss, model.trainable_variables)
    return float(tf.linalg.global_norm([g for g in gradients if g is not None]))


def test_distillation_towards_an_identical_teacher_pulls_nowhere_and_towards_another_one_does() -> None:
    teacher = _model(CONFIG, seed=0)
    student = _model(CONFIG, seed=0, model_class=AdaptingRetrievalModel, teacher=teacher, distillation_weight=1.0)
    grow_item_table(teacher, student)
    assert (
        _gradient_norm(
            student,
            lambda m: m._distillation_loss(
                BATCH["inputs"], BATCH["targets"] > 0, BATCH["replayed"], _replayed_logits(m)
            ),
        )
        < 1e-6
    )
    other = _model(CONFIG, seed=7, model_class=AdaptingRetrievalModel, teacher=teacher, distillation_weight=1.0)
    assert (
        _gradient_norm(
            other,
            lambda m: m._distillation_loss(
                BATCH["inputs"], BATCH["targets"] > 0, BATCH["replayed"], _replayed_logits(m)
            ),
        )
        > 1e-3
    )


def _replayed_logits(model: AdaptingRetrievalModel) -> tf.Tensor:
    from recsys_tasks.models.retrieval import prefix_item_cells

    is_target = BATCH["targets"] > 0
    queries = model.head(tf.boolean_mask(model.encoder(BATCH["inputs"], causal=True), is_target))
    cells = prefix_item_cells(BATCH["inputs"], is_target, model.encoder.config.n_items)
    logits = model.catalogue_logits(queries, model.encoder.item_vectors(), cells)
    return tf.boolean_mask(logits, tf.boolean_mask(BATCH["replayed"] > 0, is_target))


def test_with_a_teacher_replayed_rows_leave_the_next_item_loss_and_without_one_they_join_it() -> None:
    teacher = _model(CONFIG, seed=0)
    distilling = _model(CONFIG, seed=3, model_class=AdaptingRetrievalModel, teacher=teacher, distillation_weight=0.0)
    replaying = _model(CONFIG, seed=3, model_class=AdaptingRetrievalModel)
    new_only = {name: tensor[:1] for name, tensor in BATCH.items()}
    # Weight 0: the distilling model's loss is the next-item loss of the new row alone.
    np.testing.assert_allclose(distilling.compute_loss(BATCH), replaying.compute_loss(new_only), rtol=1e-5)
    assert abs(float(replaying.compute_loss(BATCH)) - float(replaying.compute_loss(new_only))) > 1e-4


def test_the_adaptive_weight_grows_with_the_replay_set_and_shrinks_with_new_items() -> None:
    assert adaptive_distillation_weight(1.0, old_items=100, items=100, replayed=100, new=100) == 1.0
    assert adaptive_distillation_weight(1.0, 100, 400, 100, 100) == 0.5
    assert adaptive_distillation_weight(0.8, 100, 100, 400, 100) == pytest.approx(1.6)
    assert adaptive_distillation_weight(0.8, 100, 100, 0, 100) == 0.0

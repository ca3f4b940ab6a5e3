"""Encoder layers: config/weight round trips, SavedModel export, attention masking, attributes, freezing."""

from __future__ import annotations

from pathlib import Path

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pydantic
import pytest
import tensorflow as tf

from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.models.encoder import SequenceEncoder
from recsys_tasks.models.layers import (
    BottleneckAdapter,
    EmbeddingLoRA,
    ItemRepresentation,
    LoRADense,
    LowPassFilter,
    SelfAttention,
    TransformerBlock,
)
from recsys_tasks.models.pretraining import PretrainingModel
from recsys_tasks.models.retrieval import (
    NextItemRetrievalModel,
    QueryHead,
    RankingHead,
    RepeatOffset,
    prefix_item_cells,
)

D_MODEL = 16
LENGTH = 6
N_ITEMS = 40
CONFIG = EncoderConfig(n_items=N_ITEMS, max_length=LENGTH, d_model=D_MODEL, n_layers=2, n_heads=2, dropout=0.1)
N_ATTRIBUTES = 5
WITH_ATTRIBUTES = CONFIG.model_copy(update={"n_attributes": N_ATTRIBUTES, "max_attributes": 2})
WITH_FILTER = CONFIG.model_copy(update={"filter_mix": 0.7})


def attribute_table() -> np.ndarray:
    """Item i carries attributes (i mod 5) + 1 and, for even i, also 5; padding and [MASK] none."""
    table = np.zeros((N_ITEMS + 2, 2), np.int32)
    items = np.arange(1, N_ITEMS + 1)
    table[items, 0] = items % N_ATTRIBUTES + 1
    table[items, 1] = np.where(items % 2 == 0, N_ATTRIBUTES, 0)
    return table


@pytest.fixture(autouse=True)
def seeded() -> None:
    tf.keras.utils.set_random_seed(0)


def hidden_states(batch: int = 3) -> tf.Tensor:
    return tf.constant(np.random.default_rng(1).normal(size=(batch, LENGTH, D_MODEL)), tf.float32)


def histories() -> tf.Tensor:
    return tf.constant([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6], [0, 0, 0, 0, 0, 40]], tf.int32)


def randomise_weights(layer: tf.keras.layers.Layer, seed: int = 2) -> None:
    """Give every weight a random value, so zero-initialised parts (adapters, heads) matter too; lookup
    tables (integer weights) stay."""
    rng = np.random.default_rng(seed)
    layer.set_weights(
        [
            rng.normal(scale=0.3, size=w.shape).astype(np.float32) if w.dtype.kind == "f" else w
            for w in layer.get_weights()
        ]
    )


def causal_mask() -> tf.Tensor:
    return tf.cast(tf.linalg.band_part(tf.ones((3, LENGTH, LENGTH)), -1, 0), tf.bool)


def encoder(config: EncoderConfig = CONFIG) -> SequenceEncoder:
    model = SequenceEncoder(config)
    if config.n_attributes:
        model.set_item_attributes(attribute_table())
    model(histories())
    return model


LAYER_CASES = {
    "bottleneck_adapter": (lambda: BottleneckAdapter(4, name="adapter"), lambda layer, x: layer(x)),
    "transformer_block": (
        lambda: TransformerBlock(D_MODEL, 2, 32, 0.1, adapter_dim=4, name="block"),
        lambda layer, x: layer(x, attention_mask=causal_mask(), training=False),
    ),
    "transformer_block_without_adapters": (
        lambda: TransformerBlock(D_MODEL, 4, 24, 0.0, name="plain_block"),
        lambda layer, x: layer(x, attention_mask=causal_mask(), training=False),
    ),
    "transformer_block_with_lora": (
        lambda: TransformerBlock(D_MODEL, 2, 32, 0.1, lora_rank=2, name="lora_block"),
        lambda layer, x: layer(x, attention_mask=causal_mask(), training=False),
    ),
    "transformer_block_with_filter": (
        lambda: TransformerBlock(D_MODEL, 2, 32, 0.1, filter_mix=0.5, filter_window=LENGTH, name="filter_block"),
        lambda layer, x: layer(x, attention_mask=causal_mask(), training=False, valid=tf.ones(x.shape[:2], tf.bool)),
    ),
    "low_pass_filter": (
        lambda: LowPassFilter(LENGTH, 2, name="low_pass"),
        lambda layer, x: layer(x, valid=tf.constant(np.arange(LENGTH) >= np.array([[0], [1], [3]]))),
    ),
    "self_attention": (
        lambda: SelfAttention(D_MODEL, 4, 0.0, lora_rank=3, name="attention"),
        lambda layer, x: layer(x, attention_mask=causal_mask(), training=False),
    ),
    "lora_dense": (lambda: LoRADense(8, rank=2, alpha=4.0, name="projection"), lambda layer, x: layer(x)),
    "query_head": (lambda: QueryHead(name="query_head"), lambda layer, x: layer(x)),
    "embedding_lora": (
        lambda: EmbeddingLoRA(10, D_MODEL, rank=2, name="item_lora"),
        lambda layer, x: layer(tf.constant([[1, 2, 9], [0, 3, 3]])),
    ),
    "ranking_head": (lambda: RankingHead(8, initial_score=3.5, name="ranking_head"), lambda layer, x: layer(x, x)),
    "repeat_offset": (
        lambda: RepeatOffset(name="repeat_offset"),
        lambda layer, x: layer(x[:, 0, :], tf.constant([[0, 1], [2, 15]], tf.int64)),
    ),
}


@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_layer_round_trips_through_config_and_weights(case: str) -> None:
    make, call = LAYER_CASES[case]
    original = make()
    inputs = hidden_states()
    call(original, inputs)
    randomise_weights(original)
    expected = call(original, inputs).numpy()

    copy = type(original).from_config(original.get_config())
    call(copy, inputs)
    before_restore = call(copy, inputs).numpy()
    copy.set_weights(original.get_weights())

    assert copy.get_config() == original.get_config()
    np.testing.assert_array_equal(call(copy, inputs).numpy(), expected)
    assert not np.allclose(before_restore, expected), "fresh weights must differ, or the test proves nothing"


def test_prefix_cells_name_each_distinct_item_before_or_at_each_query_position() -> None:
    inputs = tf.constant([[0, 0, 3, 5, 3, 41], [2, 4, 6, 8, 10, 12]], tf.int32)  # 41 is [MASK] when N_ITEMS = 40
    is_target = tf.constant([[False, False, True, True, True, True], [False, True, False, False, False, True]])

    cells = prefix_item_cells(inputs, is_target, N_ITEMS).numpy()

    # Query rows in row-major order: (0,2) (0,3) (0,4) (0,5) (1,1) (1,5); columns are item − 1.
    expected = {
        (0, 2), (1, 2), (1, 4), (2, 2), (2, 4), (3, 2), (3, 4),
        (4, 1), (4, 3),
        (5, 1), (5, 3), (5, 5), (5, 7), (5, 9), (5, 11),
    }  # fmt: skip
    assert sorted(map(tuple, cells.tolist())) == sorted(expected)  # no duplicates, no padding, no [MASK]


def test_repeat_offset_starts_at_zero_and_moves_only_the_named_cells() -> None:
    layer = RepeatOffset()
    logits = tf.zeros((2, 4))
    cells = tf.constant([[0, 1], [1, 3]], tf.int64)
    np.testing.assert_array_equal(layer(logits, cells).numpy(), np.zeros((2, 4)))

    layer.scaled_offset.assign(-2.0 / RepeatOffset.SCALE)

    np.testing.assert_array_equal(layer(logits, cells).numpy(), [[0, -2, 0, 0], [0, 0, 0, -2]])


def test_item_representation_round_trips_with_its_attribute_table() -> None:
    original = ItemRepresentation(N_ITEMS + 2, D_MODEL, N_ATTRIBUTES, 2, name="items")
    original.set_item_attributes(attribute_table())
    randomise_weights(original)
    original.set_item_attributes(attribute_table())  # randomising must not leave a random lookup table

    copy = ItemRepresentation.from_config(original.get_config())
    copy(histories())
    copy.set_weights(original.get_weights())

    assert copy.get_config() == original.get_config()
    np.testing.assert_array_equal(copy.item_attributes.numpy(), attribute_table())
    np.testing.assert_array_equal(copy(histories()).numpy(), original(histories()).numpy())


@pytest.mark.parametrize("update", [{"adapter_dim": 4}, {"lora_rank": 2, "n_attributes": 5, "max_attributes": 2}])
def test_encoder_round_trips_through_config_and_weights(update: dict) -> None:
    original = encoder(CONFIG.model_copy(update=update))
    randomise_weights(original)
    expected = original(histories()).numpy()

    copy = SequenceEncoder.from_config(original.get_config())
    copy(histories())
    copy.set_weights(original.get_weights())
    if copy.config.n_attributes:
        original.set_item_attributes(attribute_table())
        copy.set_item_attributes(attribute_table())
        expected = original(histories()).numpy()

    assert copy.config == original.config
    np.testing.assert_array_equal(copy(histories()).numpy(), expected)
    assert expected.shape == (3, LENGTH, D_MODEL)


class _QueryModule(tf.Module):
    def __init__(self, model: SequenceEncoder):
        super().__init__()
        self.model = model
        self.encode = tf.function(
            lambda history: model(history, causal=True, training=False),
            input_signature=[tf.TensorSpec([None, LENGTH], tf.int32, name="history")],
        )


def test_saved_model_round_trip_gives_identical_outputs(tmp_path: Path) -> None:
    original = encoder(WITH_ATTRIBUTES.model_copy(update={"lora_rank": 2}))
    randomise_weights(original)
    original.set_item_attributes(attribute_table())
    module = _QueryModule(original)
    expected = original(histories(), causal=True).numpy()

    tf.saved_model.save(module, str(tmp_path / "saved"), signatures={"encode": module.encode})
    loaded = tf.saved_model.load(str(tmp_path / "saved"))

    np.testing.assert_allclose(loaded.encode(histories()).numpy(), expected, rtol=1e-6, atol=1e-6)
    from_signature = loaded.signatures["encode"](history=histories())
    np.testing.assert_allclose(next(iter(from_signature.values())).numpy(), expected, rtol=1e-6, atol=1e-6)


def fourier_low_pass(signal: np.ndarray, frequencies: int) -> np.ndarray:
    """BSARec's filter, written with NumPy's FFT: keep the lowest rfft components along the sequence axis."""
    spectrum = np.fft.rfft(signal, axis=1)
    spectrum[:, frequencies:] = 0
    return np.fft.irfft(spectrum, n=signal.shape[1], axis=1)


def test_low_pass_filter_is_bsarecs_fourier_filter_and_its_causal_form_the_newest_row_of_it() -> None:
    layer = LowPassFilter(LENGTH, 2)
    signal = hidden_states().numpy()
    everywhere = tf.ones(signal.shape[:2], tf.bool)
    layer(signal, everywhere)
    layer.sqrt_beta.assign(np.full(D_MODEL, np.sqrt(0.5), np.float32))
    low = fourier_low_pass(signal, 2)
    expected = low + 0.5 * (signal - low)

    np.testing.assert_allclose(layer(signal, everywhere, causal=False).numpy(), expected, atol=1e-5)
    causal = layer(signal, everywhere, causal=True).numpy()
    np.testing.assert_allclose(causal[:, -1], expected[:, -1], atol=1e-5)
    for length in (2, 4):  # position t reads only the prefix ending at t, as if it were the newest item
        prefix = np.concatenate([np.zeros_like(signal[:, length:]), signal[:, :length]], axis=1)
        low = fourier_low_pass(prefix, 2)
        np.testing.assert_allclose(causal[:, length - 1], (low + 0.5 * (prefix - low))[:, -1], atol=1e-5)


@pytest.mark.parametrize("config", [CONFIG, WITH_FILTER], ids=["attention", "attention+filter"])
@pytest.mark.parametrize("position", [1, 3])
def test_causal_attention_never_sees_the_future(position: int, config: EncoderConfig) -> None:
    model = encoder(config)
    randomise_weights(model)
    sequence = np.array([[3, 9, 4, 12, 7, 21]], dtype=np.int32)
    changed_future = sequence.copy()
    changed_future[0, position + 1 :] = [30, 31, 32, 33, 34][: LENGTH - position - 1]

    causal = [model(tf.constant(s), causal=True).numpy() for s in (sequence, changed_future)]
    bidirectional = [model(tf.constant(s), causal=False).numpy() for s in (sequence, changed_future)]

    np.testing.assert_allclose(causal[0][:, : position + 1], causal[1][:, : position + 1], atol=1e-6)
    assert not np.allclose(causal[0][:, position + 1 :], causal[1][:, position + 1 :], atol=1e-3)
    assert not np.allclose(bidirectional[0][:, : position + 1], bidirectional[1][:, : position + 1], atol=1e-3)


@pytest.mark.parametrize("causal", [True, False])
def test_padding_embedding_does_not_reach_real_positions(causal: bool) -> None:
    model = encoder()
    randomise_weights(model)
    padded = tf.constant([[0, 0, 5, 6, 7, 8]], tf.int32)
    before = model(padded, causal=causal).numpy()

    table = model.items.id_embedding.embeddings.numpy()
    table[0] = np.random.default_rng(3).normal(scale=5.0, size=D_MODEL)
    model.items.id_embedding.embeddings.assign(table)
    after = model(padded, causal=causal).numpy()

    np.testing.assert_allclose(after[:, 2:], before[:, 2:], atol=1e-5)
    assert not np.allclose(after[:, :2], before[:, :2], atol=1e-3), "the padding row must be what was changed"


def test_new_bottleneck_adapter_is_the_identity() -> None:
    inputs = hidden_states()

    np.testing.assert_array_equal(BottleneckAdapter(4)(inputs).numpy(), inputs.numpy())


def test_new_query_head_is_the_identity() -> None:
    inputs = hidden_states()

    np.testing.assert_array_equal(QueryHead()(inputs).numpy(), inputs.numpy())


def test_inserting_adapters_leaves_the_pretrained_function_unchanged(tmp_path: Path) -> None:
    plain = encoder()
    randomise_weights(plain)
    checkpoint = tf.train.Checkpoint(encoder=plain).write(str(tmp_path / "encoder"))
    with_adapters = encoder(CONFIG.model_copy(update={"adapter_dim": 4}))

    # As finetune loads it: adapters are absent from the checkpoint and keep their identity initialisation.
    tf.train.Checkpoint(encoder=with_adapters).read(checkpoint).assert_nontrivial_match()

    np.testing.assert_allclose(with_adapters(histories()).numpy(), plain(histories()).numpy(), atol=1e-6)
    assert len(with_adapters.weights) > len(plain.weights)


def test_freeze_backbone_leaves_only_adapters_trainable() -> None:
    model = encoder(CONFIG.model_copy(update={"adapter_dim": 4}))
    all_names = {w.name for w in model.weights}

    model.freeze_backbone()

    trainable = {w.name for w in model.trainable_weights}
    assert trainable, "adapters must stay trainable"
    assert all("adapter" in name for name in trainable), sorted(trainable)
    assert {name for name in all_names if "adapter" in name} == trainable
    assert any("id_embedding" in w.name for w in model.non_trainable_weights)
    # Per block: two adapters, each a down and an up projection with kernel and bias.
    assert len(trainable) == CONFIG.n_layers * 2 * 4


def test_freeze_backbone_with_lora_leaves_only_the_low_rank_factors_trainable() -> None:
    model = encoder(WITH_ATTRIBUTES.model_copy(update={"lora_rank": 2}))

    model.freeze_backbone()

    trainable = sorted(w.name for w in model.trainable_weights)
    # Per block: query, key, value and output projections, each with a down and an up factor.
    assert len(trainable) == CONFIG.n_layers * 4 * 2, trainable
    assert all("lora_" in name for name in trainable), trainable


def pretrained_and_extended(tmp_path: Path, extension: dict) -> tuple[SequenceEncoder, SequenceEncoder]:
    """A randomised encoder, and an encoder with ``extension`` (LoRA factors) restored from its checkpoint."""
    plain = encoder(WITH_ATTRIBUTES)
    randomise_weights(plain)
    plain.set_item_attributes(attribute_table())
    checkpoint = tf.train.Checkpoint(encoder=plain).write(str(tmp_path / "encoder"))
    extended = SequenceEncoder(WITH_ATTRIBUTES.model_copy(update=extension))
    extended(histories())
    # The new factors are absent from the checkpoint; everything else must match.
    tf.train.Checkpoint(encoder=extended).read(checkpoint).assert_nontrivial_match()
    return plain, extended


def test_inserting_lora_leaves_the_pretrained_function_unchanged(tmp_path: Path) -> None:
    plain, with_lora = pretrained_and_extended(tmp_path, {"lora_rank": 2})

    np.testing.assert_array_equal(with_lora.items.item_attributes.numpy(), attribute_table())
    np.testing.assert_allclose(with_lora(histories()).numpy(), plain(histories()).numpy(), atol=1e-6)


def test_item_lora_starts_as_no_change_and_alone_stays_trainable_when_frozen(tmp_path: Path) -> None:
    plain, with_item_lora = pretrained_and_extended(tmp_path, {"item_lora_rank": 2})

    np.testing.assert_allclose(with_item_lora(histories()).numpy(), plain(histories()).numpy(), atol=1e-6)
    np.testing.assert_allclose(with_item_lora.item_vectors().numpy(), plain.item_vectors().numpy(), atol=1e-6)
    with_item_lora.freeze_backbone()
    assert sorted(w.name.split("/")[-1] for w in with_item_lora.trainable_weights) == ["down:0", "up:0"]

    randomise_weights(with_item_lora)  # the update moved: looked-up and catalogue vectors move together
    with_item_lora.set_item_attributes(attribute_table())
    looked_up = with_item_lora.items(tf.constant([[3, 4]])).numpy()[0]
    np.testing.assert_allclose(looked_up, with_item_lora.item_vectors().numpy()[[3, 4]], atol=1e-5)
    assert not np.allclose(looked_up, plain.item_vectors().numpy()[[3, 4]], atol=1e-3)


@pytest.mark.parametrize(
    "config", [CONFIG, WITH_ATTRIBUTES.model_copy(update={"adapter_dim": 4, "lora_rank": 2}), WITH_FILTER]
)
def test_the_newest_position_alone_computes_what_the_full_pass_gives_it(config: EncoderConfig) -> None:
    model = encoder(config)
    randomise_weights(model)
    if config.n_attributes:
        model.set_item_attributes(attribute_table())
    full, full_attention = model(histories(), return_attention=True)
    newest, newest_attention = model(histories(), return_attention=True, newest_only=True)

    assert newest.shape == (len(histories()), 1, D_MODEL)
    np.testing.assert_allclose(newest.numpy()[:, 0], full.numpy()[:, -1], atol=1e-5)
    np.testing.assert_allclose(newest_attention.numpy()[:, :, 0], full_attention.numpy()[:, :, -1], atol=1e-6)


@pytest.mark.parametrize("config", [WITH_ATTRIBUTES, WITH_FILTER], ids=["attention", "attention+filter"])
@pytest.mark.parametrize("causal", [True, False])
def test_trimming_shared_left_padding_changes_no_output(config: EncoderConfig, causal: bool) -> None:
    model = encoder(config)
    randomise_weights(model)
    model.set_item_attributes(attribute_table())
    full = histories()[:1]  # [[0, 0, 5, 6, 7, 8]]

    trimmed, whole = model(full[:, 2:], causal=causal), model(full, causal=causal)
    np.testing.assert_allclose(trimmed.numpy(), whole.numpy()[:, 2:], atol=1e-5)


def test_attributes_give_an_item_never_trained_a_representation_shared_with_its_kind() -> None:
    model = encoder(WITH_ATTRIBUTES)
    randomise_weights(model)
    model.set_item_attributes(attribute_table())
    table = model.items.id_embedding.embeddings.numpy()
    table[[7, 12]] = 0.0  # two items whose id embeddings learnt nothing; 7 and 12 share attribute 3
    model.items.id_embedding.embeddings.assign(table)

    vectors = model.item_vectors().numpy()

    assert np.abs(vectors[7]).sum() > 0
    np.testing.assert_allclose(vectors[7], model.items.attribute_embedding.embeddings.numpy()[3], atol=1e-6)
    assert not np.allclose(vectors[12], vectors[7]), "item 12 also carries attribute 5"


def test_item_vectors_are_the_embedding_table() -> None:
    model = encoder()

    vectors = model.item_vectors()

    assert tuple(vectors.shape) == (CONFIG.vocabulary_size, D_MODEL) == (N_ITEMS + 2, D_MODEL)
    assert CONFIG.mask_index == N_ITEMS + 1


def test_encoder_config_rejects_width_not_divisible_by_heads() -> None:
    with pytest.raises(pydantic.ValidationError, match="d_model=30 is not divisible by n_heads=4"):
        EncoderConfig(n_items=10, d_model=30, n_heads=4)


def test_encoder_config_sizes_and_overrides() -> None:
    config = EncoderConfig.of_size("tiny", n_items=10, n_heads=4)

    assert (config.d_model, config.n_layers, config.n_heads) == (32, 1, 4)


def pretraining_model(config: EncoderConfig = WITH_ATTRIBUTES, **weights: float) -> PretrainingModel:
    objectives = dict(cloze_weight=1.0, attribute_weight=0.2, autoregressive_weight=1.0, contrastive_weight=0.1)
    return PretrainingModel(encoder(config), temperature=0.2, **{**objectives, **weights})


def test_pretraining_without_cloze_or_attributes_skips_the_bidirectional_pass() -> None:
    model = pretraining_model(cloze_weight=0.0, attribute_weight=0.0)

    # No masked histories in the batch: the bidirectional pass would fail if it ran.
    loss = model.compute_loss({"view_a": histories(), "view_b": histories()}, training=True)

    assert float(loss) > 0
    assert {name: int(tracker.count.numpy()) for name, tracker in model.trackers.items()} == {
        "cloze": 0,
        "attribute": 0,
        "autoregressive": 1,
        "contrastive": 1,
    }


NO_SEQUENCE_OBJECTIVE = dict(cloze_weight=0.0, autoregressive_weight=0.0, contrastive_weight=0.0)


def test_pretraining_with_no_objective_left_is_refused() -> None:
    with pytest.raises(ValueError, match="every pre-training objective has weight 0"):
        PretrainingModel(encoder(), temperature=0.2, attribute_weight=0.2, **NO_SEQUENCE_OBJECTIVE)


def test_attribute_prediction_alone_is_an_objective_when_items_have_attributes() -> None:
    model = pretraining_model(**NO_SEQUENCE_OBJECTIVE)
    masked = histories().numpy()
    masked[:, -1] = CONFIG.mask_index

    loss = model.compute_loss({"masked": masked, "labels": np.where(masked == CONFIG.mask_index, 7, 0)})

    assert float(loss) > 0


def one_epoch_without_moving(
    model: tf.keras.Model, batches: list[dict], epoch_loss
) -> tuple[float, float, list[float]]:
    """Fit one epoch over ``batches`` with a learning rate of 0, so that each batch's loss can be recomputed:
    (TFRS's reported "loss", ``epoch_loss()`` read after the epoch, each batch's loss)."""
    model.compile(optimizer=tf.keras.optimizers.SGD(0.0))
    stacked = {name: np.stack([batch[name] for batch in batches]) for name in batches[0]}
    reported = model.fit(tf.data.Dataset.from_tensor_slices(stacked), verbose=0).history["loss"][-1]
    after_epoch = epoch_loss()
    return reported, after_epoch, [float(model.compute_loss(batch, training=True)) for batch in batches]


def assert_epoch_mean_not_last_batch(reported: float, epoch: float, batch_losses: list[float]) -> None:
    assert reported == pytest.approx(batch_losses[-1], rel=1e-5)  # what the logs used to show
    assert epoch == pytest.approx(np.mean(batch_losses), rel=1e-5)
    assert np.mean(batch_losses) != pytest.approx(batch_losses[-1], rel=1e-2)


NO_DROPOUT = {"dropout": 0.0}


def test_retrieval_epoch_loss_is_the_mean_over_the_epochs_batches() -> None:
    model = NextItemRetrievalModel(encoder(CONFIG.model_copy(update=NO_DROPOUT)), np.ones(N_ITEMS + 2))
    randomise_weights(model.encoder)  # an untrained encoder scores every batch near log(items)
    rng = np.random.default_rng(3)
    batches = []
    for _ in range(3):
        histories = rng.integers(1, N_ITEMS + 1, size=(2, LENGTH + 1)).astype(np.int32)
        batches.append({"inputs": histories[:, :-1], "targets": histories[:, 1:]})

    assert_epoch_mean_not_last_batch(*one_epoch_without_moving(model, batches, model.epoch_loss))


def test_pretraining_epoch_losses_are_means_over_the_epochs_batches() -> None:
    model = pretraining_model(WITH_ATTRIBUTES.model_copy(update=NO_DROPOUT))
    randomise_weights(model.encoder)
    rng = np.random.default_rng(4)
    batches = []
    for _ in range(3):
        histories = rng.integers(1, N_ITEMS + 1, size=(2, LENGTH)).astype(np.int32)
        hidden = rng.random(histories.shape) < 0.4
        hidden[:, -1] = True  # every row has a masked position
        batches.append(
            {
                "masked": np.where(hidden, CONFIG.mask_index, histories).astype(np.int32),
                "labels": np.where(hidden, histories, 0).astype(np.int32),
                "view_a": histories,
                "view_b": histories[:, ::-1].copy(),
            }
        )

    assert_epoch_mean_not_last_batch(*one_epoch_without_moving(model, batches, lambda: model.epoch_losses()["loss"]))
    assert set(model.epoch_losses()) == {
        "cloze_loss",
        "attribute_loss",
        "autoregressive_loss",
        "contrastive_loss",
        "loss",
    }


def test_the_click_head_learns_against_the_items_users_passed_over_where_the_log_has_them() -> None:
    model = NextItemRetrievalModel(
        encoder(CONFIG.model_copy(update=NO_DROPOUT)), np.ones(N_ITEMS + 2), ranking_weight=1.0, ranking_target="click"
    )
    histories = np.random.default_rng(4).integers(1, N_ITEMS + 1, size=(4, LENGTH + 1)).astype(np.int32)
    batch = {"inputs": histories[:, :-1], "targets": histories[:, 1:]}
    passed_over = {**batch, "shown_negatives": (histories[:, 1:] % N_ITEMS + 1).astype(np.int32)}

    def ranking_loss(features: dict, seed: int) -> float:
        tf.random.set_seed(seed)
        model.loss_trackers["ranking"].reset_state()
        model.compute_loss({name: tf.constant(values) for name, values in features.items()})
        return float(model.loss_trackers["ranking"].result())

    # Every target has a shown negative: no random item is drawn, so the loss does not depend on the seed.
    assert ranking_loss(passed_over, 1) == ranking_loss(passed_over, 2)
    assert ranking_loss(batch, 1) != ranking_loss(batch, 2)

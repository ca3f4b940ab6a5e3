"""Pre-training, fine-tuning and the exported pyfunc, end to end on the tiny synthetic preset."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from recsys_tasks.augmentation.augment import augment
from recsys_tasks.augmentation.config import AugmentConfig
from recsys_tasks.contracts.exported_model import (
    ARTIFACT_FILES,
    ITEM_EMBEDDINGS,
    MODEL_META,
    SAVED_MODEL,
    SequentialRecommender,
)
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR, VOCAB_FILE
from recsys_tasks.contracts.metrics import evaluate_scores
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.ingest import ingest
from recsys_tasks.storage import RunDir
from recsys_tasks.training.config import FinetuneConfig, PretrainConfig
from recsys_tasks.training.finetune import (
    FinetuneSummary,
    WeightsAroundBest,
    finetune,
    load_pretrained_encoder,
    weight_average_momentum,
)
from recsys_tasks.training.pretrain import PretrainSummary, pretrain

MAX_LENGTH = 20
# Without dropout a resumed run is exactly an uninterrupted one; the higher learning rate makes 4 epochs count.
PRETRAIN = dict(model_size="tiny", batch_size=64, learning_rate=3e-3, dropout=0.0)
FIRST_EPOCHS, ALL_EPOCHS = 1, 4
FINETUNE = dict(batch_size=64, seed=0)


def copy_run(source: RunDir, destination: Path) -> RunDir:
    shutil.copytree(source.uri, destination)
    return RunDir(str(destination))


@pytest.fixture(scope="module")
def augmented_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    run = RunDir(str(tmp_path_factory.mktemp("training") / "augmented"))
    ingest(run, IngestConfig(source="synthetic", synthetic_size="tiny", seed=0), b"test-key")
    augment(run, AugmentConfig(max_length=MAX_LENGTH, seed=0))
    return run


@dataclass(frozen=True)
class Pretrained:
    run: RunDir
    first: PretrainSummary
    resumed: PretrainSummary


@pytest.fixture(scope="module")
def pretrained(augmented_run: RunDir, tmp_path_factory: pytest.TempPathFactory) -> Pretrained:
    """Pre-training interrupted after one epoch, then started again (as an Airflow retry would) for all epochs."""
    run = copy_run(augmented_run, tmp_path_factory.mktemp("pretrained") / "run")
    first = pretrain(run, PretrainConfig(epochs=FIRST_EPOCHS, **PRETRAIN))
    resumed = pretrain(run, PretrainConfig(epochs=ALL_EPOCHS, **PRETRAIN))
    return Pretrained(run, first, resumed)


def finetuned(pretrained: Pretrained, folder: Path, **config) -> tuple[RunDir, FinetuneSummary]:
    run = copy_run(pretrained.run, folder / "run")
    return run, finetune(run, FinetuneConfig(**{**FINETUNE, **config}))


@pytest.fixture(scope="module")
def untrained(pretrained: Pretrained, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, FinetuneSummary]:
    return finetuned(pretrained, tmp_path_factory.mktemp("untrained"), mode="full", epochs=0)


@pytest.fixture(scope="module")
def fully_finetuned(pretrained: Pretrained, tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, FinetuneSummary]:
    return finetuned(pretrained, tmp_path_factory.mktemp("full"), mode="full", epochs=5)


@pytest.fixture(scope="module")
def recommender(fully_finetuned: tuple[RunDir, FinetuneSummary]) -> SequentialRecommender:
    run, _ = fully_finetuned
    return SequentialRecommender.from_folder(run.path(EXPORTED_MODEL_DIR))


def exported_encoder_dropout(run: RunDir) -> float:
    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        return json.loads((folder / ARTIFACT_FILES[MODEL_META]).read_text())["encoder"]["dropout"]


def exported_item_embeddings(run: RunDir) -> np.ndarray:
    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        return np.load(folder / ARTIFACT_FILES[ITEM_EMBEDDINGS])


def pretrained_item_embeddings(run: RunDir) -> np.ndarray:
    splits = LeaveOneOutSplits.load(run)
    return load_pretrained_encoder(run).item_vectors().numpy()[: splits.n_items + 1]


def encoder_weights(run: RunDir) -> list[np.ndarray]:
    return load_pretrained_encoder(run).get_weights()


# ---------------------------------------------------------------- pretrain


def test_pretrain_resumes_from_the_last_checkpoint(pretrained: Pretrained) -> None:
    assert pretrained.first.resumed_from_epoch == 0
    assert pretrained.first.epochs == FIRST_EPOCHS
    assert pretrained.resumed.resumed_from_epoch == FIRST_EPOCHS
    assert pretrained.resumed.epochs == ALL_EPOCHS
    assert pretrained.run.folder_is_complete("pretrain/encoder")


def test_resumed_pretraining_equals_an_uninterrupted_run(
    augmented_run: RunDir, pretrained: Pretrained, tmp_path: Path
) -> None:
    straight_run = copy_run(augmented_run, tmp_path / "straight")

    straight = pretrain(straight_run, PretrainConfig(epochs=ALL_EPOCHS, **PRETRAIN))

    assert straight.resumed_from_epoch == 0
    assert straight.losses == pytest.approx(pretrained.resumed.losses, rel=1e-5)
    for resumed_weight, straight_weight in zip(
        encoder_weights(pretrained.run), encoder_weights(straight_run), strict=True
    ):
        np.testing.assert_allclose(resumed_weight, straight_weight, rtol=1e-5, atol=1e-6)


def test_pretrain_retried_after_its_last_epoch_republishes_the_same_encoder(
    pretrained: Pretrained, tmp_path: Path
) -> None:
    run = copy_run(pretrained.run, tmp_path / "retry")

    retried = pretrain(run, PretrainConfig(epochs=ALL_EPOCHS, **PRETRAIN))

    assert retried.resumed_from_epoch == ALL_EPOCHS
    assert retried.losses == {}
    for published, republished in zip(encoder_weights(pretrained.run), encoder_weights(run), strict=True):
        np.testing.assert_array_equal(published, republished)


@pytest.mark.parametrize(
    "loss",
    [
        "pretrain_cloze_loss",
        "pretrain_attribute_loss",
        "pretrain_autoregressive_loss",
        "pretrain_contrastive_loss",
        "pretrain_loss",
    ],
)
def test_pretraining_losses_fall(pretrained: Pretrained, loss: str) -> None:
    first_epoch, last_epoch = pretrained.first.losses[loss], pretrained.resumed.losses[loss]

    assert last_epoch < first_epoch - 0.2, (first_epoch, last_epoch)


def test_cloze_loss_starts_near_chance(pretrained: Pretrained) -> None:
    n_items = LeaveOneOutSplits.load(pretrained.run).n_items
    # A softmax over n_items + 2 indices that knows nothing scores log(n_items + 2).
    assert pretrained.first.losses["pretrain_cloze_loss"] == pytest.approx(np.log(n_items + 2), abs=0.3)


# ---------------------------------------------------------------- finetune


def test_zero_epochs_exports_the_pretrained_model(untrained: tuple[RunDir, FinetuneSummary]) -> None:
    run, summary = untrained

    assert (summary.epochs_run, summary.best_epoch) == (0, 0)
    assert summary.trainable_parameters == summary.total_parameters
    np.testing.assert_array_equal(exported_item_embeddings(run), pretrained_item_embeddings(run))


def test_full_finetuning_improves_validation_ndcg(
    untrained: tuple[RunDir, FinetuneSummary], fully_finetuned: tuple[RunDir, FinetuneSummary]
) -> None:
    _, baseline = untrained
    _, tuned = fully_finetuned

    assert tuned.best_epoch >= 1
    assert tuned.epochs_run >= tuned.best_epoch
    assert tuned.validation["ndcg_at_10"] > baseline.validation["ndcg_at_10"] + 0.1, (
        baseline.validation["ndcg_at_10"],
        tuned.validation["ndcg_at_10"],
    )
    assert tuned.validation["hr_at_10"] > baseline.validation["hr_at_10"]
    assert tuned.trainable_parameters == tuned.total_parameters
    assert exported_encoder_dropout(fully_finetuned[0]) == PRETRAIN["dropout"]  # full keeps the pre-training rate


def test_exported_model_carries_no_optimizer_state(fully_finetuned: tuple[RunDir, FinetuneSummary]) -> None:
    import tensorflow as tf

    run, _ = fully_finetuned
    saved_model = Path(run.uri) / EXPORTED_MODEL_DIR / ARTIFACT_FILES[SAVED_MODEL]
    names = tf.train.load_checkpoint(str(saved_model / "variables" / "variables")).get_variable_to_shape_map()

    assert names
    assert not [name for name in names if "optimizer" in name]


@pytest.mark.parametrize(
    ("average_steps", "steps_per_epoch", "momentum"),
    [(100, 514, 0.99), (100, 40, 0.9), (100, 8, 0.5), (100, 7, 0.0), (0, 514, 0.0)],
)
def test_weight_average_spans_at_most_a_quarter_of_an_epoch(
    average_steps: int, steps_per_epoch: int, momentum: float
) -> None:
    assert weight_average_momentum(average_steps, steps_per_epoch) == pytest.approx(momentum)


def test_weight_averaging_exports_weights_that_trail_the_last_step(pretrained: Pretrained, tmp_path: Path) -> None:
    distance_moved = {}
    for average_steps in (0, 100):
        run, summary = finetuned(pretrained, tmp_path / str(average_steps), epochs=1, average_steps=average_steps)
        assert summary.best_epoch == 1
        distance_moved[average_steps] = np.linalg.norm(exported_item_embeddings(run) - pretrained_item_embeddings(run))

    # The average mixes in the epoch's earlier steps, so it has come less far from the pre-trained table.
    assert 0 < distance_moved[100] < 0.95 * distance_moved[0], distance_moved


@pytest.mark.parametrize(
    ("improvements", "window"),
    [
        # epoch 4 is best: epochs 2-3 before it and 5-6 after it join; 7 is too far
        ([True, False, False, True, False, False, False], [2, 3, 4, 5, 6]),
        # a new best at epoch 5 starts the window again from the epochs before it
        ([True, True, False, True, True, False, False], [3, 4, 5, 6, 7]),
        # the best epoch is the first: nothing before it
        ([True, False, False, False], [1, 2, 3]),
        # training ended one epoch after the best
        ([False, True, True, False, True, False], [3, 4, 5, 6]),
        # no epoch beat the starting point: nothing to average
        ([False, False, False], []),
    ],
)
def test_weights_around_best_hold_the_best_epoch_and_two_either_side(
    improvements: list[bool], window: list[int]
) -> None:
    rng = np.random.default_rng(0)
    weights = {epoch: rng.normal(size=(4, 3)).astype(np.float32) for epoch in range(1, len(improvements) + 1)}
    around_best = WeightsAroundBest(reach=2)
    for epoch, improved in enumerate(improvements, start=1):
        around_best.add(epoch, [weights[epoch], np.array([7])], improved)

    assert around_best.epochs == window
    if window:
        averaged, untrained = around_best.average()
        np.testing.assert_array_equal(averaged, np.mean([weights[epoch] for epoch in window], axis=0, dtype=np.float32))
        assert averaged.dtype == np.float32
        assert untrained.tolist() == [7]


def test_exported_weights_are_the_best_epoch_or_the_average_around_it(
    fully_finetuned: tuple[RunDir, FinetuneSummary],
) -> None:
    run, summary = fully_finetuned
    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        meta = json.loads((folder / ARTIFACT_FILES[MODEL_META]).read_text())

    assert summary.best_epoch in summary.exported_epochs
    assert summary.exported_epochs == list(range(summary.exported_epochs[0], summary.exported_epochs[-1] + 1))
    assert len(summary.exported_epochs) == 1 or (
        max(summary.exported_epochs) - summary.best_epoch <= 2
        and summary.best_epoch - min(summary.exported_epochs) <= 2
    )
    assert meta["exported_epochs"] == summary.exported_epochs


def test_frozen_finetuning_trains_adapters_only(pretrained: Pretrained, tmp_path: Path) -> None:
    run, summary = finetuned(
        pretrained, tmp_path, mode="frozen", epochs=2, adapter_dim=8, item_lora_rank=0, frozen_dropout=0.05
    )

    assert summary.mode == "frozen"
    assert 0 < summary.trainable_parameters < 0.25 * summary.total_parameters
    np.testing.assert_array_equal(exported_item_embeddings(run), pretrained_item_embeddings(run))
    assert exported_encoder_dropout(run) == 0.05  # the frozen backbone runs with the lighter dropout


def test_in_batch_retrieval_loss_trains_too(pretrained: Pretrained, untrained, tmp_path: Path) -> None:
    _, baseline = untrained

    _, summary = finetuned(pretrained, tmp_path, mode="full", epochs=3, loss="in_batch")

    assert summary.validation["ndcg_at_10"] > baseline.validation["ndcg_at_10"]


def test_lora_finetuning_trains_low_rank_factors_and_head_only(pretrained: Pretrained, tmp_path: Path) -> None:
    run, summary = finetuned(pretrained, tmp_path, mode="lora", epochs=2, lora_rank=2, item_lora_rank=3)

    config = load_pretrained_encoder(run).config
    d_model, n_layers = config.d_model, config.n_layers
    # Per layer: query, key, value, output, each 2 · rank · d_model; the query head d_model² + d_model;
    # the item table's update 3 · (vocabulary + d_model); the repeat offset 1.
    assert summary.trainable_parameters == (
        n_layers * 4 * 2 * 2 * d_model + d_model * d_model + d_model + 3 * (config.vocabulary_size + d_model) + 1
    )
    # The item vectors may move, but only by a rank-3 update of the pre-trained table (the id table stays frozen).
    update = exported_item_embeddings(run) - pretrained_item_embeddings(run)
    assert np.linalg.matrix_rank(update, tol=1e-5) <= 3


def test_item_lora_rank_grows_with_the_encoder_width_unless_given(pretrained: Pretrained) -> None:
    width = load_pretrained_encoder(pretrained.run).config.d_model

    scaled = load_pretrained_encoder(pretrained.run, item_lora_rank=FinetuneConfig().item_lora_rank).config
    given = load_pretrained_encoder(pretrained.run, item_lora_rank=3).config

    assert width == 32 and scaled.item_lora_rank == 2  # tiny: one rank per 16 of width
    assert given.item_lora_rank == 3


def test_head_only_finetuning_leaves_the_encoder_as_pretrained(pretrained: Pretrained, tmp_path: Path) -> None:
    run, summary = finetuned(pretrained, tmp_path, mode="head", epochs=3)

    d_model = load_pretrained_encoder(run).config.d_model
    assert summary.trainable_parameters == d_model * d_model + d_model + 1  # query head and repeat offset
    np.testing.assert_array_equal(exported_item_embeddings(run), pretrained_item_embeddings(run))


def test_multitask_finetuning_exports_a_rating_head(pretrained: Pretrained, tmp_path: Path) -> None:
    import tensorflow as tf

    run, summary = finetuned(pretrained, tmp_path, mode="full", epochs=2, ranking_weight=1.0)

    splits = LeaveOneOutSplits.load(run)
    inputs, _, targets = splits.holdout("validation")
    rating = tf.saved_model.load(f"{run.path(EXPORTED_MODEL_DIR)}/saved_model").signatures["rating"]
    predicted = next(iter(rating(history=tf.constant(inputs), item=tf.constant(targets, tf.int32)).values())).numpy()
    actual = splits.ratings[splits.offsets[1:] - 2]

    assert summary.trainable_parameters > summary.total_parameters * 0.9
    # The head starts at the mean training rating and stays calibrated: its error is about the
    # spread of the ratings (≈ 0.9), not the ≈ 3.7 of an uncentred head predicting 0.
    assert abs(predicted.mean() - actual.mean()) < 0.3
    assert np.sqrt(np.mean((predicted - actual) ** 2)) < 1.1 * np.std(actual)


def exported_validation_metrics(run: RunDir) -> dict[str, float]:
    splits = LeaveOneOutSplits.load(run)
    inputs, seen, targets = splits.holdout("validation")
    scorer = SequentialRecommender.from_folder(run.path(EXPORTED_MODEL_DIR)).score_indices
    return evaluate_scores(scorer, inputs, seen, targets, splits.n_items)


def test_exported_model_reproduces_the_reported_validation_metrics(
    fully_finetuned: tuple[RunDir, FinetuneSummary], recommender: SequentialRecommender
) -> None:
    run, summary = fully_finetuned

    assert exported_validation_metrics(run) == pytest.approx(summary.validation, abs=0.005)
    assert recommender.n_items == LeaveOneOutSplits.load(run).n_items


def test_refit_trains_the_chosen_epochs_again_on_the_validation_targets(
    pretrained: Pretrained, fully_finetuned: tuple[RunDir, FinetuneSummary], tmp_path: Path
) -> None:
    _, without_refit = fully_finetuned

    run, summary = finetuned(pretrained, tmp_path, mode="full", epochs=5, refit=True)

    # The same seed makes the same choice on validation; the refit then trains up to its last epoch ...
    assert (summary.exported_epochs, summary.validation) == (without_refit.exported_epochs, without_refit.validation)
    assert summary.refit_epochs == max(summary.exported_epochs) > 0
    # ... on the validation items too, which the exported model has therefore learnt (0.675 against 0.639).
    assert exported_validation_metrics(run)["ndcg_at_10"] > summary.validation["ndcg_at_10"] + 0.02


def test_refit_keeps_the_pretrained_model_when_no_epoch_beat_it(pretrained: Pretrained, tmp_path: Path) -> None:
    run, summary = finetuned(pretrained, tmp_path, mode="full", epochs=0, refit=True)

    assert (summary.exported_epochs, summary.refit_epochs) == ([0], 0)
    np.testing.assert_array_equal(exported_item_embeddings(run), pretrained_item_embeddings(run))


def test_repeat_offset_learns_that_nobody_repeats_and_scores_consumed_items_with_it(
    fully_finetuned: tuple[RunDir, FinetuneSummary], recommender: SequentialRecommender
) -> None:
    run, _ = fully_finetuned
    inputs, seen, _ = LeaveOneOutSplits.load(run).holdout("validation")
    offset = recommender.repeat_offset
    assert offset < -0.2  # the synthetic users never meet an item twice

    plain = recommender.encode(inputs)[0] @ recommender.item_vectors.T
    scored = recommender.score_indices(inputs, consumed=seen)

    consumed = np.zeros(plain.shape, dtype=bool)
    consumed[np.arange(len(seen))[:, None], seen] = True
    consumed[:, 0] = False
    np.testing.assert_allclose(scored[consumed], plain[consumed] + offset, rtol=1e-6)
    np.testing.assert_array_equal(scored[~consumed], plain[~consumed])


# ---------------------------------------------------------------- serving


def some_user_history(run: RunDir, length: int = 6) -> list[int]:
    """External item ids of the first user's first ``length`` interactions."""
    splits = LeaveOneOutSplits.load(run)
    vocabulary = run.read_parquet(VOCAB_FILE).to_pandas().set_index("index")["item_id"]
    return [int(vocabulary[index]) for index in splits.sequences[0][:length]]


def test_predict_returns_k_new_items_best_first(
    fully_finetuned: tuple[RunDir, FinetuneSummary], recommender: SequentialRecommender
) -> None:
    run, _ = fully_finetuned
    history = some_user_history(run)
    known_ids = set(run.read_parquet(VOCAB_FILE)["item_id"].to_pylist())

    output = recommender.predict(None, pd.DataFrame({"history": [history], "k": [5]}))

    assert list(output.columns) == ["item_ids", "scores", "because"]
    item_ids, scores = output.loc[0, "item_ids"], output.loc[0, "scores"]
    assert len(output.loc[0, "because"]) == 5 and set(output.loc[0, "because"]) <= set(history)
    assert len(item_ids) == len(set(item_ids)) == 5
    assert not set(item_ids) & set(history)
    assert set(item_ids) <= known_ids
    assert np.all(np.isfinite(scores))
    assert scores == sorted(scores, reverse=True)


def test_predict_uses_each_rows_k_and_the_default_from_params(
    fully_finetuned: tuple[RunDir, FinetuneSummary], recommender: SequentialRecommender
) -> None:
    run, _ = fully_finetuned
    history = some_user_history(run)
    frame = pd.DataFrame({"history": [history, history[:2]], "k": [3, None]})

    output = recommender.predict(None, frame, params={"k": 7})
    top_three = recommender.predict(None, pd.DataFrame({"history": [history], "k": [3]}))

    assert [len(ids) for ids in output["item_ids"]] == [3, 7]
    assert output.loc[0, "item_ids"] == top_three.loc[0, "item_ids"]


def test_predict_can_rank_every_unseen_item(
    fully_finetuned: tuple[RunDir, FinetuneSummary], recommender: SequentialRecommender
) -> None:
    run, _ = fully_finetuned
    history = some_user_history(run)
    every_unseen = recommender.n_items - len(history)

    output = recommender.predict(None, pd.DataFrame({"history": [history], "k": [every_unseen]}))

    known_ids = set(run.read_parquet(VOCAB_FILE)["item_id"].to_pylist())
    assert set(output.loc[0, "item_ids"]) == known_ids - set(history)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (pd.DataFrame({"history": [[10**9, 10**9 + 1]], "k": [5]}), "no item this model knows"),
        (pd.DataFrame({"history": [[]], "k": [5]}), "no item this model knows"),
        (pd.DataFrame({"items": [[1, 2]]}), "needs a 'history' column"),
    ],
    ids=["unknown-ids", "empty-history", "missing-column"],
)
def test_predict_rejects_unusable_histories(
    recommender: SequentialRecommender, frame: pd.DataFrame, message: str
) -> None:
    with pytest.raises(MlflowException, match=message):
        recommender.predict(None, frame)


@pytest.mark.parametrize("k_beyond_catalogue", [0, -1, "too many"])
def test_predict_rejects_k_out_of_range(
    fully_finetuned: tuple[RunDir, FinetuneSummary], recommender: SequentialRecommender, k_beyond_catalogue
) -> None:
    run, _ = fully_finetuned
    history = some_user_history(run)
    k = recommender.n_items - len(history) + 1 if k_beyond_catalogue == "too many" else k_beyond_catalogue

    with pytest.raises(MlflowException, match=f"k={k} is outside 1..{recommender.n_items - len(history)}"):
        recommender.predict(None, pd.DataFrame({"history": [history], "k": [k]}))


# ---------------------------------------------------------------- accelerator


def test_cpu_defaults_leave_mixed_precision_and_xla_off() -> None:
    import tensorflow as tf

    from recsys_tasks.training.accelerator import configure_accelerator
    from recsys_tasks.training.config import AcceleratorConfig

    assert not tf.config.list_physical_devices("GPU"), "this test describes a machine without a GPU"
    assert configure_accelerator(AcceleratorConfig()) is False
    assert tf.keras.mixed_precision.global_policy().name == "float32"


def test_mixed_precision_and_xla_train_when_switched_on(pretrained: Pretrained, tmp_path: Path) -> None:
    import tensorflow as tf

    from recsys_tasks.training.config import AcceleratorConfig

    try:
        # Windows: a fraction of the steps per epoch; the accelerator, not the rows, is what is tested here.
        # A batch larger than all the rows makes one batch of one width: XLA compiles the train step once per
        # distinct batch shape, and length-bucketed batches of every width cost a compilation each.
        run, summary = finetuned(
            pretrained,
            tmp_path,
            epochs=1,
            examples="windows",
            batch_size=4096,
            accelerator=AcceleratorConfig(mixed_precision=True, xla=True),
        )
        assert tf.keras.mixed_precision.global_policy().name == "mixed_float16"
    finally:
        tf.keras.mixed_precision.set_global_policy("float32")

    assert np.isfinite(list(summary.validation.values())).all()
    assert exported_item_embeddings(run).dtype == np.float32
    # Served in float32, with its int8 variant converted from that.
    assert (Path(run.uri) / "finetune/model/user_embedding_int8.tflite").stat().st_size > 0

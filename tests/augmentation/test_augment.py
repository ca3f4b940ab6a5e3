"""Augmentation views (crop, mask, reorder) and the augment stage on tiny synthetic data."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from recsys_tasks.augmentation.augment import augment, build_sequences
from recsys_tasks.augmentation.config import AugmentConfig
from recsys_tasks.augmentation.views import crop, mask, random_view, reorder
from recsys_tasks.contracts.layout import (
    AUGMENT_SUMMARY_FILE,
    INTERACTIONS_FILE,
    ITEMS_FILE,
    SEQUENCES_FILE,
    VIEWS_FILE,
    VOCAB_FILE,
)
from recsys_tasks.contracts.reports import AugmentSummary
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.ingest import ingest
from recsys_tasks.storage import RunDir

MASK_INDEX = 999


def distinct_sequence(length: int) -> np.ndarray:
    return np.arange(100, 100 + length, dtype=np.int32)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ---------------------------------------------------------------- views


@pytest.mark.parametrize(
    ("length", "keep_ratio", "expected_length"),
    [(10, 0.6, 6), (7, 1.0, 7), (3, 0.2, 1), (1, 0.6, 1), (9, 0.5, 4)],
)
def test_crop_keeps_a_contiguous_run_of_floor_ratio_items(length: int, keep_ratio: float, expected_length: int) -> None:
    sequence = distinct_sequence(length)
    original = sequence.copy()

    for seed in range(20):
        cropped = crop(sequence, keep_ratio, rng(seed))
        assert len(cropped) == expected_length
        start = int(cropped[0] - 100)
        np.testing.assert_array_equal(cropped, sequence[start : start + expected_length])
    np.testing.assert_array_equal(sequence, original)


def test_crop_start_covers_every_possible_offset() -> None:
    sequence = distinct_sequence(10)
    generator = rng(1)

    starts = {int(crop(sequence, 0.6, generator)[0]) - 100 for _ in range(200)}

    assert starts == set(range(5))


@pytest.mark.parametrize(
    ("length", "mask_ratio", "expected_hidden"), [(10, 0.3, 3), (20, 0.5, 10), (3, 0.2, 0), (7, 0.0, 0)]
)
def test_mask_hides_exactly_floor_ratio_positions(length: int, mask_ratio: float, expected_hidden: int) -> None:
    sequence = distinct_sequence(length)
    original = sequence.copy()

    for seed in range(20):
        masked = mask(sequence, mask_ratio, MASK_INDEX, rng(seed))
        hidden = masked == MASK_INDEX
        assert hidden.sum() == expected_hidden
        np.testing.assert_array_equal(masked[~hidden], sequence[~hidden])
    np.testing.assert_array_equal(sequence, original)


@pytest.mark.parametrize(("length", "reorder_ratio"), [(20, 0.5), (10, 0.3), (12, 1.0)])
def test_reorder_only_shuffles_a_window_of_floor_ratio_items(length: int, reorder_ratio: float) -> None:
    sequence = distinct_sequence(length)
    original = sequence.copy()
    window = int(np.floor(reorder_ratio * length))
    moved_anything = False

    for seed in range(20):
        reordered = reorder(sequence, reorder_ratio, rng(seed))
        assert Counter(reordered.tolist()) == Counter(sequence.tolist())
        moved = np.flatnonzero(reordered != sequence)
        if len(moved):
            moved_anything = True
            assert moved[-1] - moved[0] < window
    assert moved_anything
    np.testing.assert_array_equal(sequence, original)


@pytest.mark.parametrize(("length", "reorder_ratio"), [(10, 0.1), (3, 0.3), (5, 0.0)])
def test_reorder_of_a_window_shorter_than_two_changes_nothing(length: int, reorder_ratio: float) -> None:
    sequence = distinct_sequence(length)

    np.testing.assert_array_equal(reorder(sequence, reorder_ratio, rng()), sequence)


def view_kind(view: np.ndarray, sequence: np.ndarray) -> str:
    if MASK_INDEX in view:
        return "mask"
    if len(view) < len(sequence):
        return "crop"
    return "reorder" if Counter(view.tolist()) == Counter(sequence.tolist()) else "unknown"


def random_views(sequence: np.ndarray, seed: int, count: int) -> list[np.ndarray]:
    generator = rng(seed)
    ratios = dict(crop_ratio=0.6, mask_ratio=0.3, reorder_ratio=0.5, mask_index=MASK_INDEX)
    return [random_view(sequence, generator, **ratios) for _ in range(count)]


def test_random_view_is_deterministic_given_the_seed() -> None:
    sequence = distinct_sequence(12)

    first, again, other = (random_views(sequence, seed, 30) for seed in (7, 7, 8))

    assert [v.tolist() for v in first] == [v.tolist() for v in again]
    assert [v.tolist() for v in first] != [v.tolist() for v in other]


def test_random_view_uses_all_three_augmentations() -> None:
    sequence = distinct_sequence(12)

    kinds = Counter(view_kind(view, sequence) for view in random_views(sequence, 3, 300))

    assert set(kinds) == {"crop", "mask", "reorder"}
    assert min(kinds.values()) > 60, kinds


# ---------------------------------------------------------------- augment stage


def ingested_run(folder: Path, pseudonymisation_key: bytes = b"test-key") -> RunDir:
    run = RunDir(str(folder))
    ingest(run, IngestConfig(source="synthetic", synthetic_size="tiny", seed=0), pseudonymisation_key)
    return run


@pytest.fixture(scope="module")
def augmented(tmp_path_factory: pytest.TempPathFactory) -> tuple[RunDir, AugmentSummary]:
    run = ingested_run(tmp_path_factory.mktemp("augment"))
    return run, augment(run, AugmentConfig(seed=0))


def read(run: RunDir, name: str) -> pl.DataFrame:
    return pl.from_arrow(run.read_parquet(name))


def as_dict(frame: pl.DataFrame, key: str, value: str) -> dict:
    return dict(zip(frame[key].to_list(), frame[value].to_list(), strict=True))


def test_vocabulary_indexes_every_interacted_item_contiguously(augmented: tuple[RunDir, AugmentSummary]) -> None:
    run, summary = augmented
    vocabulary = read(run, VOCAB_FILE)
    interacted = read(run, INTERACTIONS_FILE)["item_id"].unique().sort()

    assert vocabulary["index"].to_list() == list(range(1, vocabulary.height + 1))
    assert vocabulary["item_id"].to_list() == interacted.to_list()
    assert summary.items == vocabulary.height
    assert summary.mask_index == vocabulary.height + 1


def test_vocabulary_carries_the_catalogue_attributes(augmented: tuple[RunDir, AugmentSummary]) -> None:
    run, _ = augmented
    vocabulary = read(run, VOCAB_FILE)
    catalogue = read(run, ITEMS_FILE)
    attributes_of = as_dict(catalogue, "item_id", "attributes")

    assert vocabulary["attributes"].to_list() == [attributes_of[item] for item in vocabulary["item_id"].to_list()]


def test_sequences_list_each_users_items_in_time_order(augmented: tuple[RunDir, AugmentSummary]) -> None:
    run, summary = augmented
    sequences = read(run, SEQUENCES_FILE)
    item_of_index = as_dict(read(run, VOCAB_FILE), "index", "item_id")
    chronological = (
        read(run, INTERACTIONS_FILE)
        .sort("user_id", "timestamp")
        .group_by("user_id", maintain_order=True)
        .agg("item_id")
    )
    expected = as_dict(chronological, "user_id", "item_id")

    decoded = {
        user: [item_of_index[index] for index in items]
        for user, items in sequences.select("user_id", "items").iter_rows()
    }

    assert decoded == expected
    assert summary.users == sequences.height == len(expected)
    assert min(len(items) for items in decoded.values()) >= 3


def views_with_histories(run: RunDir) -> list[tuple[list[int], list[int], list[int]]]:
    """(training history, view A, view B) for every materialised view pair."""
    histories = [items[:-2] for items in read(run, SEQUENCES_FILE)["items"].to_list()]
    views = read(run, VIEWS_FILE)
    return [(histories[row], a, b) for row, a, b in views.iter_rows()]


def test_views_are_cut_from_training_history_only(augmented: tuple[RunDir, AugmentSummary]) -> None:
    run, summary = augmented
    # A synthetic user meets an item once, so the two held-out items never occur in the training history.
    held_out = [set(items[-2:]) for items in read(run, SEQUENCES_FILE)["items"].to_list()]

    user_rows = read(run, VIEWS_FILE)["user_row"].to_list()
    for row, (history, view_a, view_b) in zip(user_rows, views_with_histories(run), strict=True):
        for view in (view_a, view_b):
            real_items = {item for item in view if item != summary.mask_index}
            assert real_items <= set(history), f"user row {row} sees items outside its training history"
            assert not real_items & held_out[row], f"user row {row} sees a validation or test item"


def test_every_view_is_a_crop_mask_or_reorder_of_the_history(augmented: tuple[RunDir, AugmentSummary]) -> None:
    run, summary = augmented
    config = AugmentConfig()
    kinds = Counter()

    for history, *views in views_with_histories(run):
        for view in views:
            if len(view) < len(history):
                kinds["crop"] += 1
                assert len(view) == max(1, int(np.floor(config.crop_ratio * len(history))))
            elif summary.mask_index in view:
                kinds["mask"] += 1
                expected_hidden = int(np.floor(config.mask_ratio * len(history)))
                assert view.count(summary.mask_index) == expected_hidden
            else:
                kinds["reorder"] += 1
                assert sorted(view) == sorted(history)

    assert set(kinds) == {"crop", "mask", "reorder"}


def test_views_per_user_and_summary_match_the_files(augmented: tuple[RunDir, AugmentSummary]) -> None:
    run, summary = augmented
    views = read(run, VIEWS_FILE)

    assert run.read_json(AUGMENT_SUMMARY_FILE) == summary.model_dump()
    assert summary.view_pairs == views.height == summary.users * AugmentConfig().view_pairs_per_user
    assert views["user_row"].value_counts()["count"].unique().to_list() == [AugmentConfig().view_pairs_per_user]
    assert summary.max_length == AugmentConfig().max_length
    assert summary.sequences_uri == run.uri_of(SEQUENCES_FILE)
    assert summary.views_uri == run.uri_of(VIEWS_FILE)
    assert summary.vocab_uri == run.uri_of(VOCAB_FILE)


def test_views_read_only_the_newest_max_length_items(tmp_path: Path) -> None:
    run = ingested_run(tmp_path / "run")
    summary = augment(run, AugmentConfig(max_length=5, view_pairs_per_user=1))

    for history, *views in views_with_histories(run):
        newest = set(history[-5:])
        for view in views:
            assert {item for item in view if item != summary.mask_index} <= newest
            assert len(view) <= 5


def stage_outputs(run: RunDir) -> list[pa.Table]:
    return [run.read_parquet(name) for name in (SEQUENCES_FILE, VOCAB_FILE, VIEWS_FILE)]


def test_augment_is_deterministic(augmented: tuple[RunDir, AugmentSummary], tmp_path: Path) -> None:
    run, summary = augmented
    again = ingested_run(tmp_path / "again")
    other_seed = ingested_run(tmp_path / "other-seed")

    summary_again = augment(again, AugmentConfig(seed=0))
    augment(other_seed, AugmentConfig(seed=1))

    assert all(a.equals(b) for a, b in zip(stage_outputs(run), stage_outputs(again), strict=True))
    assert summary_again.model_dump(exclude={"sequences_uri", "vocab_uri", "views_uri"}) == summary.model_dump(
        exclude={"sequences_uri", "vocab_uri", "views_uri"}
    )
    assert not run.read_parquet(VIEWS_FILE).equals(other_seed.read_parquet(VIEWS_FILE))


def test_rows_come_in_the_logs_user_order_whatever_the_pseudonymisation_key(
    augmented: tuple[RunDir, AugmentSummary], tmp_path: Path
) -> None:
    run, _ = augmented
    other_key = ingested_run(tmp_path / "other-key", b"another-key")
    augment(other_key, AugmentConfig(seed=0))

    sequences, sequences_other_key = read(run, SEQUENCES_FILE), read(other_key, SEQUENCES_FILE)
    assert not set(sequences["user_id"]) & set(sequences_other_key["user_id"])
    assert sequences.drop("user_id").equals(sequences_other_key.drop("user_id"))
    assert run.read_parquet(VIEWS_FILE).equals(other_key.read_parquet(VIEWS_FILE))
    first_seen = read(run, INTERACTIONS_FILE)["user_id"].unique(maintain_order=True)
    assert sequences["user_id"].to_list() == first_seen.filter(first_seen.is_in(sequences["user_id"])).to_list()


def test_each_event_gets_the_item_its_nearest_slate_showed_and_the_user_passed_over() -> None:
    interactions = pl.DataFrame(
        {
            "user_id": ["a", "a", "a", "b", "b", "b"],
            "item_id": [1, 2, 3, 1, 3, 4],
            "timestamp": [10, 20, 30, 10, 20, 30],
            "rating": [1.0] * 6,
        }
    ).with_columns(pl.col("user_id").cast(pl.Categorical))
    vocabulary = pl.DataFrame({"item_id": [1, 2, 3, 4, 5], "index": pl.Series([1, 2, 3, 4, 5], dtype=pl.Int32)})
    impressions = pl.DataFrame(
        {
            # a: one slate between their first and second event; they clicked 2 and dismissed 4.
            # b: one slate before their first event; 3 was clicked, 5 passed over; 6 is not in the vocabulary.
            "request_id": ["r1", "r1", "r1", "r2", "r2", "r2"],
            "user_id": ["a", "a", "a", "b", "b", "b"],
            "item_id": [5, 2, 4, 6, 3, 5],
            "position": [1, 2, 3, 1, 2, 3],
            "timestamp": [15, 15, 15, 5, 5, 5],
            "positive": [False, True, False, False, True, False],
            "dismissed": [False, False, True, False, False, False],
        }
    )

    users = interactions["user_id"].unique(maintain_order=True)
    sequences = build_sequences(interactions, vocabulary, users, impressions)

    # The dismissed item comes before the higher placed one; a slate counts only until the user's next event.
    assert as_dict(sequences, "user_id", "shown_negatives") == {"a": [0, 4, 0], "b": [5, 0, 0]}
    assert as_dict(sequences, "user_id", "items") == {"a": [1, 2, 3], "b": [1, 3, 4]}
    assert "shown_negatives" not in build_sequences(interactions, vocabulary, users).columns

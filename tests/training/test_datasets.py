"""Training arrays: a row per target or windows over long histories, length-bucketed batches, attributes."""

from __future__ import annotations

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pyarrow as pa
import pytest

from recsys_tasks.contracts.layout import AUGMENT_SUMMARY_FILE, SEQUENCES_FILE, VOCAB_FILE
from recsys_tasks.contracts.reports import AugmentSummary
from recsys_tasks.contracts.splits import LeaveOneOutSplits, left_pad
from recsys_tasks.storage import RunDir
from recsys_tasks.training.datasets import (
    PaddedArrays,
    batches_dataset,
    item_attribute_table,
    length_bucketed_batches,
    length_bucketed_rows,
)


def splits(sequences, ratings=None, max_length=3) -> LeaveOneOutSplits:
    return LeaveOneOutSplits.from_sequences(sequences, ratings, n_items=20, max_length=max_length, mask_index=21)


def test_long_histories_are_cut_into_windows_covering_every_target_once() -> None:
    # Training history of the first user: 1..6 (7 and 8 are validation and test).
    data = splits(
        [list(range(1, 9)), [3, 4, 5], [9, 10, 11, 12]], ratings=[[float(i) for i in range(1, 9)], [1.0] * 3, [2.0] * 4]
    )

    rows = data.next_item_rows("windows")
    pairs = rows.take(np.arange(len(rows)), data.max_length)

    np.testing.assert_array_equal(pairs["inputs"], [[3, 4, 5], [0, 1, 2], [0, 0, 9]])
    np.testing.assert_array_equal(pairs["targets"], [[4, 5, 6], [0, 2, 3], [0, 0, 10]])
    np.testing.assert_array_equal(pairs["ratings"], [[4, 5, 6], [0, 2, 3], [0, 0, 2]])


def test_prefixes_make_every_target_its_own_row_with_the_window_before_it() -> None:
    # Training histories: 1..6 (7 and 8 held out), [3] (nothing to predict), [9, 10].
    data = splits(
        [list(range(1, 9)), [3, 4, 5], [9, 10, 11, 12]], ratings=[[float(i) for i in range(1, 9)], [1.0] * 3, [2.0] * 4]
    )

    rows = data.next_item_rows("prefixes")
    pairs = rows.take(np.arange(len(rows)), data.max_length)

    np.testing.assert_array_equal(pairs["inputs"], [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5], [0, 0, 9]])
    np.testing.assert_array_equal(pairs["targets"], [[0, 0, 2], [0, 0, 3], [0, 0, 4], [0, 0, 5], [0, 0, 6], [0, 0, 10]])
    np.testing.assert_array_equal(pairs["ratings"][:, -1], [2, 3, 4, 5, 6, 2])
    assert not pairs["ratings"][:, :-1].any()


def test_a_refit_also_trains_on_each_users_validation_item_but_never_the_test_item() -> None:
    # Histories without the test item: 1..7, [3, 4], [9, 10, 11].
    data = splits([list(range(1, 9)), [3, 4, 5], [9, 10, 11, 12]])

    rows = data.next_item_rows("prefixes", held_out=1)
    pairs = rows.take(np.arange(len(rows)), data.max_length)

    assert pairs["targets"][:, -1].tolist() == [2, 3, 4, 5, 6, 7, 4, 10, 11]
    np.testing.assert_array_equal(pairs["inputs"][5], [4, 5, 6])
    with pytest.raises(ValueError, match="held_out=3"):
        data.next_item_rows("prefixes", held_out=3)


def padded_rows(
    sequences: list, all_ratings: list, max_length: int, examples: str, held_out: int
) -> dict[str, np.ndarray]:
    """The rows as padded arrays built from the users' lists by their definition (as training built
    them before it kept offsets only): the reference the offsets must reproduce."""
    inputs, targets, ratings = [], [], []
    for sequence, sequence_ratings in zip(sequences, all_ratings, strict=True):
        history = sequence[:-held_out]
        ends = range(1, len(history)) if examples == "prefixes" else range(len(history) - 1, 0, -max_length)
        for end in ends:
            start = max(0, end - max_length)
            first_target = end if examples == "prefixes" else start + 1
            inputs.append(history[start:end])
            targets.append([0] * (first_target - start - 1) + history[first_target : end + 1])
            ratings.append([0.0] * (first_target - start - 1) + sequence_ratings[first_target : end + 1])
    return {
        "inputs": left_pad(inputs, max_length),
        "targets": left_pad(targets, max_length),
        "ratings": left_pad(ratings, max_length, np.float32),
    }


@pytest.mark.parametrize("held_out", [2, 1])
@pytest.mark.parametrize("examples", ["prefixes", "windows"])
def test_row_offsets_batch_exactly_as_padded_rows(examples: str, held_out: int) -> None:
    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(1, 20, size=rng.integers(2, 30))) for _ in range(200)]
    ratings = [list(rng.integers(1, 6, size=len(s)).astype(float)) for s in sequences]
    data = splits(sequences, ratings=ratings, max_length=8)
    rows = data.next_item_rows(examples, held_out)
    reference = padded_rows(sequences, ratings, data.max_length, examples, held_out)

    assert all(array.ndim == 1 for array in (rows.items, rows.starts, rows.ends, rows.first_targets))
    full = rows.take(np.arange(len(rows)), data.max_length)
    for name, array in reference.items():
        np.testing.assert_array_equal(full[name], array)
        assert full[name].dtype == array.dtype
    # The same shuffled, length-bucketed epoch, batch for batch, from offsets and from padded arrays.
    batches = [
        length_bucketed_batches(source, 16, np.random.default_rng(5)) for source in (rows, PaddedArrays(reference))
    ]
    for from_offsets, from_arrays in zip(*batches, strict=True):
        for name in reference:
            np.testing.assert_array_equal(from_offsets[name].numpy(), from_arrays[name].numpy())


def test_mean_training_rating_ignores_validation_and_test_items() -> None:
    data = splits([[1, 2, 3, 4]], ratings=[[1.0, 3.0, 5.0, 5.0]])

    assert data.mean_training_rating() == 2.0
    assert splits([[1, 2, 3]]).mean_training_rating() == 0.0


def test_left_pad_keeps_the_newest_items_right_aligned() -> None:
    padded = left_pad([[1, 2, 3, 4], [], [5]], 3)

    np.testing.assert_array_equal(padded, [[2, 3, 4], [0, 0, 0], [0, 0, 5]])
    assert padded.dtype == np.int32
    assert left_pad([[0.5, 1.5]], 3, np.float32).tolist() == [[0.0, 0.5, 1.5]]
    assert left_pad([[1, 2]], 0).shape == (1, 0) and left_pad([], 4).shape == (0, 4)


def write_sequences(run: RunDir, table: pa.Table, items: int) -> None:
    """The augment stage's sequences and the summary that sizes them (histories read 3 items)."""
    run.write_parquet(SEQUENCES_FILE, table)
    summary = AugmentSummary(
        sequences_uri="",
        vocab_uri="",
        views_uri="",
        users=table.num_rows,
        items=items,
        max_length=3,
        mask_index=items + 1,
        view_pairs=0,
        cleaning=[],
    )
    run.write_json(AUGMENT_SUMMARY_FILE, summary.model_dump())


def test_ratings_that_never_vary_are_read_as_implicit_feedback(tmp_path) -> None:
    for ratings, explicit in (([1.0] * 6, False), ([1.0, 4.0, 5.0, 2.0, 3.0, 1.0], True)):
        run = RunDir(str(tmp_path / f"explicit-{explicit}"))
        sequences = {"user_id": ["a", "b"], "items": [[1, 2, 3], [2, 3, 1]], "ratings": [ratings[:3], ratings[3:]]}
        write_sequences(run, pa.table(sequences), items=3)
        assert (LeaveOneOutSplits.load(run).ratings is not None) is explicit


def test_loaded_splits_hold_the_stored_sequences_as_flat_arrays(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    sequences, ratings = [[4, 1, 2, 7], [3, 3, 5], [9, 8, 6, 5, 2]], [[5.0, 4, 3, 2], [1.0, 2, 3], [2.0, 2, 4, 4, 1]]
    chunks = [slice(0, 2), slice(2, 3)]  # as a parquet file of two row groups reads back
    table = pa.Table.from_batches(
        [
            pa.record_batch(
                {
                    "user_id": [str(user) for user in range(len(sequences))][rows],
                    "items": pa.array(sequences[rows], pa.large_list(pa.int32())),
                    "ratings": pa.array(ratings[rows], pa.large_list(pa.float32())),
                }
            )
            for rows in chunks
        ]
    )
    write_sequences(run, table, items=9)

    data = LeaveOneOutSplits.load(run)

    expected = splits(sequences, ratings, max_length=3)
    assert data.user_ids == ["0", "1", "2"] and (data.items.dtype, data.ratings.dtype) == (np.int32, np.float32)
    for name in ("items", "offsets", "ratings"):
        np.testing.assert_array_equal(getattr(data, name), getattr(expected, name))
    assert [list(sequence) for sequence in data.sequences] == sequences
    assert [list(history) for history in data.train_histories()] == [[4, 1], [3], [9, 8, 6]]
    inputs, seen, targets = data.holdout("validation")
    np.testing.assert_array_equal(targets, [2, 3, 5])
    np.testing.assert_array_equal(seen, [[0, 4, 1], [0, 0, 3], [9, 8, 6]])
    np.testing.assert_array_equal(data.holdout("test")[2], [7, 5, 2])
    np.testing.assert_array_equal(data.padded_histories(2, 2), [[4, 1], [0, 3], [8, 6]])
    np.testing.assert_array_equal(data.padded_histories(0, 5), left_pad(sequences, 5))
    np.testing.assert_array_equal(data.item_frequencies(), [0, 1, 0, 1, 1, 0, 1, 0, 1, 1, 0])  # 9 items, pad, [MASK]
    assert data.mean_training_rating() == pytest.approx((5 + 4 + 1 + 2 + 2 + 4) / 6)


def test_a_sequence_without_validation_and_test_items_is_refused() -> None:
    with pytest.raises(ValueError, match="at least a validation and a test item"):
        splits([[1, 2, 3], [4]])


def test_bucketed_batches_hold_every_row_once_trimmed_to_their_longest() -> None:
    rng = np.random.default_rng(0)
    histories = [list(rng.integers(1, 20, size=rng.integers(1, 12))) for _ in range(300)]
    arrays = {"inputs": left_pad(histories, 12), "targets": left_pad([h[::-1] for h in histories], 12)}

    batches = list(
        length_bucketed_batches(PaddedArrays(arrays), batch_size=16, rng=np.random.default_rng(1), pool_batches=4)
    )

    rows = [tuple(row[row > 0]) for batch in batches for row in batch["inputs"].numpy()]
    assert sorted(rows) == sorted(tuple(h) for h in histories)
    widths = [batch["inputs"].shape[1] for batch in batches]
    assert max(widths) == max(len(h) for h in histories) and min(widths) < 6, "short rows must be trimmed"
    for batch in batches:
        assert (batch["inputs"].numpy()[:, 0] > 0).any(), "no column that every row pads may remain"
        assert batch["targets"].shape == batch["inputs"].shape


def test_each_replica_gets_one_contiguous_part_of_every_global_batch() -> None:
    histories = [[i + 1] * (i % 5 + 1) for i in range(45)]
    arrays = PaddedArrays({"inputs": left_pad(histories, 6)})
    batches = length_bucketed_rows(arrays.lengths, 10, np.random.default_rng(2))  # four of 10 rows, one of 5

    def rows_of(dataset) -> list[list[int]]:
        return [[int(row[row > 0][0]) - 1 for row in part["inputs"].numpy()] for part in dataset]

    whole = rows_of(batches_dataset(arrays, batches))
    first, second = (rows_of(batches_dataset(arrays, batches, range(part, part + 1), replicas=2)) for part in (0, 1))
    both = rows_of(batches_dataset(arrays, batches, range(2), replicas=2))  # one worker with both replicas
    assert [a + b for a, b in zip(first, second, strict=True)] == whole
    assert sorted((len(a), len(b)) for a, b in zip(first, second, strict=True)) == [(3, 2)] + [(5, 5)] * 4
    assert both == [part for pair in zip(first, second, strict=True) for part in pair]


def test_bucketed_batches_are_reproducible_by_seed() -> None:
    arrays = {"inputs": left_pad([[i + 1] * (i % 7 + 1) for i in range(100)], 8)}

    def first_rows(seed: int) -> list:
        return [
            batch["inputs"].numpy().tolist()
            for batch in length_bucketed_batches(PaddedArrays(arrays), 10, np.random.default_rng(seed))
        ]

    assert first_rows(3) == first_rows(3)
    assert first_rows(3) != first_rows(4)


def _vocabulary_with_attributes(folder, attributes: list) -> RunDir:
    """A run whose vocabulary holds items 10, 11, 12 (indices 1–3) with these attribute ids."""
    run = RunDir(str(folder))
    vocabulary = {
        "item_id": [10, 11, 12],
        "index": pa.array([1, 2, 3], pa.int32()),
        "attributes": pa.array(attributes, pa.list_(pa.int64())),
    }
    run.write_parquet(VOCAB_FILE, pa.table(vocabulary))
    return run


def test_attribute_table_renumbers_source_ids_densely(tmp_path) -> None:
    run = _vocabulary_with_attributes(tmp_path, [[637, 5], None, [5]])

    table, n_attributes, _ = item_attribute_table(run, n_items=3)

    assert n_attributes == 2
    np.testing.assert_array_equal(table, [[0, 0], [2, 1], [0, 0], [1, 0], [0, 0]])


def test_attributes_keep_the_numbers_of_the_model_being_adapted_and_new_ones_follow(tmp_path) -> None:
    run = _vocabulary_with_attributes(tmp_path, [[637, 5], [9], [1]])

    table, n_attributes, numbering = item_attribute_table(run, n_items=3, numbering=[637, 5])

    assert numbering == [637, 5, 1, 9] and n_attributes == 4
    np.testing.assert_array_equal(table, [[0, 0], [1, 2], [4, 0], [3, 0], [0, 0]])

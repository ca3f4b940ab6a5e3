"""Training arrays: a row per target or windows over long histories, length-bucketed batches, attributes."""

from __future__ import annotations

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import numpy as np
import pyarrow as pa
import pytest

from recsys_tasks.augmentation.augment import VOCAB_FILE
from recsys_tasks.storage import RunDir
from recsys_tasks.training.datasets import (
    LeaveOneOutSplits,
    PaddedArrays,
    item_attribute_table,
    left_pad,
    length_bucketed_batches,
)


def splits(sequences, ratings=None, max_length=3) -> LeaveOneOutSplits:
    return LeaveOneOutSplits(
        user_ids=[str(i) for i in range(len(sequences))],
        sequences=sequences,
        n_items=20,
        max_length=max_length,
        mask_index=21,
        ratings=ratings,
    )


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


def padded_rows(data: LeaveOneOutSplits, examples: str) -> dict[str, np.ndarray]:
    """The rows as padded arrays built straight from their definition (as training built them before
    it kept offsets only): the reference the offsets must reproduce."""
    inputs, targets, ratings = [], [], []
    for row, history in enumerate(data.train_histories()):
        ends = range(1, len(history)) if examples == "prefixes" else range(len(history) - 1, 0, -data.max_length)
        for end in ends:
            start = max(0, end - data.max_length)
            first_target = end if examples == "prefixes" else start + 1
            inputs.append(history[start:end])
            targets.append([0] * (first_target - start - 1) + history[first_target : end + 1])
            ratings.append([0.0] * (first_target - start - 1) + data.ratings[row][first_target : end + 1])
    return {
        "inputs": left_pad(inputs, data.max_length),
        "targets": left_pad(targets, data.max_length),
        "ratings": left_pad(ratings, data.max_length, np.float32),
    }


@pytest.mark.parametrize("examples", ["prefixes", "windows"])
def test_row_offsets_batch_exactly_as_padded_rows(examples: str) -> None:
    rng = np.random.default_rng(0)
    sequences = [list(rng.integers(1, 20, size=rng.integers(2, 30))) for _ in range(200)]
    data = splits(
        sequences, ratings=[list(rng.integers(1, 6, size=len(s)).astype(float)) for s in sequences], max_length=8
    )
    rows, reference = data.next_item_rows(examples), padded_rows(data, examples)

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


def test_bucketed_batches_are_reproducible_by_seed() -> None:
    arrays = {"inputs": left_pad([[i + 1] * (i % 7 + 1) for i in range(100)], 8)}

    def first_rows(seed: int) -> list:
        return [
            batch["inputs"].numpy().tolist()
            for batch in length_bucketed_batches(PaddedArrays(arrays), 10, np.random.default_rng(seed))
        ]

    assert first_rows(3) == first_rows(3)
    assert first_rows(3) != first_rows(4)


def test_attribute_table_renumbers_source_ids_densely(tmp_path) -> None:
    run = RunDir(str(tmp_path))
    run.write_parquet(
        VOCAB_FILE,
        pa.table(
            {
                "item_id": [10, 11, 12],
                "index": pa.array([1, 2, 3], pa.int32()),
                "attributes": pa.array([[637, 5], None, [5]], pa.list_(pa.int64())),
            }
        ),
    )

    table, n_attributes = item_attribute_table(run, n_items=3)

    assert n_attributes == 2
    np.testing.assert_array_equal(table, [[0, 0], [2, 1], [0, 0], [1, 0], [0, 0]])

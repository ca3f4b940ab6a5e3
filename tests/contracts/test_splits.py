"""Next-item rows cut from sequences: prefixes with a first target, concatenation, compaction, replay flags."""

from __future__ import annotations

import dataclasses

import numpy as np

from recsys_tasks.contracts.splits import NextItemRows, _offsets


def _rows(sequences: list[list[int]], max_length: int = 3, first_targets: list[int] | None = None) -> NextItemRows:
    items = np.concatenate([np.asarray(s, np.int32) for s in sequences])
    offsets = _offsets(np.asarray([len(s) for s in sequences]))
    first = None if first_targets is None else np.asarray(first_targets, np.int64)
    return NextItemRows.prefixes(items, offsets, max_length, first)


def _as_lists(rows: NextItemRows, width: int) -> list[tuple[list[int], int]]:
    batch = rows.take(np.arange(len(rows)), width)
    return [
        ([int(item) for item in inputs if item], int(targets[-1]))
        for inputs, targets in zip(batch["inputs"], batch["targets"])
    ]


def test_prefix_rows_start_at_each_sequences_first_target_and_keep_the_history_as_input() -> None:
    rows = _rows([[1, 2, 3, 4], [5, 6, 7]], max_length=2, first_targets=[3, 1])
    assert _as_lists(rows, 2) == [([2, 3], 4), ([5], 6), ([5, 6], 7)]


def test_a_sequence_whose_first_target_is_past_its_end_gives_no_row() -> None:
    rows = _rows([[1, 2], [3, 4]], first_targets=[2, 1])
    assert _as_lists(rows, 3) == [([3], 4)]


def test_concatenated_rows_keep_their_own_items_and_only_the_replayed_are_flagged() -> None:
    new, old = _rows([[1, 2, 3]]), _rows([[7, 8]]).as_replayed()
    both = new.concatenate(old)
    assert _as_lists(both, 3) == [([1], 2), ([1, 2], 3), ([7], 8)]
    batch = both.take(np.arange(len(both)), 2)
    assert batch["replayed"].tolist() == [[0, 0], [0, 0], [1, 1]]


def test_compact_rows_hold_only_their_windows_and_read_the_same() -> None:
    rows = _rows([[1, 2, 3, 4, 5, 6]], max_length=2).subset(np.array([1, 4]))
    compact = rows.compact()
    assert len(compact.items) == 6  # two windows of input 2 + target 1
    assert _as_lists(compact, 2) == _as_lists(rows, 2) == [([1, 2], 3), ([4, 5], 6)]
    assert [window.tolist() for window in compact.windows()] == [[1, 2, 3], [4, 5, 6]]


def test_shown_negatives_follow_their_targets_through_subset_compact_and_concatenate() -> None:
    # Item k of the sequence was preceded by a slate whose passed-over item was 10 * k (0: no slate).
    sequence = [1, 2, 3, 4, 5]
    rows = dataclasses.replace(_rows([sequence], max_length=2), shown_negatives=np.array([0, 20, 0, 40, 50], np.int32))

    kept = rows.subset(np.array([0, 2, 3])).compact()
    batch = kept.take(np.arange(len(kept)), 2)
    assert batch["targets"].tolist() == [[0, 2], [0, 4], [0, 5]]
    assert batch["shown_negatives"].tolist() == [[0, 20], [0, 40], [0, 50]]
    assert batch["shown_negatives"].dtype == np.int32

    # Rows without a serving log mixed in: the shown negatives are dropped rather than misaligned.
    assert rows.concatenate(_rows([[7, 8]])).shown_negatives is None
    assert len(rows.concatenate(rows).shown_negatives) == 2 * len(sequence)

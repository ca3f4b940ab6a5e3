"""The leave-one-out splits of the augment stage's sequences, and the next-item rows cut from them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_tasks.constants import PAD_INDEX
from recsys_tasks.contracts.layout import AUGMENT_SUMMARY_FILE, SEQUENCES_FILE
from recsys_tasks.contracts.reports import AugmentSummary
from recsys_tasks.models.config import TrainingExamples
from recsys_tasks.storage import RunDir


def left_pad(sequences: list, length: int, dtype=np.int32) -> np.ndarray:
    """Keep the newest ``length`` items of each sequence, right-aligned, 0-padded on the left."""
    values, offsets = _flatten(sequences, dtype)
    return left_pad_slices(values, offsets[:-1], offsets[1:], length)


def _flatten(sequences: list, dtype) -> tuple[np.ndarray, np.ndarray]:
    """Per-row lists as (their values concatenated, row offsets): row r is ``values[offsets[r]:offsets[r + 1]]``."""
    values = np.concatenate([np.asarray(sequence, dtype=dtype) for sequence in sequences] or [np.zeros(0, dtype)])
    return values, _offsets(np.fromiter(map(len, sequences), np.int64, count=len(sequences)))


def _offsets(lengths: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])


def flatten_column(column: pa.ChunkedArray, dtype) -> tuple[np.ndarray, np.ndarray]:
    """``_flatten`` of an Arrow list column, without a Python object per row or item."""
    values = pc.list_flatten(column).to_numpy().astype(dtype, copy=False)
    return values, _offsets(pc.list_value_length(column).to_numpy())


def left_pad_slices(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, length: int) -> np.ndarray:
    """``left_pad`` of the rows ``values[starts[r]:ends[r]]``, without a Python object per row or item."""
    starts = np.maximum(starts, ends - length)
    kept = ends - starts
    padded = np.full((len(kept), length), PAD_INDEX, dtype=values.dtype)
    rows = np.repeat(np.arange(len(kept)), kept)
    within = np.arange(len(rows)) - np.repeat(np.cumsum(kept) - kept, kept)
    padded[rows, length - kept[rows] + within] = values[starts[rows] + within]
    return padded


@dataclass(frozen=True)
class LeaveOneOutSplits:
    """Per-user sequences of item indices with the last two items held out.

    The sequences are one concatenated array and per-user offsets, as Arrow stores the list column,
    not Python lists, which take several times the memory on large logs.
    """

    user_ids: list[str]
    items: np.ndarray
    """Every user's sequence, oldest first, concatenated (int32)."""
    offsets: np.ndarray
    """User u's sequence is ``items[offsets[u]:offsets[u + 1]]`` (int64, one more than users)."""
    n_items: int
    max_length: int
    mask_index: int
    ratings: np.ndarray | None = None
    """The rating of every item in ``items`` (float32); None for implicit feedback."""

    def __post_init__(self) -> None:
        if len(self.lengths) and self.lengths.min() < 2:
            raise ValueError("every sequence needs at least a validation and a test item (2 items)")

    @classmethod
    def load(cls, run: RunDir) -> LeaveOneOutSplits:
        summary = AugmentSummary(**run.read_json(AUGMENT_SUMMARY_FILE))
        table = run.read_parquet(SEQUENCES_FILE)
        explicit = "ratings" in table.column_names and pc.all(pc.is_valid(pc.list_flatten(table["ratings"]))).as_py()
        items, offsets = flatten_column(table["items"], np.int32)
        return cls(
            user_ids=table["user_id"].to_pylist(),
            items=items,
            offsets=offsets,
            n_items=summary.items,
            max_length=summary.max_length,
            mask_index=summary.mask_index,
            ratings=flatten_column(table["ratings"], np.float32)[0] if explicit else None,
        )

    @classmethod
    def from_sequences(
        cls, sequences: list[list[int]], ratings: list[list[float]] | None = None, **sizes
    ) -> LeaveOneOutSplits:
        """Splits of users "0", "1", … from per-user lists (``sizes``: n_items, max_length, mask_index)."""
        items, offsets = _flatten(sequences, np.int32)
        return cls(
            user_ids=[str(user) for user in range(len(sequences))],
            items=items,
            offsets=offsets,
            ratings=None if ratings is None else _flatten(ratings, np.float32)[0],
            **sizes,
        )

    @property
    def lengths(self) -> np.ndarray:
        """Items in each user's sequence."""
        return np.diff(self.offsets)

    @cached_property
    def sequences(self) -> list[np.ndarray]:
        """Each user's sequence (views into ``items``)."""
        return np.split(self.items, self.offsets[1:-1])

    def train_histories(self) -> list[np.ndarray]:
        return [sequence[:-2] for sequence in self.sequences]

    def _is_training(self, held_out: int = 2) -> np.ndarray:
        """Which entries of ``items`` belong to a training history (all but each user's last ``held_out``)."""
        is_training = np.ones(len(self.items), bool)
        for newest in range(1, held_out + 1):
            is_training[self.offsets[1:] - newest] = False
        return is_training

    def mean_training_rating(self) -> float:
        """Mean rating over the training histories (0 for implicit feedback)."""
        if self.ratings is None:
            return 0.0
        training = self.ratings[self._is_training()]
        return float(training.mean()) if len(training) else 0.0

    def item_frequencies(self) -> np.ndarray:
        """Interactions per item index in the training histories (index 0 and [MASK] stay 0)."""
        return np.bincount(self.items[self._is_training()], minlength=self.n_items + 2).astype(np.float64)

    def next_item_rows(self, examples: TrainingExamples, held_out: int = 2) -> NextItemRows:
        """Model inputs and aligned next-item targets from every training history h: each user's
        sequence without its last ``held_out`` items (2: validation and test; 1: the test item only,
        for a refit once validation has chosen the epochs).

        ``prefixes``: every item of h after the first is the target of its own row, whose input is
        the (newest ``max_length``) items before it, as the reference code of DuoRec and BSARec
        trains. ``windows``: inputs h[:-1] with targets h[1:] at every position, a history longer
        than the window cut into consecutive windows, newest first; every item is again a target
        once, at a fraction of the encoder work, but all the targets of a window share one dropout
        draw of their context.
        """
        if held_out not in (1, 2):
            raise ValueError(f"held_out={held_out}: rows hold out the test item (1) or validation and test (2)")
        is_training = self._is_training(held_out)
        history_lengths = self.lengths - held_out
        bases = _offsets(history_lengths)
        starts, ends = [], []
        for base, length in zip(bases[:-1], history_lengths, strict=True):
            # ``end`` is the position of the row's last target: the input is history[start:end].
            local_ends = np.arange(1, length) if examples == "prefixes" else np.arange(length - 1, 0, -self.max_length)
            ends.append(base + local_ends)
            starts.append(base + np.maximum(0, local_ends - self.max_length))
        starts, ends = np.concatenate([np.zeros(0, np.int64), *starts]), np.concatenate([np.zeros(0, np.int64), *ends])
        items = self.items[is_training]
        ratings = None if self.ratings is None else self.ratings[is_training]
        return NextItemRows(
            items=items,
            ratings=ratings,
            starts=starts,
            ends=ends,
            first_targets=ends if examples == "prefixes" else starts + 1,
        )

    def padded_histories(self, held_out: int, length: int) -> np.ndarray:
        """Each user's sequence without its last ``held_out`` items: the newest ``length``, left-padded."""
        return left_pad_slices(self.items, self.offsets[:-1], self.offsets[1:] - held_out, length)

    def holdout(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model inputs, items to exclude from the ranking, targets) for ``validation`` or ``test``."""
        held_out = {"validation": 2, "test": 1}[split]
        targets = self.items[self.offsets[1:] - held_out].astype(np.int64)
        longest = int(self.lengths.max()) - held_out
        return self.padded_histories(held_out, self.max_length), self.padded_histories(held_out, longest), targets


@dataclass(frozen=True)
class NextItemRows:
    """Next-item training rows as offsets into the concatenated training histories.

    Row r reads ``items[starts[r]:ends[r]]`` and, at each input position p with
    p + 1 >= ``first_targets[r]``, has the target ``items[p + 1]`` (and its rating). Three offsets
    a row instead of padded copies of its window and targets, which would multiply the memory by
    the window's width. Batches are cut from it on the fly (``take``).
    """

    items: np.ndarray
    ratings: np.ndarray | None
    starts: np.ndarray
    ends: np.ndarray
    first_targets: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        names = ("inputs", "targets") + (("ratings",) if self.ratings is not None else ())
        return {name: np.dtype(np.float32 if name == "ratings" else np.int32) for name in names}

    def take(self, rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        """The rows as arrays ``width`` columns wide, right-aligned and 0-padded on the left."""
        positions = self.ends[rows, np.newaxis] - width + np.arange(width)
        is_input = positions >= self.starts[rows, np.newaxis]
        has_target = is_input & (positions + 1 >= self.first_targets[rows, np.newaxis])
        batch = {
            "inputs": np.where(is_input, self.items[np.where(is_input, positions, 0)], PAD_INDEX),
            "targets": np.where(has_target, self.items[np.where(has_target, positions + 1, 0)], PAD_INDEX),
        }
        if self.ratings is not None:
            batch["ratings"] = np.where(has_target, self.ratings[np.where(has_target, positions + 1, 0)], 0.0)
        return {name: batch[name].astype(dtype) for name, dtype in self.dtypes.items()}

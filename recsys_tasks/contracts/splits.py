"""The leave-one-out splits of the augment stage's sequences, and the next-item rows cut from them."""

from __future__ import annotations

import dataclasses
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
    timestamps: np.ndarray | None = None
    """When each item of ``items`` happened (int64 unix seconds); None for sequences stored without times."""
    shown_negatives: np.ndarray | None = None
    """Per item of ``items``, an item index a logged slate showed the user before it and they passed over (0: none);
    None when the run read no serving log."""

    def __post_init__(self) -> None:
        if len(self.lengths) and self.lengths.min() < 2:
            raise ValueError("every sequence needs at least a validation and a test item (2 items)")

    @classmethod
    def load(cls, run: RunDir) -> LeaveOneOutSplits:
        summary = AugmentSummary(**run.read_json(AUGMENT_SUMMARY_FILE))
        table = run.read_parquet(SEQUENCES_FILE)
        # Implicit sources rate every event 1.0: a rating that never varies says nothing a ranking head could learn.
        ratings = pc.list_flatten(table["ratings"]) if "ratings" in table.column_names else pa.array([], pa.float32())
        explicit = pc.all(pc.is_valid(ratings)).as_py() and pc.count_distinct(ratings).as_py() > 1
        items, offsets = flatten_column(table["items"], np.int32)
        return cls(
            user_ids=table["user_id"].to_pylist(),
            items=items,
            offsets=offsets,
            n_items=summary.items,
            max_length=summary.max_length,
            mask_index=summary.mask_index,
            ratings=flatten_column(table["ratings"], np.float32)[0] if explicit else None,
            timestamps=flatten_column(table["timestamps"], np.int64)[0] if "timestamps" in table.column_names else None,
            shown_negatives=(
                flatten_column(table["shown_negatives"], np.int32)[0]
                if "shown_negatives" in table.column_names
                else None
            ),
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

    def held_out_timestamps(self, split: str) -> np.ndarray:
        """When each user's ``validation`` or ``test`` item happened."""
        if self.timestamps is None:
            raise ValueError("these sequences were stored without timestamps")
        return self.timestamps[self.offsets[1:] - {"validation": 2, "test": 1}[split]]

    def rows_after(self, watermark: int | None, held_out: int = 2) -> NextItemRows:
        """A row per training target that happened after ``watermark`` (every target when None), its input
        the user's whole history before it (up to ``max_length``): what an adapt run trains on."""
        if watermark is None:
            first = np.ones(len(self.lengths), np.int64)
        else:
            if self.timestamps is None:
                raise ValueError("these sequences were stored without timestamps")
            is_new = self.timestamps > watermark
            # Position (within each sequence) of the first item after the watermark; the sequence's length if none.
            newer = np.where(is_new, np.arange(len(self.items)) - np.repeat(self.offsets[:-1], self.lengths), np.inf)
            first = np.minimum.reduceat(newer, self.offsets[:-1]) if len(self.items) else np.zeros(0)
            first = np.where(np.isinf(first), self.lengths, first).astype(np.int64)
        training_lengths = self.lengths - held_out
        is_training = self._is_training(held_out)
        rows = NextItemRows.prefixes(
            self.items[is_training], _offsets(training_lengths), self.max_length, np.minimum(first, training_lengths)
        )
        labels = {name: getattr(self, name) for name in ("ratings", "shown_negatives")}
        return dataclasses.replace(
            rows, **{name: None if values is None else values[is_training] for name, values in labels.items()}
        )

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
            shown_negatives=None if self.shown_negatives is None else self.shown_negatives[is_training],
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
    p + 1 >= ``first_targets[r]``, has the target ``items[p + 1]`` (and its rating and shown negative). Three offsets
    a row instead of padded copies of its window and targets, which would multiply the memory by
    the window's width. Batches are cut from it on the fly (``take``).
    """

    items: np.ndarray
    ratings: np.ndarray | None
    starts: np.ndarray
    ends: np.ndarray
    first_targets: np.ndarray
    replayed: np.ndarray | None = None
    """Per row, whether it is replayed from an earlier model's data (continual training); None: no replay."""
    shown_negatives: np.ndarray | None = None
    """Per item of ``items``, an item shown to the user before it and passed over (0: none); None: no serving log."""

    @classmethod
    def prefixes(
        cls, items: np.ndarray, offsets: np.ndarray, max_length: int, first_targets: np.ndarray | None = None
    ) -> NextItemRows:
        """A row per target item of each sequence ``items[offsets[s]:offsets[s + 1]]``, its input the
        (newest ``max_length``) items before it. Sequence s's targets start at its position
        ``first_targets[s]`` (default 1, its second item): earlier items are input only."""
        lengths = np.diff(offsets)
        first = np.ones(len(lengths), np.int64) if first_targets is None else np.maximum(first_targets, 1)
        targets = np.maximum(lengths - first, 0)
        sequence = np.repeat(np.arange(len(lengths)), targets)
        within = np.arange(len(sequence)) - np.repeat(np.cumsum(targets) - targets, targets)
        ends = offsets[:-1][sequence] + first[sequence] + within
        starts = np.maximum(offsets[:-1][sequence], ends - max_length)
        return cls(items=items, ratings=None, starts=starts, ends=ends, first_targets=ends)

    def concatenate(self, other: NextItemRows) -> NextItemRows:
        """The rows of both, ``other``'s after these (ratings and shown negatives: only those both have)."""
        shift = len(self.items)
        ratings, shown_negatives = (
            np.concatenate([getattr(self, name), getattr(other, name)])
            if getattr(self, name) is not None and getattr(other, name) is not None
            else None
            for name in ("ratings", "shown_negatives")
        )
        replayed = None
        if self.replayed is not None or other.replayed is not None:
            replayed = np.concatenate([rows.replay_flags() for rows in (self, other)])
        return NextItemRows(
            items=np.concatenate([self.items, other.items]),
            ratings=ratings,
            starts=np.concatenate([self.starts, other.starts + shift]),
            ends=np.concatenate([self.ends, other.ends + shift]),
            first_targets=np.concatenate([self.first_targets, other.first_targets + shift]),
            replayed=replayed,
            shown_negatives=shown_negatives,
        )

    def subset(self, rows: np.ndarray) -> NextItemRows:
        """Only ``rows`` (the item array is shared, not copied)."""
        flags = None if self.replayed is None else self.replayed[rows]
        return dataclasses.replace(
            self, starts=self.starts[rows], ends=self.ends[rows], first_targets=self.first_targets[rows], replayed=flags
        )

    def compact(self) -> NextItemRows:
        """The same rows over an item array of their own windows only (input and targets), so that a few
        rows kept from a large data set do not keep all of it alive."""
        lengths = self.ends - self.starts + 1
        offsets = _offsets(lengths)
        positions = np.repeat(self.starts - offsets[:-1], lengths) + np.arange(offsets[-1])
        return NextItemRows(
            items=self.items[positions],
            ratings=None if self.ratings is None else self.ratings[positions],
            starts=offsets[:-1],
            ends=offsets[1:] - 1,
            first_targets=offsets[:-1] + (self.first_targets - self.starts),
            replayed=self.replayed,
            shown_negatives=None if self.shown_negatives is None else self.shown_negatives[positions],
        )

    def windows(self) -> list[np.ndarray]:
        """Each row's items, input then targets (what ``prefixes`` of those windows rebuilds, for prefix rows)."""
        return [self.items[start : end + 1] for start, end in zip(self.starts, self.ends, strict=True)]

    def replay_flags(self) -> np.ndarray:
        return np.zeros(len(self), bool) if self.replayed is None else self.replayed

    def as_replayed(self) -> NextItemRows:
        """The same rows, each flagged as replayed."""
        return dataclasses.replace(self, replayed=np.ones(len(self), bool))

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def lengths(self) -> np.ndarray:
        return self.ends - self.starts

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        names = ("inputs", "targets") + (("ratings",) if self.ratings is not None else ())
        names += ("shown_negatives",) if self.shown_negatives is not None else ()
        names += ("replayed",) if self.replayed is not None else ()
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
        if self.shown_negatives is not None:
            batch["shown_negatives"] = np.where(
                has_target, self.shown_negatives[np.where(has_target, positions + 1, 0)], PAD_INDEX
            )
        if self.replayed is not None:
            batch["replayed"] = np.broadcast_to(self.replayed[rows, np.newaxis], positions.shape)
        return {name: batch[name].astype(dtype) for name, dtype in self.dtypes.items()}

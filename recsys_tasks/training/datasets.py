"""Turn the augment stage's sequences into padded arrays for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_tasks.augmentation.augment import SEQUENCES_FILE, SUMMARY_FILE, VIEWS_FILE, VOCAB_FILE, AugmentSummary
from recsys_tasks.constants import PAD_INDEX
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


def _flatten_column(column: pa.ChunkedArray, dtype) -> tuple[np.ndarray, np.ndarray]:
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
        summary = AugmentSummary(**run.read_json(SUMMARY_FILE))
        table = run.read_parquet(SEQUENCES_FILE)
        explicit = "ratings" in table.column_names and pc.all(pc.is_valid(pc.list_flatten(table["ratings"]))).as_py()
        items, offsets = _flatten_column(table["items"], np.int32)
        return cls(
            user_ids=table["user_id"].to_pylist(),
            items=items,
            offsets=offsets,
            n_items=summary.items,
            max_length=summary.max_length,
            mask_index=summary.mask_index,
            ratings=_flatten_column(table["ratings"], np.float32)[0] if explicit else None,
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


def cloze_inputs(
    histories: np.ndarray, mask_probability: float, mask_index: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Hide random positions behind [MASK]; labels hold the hidden item (0 elsewhere).

    Every non-empty history gets at least one masked position, so every row teaches something.
    """
    real = histories != PAD_INDEX
    chosen = (rng.random(histories.shape) < mask_probability) & real
    newest = histories.shape[1] - 1
    nothing_chosen = ~chosen.any(axis=1) & real[:, newest]
    chosen[nothing_chosen, newest] = True
    return np.where(chosen, mask_index, histories), np.where(chosen, histories, 0).astype(np.int32)


def contrastive_views(run: RunDir, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user rows, view A, view B) as materialised by the augment stage."""
    views: pa.Table = run.read_parquet(VIEWS_FILE)
    view_a, view_b = (_left_pad_list_column(views[name], max_length) for name in ("view_a", "view_b"))
    return views["user_row"].to_numpy(), view_a, view_b


def _left_pad_list_column(column: pa.ChunkedArray, length: int) -> np.ndarray:
    values, offsets = _flatten_column(column, np.int32)
    return left_pad_slices(values, offsets[:-1], offsets[1:], length)


def item_attribute_table(run: RunDir, n_items: int) -> tuple[np.ndarray, int]:
    """(item index → attribute ids [n_items + 2, most attributes per item], number of attributes).

    Source attribute ids are renumbered 1..n in sorted order (0 pads); padding, [MASK] and items
    without attributes get an all-zero row. Without any attributes the table has zero columns.
    """
    vocabulary = run.read_parquet(VOCAB_FILE)
    attributes = vocabulary["attributes"].to_pylist() if "attributes" in vocabulary.column_names else []
    distinct = sorted({attribute for item in attributes if item for attribute in item})
    renumbered = {attribute: position + 1 for position, attribute in enumerate(distinct)}
    widest = max((len(item) for item in attributes if item), default=0)
    table = np.zeros((n_items + 2, widest), dtype=np.int32)
    for index, item in zip(vocabulary["index"].to_pylist(), attributes, strict=True):
        if item:
            table[index, : len(item)] = [renumbered[attribute] for attribute in item]
    return table, len(distinct)


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


@dataclass(frozen=True)
class PaddedArrays:
    """Row-aligned, left-padded 2-D arrays, batched as they are (pre-training's masked histories and views)."""

    arrays: dict[str, np.ndarray]

    @property
    def lengths(self) -> np.ndarray:
        return np.max([_real_lengths(array) for array in self.arrays.values()], axis=0)

    @property
    def dtypes(self) -> dict[str, np.dtype]:
        return {name: array.dtype for name, array in self.arrays.items()}

    def take(self, rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        return {name: array[rows, -width:] for name, array in self.arrays.items()}


def _real_lengths(padded: np.ndarray) -> np.ndarray:
    """Columns from each row's first non-zero entry to the end (0 for an all-padding row)."""
    has_value = padded != 0
    return np.where(has_value.any(axis=1), padded.shape[1] - has_value.argmax(axis=1), 0)


def length_bucketed_batches(
    source: NextItemRows | PaddedArrays, batch_size: int, rng: np.random.Generator, pool_batches: int = 64
):
    """One epoch of shuffled batches of similar-length rows, each trimmed to its longest row.

    Histories are mostly far shorter than the model's window, so full-width batches spend most of
    the encoder's time on padding. Rows are shuffled,
    sorted by length within pools of ``pool_batches`` batches, cut into batches, and the batches
    shuffled again; every array is left-padded in the same columns, and the encoder's positions
    count from the newest item, so trimming changes no result.
    """
    import tensorflow as tf

    lengths = source.lengths
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[offset : offset + batch_size] for offset in range(0, len(chunk), batch_size))
    batches = [batches[i] for i in rng.permutation(len(batches))]

    def generate():
        for rows in batches:
            width = max(int(lengths[rows].max()), 1)
            yield source.take(rows, width)

    signature = {name: tf.TensorSpec((None, None), tf.as_dtype(dtype)) for name, dtype in source.dtypes.items()}
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)

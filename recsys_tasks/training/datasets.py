"""Training inputs beyond the splits: masked histories, contrastive views, item attributes, length-bucketed batches."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys_tasks.constants import PAD_INDEX
from recsys_tasks.contracts.layout import VIEWS_FILE, VOCAB_FILE
from recsys_tasks.contracts.splits import NextItemRows, flatten_column, left_pad_slices
from recsys_tasks.storage import RunDir


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
    values, offsets = flatten_column(column, np.int32)
    return left_pad_slices(values, offsets[:-1], offsets[1:], length)


def item_attribute_table(
    run: RunDir, n_items: int, numbering: list[int] | None = None
) -> tuple[np.ndarray, int, list[int]]:
    """(item index → attribute ids [n_items + 2, most attributes per item], number of attributes, the source
    attribute id of each number from 1).

    Source attribute ids are renumbered 1..n in sorted order (0 pads); padding, [MASK] and items
    without attributes get an all-zero row. Without any attributes the table has zero columns.
    With a ``numbering`` (the model being adapted numbered its attributes so), its attributes keep their
    numbers and attributes new to it follow in sorted order: every attribute keeps its embedding row.
    """
    vocabulary = run.read_parquet(VOCAB_FILE)
    attributes = vocabulary["attributes"].to_pylist() if "attributes" in vocabulary.column_names else []
    indices = vocabulary["index"].to_pylist()
    known = list(numbering or [])
    distinct = known + sorted({attribute for item in attributes if item for attribute in item} - set(known))
    renumbered = {attribute: position + 1 for position, attribute in enumerate(distinct)}
    widest = max((len(item) for item in attributes if item), default=0)
    table = np.zeros((n_items + 2, widest), dtype=np.int32)
    for index, item in zip(indices, attributes, strict=True):
        if item:
            table[index, : len(item)] = [renumbered[attribute] for attribute in item]
    return table, len(distinct), distinct


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
    return batches_dataset(source, length_bucketed_rows(source.lengths, batch_size, rng, pool_batches))


def length_bucketed_rows(
    lengths: np.ndarray, batch_size: int, rng: np.random.Generator, pool_batches: int = 64
) -> list[np.ndarray]:
    """The rows of each of ``length_bucketed_batches``' batches, in training order."""
    order = rng.permutation(len(lengths))
    pool = batch_size * pool_batches
    batches = []
    for start in range(0, len(order), pool):
        chunk = order[start : start + pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches.extend(chunk[offset : offset + batch_size] for offset in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def batches_dataset(
    source: NextItemRows | PaddedArrays, batches: list[np.ndarray], parts: range = range(1), replicas: int = 1
):
    """The batches of ``source``'s rows ``batches``, each trimmed to its longest row; with ``replicas`` > 1, each
    batch cut into that many contiguous parts (equal but for one row), of which the dataset yields ``parts``."""
    import tensorflow as tf

    lengths = source.lengths

    def generate():
        for rows in batches:
            width = max(int(lengths[rows].max()), 1)
            pieces = np.array_split(rows, replicas)
            for part in parts:
                yield source.take(pieces[part], width)

    signature = {name: tf.TensorSpec((None, None), tf.as_dtype(dtype)) for name, dtype in source.dtypes.items()}
    return tf.data.Dataset.from_generator(generate, output_signature=signature).prefetch(2)

"""Turn the augment stage's sequences into padded arrays for training and evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recsys_tasks.augmentation.augment import SEQUENCES_FILE, SUMMARY_FILE, VIEWS_FILE, AugmentSummary
from recsys_tasks.constants import PAD_INDEX
from recsys_tasks.storage import RunDir


def left_pad(sequences: list, length: int) -> np.ndarray:
    """Keep the newest ``length`` items of each sequence, right-aligned, 0-padded on the left."""
    padded = np.full((len(sequences), length), PAD_INDEX, dtype=np.int32)
    for row, sequence in enumerate(sequences):
        tail = np.asarray(sequence[-length:], dtype=np.int32)
        if len(tail):
            padded[row, length - len(tail) :] = tail
    return padded


@dataclass(frozen=True)
class LeaveOneOutSplits:
    """Per-user sequences of item indices with the last two items held out."""

    user_ids: list[str]
    sequences: list[list[int]]
    n_items: int
    max_length: int
    mask_index: int

    @classmethod
    def load(cls, run: RunDir) -> LeaveOneOutSplits:
        summary = AugmentSummary(**run.read_json(SUMMARY_FILE))
        table = run.read_parquet(SEQUENCES_FILE)
        return cls(
            user_ids=table["user_id"].to_pylist(),
            sequences=table["items"].to_pylist(),
            n_items=summary.items,
            max_length=summary.max_length,
            mask_index=summary.mask_index,
        )

    def train_histories(self) -> list[list[int]]:
        return [sequence[:-2] for sequence in self.sequences]

    def item_frequencies(self) -> np.ndarray:
        """Interactions per item index in the training histories (index 0 and [MASK] stay 0)."""
        counts = np.zeros(self.n_items + 2, dtype=np.float64)
        for history in self.train_histories():
            np.add.at(counts, history, 1)
        return counts

    def next_item_pairs(self) -> dict[str, np.ndarray]:
        """Inputs h[:-1] and aligned targets h[1:] for every training history h."""
        histories = self.train_histories()
        return {
            "inputs": left_pad([h[:-1] for h in histories], self.max_length),
            "targets": left_pad([h[1:] for h in histories], self.max_length),
        }

    def holdout(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(model inputs, items to exclude from the ranking, targets) for ``validation`` or ``test``."""
        cut = {"validation": -2, "test": -1}[split]
        histories = [sequence[:cut] for sequence in self.sequences]
        targets = np.asarray([sequence[cut] for sequence in self.sequences], dtype=np.int64)
        longest = max(len(h) for h in histories)
        return left_pad(histories, self.max_length), left_pad(histories, longest), targets


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
    return (
        views["user_row"].to_numpy(),
        left_pad(views["view_a"].to_pylist(), max_length),
        left_pad(views["view_b"].to_pylist(), max_length),
    )

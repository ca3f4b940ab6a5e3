"""Sequence augmentations for contrastive pre-training (CL4SRec: crop, mask, reorder).

Every function takes a 1-D array of item indices and returns a new array; none mutates its input.
"""

from __future__ import annotations

import numpy as np


def crop(sequence: np.ndarray, keep_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """A random contiguous sub-sequence holding ``keep_ratio`` of the items (at least one)."""
    length = max(1, int(np.floor(keep_ratio * len(sequence))))
    start = rng.integers(0, len(sequence) - length + 1)
    return sequence[start : start + length].copy()


def mask(sequence: np.ndarray, mask_ratio: float, mask_index: int, rng: np.random.Generator) -> np.ndarray:
    """Replace ``mask_ratio`` of the positions with the [MASK] token."""
    masked = sequence.copy()
    count = int(np.floor(mask_ratio * len(sequence)))
    masked[rng.choice(len(sequence), size=count, replace=False)] = mask_index
    return masked


def reorder(sequence: np.ndarray, reorder_ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Shuffle a random contiguous window covering ``reorder_ratio`` of the sequence."""
    reordered = sequence.copy()
    length = int(np.floor(reorder_ratio * len(sequence)))
    if length < 2:
        return reordered
    start = rng.integers(0, len(sequence) - length + 1)
    reordered[start : start + length] = rng.permutation(reordered[start : start + length])
    return reordered


def random_view(
    sequence: np.ndarray,
    rng: np.random.Generator,
    *,
    crop_ratio: float,
    mask_ratio: float,
    reorder_ratio: float,
    mask_index: int,
) -> np.ndarray:
    """Apply one augmentation chosen uniformly at random, as CL4SRec does."""
    choice = rng.integers(0, 3)
    if choice == 0:
        return crop(sequence, crop_ratio, rng)
    if choice == 1:
        return mask(sequence, mask_ratio, mask_index, rng)
    return reorder(sequence, reorder_ratio, rng)

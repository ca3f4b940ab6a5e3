"""The int8 serving variant, written beside the float32 model in every export.

- Encoder: TFLite dynamic-range quantisation of the ``user_embedding`` signature (weights stored
  as int8, activations computed in float), the standard TensorFlow route to int8 inference.
- Item table: symmetric int8 per item, one float32 scale per row, so a popular item with a
  long vector and a rare one with a short vector each keep their own resolution.

The evaluate stage scores both variants on the same test split, so the accuracy cost of int8 is
measured on every run, not assumed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from recsys_tasks.contracts.exported_model import (
    ARTIFACT_FILES,
    INT8_ENCODER,
    INT8_ITEM_EMBEDDINGS,
    ITEM_EMBEDDINGS,
    ITEM_VOCAB,
    MODEL_META,
    SAVED_MODEL,
    USER_EMBEDDING_SIGNATURE,
)

# What each variant (exported_model.VARIANTS) loads, for its size on disk.
VARIANT_FILES = {
    "float32": (SAVED_MODEL, ITEM_EMBEDDINGS, ITEM_VOCAB, MODEL_META),
    "int8": (INT8_ENCODER, INT8_ITEM_EMBEDDINGS, ITEM_VOCAB, MODEL_META),
}


def quantize_rows(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and one scale per row with ``values * scale[:, None] ≈ vectors``."""
    scales = np.abs(vectors).max(axis=1) / 127.0
    scales = np.where(scales > 0, scales, 1.0).astype(np.float32)
    values = np.clip(np.rint(vectors / scales[:, None]), -127, 127).astype(np.int8)
    return values, scales


def export_int8(folder: Path) -> None:
    """Write the int8 variant of the float32 model already exported in ``folder``."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(folder / ARTIFACT_FILES[SAVED_MODEL]), signature_keys=[USER_EMBEDDING_SIGNATURE]
    )
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    (folder / ARTIFACT_FILES[INT8_ENCODER]).write_bytes(converter.convert())
    values, scales = quantize_rows(np.load(folder / ARTIFACT_FILES[ITEM_EMBEDDINGS]))
    np.savez(folder / ARTIFACT_FILES[INT8_ITEM_EMBEDDINGS], values=values, scales=scales)


def variant_sizes(folder: Path) -> dict[str, int]:
    """Bytes on disk each variant needs (what a consumer downloads and loads)."""

    def size(path: Path) -> int:
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size

    return {variant: sum(size(folder / ARTIFACT_FILES[key]) for key in keys) for variant, keys in VARIANT_FILES.items()}

"""The transformer sequence encoder, top to bottom.

item ids [B, L ≤ max_length] (left-padded with 0) → item representations (id + attribute embeddings) + position
embeddings → N pre-norm blocks (self-attention, optionally blended with a low-pass filter over the
sequence, then feed-forward) → final LayerNorm → one vector per position [B, L, d].
The same weights serve bidirectional attention (masked-item pre-training) and causal attention
(next-item retrieval). The item representations double as the candidate tower, so queries and
items share one space.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recsys_tasks.constants import PAD_INDEX
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.models.layers import ItemRepresentation, TransformerBlock


def count_parameters(variables) -> int:
    """Learnable numbers in ``variables``; integer lookup tables (the item → attribute map) are not parameters."""
    return int(sum(np.prod(v.shape) for v in variables if v.dtype.is_floating))


class SequenceEncoder(tf.keras.Model):
    def __init__(self, config: EncoderConfig, **kwargs):
        super().__init__(**kwargs)
        self.config = config
        self.items = ItemRepresentation(
            config.vocabulary_size,
            config.d_model,
            config.n_attributes,
            config.max_attributes,
            config.item_lora_rank,
            name="items",
        )
        self.position_embedding = tf.keras.layers.Embedding(
            config.max_length,
            config.d_model,
            embeddings_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.02),
            name="position_embedding",
        )
        self.embedding_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="embedding_norm")
        self.embedding_dropout = tf.keras.layers.Dropout(config.dropout)
        self.blocks = [
            TransformerBlock(
                config.d_model,
                config.n_heads,
                config.ffn_multiplier * config.d_model,
                config.dropout,
                config.adapter_dim,
                config.lora_rank,
                config.filter_mix,
                config.max_length,
                config.filter_frequencies,
                name=f"block_{i}",
            )
            for i in range(config.n_layers)
        ]
        self.final_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="final_norm")

    def call(
        self,
        item_ids,
        causal: bool = True,
        training: bool = False,
        return_attention: bool = False,
        newest_only: bool = False,
    ):
        """Hidden states [B, L, d]; with ``return_attention`` also the last block's weights [B, heads, L, L].

        ``newest_only``: the last block computes the newest position alone (L becomes 1 in both
        outputs): a next-item query reads nothing else, and serving skips most of that block's work.
        """
        length = tf.shape(item_ids)[1]
        # Positions count from the newest item (always max_length - 1), so a batch whose left padding
        # was trimmed to its longest history computes exactly what the full-width batch would.
        positions = tf.range(self.config.max_length - length, self.config.max_length)
        hidden = tf.cast(self.items(item_ids), self.compute_dtype) + self.position_embedding(positions)[tf.newaxis]
        hidden = self.embedding_dropout(self.embedding_norm(hidden), training=training)

        # attention_mask[b, query, key]: keys that are padding are never attended to; with causal
        # attention a position also never sees the future.
        valid = tf.not_equal(item_ids, PAD_INDEX)
        mask = tf.tile(valid[:, tf.newaxis, :], [1, length, 1])
        if causal:
            mask = tf.logical_and(mask, tf.cast(tf.linalg.band_part(tf.ones((length, length)), -1, 0), tf.bool))
        for depth, block in enumerate(self.blocks, start=1):
            hidden, attention = block(
                hidden,
                attention_mask=mask,
                training=training,
                return_attention=True,
                newest_only=newest_only and depth == len(self.blocks),
                valid=valid,
                causal=causal,
            )
        hidden = self.final_norm(hidden)
        return (hidden, attention) if return_attention else hidden

    def set_item_attributes(self, item_attributes: np.ndarray) -> None:
        self.items.set_item_attributes(item_attributes)

    def freeze_backbone(self) -> None:
        """Freeze everything pre-trained; adapters and LoRA factors (if any) stay trainable."""
        for layer in (*self.items.backbone_layers(), self.position_embedding, self.embedding_norm, self.final_norm):
            layer.trainable = False
        for block in self.blocks:
            for layer in block.backbone_layers():
                layer.trainable = False

    def item_vectors(self) -> tf.Tensor:
        """Candidate vectors for every index (row 0 is padding, the last row [MASK]), in the compute dtype."""
        return tf.cast(self.items.all_items(), self.compute_dtype)

    def get_config(self):
        return {"config": self.config.model_dump()}

    @classmethod
    def from_config(cls, config):
        return cls(EncoderConfig(**config["config"]))

"""Small composable Keras layers of the sequence encoder. Each round-trips through get_config."""

from __future__ import annotations

import tensorflow as tf


class BottleneckAdapter(tf.keras.layers.Layer):
    """Houlsby adapter: down-project, GELU, up-project, added back to the input.

    The up-projection starts at zero, so a freshly inserted adapter leaves the pre-trained
    network's function unchanged and fine-tuning starts from the pre-trained model.
    """

    def __init__(self, bottleneck: int, **kwargs):
        super().__init__(**kwargs)
        self.bottleneck = bottleneck

    def build(self, input_shape):
        width = int(input_shape[-1])
        self.down = tf.keras.layers.Dense(self.bottleneck, activation="gelu", name="down")
        self.up = tf.keras.layers.Dense(width, kernel_initializer="zeros", name="up")
        super().build(input_shape)

    def call(self, inputs):
        return inputs + self.up(self.down(inputs))

    def get_config(self):
        return {**super().get_config(), "bottleneck": self.bottleneck}


class TransformerBlock(tf.keras.layers.Layer):
    """Pre-norm self-attention block: x + Attn(LN(x)), then x + FFN(LN(x)); optional adapters."""

    def __init__(self, d_model: int, n_heads: int, ffn_width: int, dropout: float, adapter_dim: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.n_heads, self.ffn_width = d_model, n_heads, ffn_width
        self.dropout_rate, self.adapter_dim = dropout, adapter_dim
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = tf.keras.layers.MultiHeadAttention(
            num_heads=n_heads, key_dim=d_model // n_heads, dropout=dropout, name="attention"
        )
        self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_in = tf.keras.layers.Dense(ffn_width, activation="gelu", name="ffn_in")
        self.ffn_out = tf.keras.layers.Dense(d_model, name="ffn_out")
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.adapters = (
            [
                BottleneckAdapter(adapter_dim, name="attention_adapter"),
                BottleneckAdapter(adapter_dim, name="ffn_adapter"),
            ]
            if adapter_dim
            else []
        )

    def call(self, inputs, attention_mask, training=False):
        normed = self.attention_norm(inputs)
        attended = self.attention(normed, normed, attention_mask=attention_mask, training=training)
        if self.adapters:
            attended = self.adapters[0](attended)
        hidden = inputs + self.dropout(attended, training=training)
        transformed = self.ffn_out(self.ffn_in(self.ffn_norm(hidden)))
        if self.adapters:
            transformed = self.adapters[1](transformed)
        return hidden + self.dropout(transformed, training=training)

    def backbone_layers(self) -> list[tf.keras.layers.Layer]:
        return [self.attention_norm, self.attention, self.ffn_norm, self.ffn_in, self.ffn_out]

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "ffn_width": self.ffn_width,
            "dropout": self.dropout_rate,
            "adapter_dim": self.adapter_dim,
        }

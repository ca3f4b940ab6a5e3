"""Small composable Keras layers of the sequence encoder. Each round-trips through get_config."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recsys_tasks.constants import PAD_INDEX


def _initializer() -> tf.keras.initializers.Initializer:
    return tf.keras.initializers.TruncatedNormal(stddev=0.02)


class EmbeddingLoRA(tf.keras.layers.Layer):
    """A low-rank update of an embedding table: row i gains (alpha / rank) · down[i] @ up (LoRA for embeddings).

    ``down`` starts at zero, so inserting the update leaves every vector unchanged. Each row then has
    ``rank`` numbers of its own to move with, while the frozen table keeps the pre-trained space:
    vocabulary · rank + rank · width parameters instead of vocabulary · width.
    """

    def __init__(self, vocabulary_size: int, width: int, rank: int, alpha: float = 16.0, **kwargs):
        super().__init__(**kwargs)
        self.vocabulary_size, self.width, self.rank, self.alpha = vocabulary_size, width, rank, alpha

    def build(self, input_shape=None):
        self.down = self.add_weight(name="down", shape=(self.vocabulary_size, self.rank), initializer="zeros")
        self.up = self.add_weight(name="up", shape=(self.rank, self.width), initializer=_initializer())
        super().build(input_shape)

    def call(self, ids):
        """The update of the rows ``ids`` [..., width]."""
        return (self.alpha / self.rank) * tf.tensordot(tf.gather(self.down, ids), self.up, axes=1)

    def all_rows(self) -> tf.Tensor:
        return (self.alpha / self.rank) * tf.matmul(self.down, self.up)

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "width": self.width,
            "rank": self.rank,
            "alpha": self.alpha,
        }


class ItemRepresentation(tf.keras.layers.Layer):
    """Item vector = id embedding + mean of the item's attribute embeddings.

    The attribute table (brands, categories, genres) is shared by every item that carries the
    attribute, so an item the id embedding has barely seen, or never, still lands near its
    kind. The item → attributes lookup is a non-trainable weight: it is saved with the model and
    restored from a checkpoint, so a loaded model needs no side files.
    """

    def __init__(
        self,
        vocabulary_size: int,
        width: int,
        n_attributes: int = 0,
        max_attributes: int = 0,
        lora_rank: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary_size, self.width = vocabulary_size, width
        self.n_attributes, self.max_attributes, self.lora_rank = n_attributes, max_attributes, lora_rank
        self.id_lora = EmbeddingLoRA(vocabulary_size, width, lora_rank, name="id_lora") if lora_rank else None
        self.id_embedding = tf.keras.layers.Embedding(
            vocabulary_size, width, embeddings_initializer=_initializer(), name="id_embedding"
        )
        self.attribute_embedding = (
            tf.keras.layers.Embedding(
                n_attributes + 1, width, embeddings_initializer=_initializer(), name="attribute_embedding"
            )
            if self.uses_attributes
            else None
        )

    @property
    def uses_attributes(self) -> bool:
        return self.n_attributes > 0 and self.max_attributes > 0

    def build(self, input_shape=None):
        with tf.name_scope("id_embedding"):
            self.id_embedding.build(None)
        if self.id_lora is not None:
            with tf.name_scope("id_lora"):
                self.id_lora.build(None)
        if self.uses_attributes:
            with tf.name_scope("attribute_embedding"):
                self.attribute_embedding.build(None)
            # item_attributes[i] = attribute ids of item i, 1-based, 0-padded (index 0 of the table is padding).
            self.item_attributes = self.add_weight(
                name="item_attributes",
                shape=(self.vocabulary_size, self.max_attributes),
                dtype=tf.int32,
                initializer="zeros",
                trainable=False,
            )
        super().build(input_shape)

    def set_item_attributes(self, item_attributes: np.ndarray) -> None:
        """Load the item → attribute-id table ([vocabulary_size, max_attributes], ids 1-based, 0 pads)."""
        if not self.uses_attributes:
            return  # data without attributes: an item is its id embedding alone
        if not self.built:
            self(tf.zeros((1, 1), tf.int32))  # builds the weights inside this layer's name scope
        self.item_attributes.assign(item_attributes.astype(np.int32))

    def _fuse(self, id_vectors: tf.Tensor, attribute_ids: tf.Tensor) -> tf.Tensor:
        """id vectors [..., width] + the mean embedding of their attribute ids [..., max_attributes]."""
        if not self.uses_attributes:
            return id_vectors
        attributes = tf.gather(self.attribute_embedding.embeddings, attribute_ids)
        present = tf.cast(tf.not_equal(attribute_ids, PAD_INDEX), id_vectors.dtype)[..., tf.newaxis]
        return id_vectors + tf.reduce_sum(attributes * present, axis=-2) / tf.maximum(
            tf.reduce_sum(present, axis=-2), 1.0
        )

    def all_items(self) -> tf.Tensor:
        """The vector of every index [vocabulary_size, width]."""
        id_vectors = self.id_embedding.embeddings
        if self.id_lora is not None:
            id_vectors = id_vectors + self.id_lora.all_rows()
        return self._fuse(id_vectors, self.item_attributes if self.uses_attributes else None)

    def call(self, item_ids):
        # Only the requested items are fused: serving a 50-item history must not touch the whole catalogue.
        id_vectors = tf.gather(self.id_embedding.embeddings, item_ids)
        if self.id_lora is not None:
            id_vectors = id_vectors + self.id_lora(item_ids)
        attribute_ids = tf.gather(self.item_attributes, item_ids) if self.uses_attributes else None
        return self._fuse(id_vectors, attribute_ids)

    def backbone_layers(self) -> list[tf.keras.layers.Layer]:
        """The pre-trained tables; the low-rank update (if any) is not among them."""
        return [self.id_embedding] + ([self.attribute_embedding] if self.uses_attributes else [])

    def get_config(self):
        return {
            **super().get_config(),
            "vocabulary_size": self.vocabulary_size,
            "width": self.width,
            "n_attributes": self.n_attributes,
            "max_attributes": self.max_attributes,
            "lora_rank": self.lora_rank,
        }


class LoRADense(tf.keras.layers.Layer):
    """A dense projection with an optional low-rank update: W x + (alpha / rank) · B A x (Hu et al., 2021).

    ``base`` holds the pre-trained weight; ``lora_down``/``lora_up`` are the rank-r factors, the
    up-projection starting at zero so inserting them does not change the function. Freezing
    ``base`` leaves only 2 · rank · width parameters per projection to train.
    """

    def __init__(self, units: int, rank: int = 0, alpha: float = 16.0, **kwargs):
        super().__init__(**kwargs)
        self.units, self.rank, self.alpha = units, rank, alpha
        self.base = tf.keras.layers.Dense(units, kernel_initializer=_initializer(), name="base")
        if rank:
            self.lora_down = tf.keras.layers.Dense(
                rank, use_bias=False, kernel_initializer=_initializer(), name="lora_down"
            )
            self.lora_up = tf.keras.layers.Dense(units, use_bias=False, kernel_initializer="zeros", name="lora_up")

    def call(self, inputs):
        outputs = self.base(inputs)
        if self.rank:
            outputs += (self.alpha / self.rank) * self.lora_up(self.lora_down(inputs))
        return outputs

    def get_config(self):
        return {**super().get_config(), "units": self.units, "rank": self.rank, "alpha": self.alpha}


class SelfAttention(tf.keras.layers.Layer):
    """Multi-head scaled dot-product self-attention with LoRA-able query/key/value/output projections."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, lora_rank: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.d_model, self.n_heads, self.dropout_rate, self.lora_rank = d_model, n_heads, dropout, lora_rank
        self.query, self.key, self.value, self.output_projection = (
            LoRADense(d_model, lora_rank, name=name) for name in ("query", "key", "value", "output")
        )
        self.attention_dropout = tf.keras.layers.Dropout(dropout)

    def _split_heads(self, tensor):
        batch, length = tf.shape(tensor)[0], tf.shape(tensor)[1]
        heads = tf.reshape(tensor, [batch, length, self.n_heads, self.d_model // self.n_heads])
        return tf.transpose(heads, [0, 2, 1, 3])  # [B, heads, L, head width]

    def call(self, inputs, attention_mask, training=False, return_attention=False, newest_only=False):
        """Attended values [B, L, d]; with ``return_attention`` also the weights [B, heads, L, L].

        ``newest_only``: only the newest position asks (queries, outputs and weights for it alone,
        L becomes 1), which is all a next-item query needs; keys and values still cover every position.
        """
        asking = inputs[:, -1:] if newest_only else inputs
        if newest_only:
            attention_mask = attention_mask[:, -1:]
        query = self._split_heads(self.query(asking))
        key, value = self._split_heads(self.key(inputs)), self._split_heads(self.value(inputs))
        scores = tf.matmul(query, key, transpose_b=True) / tf.math.sqrt(
            tf.cast(self.d_model // self.n_heads, query.dtype)
        )
        # attention_mask [B, L, L]: False where a query must not see a key. A row with no visible key
        # (a padding position) gets uniform weights over masked keys; its output is never read.
        scores = tf.where(attention_mask[:, tf.newaxis], scores, scores.dtype.min)
        probabilities = tf.nn.softmax(scores, axis=-1)
        weights = self.attention_dropout(probabilities, training=training)
        attended = tf.transpose(tf.matmul(weights, value), [0, 2, 1, 3])
        batch, length = tf.shape(asking)[0], tf.shape(asking)[1]
        outputs = self.output_projection(tf.reshape(attended, [batch, length, self.d_model]))
        return (outputs, probabilities) if return_attention else outputs

    def base_layers(self) -> list[tf.keras.layers.Layer]:
        return [projection.base for projection in (self.query, self.key, self.value, self.output_projection)]

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "dropout": self.dropout_rate,
            "lora_rank": self.lora_rank,
        }


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


class LowPassFilter(tf.keras.layers.Layer):
    """BSARec's frequency-domain token mixer (Shin et al., AAAI 2024), made causal for next-item training.

    Over a window of ``window`` positions, keep the ``frequencies`` lowest discrete Fourier
    components of the sequence (a smooth, recency-weighted summary) and scale the rest (the
    high-frequency detail) by a learned β² per channel: low + β² · (x − low). Attention alone
    has no such bias towards the shape of the whole recent history.

    BSARec filters the whole window at once and trains on each prefix's last position. Here the
    low-pass is the same linear map written as a convolution over offsets (row t of the filter
    matrix), so under causal attention position t reads only positions ≤ t and every position of
    a sequence trains in one pass; bidirectionally (Cloze) it is the full circular filter. Padding
    is zeroed first, so trimming shared left padding changes no output.
    """

    def __init__(self, window: int, frequencies: int, **kwargs):
        super().__init__(**kwargs)
        self.window, self.frequencies = window, frequencies
        offsets = np.arange(window)
        # Row n of the rank-``frequencies`` projection onto the lowest Fourier components, by offset n - m.
        kernel = 1.0 + 2.0 * sum(np.cos(2 * np.pi * k * offsets / window) for k in range(1, frequencies))
        distance = offsets[:, np.newaxis] - offsets[np.newaxis, :]
        self._circular = (kernel[distance % window] / window).astype(np.float32)
        self._causal = np.where(distance >= 0, self._circular, 0.0).astype(np.float32)

    def build(self, input_shape):
        self.sqrt_beta = self.add_weight(
            name="sqrt_beta", shape=(int(input_shape[-1]),), initializer=tf.keras.initializers.RandomNormal()
        )
        super().build(input_shape)

    def call(self, inputs, valid, causal: bool = True, newest_only: bool = False):
        """Filtered [B, L, d] (L = 1 with ``newest_only``); ``valid`` [B, L] is False on padding."""
        signal = inputs * tf.cast(valid, inputs.dtype)[..., tf.newaxis]
        signal_here = signal[:, -1:] if newest_only else signal
        first = self.window - tf.shape(inputs)[1]
        matrix = tf.constant(self._causal if causal else self._circular, inputs.dtype)[first:, first:]
        matrix = matrix[-1:] if newest_only else matrix
        # [T, S] @ [B, S, d], broadcast over the batch (an einsum here does not convert to TFLite).
        low = tf.matmul(matrix, signal)
        return low + tf.square(self.sqrt_beta) * (signal_here - low)

    def get_config(self):
        return {**super().get_config(), "window": self.window, "frequencies": self.frequencies}


class TransformerBlock(tf.keras.layers.Layer):
    """Pre-norm self-attention block: x + Mix(LN(x)), then x + FFN(LN(x)); optional adapters and LoRA.

    Mix is attention, or with ``filter_mix`` = α > 0 BSARec's blend α · LowPassFilter + (1 − α) · attention.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        ffn_width: int,
        dropout: float,
        adapter_dim: int = 0,
        lora_rank: int = 0,
        filter_mix: float = 0.0,
        filter_window: int = 50,
        filter_frequencies: int = 3,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.d_model, self.n_heads, self.ffn_width = d_model, n_heads, ffn_width
        self.dropout_rate, self.adapter_dim, self.lora_rank = dropout, adapter_dim, lora_rank
        self.filter_mix, self.filter_window, self.filter_frequencies = filter_mix, filter_window, filter_frequencies
        self.low_pass = LowPassFilter(filter_window, filter_frequencies, name="low_pass") if filter_mix else None
        self.attention_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="attention_norm")
        self.attention = SelfAttention(d_model, n_heads, dropout, lora_rank, name="attention")
        self.ffn_norm = tf.keras.layers.LayerNormalization(epsilon=1e-6, name="ffn_norm")
        self.ffn_in = tf.keras.layers.Dense(
            ffn_width, activation="gelu", kernel_initializer=_initializer(), name="ffn_in"
        )
        self.ffn_out = tf.keras.layers.Dense(d_model, kernel_initializer=_initializer(), name="ffn_out")
        self.dropout = tf.keras.layers.Dropout(dropout)
        self.adapters = (
            [
                BottleneckAdapter(adapter_dim, name="attention_adapter"),
                BottleneckAdapter(adapter_dim, name="ffn_adapter"),
            ]
            if adapter_dim
            else []
        )

    def call(
        self, inputs, attention_mask, training=False, return_attention=False, newest_only=False, valid=None, causal=True
    ):
        """``valid`` [B, L] (False on padding) is needed with ``filter_mix``; ``causal`` picks the filter's form."""
        normed = self.attention_norm(inputs)
        attended, attention = self.attention(
            normed, attention_mask, training=training, return_attention=True, newest_only=newest_only
        )
        if self.low_pass is not None:
            filtered = self.low_pass(normed, valid, causal=causal, newest_only=newest_only)
            attended = self.filter_mix * filtered + (1.0 - self.filter_mix) * attended
        if self.adapters:
            attended = self.adapters[0](attended)
        hidden = (inputs[:, -1:] if newest_only else inputs) + self.dropout(attended, training=training)
        transformed = self.ffn_out(self.ffn_in(self.ffn_norm(hidden)))
        if self.adapters:
            transformed = self.adapters[1](transformed)
        outputs = hidden + self.dropout(transformed, training=training)
        return (outputs, attention) if return_attention else outputs

    def backbone_layers(self) -> list[tf.keras.layers.Layer]:
        """The pre-trained weights; adapters and LoRA factors are not among them."""
        filters = [self.low_pass] if self.low_pass is not None else []
        return [self.attention_norm, *self.attention.base_layers(), *filters, self.ffn_norm, self.ffn_in, self.ffn_out]

    def get_config(self):
        return {
            **super().get_config(),
            "d_model": self.d_model,
            "n_heads": self.n_heads,
            "ffn_width": self.ffn_width,
            "dropout": self.dropout_rate,
            "adapter_dim": self.adapter_dim,
            "lora_rank": self.lora_rank,
            "filter_mix": self.filter_mix,
            "filter_window": self.filter_window,
            "filter_frequencies": self.filter_frequencies,
        }

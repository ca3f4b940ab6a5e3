"""The encoder's shape in one place (nanoGPT style): every layer reads its sizes from here."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ModelSize = Literal["tiny", "small", "base", "large"]
FinetuneMode = Literal["full", "frozen", "lora", "head"]
TrainingExamples = Literal["prefixes", "windows"]
# One seed drives data generation, augmentation and training, so a run is repeatable end to end.
Seed = Annotated[int, Field(ge=0, description="Seed of data generation, augmentation and training.")]

MODEL_SIZES: dict[str, dict] = {
    "tiny": dict(d_model=32, n_layers=1, n_heads=2),
    "small": dict(d_model=64, n_layers=2, n_heads=2),
    "base": dict(d_model=128, n_layers=2, n_heads=4),
    # For a GPU worker; runs on CPU too, slowly.
    "large": dict(d_model=512, n_layers=6, n_heads=8),
}


class EncoderConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_items: int = Field(ge=1, description="Real items; indices 1..n_items. 0 pads, n_items + 1 is [MASK].")
    max_length: int = Field(50, ge=2, description="Positions the encoder reads.")
    d_model: int = Field(64, ge=8, description="Width of embeddings and attention.")
    n_layers: int = Field(2, ge=1, description="Self-attention blocks.")
    n_heads: int = Field(2, ge=1, description="Attention heads per block.")
    ffn_multiplier: int = Field(4, ge=1, description="Feed-forward width = ffn_multiplier × d_model.")
    dropout: float = Field(0.2, ge=0, lt=1, description="Dropout on embeddings, attention and feed-forward.")
    filter_mix: float = Field(
        0.0, ge=0, le=1, description="Share of token mixing done by BSARec's low-pass filter; 0 is attention only."
    )
    filter_frequencies: int = Field(3, ge=1, description="Fourier components the low-pass filter keeps.")
    adapter_dim: int = Field(0, ge=0, description="Bottleneck adapter width per block; 0 means no adapters.")
    lora_rank: int = Field(0, ge=0, description="Rank of LoRA updates on the attention projections; 0 means none.")
    item_lora_rank: int = Field(0, ge=0, description="Rank of a LoRA update of the item id table; 0 means none.")
    n_attributes: int = Field(0, ge=0, description="Item attribute ids 1..n_attributes (brands, genres); 0 means none.")
    max_attributes: int = Field(0, ge=0, description="Most attributes one item carries.")

    @model_validator(mode="after")
    def _heads_divide_width(self) -> EncoderConfig:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        return self

    @property
    def vocabulary_size(self) -> int:
        return self.n_items + 2

    @property
    def mask_index(self) -> int:
        return self.n_items + 1

    @classmethod
    def of_size(cls, size: ModelSize, **overrides) -> EncoderConfig:
        return cls(**{**MODEL_SIZES[size], **overrides})


RetrievalLoss = Literal["full_softmax", "in_batch"]

"""Pre-training, fine-tuning and accelerator settings (light: parsed with the Params, before TensorFlow)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recsys_tasks.models.config import FinetuneMode, ModelSize, RetrievalLoss, Seed, TrainingExamples

# The item table's LoRA trains about rank / width of the table's parameters, so a rank that grows with the
# width keeps that share (about 6%) as the encoder widens. On Amazon Beauty validation (model-quality study) rank 8
# instead of 4 lifted frozen from 89.5% to 90.6% of full at width 128, but at width 64 only from 88.3% to
# 88.7%, at 11.9% of the parameters.
WIDTH_PER_ITEM_LORA_RANK = 16


class AcceleratorConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mixed_precision: bool | None = Field(
        None, description="float16 compute with float32 weights; null = on with a GPU."
    )
    xla: bool | None = Field(None, description="Compile the train step with XLA; null = on with a GPU.")


class PretrainConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    model_size: ModelSize = Field("small", description="Transformer size: tiny, small, base or large (GPU).")
    dropout: float = Field(0.5, ge=0, lt=1, description="Dropout rate of the encoder.")
    use_attributes: bool = Field(True, description="Fuse item-attribute embeddings into the item vectors.")
    filter_mix: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Share of each block's token mixing done by the low-pass filter (BSARec's α); 0 = attention only.",
    )
    epochs: int = Field(10, ge=0, le=1000, description="Self-supervised pre-training epochs (0 = none).")
    batch_size: int = Field(256, ge=2, description="View pairs per batch (the contrastive negatives).")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    mask_probability: float = Field(0.2, gt=0, lt=1, description="Share of history positions hidden for Cloze.")
    cloze_weight: float = Field(1.0, ge=0, description="Weight of the masked-item loss.")
    attribute_weight: float = Field(0.2, ge=0, description="Weight of masked attribute prediction (needs attributes).")
    autoregressive_weight: float = Field(1.0, ge=0, description="Weight of next-item prediction on augmented views.")
    contrastive_weight: float = Field(0.1, ge=0, description="Weight of the contrastive loss.")
    temperature: float = Field(0.2, gt=0, description="Softmax temperature of the contrastive loss.")
    seed: Seed = 0
    accelerator: AcceleratorConfig = Field(default_factory=AcceleratorConfig)


class FinetuneConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    mode: FinetuneMode = Field(
        "full",
        description="full: all weights; frozen: adapters + heads; lora: low-rank attention updates + heads; "
        "head: heads only.",
    )
    loss: RetrievalLoss = Field("full_softmax", description="Softmax over the whole catalogue, or in-batch negatives.")
    examples: TrainingExamples = Field(
        "prefixes",
        description="prefixes: a training row per target item (stronger); windows: a row per window of history "
        "with a target at every position (far less work per epoch on long histories).",
    )
    epochs: int = Field(
        20,
        ge=0,
        le=1000,
        description="Most fine-tuning epochs (early stopping on validation); 0 exports the pre-trained model as is.",
    )
    batch_size: int = Field(256, ge=1, description="Rows (see examples) per batch.")
    learning_rate: float = Field(1e-3, gt=0, description="Adam learning rate.")
    average_steps: int = Field(
        100,
        ge=0,
        description="Validation, early stopping and export read an exponential moving average of the weights "
        "over about this many optimizer steps (at most a quarter of an epoch); 0 reads the last step's weights.",
    )
    average_epochs: int = Field(
        2,
        ge=0,
        description="Also validate the average of the best epoch's weights and those of up to this many epochs "
        "before and after it, and export it when it scores higher; 0 exports the best epoch's weights.",
    )
    adapter_dim: int = Field(16, ge=1, description="Adapter bottleneck width in frozen mode.")
    lora_rank: int = Field(8, ge=1, description="Rank of the LoRA updates in lora mode.")
    item_lora_rank: int | None = Field(
        None,
        ge=0,
        description="frozen and lora modes: rank of a LoRA update of the frozen item table (0 = none); "
        "it lets each item move a little at rank · (items + width) parameters. None scales it with the "
        f"encoder: one rank per {WIDTH_PER_ITEM_LORA_RANK} of width (4 for small, 8 for base).",
    )
    frozen_dropout: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Encoder dropout in frozen, lora and head modes (full keeps the pre-training rate): the "
        "backbone does not learn, so heavy dropout there only blurs the features the few trainable weights read.",
    )
    ranking_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Multi-task: weight of the ranking head (ratings, or clicks) next to retrieval; 0 = off.",
    )
    patience: int = Field(3, ge=1, description="Epochs without validation gain before stopping.")
    refit: bool = Field(
        False,
        description="Once validation has chosen the epochs, train afresh on training + validation targets for "
        "them and export that model (about twice the fine-tuning time; the test split stays unseen).",
    )
    seed: Seed = 0
    accelerator: AcceleratorConfig = Field(default_factory=AcceleratorConfig)


ReplayRule = Literal["herding", "loss", "random"]


class AdaptConfig(BaseModel):
    """How a run continues the champion on new events without forgetting the old ones (ADER's recipe)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    replay_size: int = Field(
        2000,
        ge=0,
        le=1_000_000,
        description="Training rows of earlier data replayed next to the new events and kept with the version "
        "for the next run; 0 = fine-tune on the new events alone.",
    )
    replay_rule: ReplayRule = Field(
        "herding",
        description="herding: per target item, as many rows as its share of the data, those whose query vectors "
        "best match the item's mean (ADER); loss: the same shares, the rows whose next item the model predicts "
        "best; random: a uniform sample.",
    )
    distillation: bool = Field(
        True,
        description="Train replayed rows towards the champion's scores over the items it knew instead of their "
        "next item (ADER's knowledge distillation).",
    )
    distillation_weight: float = Field(
        0.8,
        ge=0,
        le=100,
        description="ADER's λ_base; the weight used is λ_base · √(old items / items · replayed rows / new rows).",
    )
    learning_rate: float | None = Field(
        None,
        gt=0,
        description="Adam learning rate of an adapt run; null = fine-tuning's.",
    )

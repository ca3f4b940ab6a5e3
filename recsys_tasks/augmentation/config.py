"""How the augment stage cleans the validated log and cuts augmented views."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from recsys_tasks.models.config import Seed


class CleaningConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    positive_min_rating: float | None = Field(
        None, description="Ratings ≥ this are positives (e.g. 4); null keeps every event."
    )
    user_core: int = Field(3, ge=3, le=1000, description="Fewest events per user (k-core; leave-one-out needs 3).")
    item_core: int = Field(1, ge=1, le=1000, description="Fewest events per item (k-core).")


class AugmentConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_length: int = Field(50, ge=2, le=1024, description="Items of history the model reads (most recent kept).")
    crop_ratio: float = Field(0.6, gt=0, le=1, description="Share of a sequence a crop keeps.")
    mask_ratio: float = Field(0.3, ge=0, lt=1, description="Share of positions a mask view hides.")
    reorder_ratio: float = Field(0.3, ge=0, le=1, description="Share of a sequence a reorder view shuffles.")
    view_pairs_per_user: int = Field(2, ge=1, le=32, description="Augmented view pairs materialised per user.")
    seed: Seed = 0
    cleaning: CleaningConfig = Field(default_factory=CleaningConfig, description="Labelling, de-duplication, k-core.")

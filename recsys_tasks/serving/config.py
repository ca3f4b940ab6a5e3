"""Batch recommendations written for every known user after a promotion."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class BatchRecommendConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = Field(
        False, description="After a promotion, write top-k for every known user from the new champion to Parquet."
    )
    k: int = Field(10, ge=1, le=1000, description="Batch recommendations: items per user.")
    batch_size: int = Field(512, ge=1, description="Users per pyfunc call.")

"""How the evaluate stage ranks and times the models it compares."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EvaluateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    batch_size: int | None = Field(
        None,
        ge=1,
        description="Users ranked per batch (memory grows with batch × catalogue); by default about 4 million scores.",
    )
    compare_with_champion: bool = Field(True, description="Also rank the current champion on this test split.")
    latency_calls: int = Field(200, ge=1, description="Timed top-10 requests (batch 1) per serving variant.")
    off_policy_days: int = Field(
        7, ge=1, le=365, description="Days of the serving log (up to now) the off-policy estimates read."
    )
    off_policy_confidence: float = Field(0.95, gt=0.5, lt=1, description="Coverage of the off-policy intervals.")
    off_policy_resamples: int = Field(1000, ge=10, le=100_000, description="Bootstrap resamples of each interval.")

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

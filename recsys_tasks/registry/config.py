"""The metric gate that decides a promotion to ``champion``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_ndcg_at_10: float = Field(0.01, ge=0, le=1, description="Absolute floor on test NDCG@10.")
    min_lift_over_popularity: float = Field(
        0.1, ge=0, le=100, description="Required relative gain over popularity (0.1 = 10% higher NDCG@10)."
    )
    max_regression_vs_champion: float = Field(
        0.02, ge=0, le=1, description="Tolerated relative NDCG@10 drop against the current champion."
    )

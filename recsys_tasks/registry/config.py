"""The metric gate that decides a promotion to ``champion``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from recsys_tasks.contracts.reports import RequestedTrainingMode


class GateConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    min_ndcg_at_10: float = Field(0.01, ge=0, le=1, description="Absolute floor on test NDCG@10.")
    min_lift_over_popularity: float = Field(
        0.1, ge=0, le=100, description="Required relative gain over popularity (0.1 = 10% higher NDCG@10)."
    )
    max_regression_vs_champion: float = Field(
        0.02, ge=0, le=1, description="Tolerated relative NDCG@10 drop against the current champion."
    )
    off_policy_min_slates: int = Field(
        1000,
        ge=1,
        description="Logged slates needed before the off-policy check runs (fewer: the check is skipped, saying so).",
    )
    off_policy_estimator: Literal["ips", "snips", "dr"] = Field(
        "ips",
        description="Estimator of the off-policy check: ips (counts a slate the logging policy could not have shown as "
        "no click, so it errs low), snips (self-normalised) or dr (doubly robust).",
    )
    max_off_policy_regression: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Tolerated relative click-through drop on the logged slates: the lower bound of challenger − "
        "champion (paired) against this share of the champion's estimate.",
    )


class TrainingPlanConfig(BaseModel):
    """When a run continues the champion (adapt) and when it trains afresh (retrain)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    training_mode: RequestedTrainingMode = Field(
        "auto",
        description="auto: adapt when the champion can be continued, the drift is small and retrain_every is not "
        "reached, else retrain; adapt: continue the champion (fails when it cannot be); retrain: from scratch.",
    )
    retrain_every: int = Field(
        7, ge=1, le=1000, description="auto: after this many adapt runs in a row the next run retrains."
    )
    max_drift_to_adapt: float = Field(
        0.2,
        ge=0,
        description="auto: retrain when the data gate's item-popularity PSI against the last accepted data is "
        "above this (the gate itself fails the run above its own limit).",
    )

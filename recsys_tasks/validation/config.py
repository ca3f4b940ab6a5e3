"""Thresholds of the data gate: a light module, imported when Airflow parses the DAG (the gate itself is not)."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

# A share or a coefficient between 0 and 1.
_Share = Annotated[float, Field(ge=0.0, le=1.0)]


class ValidationConfig(BaseModel):
    """Thresholds of the data gate."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_rating: float = Field(default=0.0, description="Smallest plausible rating.")
    max_rating: float = Field(default=5.0, description="Largest plausible rating.")
    min_timestamp: int = Field(
        default=788918400, description="Oldest plausible event, unix seconds (default 1995-01-01 UTC)."
    )
    max_future_seconds: int = Field(
        default=86400, ge=0, description="Clock skew tolerated for events stamped after the validation time."
    )
    max_duplicate_rate: float = Field(
        default=0.01,
        ge=0.0,
        le=1.0,
        description=(
            "Largest share of rows whose (user_id, item_id, timestamp) occurs more than once; Great Expectations"
            " counts every copy, the first one included."
        ),
    )
    min_interactions_per_user: int = Field(
        default=3, ge=1, description="Fewest interactions per user: leave-one-out needs train, validation and test."
    )
    max_top_user_share: float = Field(
        default=0.05,
        gt=0.0,
        le=1.0,
        description="Largest share of all interactions one user may hold (a bot or a scraper shows up here).",
    )
    max_single_timestamp_user_share: _Share = Field(
        default=0.1,
        description="Largest share of users with several events all stamped at one second: their order is lost.",
    )
    max_likely_swapped_row_share: _Share = Field(
        default=0.02,
        description=(
            "Largest share of rows, beyond chance, whose item id is a user active closer to that moment than the"
            " row's own user (user and item exchanged in some rows)."
        ),
    )
    min_interactions_per_item: int = Field(default=1, ge=1, description="Fewest interactions per item.")
    max_top_item_share: _Share = Field(default=0.2, description="Largest share of all interactions one item may hold.")
    max_item_popularity_gini: _Share = Field(
        default=0.9, description="Largest Gini coefficient of interactions per item (0: all equal, 1: one holds all)."
    )
    max_top_timestamp_share: _Share = Field(
        default=0.5, description="Largest share of all interactions stamped with one and the same second."
    )
    min_rows: int = Field(default=100, ge=0, description="Fewest interaction rows.")
    max_rows: int = Field(default=100_000_000, ge=0, description="Most interaction rows.")
    min_users: int = Field(default=10, ge=0, description="Fewest distinct users.")
    max_users: int = Field(default=10_000_000, ge=0, description="Most distinct users.")
    min_items: int = Field(default=10, ge=0, description="Fewest distinct interacted items.")
    max_items: int = Field(default=10_000_000, ge=0, description="Most distinct interacted items.")

    min_click_through: _Share = Field(
        default=0.001,
        description="Fewest slates with a click or a purchase, as a share of the logged slates a run reads (feedback).",
    )
    max_click_through: _Share = Field(
        default=0.9, description="Most slates with a click or a purchase, as a share of the logged slates a run reads."
    )

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> Self:
        for low_name, high_name in [
            ("min_rating", "max_rating"),
            ("min_click_through", "max_click_through"),
            ("min_rows", "max_rows"),
            ("min_users", "max_users"),
            ("min_items", "max_items"),
        ]:
            low, high = getattr(self, low_name), getattr(self, high_name)
            if low > high:
                raise ValueError(f"{low_name} ({low}) must not exceed {high_name} ({high})")
        return self


class DriftConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    max_item_popularity_psi: float = Field(0.25, ge=0, description="PSI above 0.25 is the usual 'major shift'.")
    max_history_length_psi: float = Field(0.25, ge=0, description="PSI of the per-user history-length histogram.")
    max_new_item_rate: float = Field(0.5, ge=0, le=1, description="Largest share of interactions on unseen items.")
    max_daily_volume_ratio: float = Field(3.0, gt=0, description="Busiest day today / busiest day in the snapshot.")
    top_items: int = Field(100, ge=1, description="Items tracked one by one in the popularity PSI.")

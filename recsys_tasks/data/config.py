"""What the ingest stage reads: the data source, its path, a generic table's columns, and how much of it a run takes."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_tasks.models.config import Seed


class ColumnMapping(BaseModel):
    """Which columns of a generic table hold the canonical fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    user: str = Field("user_id", description="User id column (any type; pseudonymised at ingest).")
    item: str = Field("item_id", description="Item id column (integers).")
    timestamp: str = Field("timestamp", description="Unix seconds, a timestamp type, or ISO-8601 text.")
    rating: str | None = Field("rating", description="Rating column; None treats every row as an implicit 1.0.")
    event: str | None = Field(None, description="Event-type column (view, cart, ...); replaces the rating column.")
    event_ratings: dict[str, float] = Field(
        default_factory=dict, description="With an event column: the rating each event type counts as."
    )
    attributes: str | None = Field(None, description="Column of item attribute ids (an integer or a list of them).")

    @model_validator(mode="after")
    def _events_have_ratings(self) -> ColumnMapping:
        if self.event and not self.event_ratings:
            raise ValueError("an event column needs event_ratings, e.g. {'view': 1, 'purchase': 5}")
        return self

    def columns(self) -> list[str]:
        label = [self.event] if self.event else [self.rating] if self.rating else []
        return [self.user, self.item, self.timestamp, *label, *([self.attributes] if self.attributes else [])]


class FeedbackConfig(BaseModel):
    """Which of the serving app's log (the feedback store) joins a run's data."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    days: int = Field(
        0,
        ge=0,
        le=365,
        description="Days of served slates and user feedback, up to the run's end, that join its data: clicks and "
        "purchases as interactions, items shown and not clicked as the ranking head's negatives. 0 reads none.",
    )
    rating: float = Field(
        5.0, description="The rating a click or a purchase counts as (inside the data gate's rating bounds)."
    )


SyntheticPreset = Literal["tiny", "small", "medium", "large", "drifting"]


DataSource = Literal["synthetic", "periods", "movielens-100k", "movielens-1m", "movielens-25m", "sequence", "table"]

Window = Literal["all", "data_interval"]


class IngestConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: DataSource = Field(
        "synthetic",
        description="synthetic, periods (one period file a run), movielens-100k / -1m / -25m (also 'latest'), "
        "sequence, or table.",
    )
    path: str | None = Field(
        None,
        description="MovieLens: the unpacked folder. periods: the folder of period_N.txt files ('session item' "
        "lines). sequence: the 'user item item ...' .txt file. table: a CSV (with header) or Parquet file.",
    )
    columns: ColumnMapping = Field(
        default_factory=ColumnMapping,
        description="table only: which columns hold user, item, timestamp and rating (null rating = implicit).",
    )
    synthetic_size: SyntheticPreset = Field(
        "small",
        description="Size of the built-in synthetic data set; drifting: weekly periods with planted drift, one a run.",
    )
    window: Window = Field(
        "all",
        description="all: the whole source every run. data_interval: only the events of the run's data interval, "
        "appended to the data set's event store as one period (movielens, table and the fixed synthetic sizes).",
    )
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig, description="The serving log a run reads.")
    seed: Seed = 0

    @model_validator(mode="after")
    def _source_is_usable(self) -> IngestConfig:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"data source {self.source!r} needs a data path")
        if self.window == "data_interval" and (self.source == "sequence" or self.arrives_in_periods):
            raise ValueError(
                "window 'data_interval' needs a source with a clock of its own: sequence files have none, and period "
                "files and the drifting synthetic set arrive in periods already"
            )
        return self

    @property
    def arrives_in_periods(self) -> bool:
        """Period files and the drifting synthetic set: each run takes the next period of the source."""
        return self.source == "periods" or (self.source == "synthetic" and self.synthetic_size == "drifting")

    @property
    def incremental(self) -> bool:
        """Whether a run appends one period to the data set's event store instead of reading the whole source."""
        return self.arrives_in_periods or self.window == "data_interval"

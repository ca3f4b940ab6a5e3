"""What the ingest stage reads: the data source, its path and a generic table's columns."""

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


SyntheticPreset = Literal["tiny", "small", "medium", "large"]


DataSource = Literal["synthetic", "movielens-100k", "movielens-1m", "movielens-25m", "sequence", "table"]


class IngestConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: DataSource = Field(
        "synthetic", description="synthetic, movielens-100k / -1m / -25m (also 'latest'), sequence, or table."
    )
    path: str | None = Field(
        None,
        description="MovieLens: the unpacked folder. sequence: the 'user item item ...' .txt file. "
        "table: a CSV (with header) or Parquet file.",
    )
    columns: ColumnMapping = Field(
        default_factory=ColumnMapping,
        description="table only: which columns hold user, item, timestamp and rating (null rating = implicit).",
    )
    synthetic_size: SyntheticPreset = Field("small", description="Size of the built-in synthetic data set.")
    seed: Seed = 0

    @model_validator(mode="after")
    def _path_matches_source(self) -> IngestConfig:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"data source {self.source!r} needs a data path")
        return self

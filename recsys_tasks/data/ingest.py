"""Ingest stage: any supported source → canonical Parquet tables in the run directory."""

from __future__ import annotations

from typing import Literal

import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_tasks.constants import USER_COL
from recsys_tasks.data import sources
from recsys_tasks.data.privacy import pseudonymise
from recsys_tasks.data.schema import INTERACTIONS_FILE, ITEMS_FILE
from recsys_tasks.data.sources import ColumnMapping
from recsys_tasks.data.synthetic import SyntheticConfig, SyntheticPreset, generate
from recsys_tasks.storage import RunDir

DataSource = Literal["synthetic", "movielens-100k", "movielens-1m", "movielens-25m", "sequence", "table"]
_MOVIELENS_READERS = {
    "movielens-100k": sources.read_movielens_100k,
    "movielens-1m": sources.read_movielens_1m,
    "movielens-25m": sources.read_movielens_csv,
}


class IngestConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    source: DataSource = Field("synthetic", description="Which reader to use.")
    path: str | None = Field(
        None,
        description="MovieLens: the unpacked folder; sequence: the 'user item item ...' .txt file; "
        "table: a CSV (with header) or Parquet file.",
    )
    columns: ColumnMapping = Field(default_factory=ColumnMapping, description="Column names of a generic table.")
    synthetic_size: SyntheticPreset = Field("tiny", description="Preset of the synthetic generator.")
    seed: int = Field(0, description="Seed of the synthetic generator.")

    @model_validator(mode="after")
    def _path_matches_source(self) -> IngestConfig:
        if self.source != "synthetic" and not self.path:
            raise ValueError(f"data source {self.source!r} needs a data path")
        return self


class IngestSummary(BaseModel):
    source: str
    interactions_uri: str
    items_uri: str
    rows: int
    users: int
    items: int


def ingest(run: RunDir, config: IngestConfig, pseudonymisation_key: bytes) -> IngestSummary:
    """Read the source, replace user ids by pseudonyms, write the canonical tables. Raw ids go no further."""
    if config.source == "synthetic":
        interactions, items = generate(SyntheticConfig.preset(config.synthetic_size, seed=config.seed))
    elif config.source in _MOVIELENS_READERS:
        interactions, items = _MOVIELENS_READERS[config.source](config.path)
    elif config.source == "table":
        interactions, items = sources.read_table(config.path, config.columns)
    else:
        interactions, items = sources.read_sequences(config.path)
    user_column = interactions.schema.get_field_index(USER_COL)
    interactions = interactions.set_column(
        user_column, interactions.field(user_column), pseudonymise(interactions[USER_COL], pseudonymisation_key)
    )
    return IngestSummary(
        source=config.source,
        interactions_uri=run.write_parquet(INTERACTIONS_FILE, interactions),
        items_uri=run.write_parquet(ITEMS_FILE, items),
        rows=interactions.num_rows,
        users=pc.count_distinct(interactions["user_id"]).as_py(),
        items=pc.count_distinct(interactions["item_id"]).as_py(),
    )

"""Ingest stage: any supported source → canonical Parquet tables in the run directory."""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from recsys_tasks.constants import ITEM_COL, TIME_COL, USER_COL
from recsys_tasks.contracts.layout import INTERACTIONS_FILE, ITEMS_FILE, USERS_FILE
from recsys_tasks.contracts.tables import CHANCE_SWAPPED_ROWS_COL, LIKELY_SWAPPED_ROWS_COL, USERS_SCHEMA
from recsys_tasks.data import sources
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.privacy import pseudonymise
from recsys_tasks.data.synthetic import SyntheticConfig, generate
from recsys_tasks.storage import RunDir

_MOVIELENS_READERS = {
    "movielens-100k": sources.read_movielens_100k,
    "movielens-1m": sources.read_movielens_1m,
    "movielens-25m": sources.read_movielens_csv,
}


class IngestSummary(BaseModel):
    source: str
    interactions_uri: str
    items_uri: str
    users_uri: str
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
    users = _users(interactions, pseudonymisation_key, has_clock=config.source != "sequence")
    user_column = interactions.schema.get_field_index(USER_COL)
    interactions = interactions.set_column(
        user_column, interactions.field(user_column), pseudonymise(interactions[USER_COL], pseudonymisation_key)
    )
    return IngestSummary(
        source=config.source,
        interactions_uri=run.write_parquet(INTERACTIONS_FILE, interactions),
        items_uri=run.write_parquet(ITEMS_FILE, items),
        users_uri=run.write_parquet(USERS_FILE, users),
        rows=interactions.num_rows,
        users=pc.count_distinct(interactions["user_id"]).as_py(),
        items=pc.count_distinct(interactions["item_id"]).as_py(),
    )


def _users(interactions: pa.Table, pseudonymisation_key: bytes, has_clock: bool) -> pa.Table:
    """One row per user: its pseudonym, how many of its rows look like user and item swapped, and by chance.

    A row looks swapped when its item id, read as a user id, belongs to a user with another event
    closer to the row's time than this user's own nearest other event: in a real log the actor of an
    event is the one active at that moment. Where user and item ids share a range, some rows match by
    chance; the same count over a shuffled item column measures how many. Sources without a clock
    (sequence files, whose times are positions) are not checked. Raw ids exist only here, so ingest
    counts and only the counts go on.
    """
    counted = (LIKELY_SWAPPED_ROWS_COL, CHANCE_SWAPPED_ROWS_COL)
    # One string cache for both columns: a user id and the same text as an item id get the same integer
    # code, and the joins below run on codes, not strings (at 25M rows strings would cost gigabytes).
    with pl.StringCache():
        raw = pl.DataFrame(
            {"user": interactions[USER_COL], "item": interactions[ITEM_COL].cast(pa.string())},
            schema={"user": pl.Categorical, "item": pl.Categorical},
        )
        events = pl.DataFrame(
            {
                "user": raw["user"].to_physical(),
                "item": raw["item"].to_physical(),
                "time": interactions[TIME_COL],
            }
        ).filter(raw["user"].is_not_null())
        users = raw.select(name=pl.col("user").drop_nulls().unique()).with_columns(user=pl.col("name").to_physical())
        users = users.with_columns(pl.col("name").cast(pl.Utf8)).sort("name")
    if has_clock and not events.is_empty():
        events = events.with_columns(shuffled_item=pl.col("item").shuffle(seed=0))
        for item_column, name in zip(("item", "shuffled_item"), counted):
            users = users.join(_rows_whose_item_was_the_actor(events, item_column, name), on="user", how="left")
    else:
        users = users.with_columns(*(pl.lit(0).alias(name) for name in counted))
    return pa.table(
        {
            USER_COL: pseudonymise(users["name"].to_arrow(), pseudonymisation_key),
            **{name: users[name].fill_null(0).cast(pl.Int64).to_arrow() for name in counted},
        },
        schema=USERS_SCHEMA,
    )


def _rows_whose_item_was_the_actor(events: pl.DataFrame, item_column: str, counted: str) -> pl.DataFrame:
    """Per user, the rows whose ``item_column`` value is a user active closer to the row's time than the user."""
    own_gap = pl.min_horizontal(
        pl.col("time") - pl.col("time").shift(1).over("user"), pl.col("time").shift(-1).over("user") - pl.col("time")
    )
    rows = events.drop_nulls([item_column, "time"]).sort(["user", "time"]).with_columns(own_gap=own_gap)
    # A row whose item id equals its own user id would find itself: swapped or not, it reads the same.
    rows = rows.filter(
        pl.col(item_column).is_in(events["user"].unique().implode()) & (pl.col(item_column) != pl.col("user"))
    )
    actors = events.select(pl.col("user").alias(item_column), actor_time="time").drop_nulls().sort("actor_time")
    nearest = rows.sort("time").join_asof(
        actors, left_on="time", right_on="actor_time", by=item_column, strategy="nearest", check_sortedness=False
    )
    acted = (pl.col("actor_time") - pl.col("time")).abs() < pl.col("own_gap").fill_null(np.iinfo(np.int64).max)
    return nearest.filter(acted.fill_null(False)).group_by("user").len(counted)

"""Ingest stage: any supported source → canonical Parquet tables in the run directory.

A whole source is read every run, unless it is incremental (``IngestConfig.incremental``): period files and the
drifting synthetic set give their next period, a timestamped source windowed by the run's data interval gives the
events of that interval. The period is appended to the data set's event store (``contracts.event_store``), and the
run directory gets the history the model reads (every accepted period plus the new one), the new period alone and
``data/window.json`` (``IngestWindow``). A source with nothing new (every period file ingested and accepted, or no
event in the interval) appends nothing: the report says so with ``new_rows=0``, and the validate stage skips the run
instead of failing it, so a nightly run on an exhausted folder is not a failure.

With ``IngestConfig.feedback.days`` > 0 the serving app's log of the days before the run's end (the data interval's
end, or now) joins the data (``data.feedback``): its clicks and purchases are added to the interactions (and to the
new period of an incremental source, which the gate judges), and ``data/impressions.parquet`` and
``data/feedback_events.parquet`` hold what was shown and done.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from recsys_tasks.constants import ITEM_COL, TIME_COL, USER_COL
from recsys_tasks.contracts.event_store import EventStore, PeriodPartition
from recsys_tasks.contracts.layout import (
    FEEDBACK_EVENTS_FILE,
    IMPRESSIONS_FILE,
    INTERACTIONS_FILE,
    ITEMS_FILE,
    NEW_EVENTS_FILE,
    USERS_FILE,
    WINDOW_FILE,
)
from recsys_tasks.contracts.reports import FeedbackWindow, IngestWindow
from recsys_tasks.contracts.tables import (
    CHANCE_SWAPPED_ROWS_COL,
    INTERACTIONS_SCHEMA,
    ITEMS_SCHEMA,
    LIKELY_SWAPPED_ROWS_COL,
    USERS_SCHEMA,
)
from recsys_tasks.data import sources
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.feedback import FeedbackData, read_feedback
from recsys_tasks.data.synthetic import StreamConfig, SyntheticConfig, generate, generate_period
from recsys_tasks.errors import ConfigError
from recsys_tasks.privacy import pseudonymise
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
    # Incremental sources only: the new period alone, and what it added.
    new_events_uri: str | None = None
    window_uri: str | None = None
    window: IngestWindow | None = None
    # With feedback: what the serving log of the window held.
    feedback: FeedbackWindow | None = None


def ingest(
    run: RunDir,
    config: IngestConfig,
    pseudonymisation_key: bytes,
    store: EventStore | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    feedback_uri: str | None = None,
) -> IngestSummary:
    """Read the source, replace user ids by pseudonyms, write the canonical tables. Raw ids go no further.

    An incremental source appends its next period to ``store`` (the data set's event store) and windows by
    ``data_interval`` (the run's [start, end)) when ``config.window`` says so. With ``config.feedback.days``, the
    feedback store at ``feedback_uri`` is read too.
    """
    feedback = None
    if config.feedback.days:
        if feedback_uri is None:
            raise ConfigError("feedback days are set: ingest needs the feedback store (ADAPTREC_FEEDBACK_URI)")
        end = _utc(data_interval[1]) if data_interval else datetime.now(UTC)
        feedback = read_feedback(feedback_uri, config.feedback, end)
        run.write_parquet(IMPRESSIONS_FILE, feedback.impressions)
        run.write_parquet(FEEDBACK_EVENTS_FILE, feedback.events)
    if config.incremental:
        if store is None:
            raise ConfigError(f"data source {config.source!r} is incremental: ingest needs the data set's event store")
        return _ingest_period(run, config, pseudonymisation_key, store, data_interval, feedback)
    interactions, items = _read_source(config)
    users = _users(interactions, pseudonymisation_key, has_clock=config.source != "sequence")
    interactions = _pseudonymised(interactions, pseudonymisation_key)
    if feedback is not None:
        interactions = pa.concat_tables([interactions, feedback.positives])
        items, users = _with_history_items(items, interactions), _with_history_users(users, interactions)
    return IngestSummary(
        source=config.source,
        interactions_uri=run.write_parquet(INTERACTIONS_FILE, interactions),
        items_uri=run.write_parquet(ITEMS_FILE, items),
        users_uri=run.write_parquet(USERS_FILE, users),
        rows=interactions.num_rows,
        users=pc.count_distinct(interactions["user_id"]).as_py(),
        items=pc.count_distinct(interactions["item_id"]).as_py(),
        feedback=feedback and feedback.window,
    )


def _read_source(config: IngestConfig) -> tuple[pa.Table, pa.Table]:
    """(interactions, items) of the whole source, user ids raw."""
    if config.source == "synthetic":
        return generate(SyntheticConfig.preset(config.synthetic_size, seed=config.seed))
    if config.source in _MOVIELENS_READERS:
        return _MOVIELENS_READERS[config.source](config.path)
    if config.source == "table":
        return sources.read_table(config.path, config.columns)
    return sources.read_sequences(config.path)


def _pseudonymised(interactions: pa.Table, pseudonymisation_key: bytes) -> pa.Table:
    user_column = interactions.schema.get_field_index(USER_COL)
    return interactions.set_column(
        user_column, interactions.field(user_column), pseudonymise(interactions[USER_COL], pseudonymisation_key)
    )


# --- incremental sources ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Period:
    """What an incremental source offers a run: one period's events (raw user ids) and the source's catalogue."""

    label: str
    events: pa.Table
    fingerprint: str
    catalogue: pa.Table


def _ingest_period(
    run: RunDir,
    config: IngestConfig,
    pseudonymisation_key: bytes,
    store: EventStore,
    data_interval: tuple[datetime, datetime] | None,
    feedback: FeedbackData | None,
) -> IngestSummary:
    """Append the source's next period to ``store``; write the history, the new period and what it added.

    Feedback positives join the history and the new period (the gate judges them with it), not the event store: the
    next run reads its own window of the feedback store."""
    before = store.partitions()
    offered = _next_period(config, before, data_interval)
    if isinstance(offered, str):
        partition, added, note = None, False, offered
        history, new_events = store.read(), INTERACTIONS_SCHEMA.empty_table()
        catalogue, users = ITEMS_SCHEMA.empty_table(), USERS_SCHEMA.empty_table()
    else:
        events = _pseudonymised(offered.events, pseudonymisation_key)
        partition, added = store.append(offered.label, events, offered.fingerprint)
        history, new_events = store.read(include=partition.period), store.events(partition.period)
        catalogue = offered.catalogue
        # Raw ids exist only for the new period: the swap counts are of its rows (the gate judges those rows).
        users = _users(offered.events, pseudonymisation_key, has_clock=True)
        note = _note(store.dataset_key, partition, added, before)
    if feedback is not None and partition is not None:
        history, new_events = (pa.concat_tables([table, feedback.positives]) for table in (history, new_events))
    period = partition.period if partition else None
    window = IngestWindow(
        dataset_key=store.dataset_key,
        period=period,
        label=partition.label if partition else None,
        added=added,
        new_rows=new_events.num_rows,
        new_users=_only_in(new_events, history, USER_COL),
        new_items=_only_in(new_events, history, ITEM_COL),
        history_rows=history.num_rows,
        watermark_before=max(
            (
                other.last_timestamp
                for other in before
                if other.accepted and other.period != period and other.last_timestamp is not None
            ),
            default=None,
        ),
        first_timestamp=pc.min(new_events[TIME_COL]).as_py(),
        last_timestamp=pc.max(new_events[TIME_COL]).as_py(),
        note=note,
    )
    return IngestSummary(
        source=config.source,
        interactions_uri=run.write_parquet(INTERACTIONS_FILE, history),
        items_uri=run.write_parquet(ITEMS_FILE, _with_history_items(catalogue, history)),
        users_uri=run.write_parquet(USERS_FILE, _with_history_users(users, history)),
        rows=history.num_rows,
        users=pc.count_distinct(history[USER_COL]).as_py(),
        items=pc.count_distinct(history[ITEM_COL]).as_py(),
        new_events_uri=run.write_parquet(NEW_EVENTS_FILE, new_events),
        # Last: the validate stage takes a run directory with this file for an incremental one.
        window_uri=run.write_json(WINDOW_FILE, window.model_dump()),
        window=window,
        feedback=feedback and feedback.window,
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


def _next_period(
    config: IngestConfig, stored: list[PeriodPartition], data_interval: tuple[datetime, datetime] | None
) -> _Period | str:
    """The period this run ingests, or one line saying why there is none."""
    if config.source == "periods":
        return _next_period_file(config.path, stored)
    if config.arrives_in_periods:
        return _next_synthetic_period(config.seed, stored)
    return _interval_window(config, data_interval)


def _next_period_file(folder: str, stored: list[PeriodPartition]) -> _Period | str:
    """The first period file (by N) not ingested and accepted as it is now.

    A period that is not accepted (rejected by the gate, or never judged) is taken again, so the stream waits at it
    until it passes: with a fixed file (its new content replaces the period in the store) or adjusted thresholds.
    Every file is hashed each run: one changed after its period was accepted is taken too, and the store refuses it.
    """
    by_label = {partition.label: partition for partition in stored}
    files = sources.period_files(folder)
    for number, uri in files:
        label, fingerprint = uri.rsplit("/", 1)[-1], sources.file_fingerprint(uri)
        present = by_label.get(label)
        if present is None or not present.accepted or present.fingerprint != fingerprint:
            return _Period(label, sources.read_period(uri, number), fingerprint, ITEMS_SCHEMA.empty_table())
    return f"all {len(files)} period files of {folder} are ingested and accepted: nothing new"


def _next_synthetic_period(seed: int, stored: list[PeriodPartition]) -> _Period:
    """The first period of the drifting synthetic stream not accepted yet (it never runs out)."""
    accepted = {partition.label for partition in stored if partition.accepted}
    period = next(number for number in itertools.count() if f"period_{number}" not in accepted)
    events, catalogue = generate_period(StreamConfig.preset(seed), period)
    return _Period(f"period_{period}", events, _fingerprint(events), catalogue)


def _interval_window(config: IngestConfig, data_interval: tuple[datetime, datetime] | None) -> _Period | str:
    """The source's events with ``start <= timestamp < end``, labelled by the interval in ISO-8601 (UTC)."""
    if data_interval is None:
        raise ConfigError(
            "window 'data_interval' needs the run's data interval: Airflow passes it to the task; with the recsys "
            "command give --data-interval-start and --data-interval-end"
        )
    start, end = (_utc(moment) for moment in data_interval)
    label = f"{start.isoformat()}/{end.isoformat()}"
    if start >= end:
        raise ConfigError(f"data interval {label} is empty: its start must come before its end")
    interactions, catalogue = _read_source(config)
    # Timestamps are whole seconds: t >= s exactly when t >= ceil(s), and likewise for the end.
    times = interactions[TIME_COL]
    inside = pc.and_(pc.greater_equal(times, math.ceil(start.timestamp())), pc.less(times, math.ceil(end.timestamp())))
    events = interactions.filter(inside)
    if events.num_rows == 0:
        return f"no events of {config.source} in the data interval {label}: nothing new"
    return _Period(label, events, _fingerprint(events), catalogue)


def _utc(moment: datetime) -> datetime:
    """A moment in UTC; one without a zone is read as UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _fingerprint(events: pa.Table) -> str:
    """SHA-256 of the events' values column by column: the same rows in the same order give the same digest,
    whatever Arrow's buffers look like."""
    digest = hashlib.sha256()
    for name in events.column_names:
        digest.update(json.dumps([name, events[name].to_pylist()]).encode())
    return digest.hexdigest()


def _only_in(new_events: pa.Table, history: pa.Table, column: str) -> int:
    """Values of ``column`` in ``new_events`` that no other row of ``history`` (which holds them once) has."""
    counts = [pl.from_arrow(table.select([column])).group_by(column).len() for table in (new_events, history)]
    joined = counts[0].join(counts[1], on=column, suffix="_history")
    return joined.filter(pl.col("len") == pl.col("len_history")).height


def _with_history_items(catalogue: pa.Table, history: pa.Table) -> pa.Table:
    """The source's catalogue, plus every item of the history it does not list (without title or attributes)."""
    seen = pc.unique(history[ITEM_COL]).drop_null()
    missing = pc.filter(seen, pc.invert(pc.is_in(seen, catalogue[ITEM_COL])))
    listed = pa.table(
        {
            ITEM_COL: missing,
            "title": pa.nulls(len(missing), pa.string()),
            "attributes": pa.array([[]] * len(missing), pa.list_(pa.int64())),
        },
        schema=ITEMS_SCHEMA,
    )
    return pa.concat_tables([catalogue.cast(ITEMS_SCHEMA), listed]).sort_by(ITEM_COL)


def _with_history_users(users: pa.Table, history: pa.Table) -> pa.Table:
    """``users`` plus every other user of the history, with nothing counted."""
    seen = pc.unique(history[USER_COL]).drop_null()
    others = pc.filter(seen, pc.invert(pc.is_in(seen, users[USER_COL])))
    zeros = pa.array(np.zeros(len(others), dtype=np.int64))
    listed = pa.table([others, zeros, zeros], schema=USERS_SCHEMA)
    return pa.concat_tables([users, listed]).sort_by(USER_COL)


def _note(dataset_key: str, partition: PeriodPartition, added: bool, before: list[PeriodPartition]) -> str:
    if not added:
        return f"{partition.label} is period {partition.period} of {dataset_key} already: nothing added"
    replaced = any(other.period == partition.period for other in before)
    return (
        f"{partition.label} {'replaced' if replaced else 'appended as'} period {partition.period} of {dataset_key}: "
        f"{partition.rows} events"
    )

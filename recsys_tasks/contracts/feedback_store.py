"""The feedback store: every slate the serving app showed, with its propensities, and what users did with it.

The serving app writes it; ingest reads a window back as training data; evaluate replays the logged slates for
off-policy estimates. A real database through SQLAlchemy: PostgreSQL in production (``ADAPTREC_FEEDBACK_URI``, e.g.
``postgresql+psycopg://user:password@host/adaptrec_feedback``), SQLite in the home by default. The schema is owned by
Alembic migrations (``feedback_migrations/``): ``FeedbackStore.open`` brings any database to the head revision
before use, so a new release's schema lands on an old store without losing a row.

Tables:

- ``slates``: one row per answered user: request id, when, the pseudonymised user (never the raw id), the
  model version and variant, the serving policy and its exploration, the history the model read, the items the
  client excluded, k;
- ``slate_items``: the items shown, by position (1 = top), with score and propensity: the probability that the
  policy shows this item at this position, given the history (over each position's choices they sum to one);
- ``feedback``: click, purchase or dismiss events against a request id and one of its items.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
from pydantic import BaseModel, Field
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    insert,
    select,
)

from recsys_tasks.errors import ConfigError

FEEDBACK_EVENTS = ("click", "purchase", "dismiss")
# Events that say the user wanted the item: positives for retrieval.
POSITIVE_EVENTS = ("click", "purchase")
MIGRATIONS = Path(__file__).with_name("feedback_migrations")
CONNECT_TIMEOUT_SECONDS = 10
FeedbackKind = Literal["click", "purchase", "dismiss"]

metadata = MetaData()
slates = Table(
    "slates",
    metadata,
    Column("request_id", String(36), primary_key=True),
    Column("served_at", DateTime(timezone=True), nullable=False, index=True),
    Column("user_pseudonym", String(64), nullable=True, index=True),
    Column("model_name", String(256), nullable=False),
    Column("model_version", String(32), nullable=False),
    Column("variant", String(16), nullable=False),
    Column("policy", String(32), nullable=False),
    Column("exploration", Float, nullable=False),
    Column("candidates", Integer, nullable=False),
    Column("history", JSON, nullable=False),
    Column("exclude", JSON, nullable=False),
    Column("k", Integer, nullable=False),
)
slate_items = Table(
    "slate_items",
    metadata,
    Column("request_id", String(36), ForeignKey("slates.request_id", ondelete="CASCADE"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("item_id", BigInteger, nullable=False),
    Column("score", Float, nullable=False),
    Column("propensity", Float, nullable=False),
)
feedback = Table(
    "feedback",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(36), ForeignKey("slates.request_id", ondelete="CASCADE"), nullable=False),
    Column("item_id", BigInteger, nullable=False),
    Column("event", String(16), nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False),
    Index("ix_feedback_request_id", "request_id"),
    Index("ix_feedback_occurred_at", "occurred_at"),
)


class ShownItem(BaseModel):
    item_id: int
    position: int = Field(ge=1, description="1 = the top of the slate.")
    score: float
    propensity: float = Field(gt=0, le=1, description="P(the policy shows this item at this position | history).")


class LoggedSlate(BaseModel):
    request_id: str
    served_at: datetime
    user_pseudonym: str | None
    model_name: str
    model_version: str
    variant: str
    policy: str
    exploration: float = Field(ge=0, le=1)
    candidates: int = Field(ge=1, description="How many of the model's best items the policy chose from.")
    history: list[int] = Field(description="The history the model read (item ids it knew), oldest first.")
    exclude: list[int] = Field(description="Item ids the client asked not to be recommended.")
    k: int
    items: list[ShownItem]


class FeedbackEvent(BaseModel):
    request_id: str
    item_id: int
    event: FeedbackKind
    occurred_at: datetime
    received_at: datetime


class LoggedWindow(BaseModel):
    """What the store holds for a time window, as DataFrames (one row per slate, shown item, and event)."""

    model_config = {"arbitrary_types_allowed": True}

    slates: pd.DataFrame
    items: pd.DataFrame
    feedback: pd.DataFrame


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


class FeedbackStore:
    """One feedback database. Safe to share between threads; each worker process opens its own."""

    _upgrade_lock = threading.Lock()

    def __init__(self, engine: Engine):
        self.engine = engine

    @classmethod
    def open(cls, uri: str) -> FeedbackStore:
        """The store at ``uri``, its schema migrated to the head revision (a new database is created empty)."""
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            engine = create_engine(uri, pool_pre_ping=True, connect_args=_connect_args(uri))
        except Exception as exc:  # a malformed URL or a driver that is not installed
            raise ConfigError(f"feedback store URI (ADAPTREC_FEEDBACK_URI) is unusable: {exc}") from None
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_for_several_writers)
        store = cls(engine)
        store.upgrade()
        return store

    def upgrade(self) -> None:
        """Runs the Alembic migrations this database lacks."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._upgrade_lock, self.engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        with self.engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    def write(self, logged: list[LoggedSlate], events: list[FeedbackEvent]) -> None:
        """Adds slates with their items, then events, in one transaction: all of them or none."""
        slate_rows = [{**slate.model_dump(exclude={"items"}), "served_at": _utc(slate.served_at)} for slate in logged]
        item_rows = [{"request_id": slate.request_id, **item.model_dump()} for slate in logged for item in slate.items]
        event_rows = [
            {**row.model_dump(), "occurred_at": _utc(row.occurred_at), "received_at": _utc(row.received_at)}
            for row in events
        ]
        with self.engine.begin() as connection:
            for table, rows in ((slates, slate_rows), (slate_items, item_rows), (feedback, event_rows)):
                if rows:
                    connection.execute(insert(table), rows)

    def shown(self, request_id: str) -> tuple[datetime, set[int]] | None:
        """When the slate of ``request_id`` was served and its item ids, or None for a request id it does not hold."""
        with self.engine.connect() as connection:
            served = connection.execute(select(slates.c.served_at).where(slates.c.request_id == request_id)).first()
            if served is None:
                return None
            items = connection.execute(select(slate_items.c.item_id).where(slate_items.c.request_id == request_id))
            return _utc(served.served_at), {row.item_id for row in items}

    def window(self, start: datetime, end: datetime, model_name: str | None = None) -> LoggedWindow:
        """The slates served in [start, end) (by ``model_name``'s versions only, when given), their items, and every
        event recorded against them."""
        chosen = select(slates.c.request_id).where(slates.c.served_at >= _utc(start), slates.c.served_at < _utc(end))
        if model_name is not None:
            chosen = chosen.where(slates.c.model_name == model_name)
        with self.engine.connect() as connection:
            frames = [
                pd.read_sql(select(table).where(table.c.request_id.in_(chosen)), connection)
                for table in (slates, slate_items, feedback)
            ]
        frames[0] = frames[0].sort_values(["served_at", "request_id"], ignore_index=True)
        frames[1] = frames[1].sort_values(["request_id", "position"], ignore_index=True)
        for frame, columns in zip(frames, (["served_at"], [], ["occurred_at", "received_at"])):
            for column in columns:  # SQLite hands back naive datetimes: every time here is UTC
                frame[column] = pd.to_datetime(frame[column], utc=True)
        return LoggedWindow(slates=frames[0], items=frames[1], feedback=frames[2])


def _connect_args(uri: str) -> dict:
    if uri.startswith("sqlite"):
        # Wait for another worker's write instead of failing at once with "database is locked".
        return {"timeout": 30}
    if uri.startswith("postgresql") and "connect_timeout" not in uri:
        # An unreachable server fails in seconds, not after the system's TCP timeout of minutes.
        return {"connect_timeout": CONNECT_TIMEOUT_SECONDS}
    return {}


def _sqlite_for_several_writers(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers never wait for the writer
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()

"""The feedback store on SQLite and on a real PostgreSQL: Alembic builds the schema the code expects, writes are
all or nothing, a window holds what was served in it, and reopening (migrating again) loses nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from recsys_tasks.contracts.feedback_store import FeedbackEvent, FeedbackStore, LoggedSlate, ShownItem, metadata
from tests.conftest import free_port
from tests.services import PG_BIN, Processes, start_postgres

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    if not (PG_BIN / "initdb").exists():
        pytest.skip("PostgreSQL 15 not installed (.ci/run installs it with apt)")
    # Not under pytest's folder: the postgres user cannot enter root's 0700 temporary folders.
    root = Path(tempfile.mkdtemp(prefix="adaptrec-feedback-postgres-"))
    processes, port = Processes(root, dict(os.environ)), free_port()
    try:
        start_postgres(processes, port, root, ())
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        processes.stop_all()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def store_uri(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'feedback.db'}"
    server = request.getfixturevalue("postgres")
    database = f"feedback_{uuid.uuid4().hex}"  # a database of its own per test
    with create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT").connect() as connection:
        connection.execute(text(f"CREATE DATABASE {database}"))
    return f"{server}/{database}"


def slate(request_id: str, served_at: datetime, items: list[int], model_name: str = "m") -> LoggedSlate:
    return LoggedSlate(
        request_id=request_id,
        served_at=served_at,
        user_pseudonym="a" * 32,
        model_name=model_name,
        model_version="3",
        variant="int8",
        policy="epsilon_greedy",
        exploration=0.1,
        candidates=20,
        history=[1, 2, 3],
        exclude=[9],
        k=len(items),
        items=[
            ShownItem(item_id=item, position=n, score=1.0 / n, propensity=0.9 if n == 1 else 0.005)
            for n, item in enumerate(items, start=1)
        ],
    )


def event(request_id: str, item: int, kind: str = "click") -> FeedbackEvent:
    return FeedbackEvent(request_id=request_id, item_id=item, event=kind, occurred_at=NOON, received_at=NOON)


def test_the_migrations_build_exactly_the_schema_the_code_expects(store_uri):
    store = FeedbackStore.open(store_uri)

    with store.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), metadata)
    assert differences == []
    assert store.revision() == "0001"


def test_a_window_holds_the_slates_served_in_it_with_their_items_and_events(store_uri):
    store = FeedbackStore.open(store_uri)
    served = [slate("early", NOON - timedelta(days=1), [5]), slate("in", NOON, [7, 8]), slate("other", NOON, [1], "x")]
    store.write(served, [event("in", 8)])

    window = store.window(NOON - timedelta(hours=1), NOON + timedelta(hours=1), model_name="m")

    assert window.slates["request_id"].tolist() == ["in"]
    assert window.items[["item_id", "position", "propensity"]].values.tolist() == [[7, 1, 0.9], [8, 2, 0.005]]
    assert window.feedback[["request_id", "item_id", "event"]].values.tolist() == [["in", 8, "click"]]
    assert window.slates["served_at"].iloc[0] == NOON
    assert window.slates["history"].iloc[0] == [1, 2, 3]
    assert store.shown("in") == (NOON, {7, 8}) and store.shown("never") is None


def test_a_write_is_all_or_nothing(store_uri):
    store = FeedbackStore.open(store_uri)

    with pytest.raises(IntegrityError):  # the event's slate was never served
        store.write([slate("kept-out", NOON, [1])], [event("unknown", 1)])

    assert store.shown("kept-out") is None


def test_reopening_migrates_again_without_losing_a_row(store_uri):
    FeedbackStore.open(store_uri).write([slate("old", NOON, [4])], [event("old", 4, "purchase")])

    again = FeedbackStore.open(store_uri)

    window = again.window(NOON, NOON + timedelta(seconds=1))
    assert len(window.slates) == 1 and window.feedback["event"].tolist() == ["purchase"]

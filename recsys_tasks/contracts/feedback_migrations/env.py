"""Alembic environment of the feedback store: migrations run on the connection ``FeedbackStore.upgrade`` hands in,
or, from the ``alembic`` command line, on ``ADAPTREC_FEEDBACK_URI`` (default: the embedded SQLite store)."""

from alembic import context
from sqlalchemy import create_engine

from recsys_tasks.contracts.feedback_store import metadata
from recsys_tasks.settings import Settings


def run_migrations(connection) -> None:
    # Batch mode: SQLite cannot ALTER most things, so a later migration copies the table instead.
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


if (handed := context.config.attributes.get("connection")) is not None:
    run_migrations(handed)
else:
    with create_engine(Settings().resolved_feedback_uri).begin() as connection:
        run_migrations(connection)

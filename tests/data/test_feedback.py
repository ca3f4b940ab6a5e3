"""The serving log read back as data: clicks and purchases of known users become interactions, every shown item an
impression, every event a row; ingest adds them to the run's data for the window it is asked for."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.compute as pc
import pytest

from recsys_tasks.contracts.feedback_store import FeedbackEvent, FeedbackStore, LoggedSlate, ShownItem
from recsys_tasks.contracts.layout import FEEDBACK_EVENTS_FILE, IMPRESSIONS_FILE, INTERACTIONS_FILE, ITEMS_FILE
from recsys_tasks.data.config import FeedbackConfig, IngestConfig
from recsys_tasks.data.feedback import read_feedback
from recsys_tasks.data.ingest import ingest
from recsys_tasks.errors import InputDataError
from recsys_tasks.privacy import pseudonym
from recsys_tasks.storage import RunDir

NOON = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
KEY = b"key"


def logged(request_id: str, user: str | None, items: list[int], served_at: datetime = NOON) -> LoggedSlate:
    return LoggedSlate(
        request_id=request_id,
        served_at=served_at,
        user_pseudonym=None if user is None else pseudonym(user, KEY),
        model_name="m",
        model_version="1",
        variant="float32",
        policy="epsilon_greedy",
        exploration=0.1,
        candidates=20,
        history=[1, 2],
        exclude=[],
        k=len(items),
        items=[
            ShownItem(item_id=item, position=n, score=1.0, propensity=0.905 if n == 1 else 0.005)
            for n, item in enumerate(items, start=1)
        ],
    )


def happened(request_id: str, item: int, kind: str, minutes: int = 1) -> FeedbackEvent:
    moment = NOON + timedelta(minutes=minutes)
    return FeedbackEvent(request_id=request_id, item_id=item, event=kind, occurred_at=moment, received_at=moment)


@pytest.fixture
def store_uri(tmp_path) -> str:
    uri = f"sqlite:///{tmp_path / 'feedback.db'}"
    FeedbackStore.open(uri).write(
        [
            logged("00000000-0000-4000-8000-000000000001", "7", [11, 12, 13]),
            logged("00000000-0000-4000-8000-000000000002", None, [11, 14]),
            # Served before the window: none of it is read.
            logged("00000000-0000-4000-8000-000000000003", "7", [15], served_at=NOON - timedelta(days=3)),
        ],
        [
            happened("00000000-0000-4000-8000-000000000001", 12, "click"),
            happened("00000000-0000-4000-8000-000000000001", 12, "purchase", minutes=5),
            happened("00000000-0000-4000-8000-000000000001", 13, "dismiss"),
            happened("00000000-0000-4000-8000-000000000002", 14, "click"),
            happened("00000000-0000-4000-8000-000000000003", 15, "click"),
        ],
    )
    return uri


def test_clicks_and_purchases_of_known_users_become_one_interaction_per_shown_item(store_uri):
    data = read_feedback(store_uri, FeedbackConfig(days=2, rating=4.0), NOON + timedelta(days=1))

    # The click and the purchase of item 12 count once, at the click; the anonymous slate's click gives no row.
    assert data.positives.to_pylist() == [
        {"user_id": pseudonym("7", KEY), "item_id": 12, "timestamp": int(NOON.timestamp()) + 60, "rating": 4.0}
    ]
    impressions = data.impressions.to_pylist()
    assert [(row["item_id"], row["positive"], row["dismissed"]) for row in impressions] == [
        (11, False, False),
        (12, True, False),
        (13, False, True),
        (11, False, False),
        (14, True, False),
    ]
    assert [row["user_id"] for row in impressions][-2:] == [None, None]
    assert data.events.num_rows == 4
    assert data.window.model_dump(include={"slates", "shown", "events", "positives", "anonymous_slates"}) == {
        "slates": 2,
        "shown": 5,
        "events": {"click": 2, "dismiss": 1, "purchase": 1},
        "positives": 1,
        "anonymous_slates": 1,
    }


def test_ingest_adds_the_window_s_positives_to_the_source_and_writes_what_was_shown(store_uri, tmp_path):
    run = RunDir(str(tmp_path / "run"))
    config = IngestConfig(source="synthetic", synthetic_size="tiny", feedback=FeedbackConfig(days=2))
    without = ingest(RunDir(str(tmp_path / "plain")), IngestConfig(source="synthetic", synthetic_size="tiny"), KEY)

    summary = ingest(
        run, config, KEY, data_interval=(NOON - timedelta(days=1), NOON + timedelta(days=1)), feedback_uri=store_uri
    )

    assert summary.rows == without.rows + 1 and summary.feedback.positives == 1
    interactions = run.read_parquet(INTERACTIONS_FILE)
    added = interactions.filter(pc.equal(interactions["user_id"], pseudonym("7", KEY)))
    assert added["item_id"].to_pylist()[-1] == 12 and added["rating"].to_pylist()[-1] == 5.0
    assert run.read_parquet(IMPRESSIONS_FILE).num_rows == 5 and run.read_parquet(FEEDBACK_EVENTS_FILE).num_rows == 4
    assert 12 in run.read_parquet(ITEMS_FILE)["item_id"].to_pylist()
    assert summary.feedback.slates == 2 and summary.feedback.anonymous_slates == 1


def test_without_feedback_days_the_store_is_not_read_and_an_unreadable_one_is_one_line(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    ingest(
        run, IngestConfig(source="synthetic", synthetic_size="tiny"), KEY, feedback_uri="postgresql+nosuchdriver://x"
    )
    assert not run.exists(IMPRESSIONS_FILE)

    (tmp_path / "a-file").write_text("")
    with pytest.raises(InputDataError, match="^the feedback store cannot be read: ") as failure:
        read_feedback(f"sqlite:///{tmp_path / 'a-file' / 'feedback.db'}", FeedbackConfig(days=1), NOON)
    assert "\n" not in str(failure.value)

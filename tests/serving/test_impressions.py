"""The serving app's write path to the feedback store: bounded, batched, and counted when it drops rows."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter

from recsys_tasks.contracts.feedback_store import FeedbackStore, LoggedSlate, ShownItem
from recsys_tasks.serving.impressions import ImpressionLog


def slate(number: int) -> LoggedSlate:
    return LoggedSlate(
        request_id=f"00000000-0000-4000-8000-{number:012d}",
        served_at=datetime.now(UTC),
        user_pseudonym=None,
        model_name="m",
        model_version="1",
        variant="int8",
        policy="greedy",
        exploration=0.0,
        candidates=1,
        history=[1],
        exclude=[],
        k=1,
        items=[ShownItem(item_id=7, position=1, score=1.0, propensity=1.0)],
    )


def impression_log(uri: str, capacity: int) -> tuple[ImpressionLog, CollectorRegistry]:
    registry = CollectorRegistry()
    logged = Counter("logged", "", ["kind"], registry=registry)
    dropped = Counter("dropped", "", ["kind", "reason"], registry=registry)
    return ImpressionLog(uri, capacity, flush_seconds=0.05, logged=logged, dropped=dropped), registry


def test_a_full_queue_drops_and_counts_what_does_not_fit_and_writes_the_rest(tmp_path):
    uri = f"sqlite:///{tmp_path / 'feedback.db'}"
    log, registry = impression_log(uri, capacity=10)

    def written() -> float:
        return registry.get_sample_value("logged_total", {"kind": "slates"})

    log.served([slate(n) for n in range(25)])  # the writer is not running yet: the queue fills up
    log.start()
    deadline = time.monotonic() + 30
    while written() < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    log.stop()

    assert registry.get_sample_value("dropped_total", {"kind": "slates", "reason": "queue_full"}) == 15
    assert written() == 10
    window = FeedbackStore.open(uri).window(datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))
    assert len(window.slates) == 10


def test_a_slate_this_worker_served_is_known_before_it_reaches_the_store(tmp_path):
    log, _ = impression_log(f"sqlite:///{tmp_path / 'feedback.db'}", capacity=10)
    log.served([slate(1)])  # queued, never written: the writer is not started

    served_at, items = asyncio.run(log.shown(slate(1).request_id))

    assert items == {7} and served_at <= datetime.now(UTC)

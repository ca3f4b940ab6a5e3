"""The serving app's write path to the feedback store: bounded, batched, and never in a request's way.

Requests only put what they served (or the feedback they received) on a bounded queue; a thread of its own writes
the queue to the store in batches, one transaction each. When the queue is full, or the database refuses a batch,
the rows are dropped and counted (``adaptrec_serving_log_dropped_total``): a database outage costs logged data,
never a failed recommendation. The thread reconnects on its own when the database comes back.

Feedback is checked against what was served: first the slates this worker served recently (kept in memory, so a
click can arrive before its slate reaches the database), then the store, which holds what the other workers served.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import OrderedDict
from datetime import datetime

from prometheus_client import Counter

from recsys_tasks.contracts.feedback_store import FeedbackEvent, FeedbackStore, LoggedSlate
from recsys_tasks.errors import first_line

log = logging.getLogger(__name__)

# Most rows written in one transaction.
BATCH_ROWS = 1000
STOP_TIMEOUT_SECONDS = 5.0
# How long a lookup of a slate the store lacks waits before asking once more (another worker may be writing it).
MIN_SECOND_LOOKUP_SECONDS = 1.0


class FeedbackStoreUnavailable(RuntimeError):
    """The feedback store cannot be read now (a database outage)."""


class ImpressionLog:
    """Logs served slates and feedback to the store at ``uri`` from a background thread."""

    def __init__(self, uri: str, capacity: int, flush_seconds: float, logged: Counter, dropped: Counter):
        self.uri, self.flush_seconds = uri, flush_seconds
        self._logged, self._dropped = logged, dropped
        self._queue: queue.Queue[LoggedSlate | FeedbackEvent] = queue.Queue(maxsize=capacity)
        # What this worker served lately: request id → (served at, item ids), the oldest forgotten first.
        self._recent: OrderedDict[str, tuple[datetime, set[int]]] = OrderedDict()
        self._recent_capacity = capacity
        self._store: FeedbackStore | None = None
        self._store_lock = threading.Lock()
        self._outage = ""
        self._stopping = threading.Event()
        self._stop_by = math.inf  # once stopping: when to give up on what is still queued
        self._thread = threading.Thread(target=self._write_until_stopped, name="feedback-log", daemon=True)
        for kind in ("slates", "feedback"):  # a count of 0 is shown, not absent
            self._logged.labels(kind)
            for reason in ("queue_full", "database_error"):
                self._dropped.labels(kind, reason)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Writes what is queued (for a few seconds at most) and stops."""
        self._stop_by = time.monotonic() + STOP_TIMEOUT_SECONDS - 1.0
        self._stopping.set()
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)

    def served(self, slates: list[LoggedSlate]) -> None:
        """Queues served slates; never blocks."""
        for slate in slates:
            self._recent[slate.request_id] = (slate.served_at, {item.item_id for item in slate.items})
        while len(self._recent) > self._recent_capacity:
            self._recent.popitem(last=False)
        self._enqueue("slates", slates)

    def received(self, events: list[FeedbackEvent]) -> None:
        """Queues feedback events; never blocks."""
        self._enqueue("feedback", events)

    async def shown(self, request_id: str) -> tuple[datetime, set[int]] | None:
        """When the slate of ``request_id`` was served and its items, or None when no worker served it.

        A slate another worker served may still be on its way to the store: it is looked up once more, two flush
        intervals (at least a second) later, before it is called unknown.
        """
        if request_id in self._recent:
            return self._recent[request_id]
        loop = asyncio.get_running_loop()
        for attempt in range(2):
            if attempt:
                await asyncio.sleep(max(2 * self.flush_seconds, MIN_SECOND_LOOKUP_SECONDS))
            try:
                # Opening the store (connecting, migrating) happens in the thread too: never on the event loop.
                found = await loop.run_in_executor(None, lambda: self._open().shown(request_id))
            except Exception as exc:
                raise FeedbackStoreUnavailable(f"the feedback store cannot be read: {first_line(exc)}") from None
            if found is not None:
                return found
        return None

    def _enqueue(self, kind: str, rows: list) -> None:
        for row in rows:
            try:
                self._queue.put_nowait(row)
            except queue.Full:
                self._dropped.labels(kind, "queue_full").inc()

    def _open(self) -> FeedbackStore:
        with self._store_lock:
            if self._store is None:
                self._store = FeedbackStore.open(self.uri)
            return self._store

    def _write_until_stopped(self) -> None:
        while not self._stopping.is_set() or (not self._queue.empty() and time.monotonic() < self._stop_by):
            if batch := self._next_batch():
                self._write(batch)

    def _next_batch(self) -> list[LoggedSlate | FeedbackEvent]:
        """What is queued, up to BATCH_ROWS, after waiting up to a flush interval for the first row."""
        try:
            batch = [self._queue.get(timeout=self.flush_seconds)]
        except queue.Empty:
            return []
        while len(batch) < BATCH_ROWS:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _write(self, batch: list[LoggedSlate | FeedbackEvent]) -> None:
        slates = [row for row in batch if isinstance(row, LoggedSlate)]
        events = [row for row in batch if isinstance(row, FeedbackEvent)]
        try:
            self._open().write(slates, events)
        except Exception as exc:  # an outage loses this batch, never the thread: the next batch tries again
            self._dropped.labels("slates", "database_error").inc(len(slates))
            self._dropped.labels("feedback", "database_error").inc(len(events))
            problem = first_line(exc)
            if problem != self._outage:  # logged once when it starts, not once per batch
                log.warning("feedback store %s refused %d rows, dropped: %s", _safe(self.uri), len(batch), problem)
            self._outage = problem
            return
        if self._outage:
            log.info("feedback store %s writes again", _safe(self.uri))
            self._outage = ""
        self._logged.labels("slates").inc(len(slates))
        self._logged.labels("feedback").inc(len(events))


def _safe(uri: str) -> str:
    """The URI without its password, for logs."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(uri).render_as_string(hide_password=True)
    except Exception:
        return "(unparsable URI)"

"""Feedback as data: the serving app's log of a run's window, read back from the feedback store.

Clicks and purchases by known users become interaction rows, at the moment of the event and rated
``FeedbackConfig.rating``; a user who clicked and bought the same shown item counts once. Every shown item becomes
a row of ``data/impressions.parquet``: the augment stage takes the ones not clicked as the ranking head's negatives.
Every event becomes a row of ``data/feedback_events.parquet``. The data gate judges both tables (propensities,
events that join no impression, click-through). Slates served without a user id are read (the gate and the
off-policy estimates count them) but give no interaction: there is no history to add them to.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pandas as pd
import pyarrow as pa

from recsys_tasks.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys_tasks.contracts.feedback_store import POSITIVE_EVENTS, FeedbackStore, LoggedWindow
from recsys_tasks.contracts.reports import FeedbackWindow
from recsys_tasks.contracts.tables import FEEDBACK_EVENTS_SCHEMA, IMPRESSIONS_SCHEMA, INTERACTIONS_SCHEMA
from recsys_tasks.data.config import FeedbackConfig
from recsys_tasks.errors import InputDataError, first_line

_EPOCH = pd.Timestamp(0, tz="UTC")


@dataclass(frozen=True)
class FeedbackData:
    positives: pa.Table  # INTERACTIONS_SCHEMA
    impressions: pa.Table  # IMPRESSIONS_SCHEMA
    events: pa.Table  # FEEDBACK_EVENTS_SCHEMA
    window: FeedbackWindow


def read_feedback(uri: str, config: FeedbackConfig, end: datetime) -> FeedbackData:
    """The slates served in the ``config.days`` before ``end``, as the three tables ingest writes."""
    start = end - timedelta(days=config.days)
    try:
        logged = FeedbackStore.open(uri).window(start, end)
    except Exception as exc:
        raise InputDataError(f"the feedback store cannot be read: {first_line(exc)}") from None
    return feedback_tables(logged, config.rating, start, end)


def _seconds(moments: pd.Series) -> pd.Series:
    return ((moments - _EPOCH) // pd.Timedelta(seconds=1)).astype("int64")


def feedback_tables(logged: LoggedWindow, rating: float, start: datetime, end: datetime) -> FeedbackData:
    slates, events = logged.slates, logged.feedback
    served = slates[["request_id", "user_pseudonym", "served_at"]]
    shown = logged.items.merge(served, on="request_id", how="inner")
    outcome = events.assign(positive=events["event"].isin(POSITIVE_EVENTS), dismissed=events["event"] == "dismiss")
    outcome = outcome.groupby(["request_id", "item_id"], as_index=False)[["positive", "dismissed"]].any()
    shown = shown.merge(outcome, on=["request_id", "item_id"], how="left")
    impressions = pa.table(
        {
            "request_id": shown["request_id"].astype(str).tolist(),
            USER_COL: shown["user_pseudonym"].astype(object).where(shown["user_pseudonym"].notna(), None).tolist(),
            ITEM_COL: shown["item_id"].astype("int64").to_numpy(),
            "position": shown["position"].astype("int32").to_numpy(),
            "propensity": shown["propensity"].astype("float64").to_numpy(),
            TIME_COL: _seconds(shown["served_at"]).to_numpy(),
            "positive": shown["positive"].fillna(False).astype(bool).to_numpy(),
            "dismissed": shown["dismissed"].fillna(False).astype(bool).to_numpy(),
        },
        schema=IMPRESSIONS_SCHEMA,
    )
    event_table = pa.table(
        {
            "request_id": events["request_id"].astype(str).tolist(),
            ITEM_COL: events["item_id"].astype("int64").to_numpy(),
            "event": events["event"].astype(str).tolist(),
            TIME_COL: _seconds(events["occurred_at"]).to_numpy(),
        },
        schema=FEEDBACK_EVENTS_SCHEMA,
    )
    positive_events = events[events["event"].isin(POSITIVE_EVENTS)].merge(served, on="request_id", how="inner")
    positive_events = positive_events[positive_events["user_pseudonym"].notna()]
    firsts = positive_events.groupby(["request_id", "item_id"], as_index=False).agg(
        user=("user_pseudonym", "first"), occurred_at=("occurred_at", "min")
    )
    positives = pa.table(
        {
            USER_COL: firsts["user"].astype(str).tolist(),
            ITEM_COL: firsts["item_id"].astype("int64").to_numpy(),
            TIME_COL: _seconds(firsts["occurred_at"]).to_numpy(),
            RATING_COL: pa.array([rating] * len(firsts), pa.float32()),
        },
        schema=INTERACTIONS_SCHEMA,
    )
    window = FeedbackWindow(
        start=start,
        end=end,
        slates=len(slates),
        shown=impressions.num_rows,
        events={str(kind): int(count) for kind, count in events["event"].value_counts().sort_index().items()},
        positives=positives.num_rows,
        anonymous_slates=int(slates["user_pseudonym"].isna().sum()),
    )
    return FeedbackData(positives, impressions, event_table, window)

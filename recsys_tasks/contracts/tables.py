"""The canonical tables every source is converted into.

interactions: one row per (user, item, time) event.
items: the catalogue with attribute ids (genres, brands, categories, topics).
users: one row per (pseudonymised) user, with what ingest could tell only from the raw ids.
impressions and feedback_events: the serving app's log read back from the feedback store (one row per shown item,
and per event).
"""

import pyarrow as pa

from recsys_tasks.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL

# Fields stay nullable on purpose: broken input must reach the validate stage, which names the problem.
INTERACTIONS_SCHEMA = pa.schema(
    [
        pa.field(USER_COL, pa.string()),
        pa.field(ITEM_COL, pa.int64()),
        pa.field(TIME_COL, pa.int64()),  # unix seconds, UTC
        pa.field(RATING_COL, pa.float32()),
    ]
)

ITEMS_SCHEMA = pa.schema(
    [
        pa.field(ITEM_COL, pa.int64()),
        pa.field("title", pa.string()),
        pa.field("attributes", pa.list_(pa.int64())),
    ]
)

# users: one row per user, with what ingest can tell only while raw ids are known. ``likely_swapped_rows``
# counts the user's rows whose item id is itself a user active closer to that moment than this user is (user and
# item look exchanged); ``chance_swapped_rows`` counts the same with the item column shuffled: chance alone.
LIKELY_SWAPPED_ROWS_COL = "likely_swapped_rows"
CHANCE_SWAPPED_ROWS_COL = "chance_swapped_rows"
USERS_SCHEMA = pa.schema(
    [
        pa.field(USER_COL, pa.string()),
        pa.field(LIKELY_SWAPPED_ROWS_COL, pa.int64()),
        pa.field(CHANCE_SWAPPED_ROWS_COL, pa.int64()),
    ]
)

# impressions: one row per item a logged slate showed; ``positive`` when the user clicked or bought it, ``dismissed``
# when they dismissed it. timestamp: when the slate was served (unix seconds, UTC).
IMPRESSIONS_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field(USER_COL, pa.string()),
        pa.field(ITEM_COL, pa.int64()),
        pa.field("position", pa.int32()),
        pa.field("propensity", pa.float64()),
        pa.field(TIME_COL, pa.int64()),
        pa.field("positive", pa.bool_()),
        pa.field("dismissed", pa.bool_()),
    ]
)
# feedback_events: one row per event recorded against a slate; timestamp: when it happened (unix seconds, UTC).
FEEDBACK_EVENTS_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.string()),
        pa.field(ITEM_COL, pa.int64()),
        pa.field("event", pa.string()),
        pa.field(TIME_COL, pa.int64()),
    ]
)

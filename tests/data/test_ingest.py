"""Ingest writes the canonical tables and, while raw ids are known, counts rows that look user/item swapped."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recsys_tasks.contracts.layout import USERS_FILE
from recsys_tasks.contracts.tables import CHANCE_SWAPPED_ROWS_COL, LIKELY_SWAPPED_ROWS_COL
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.ingest import ingest
from recsys_tasks.data.synthetic import SyntheticConfig, generate
from recsys_tasks.storage import RunDir


def sessions(swap_every: int = 0) -> pa.Table:
    """Users 1..40 each rate 12 items 1..60 in one session of 12 minutes; optionally user and item exchanged."""
    rows = [
        (str(user), (user * 7 + step) % 60 + 1, 1_700_000_000 + user * 86_400 + step * 60)
        for user in range(1, 41)
        for step in range(12)
    ]
    if swap_every:
        rows = [
            (str(item), int(user), time) if index % swap_every == 0 else (user, item, time)
            for index, (user, item, time) in enumerate(rows)
        ]
    users, items, times = zip(*rows)
    return pa.table({"user_id": users, "item_id": items, "timestamp": times, "rating": [1.0] * len(rows)})


def counted(interactions: pa.Table, tmp_path) -> tuple[int, int]:
    """(rows that look swapped, rows that would by chance) as ingest records them."""
    path = tmp_path / "events.parquet"
    pq.write_table(interactions, path)
    run = RunDir(str(tmp_path / "run"))
    ingest(run, IngestConfig(source="table", path=str(path)), b"key")
    users = run.read_parquet(USERS_FILE)
    assert pc.count_distinct(users["user_id"]).as_py() == users.num_rows
    return pc.sum(users[LIKELY_SWAPPED_ROWS_COL]).as_py(), pc.sum(users[CHANCE_SWAPPED_ROWS_COL]).as_py()


def test_a_clean_log_has_no_swapped_rows_beyond_chance(tmp_path):
    observed, by_chance = counted(sessions(), tmp_path)
    assert observed - by_chance <= 2


def test_user_and_item_exchanged_in_every_tenth_row_is_counted(tmp_path):
    observed, by_chance = counted(sessions(swap_every=10), tmp_path)
    assert observed - by_chance >= 0.05 * 480


def test_the_synthetic_generator_stays_far_below_the_gate(tmp_path):
    interactions, _ = generate(SyntheticConfig.preset("tiny", seed=0))
    observed, by_chance = counted(interactions, tmp_path)
    assert (observed - by_chance) / interactions.num_rows < 0.02

"""Drift of today's data against the last accepted snapshot.

A snapshot keeps the statistics of a data set that passed the data gate: the shares of the most
popular items, the distribution of per-user history lengths, the set of known items and the
busiest day's volume. Today's data is compared with it by
- population stability index (PSI) of item popularity (top items + "the rest") and of history length;
- new-item rate: the share of today's interactions on items the snapshot never saw;
- daily-volume ratio: today's busiest day against the snapshot's busiest day (a bot or a replayed
  log shows up as a day with many times the usual volume).
A snapshot is written only after the gate passed, so a failing run never becomes the baseline.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from recsys_tasks.constants import ITEM_COL, TIME_COL, USER_COL
from recsys_tasks.storage import RunDir

SNAPSHOT_FILE = "snapshot.json"
SNAPSHOT_ITEMS_FILE = "items.parquet"
# History-length bins: 1, 2, 3-4, 5-8, ... doubling, so short and long histories both resolve.
_LENGTH_BIN_EDGES = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, np.inf]
_PSI_FLOOR = 1e-6


class DataSnapshot(BaseModel):
    run_id: str
    rows: int
    users: int
    items: int
    top_item_shares: dict[str, float]
    history_length_shares: list[float]
    busiest_day_volume: int


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    expected = np.maximum(np.asarray(expected, dtype=np.float64), _PSI_FLOOR)
    actual = np.maximum(np.asarray(actual, dtype=np.float64), _PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def _history_length_shares(interactions: pl.DataFrame) -> np.ndarray:
    lengths = interactions.group_by(USER_COL).len()["len"].to_numpy()
    counts, _ = np.histogram(lengths, bins=_LENGTH_BIN_EDGES)
    return counts / max(counts.sum(), 1)


def take_snapshot(interactions: pl.DataFrame, run_id: str, top_items: int) -> tuple[DataSnapshot, pa.Table]:
    """Statistics of an accepted data set, and the table of its item ids."""
    popularity = interactions.group_by(ITEM_COL).len().sort(["len", ITEM_COL], descending=[True, False])
    total = max(interactions.height, 1)
    snapshot = DataSnapshot(
        run_id=run_id,
        rows=interactions.height,
        users=interactions[USER_COL].n_unique(),
        items=popularity.height,
        top_item_shares={str(item): count / total for item, count in popularity.head(top_items).iter_rows()},
        history_length_shares=_history_length_shares(interactions).tolist(),
        busiest_day_volume=int(interactions.group_by(pl.col(TIME_COL) // 86_400).len()["len"].max() or 0),
    )
    return snapshot, popularity.select(ITEM_COL).to_arrow()


def drift_statistics(interactions: pl.DataFrame, baseline: DataSnapshot, baseline_items: pa.Table) -> dict[str, float]:
    """Today's data against the snapshot; every value is 0 when nothing changed."""
    total = max(interactions.height, 1)
    counts = dict(interactions.group_by(ITEM_COL).len().iter_rows())
    tracked = [int(item) for item in baseline.top_item_shares]
    expected = [*baseline.top_item_shares.values(), 1.0 - sum(baseline.top_item_shares.values())]
    actual_tracked = [counts.get(item, 0) / total for item in tracked]
    actual = [*actual_tracked, 1.0 - sum(actual_tracked)]
    known = set(baseline_items[ITEM_COL].to_pylist())
    unseen = sum(count for item, count in counts.items() if item not in known)
    busiest = interactions.group_by(pl.col(TIME_COL) // 86_400).len()["len"].max() or 0
    return {
        "item_popularity_psi": psi(expected, actual),
        "history_length_psi": psi(baseline.history_length_shares, _history_length_shares(interactions)),
        "new_item_rate": unseen / total,
        "daily_volume_ratio": busiest / max(baseline.busiest_day_volume, 1),
    }


class SnapshotStore:
    """Accepted snapshots, one folder per data set (e.g. ``synthetic-small-seed0``), under one URI."""

    def __init__(self, root_uri: str):
        self.root = RunDir(root_uri)

    def load(self, dataset_key: str) -> tuple[DataSnapshot, pa.Table] | None:
        if not self.root.folder_is_complete(dataset_key):
            return None
        with self.root.reading_folder(dataset_key) as folder:
            snapshot = DataSnapshot.model_validate_json((folder / SNAPSHOT_FILE).read_text())
            return snapshot, pq.read_table(folder / SNAPSHOT_ITEMS_FILE)

    def save(self, dataset_key: str, snapshot: DataSnapshot, items: pa.Table) -> str:
        # One folder published in one step: a reader never sees statistics and items of different runs.
        with self.root.writing_folder(dataset_key) as folder:
            (folder / SNAPSHOT_FILE).write_text(snapshot.model_dump_json(indent=2))
            pq.write_table(items, folder / SNAPSHOT_ITEMS_FILE)
        return self.root.uri_of(dataset_key)

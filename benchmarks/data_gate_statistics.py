"""The data gate's whole-table statistics on real and synthetic data, clean and with user and item swapped.

.venv/bin/python -m benchmarks.data_gate_statistics   (reads ../shared/data where present)

For each data set: the largest share of one item, the Gini of item popularity, the share of events at the
busiest second, the share of users whose events all share one second, and the share of rows that look
swapped, by the gate's rule (the item id is a user active closer to that moment than the row's own user)
and by a rule that was tried and rejected (the user id occurs more often as an item and the item id more
often as a user). MovieLens-100K is also measured with user and item exchanged in a random 2% and 10% of
rows (seed 0). These figures are what the gate's default thresholds were set against.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from benchmarks.common import RESULTS, SHARED_DATA, command, console
from recsys_tasks.data.ingest import _users
from recsys_tasks.data.sources import read_movielens_100k, read_sequences
from recsys_tasks.data.synthetic import SyntheticConfig, generate
from recsys_tasks.validation.validate import ONE_SECOND_COL, _user_activity, gini

NAME = "data-gate-statistics"


def swapped(interactions: pa.Table, share: float, seed: int = 0) -> pa.Table:
    frame = pl.from_arrow(interactions)
    exchange = pl.Series(np.random.default_rng(seed).random(frame.height) < share)
    return frame.with_columns(
        user_id=pl.when(exchange).then(pl.col("item_id").cast(pl.Utf8)).otherwise(pl.col("user_id")),
        item_id=pl.when(exchange).then(pl.col("user_id").cast(pl.Int64, strict=False)).otherwise(pl.col("item_id")),
    ).to_arrow()


def role_count_share(interactions: pa.Table) -> float:
    """The rejected rule: rows whose user id is more often an item and whose item id is more often a user."""
    frame = pl.from_arrow(interactions).select("user_id", item=pl.col("item_id").cast(pl.Utf8))
    as_user = frame.group_by("user_id").len("as_user").rename({"user_id": "value"})
    as_item = frame.group_by("item").len("as_item").rename({"item": "value"})
    roles = as_user.join(as_item, on="value", how="full", coalesce=True).fill_null(0)
    rows = frame.join(roles.rename({"value": "user_id", "as_user": "u_user", "as_item": "u_item"}), on="user_id")
    rows = rows.join(roles.rename({"value": "item", "as_user": "i_user", "as_item": "i_item"}), on="item")
    return float(((rows["u_item"] > rows["u_user"]) & (rows["i_user"] > rows["i_item"])).mean())


def statistics(interactions: pa.Table, has_clock: bool) -> dict[str, float | None]:
    frame = interactions.to_pandas()
    items = frame.groupby("item_id").size()
    users = _user_activity(frame)
    users_table = _users(interactions, b"benchmark", has_clock)
    observed, by_chance = (pc.sum(users_table[name]).as_py() for name in ("likely_swapped_rows", "chance_swapped_rows"))
    return {
        "rows": len(frame),
        "top_item_share": float(items.max() / len(frame)),
        "item_popularity_gini": gini(items.to_numpy()),
        "top_timestamp_share": float(frame["timestamp"].value_counts().max() / len(frame)),
        "single_timestamp_user_share": float(users[ONE_SECOND_COL].mean()),
        "swapped_rows_observed": observed / len(frame) if has_clock else None,
        "swapped_rows_by_chance": by_chance / len(frame) if has_clock else None,
        "likely_swapped_row_share": max(0, observed - by_chance) / len(frame) if has_clock else None,
        "role_count_row_share": role_count_share(interactions),
    }


def data_sets() -> dict[str, tuple[pa.Table, bool]]:
    sets: dict[str, tuple[pa.Table, bool]] = {}
    movielens = SHARED_DATA / "ml-100k"
    if movielens.is_dir():
        ratings = read_movielens_100k(str(movielens))[0]
        sets["MovieLens-100K"] = (ratings, True)
        sets["MovieLens-100K, 2% of rows swapped"] = (swapped(ratings, 0.02), True)
        sets["MovieLens-100K, 10% of rows swapped"] = (swapped(ratings, 0.10), True)
    beauty = SHARED_DATA / "amazon-beauty" / "Beauty.txt"
    if beauty.is_file():
        sets["Amazon Beauty (sequence file: times are positions)"] = (read_sequences(str(beauty))[0], False)
    for size in ("tiny", "small"):
        sets[f"synthetic {size}, seed 0"] = (generate(SyntheticConfig.preset(size, seed=0))[0], True)
    return sets


def main() -> None:
    results = {}
    for name, (interactions, has_clock) in data_sets().items():
        results[name] = statistics(interactions, has_clock)
        console.print(f"{name}: done")
    table = pd.DataFrame(results).T
    columns = [column for column in table.columns if column != "rows"]
    lines = [
        f"`{command('benchmarks.' + NAME.replace('-', '_'))}`",
        "",
        "| data set | rows | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for name, row in table.iterrows():
        cells = ["n/a" if pd.isna(row[column]) else f"{row[column]:.4f}" for column in columns]
        lines.append(f"| {name} | {int(row['rows']):,} | " + " | ".join(cells) + " |")
    markdown = "\n".join(lines) + "\n"
    console.print(markdown)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{NAME}.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / f"{NAME}.md").write_text(markdown)


if __name__ == "__main__":
    main()

"""Cleaning: labelling, de-duplication and iterative k-core, each step accounted for."""

from __future__ import annotations

import polars as pl
import pytest

from recsys_tasks.augmentation.cleaning import clean
from recsys_tasks.augmentation.config import CleaningConfig
from recsys_tasks.data.sources import read_sequences
from tests.conftest import AMAZON_BEAUTY


def frame(rows: list[tuple[str, int, int, float]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp", "rating"], orient="row")


def test_labelling_keeps_only_positive_ratings():
    data = frame([("u", i, i, float(1 + i % 5)) for i in range(10)])
    cleaned, steps = clean(data, CleaningConfig(positive_min_rating=4))
    assert sorted(cleaned["rating"].unique().to_list()) == [4.0, 5.0]
    assert steps[1].step == "positives (rating ≥ 4)" and steps[1].rows_removed == 6


def test_repeated_events_are_kept_once_and_repeat_visits_stay():
    rows = [("u", 2, 30, 5.0), ("u", 1, 10, 3.0), ("v", 1, 10, 4.0), ("u", 1, 20, 5.0), ("u", 1, 10, 5.0)]
    rows += [("v", 3, 40, 4.0), ("v", 4, 50, 4.0)]
    cleaned, steps = clean(frame(rows), CleaningConfig())
    # The first of the repeated events is kept (rating 3); v's event at the same item and time is another user's.
    assert cleaned.rows()[:4] == [("u", 1, 10, 3.0), ("u", 1, 20, 5.0), ("u", 2, 30, 5.0), ("v", 1, 10, 4.0)]
    assert steps[-2].rows_removed == 1


def test_k_core_repeats_until_every_user_and_item_holds():
    # Item 9 is rare: dropping it leaves "b" with 2 events; dropping "b" leaves items 1 and 2 with one event,
    # and dropping those leaves "a" with 2. Only "c" and "d" hold at the end.
    rows = [("a", item, item, 5.0) for item in (1, 2, 3, 4)]
    rows += [("b", 1, 5, 5.0), ("b", 2, 6, 5.0), ("b", 9, 7, 5.0)]
    rows += [("c", item, 10 + item, 5.0) for item in (3, 4, 5)] + [("d", item, 20 + item, 5.0) for item in (3, 4, 5)]
    cleaned, steps = clean(frame(rows), CleaningConfig(user_core=3, item_core=2))
    assert set(cleaned["user_id"]) == {"c", "d"}
    assert cleaned.group_by("user_id").len()["len"].min() >= 3
    assert cleaned.group_by("item_id").len()["len"].min() >= 2
    assert "(3 passes)" in steps[-1].step and steps[-1].rows == cleaned.height == 6


@pytest.mark.skipif(not AMAZON_BEAUTY.exists(), reason="Amazon Beauty is not in ../shared/data")
def test_amazon_beauty_is_already_a_five_core():
    interactions, _ = read_sequences(str(AMAZON_BEAUTY))
    cleaned, steps = clean(pl.from_arrow(interactions), CleaningConfig(user_core=5, item_core=5))
    assert cleaned.height == 198_502 and steps[-1].rows_removed == 0

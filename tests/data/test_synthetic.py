"""The synthetic generator: deterministic, canonical, with the structure it promises to plant, and the drifting
stream with the drift it promises."""

from __future__ import annotations

import numpy as np
import polars as pl
import pydantic
import pytest

from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from recsys_tasks.data.synthetic import (
    PlantedPreferences,
    StreamConfig,
    SyntheticConfig,
    _Catalogue,
    generate,
    generate_period,
)

TINY = SyntheticConfig.preset("tiny")


def tiny_config(**overrides) -> SyntheticConfig:
    return SyntheticConfig(**{**TINY.model_dump(), **overrides})


@pytest.fixture(scope="module")
def tiny_interactions() -> pl.DataFrame:
    interactions, _ = generate(TINY)
    return pl.from_arrow(interactions)


def consecutive_pairs(interactions: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(previous item, next item) for every two neighbouring events of the same user (rows are time-sorted)."""
    ordered = interactions.sort(["user_id", "timestamp"])
    users = ordered["user_id"].to_numpy()
    items = ordered["item_id"].to_numpy()
    same_user = users[1:] == users[:-1]
    return items[:-1][same_user], items[1:][same_user]


def test_same_seed_gives_identical_tables() -> None:
    first_interactions, first_items = generate(TINY)
    second_interactions, second_items = generate(SyntheticConfig.preset("tiny", seed=0))

    assert first_interactions.equals(second_interactions)
    assert first_items.equals(second_items)


def test_different_seeds_give_different_interactions() -> None:
    seed_0, _ = generate(TINY)
    seed_1, _ = generate(SyntheticConfig.preset("tiny", seed=1))

    assert not seed_0.equals(seed_1)
    assert seed_0["item_id"].to_pylist()[:200] != seed_1["item_id"].to_pylist()[:200]


def test_tables_are_canonical_with_item_ids_one_to_n() -> None:
    interactions, items = generate(TINY)

    assert interactions.schema == INTERACTIONS_SCHEMA
    assert items.schema == ITEMS_SCHEMA
    assert items["item_id"].to_pylist() == list(range(1, TINY.n_items + 1))
    used = set(interactions["item_id"].to_pylist())
    assert min(used) >= 1 and max(used) <= TINY.n_items
    assert all(value is not None for column in interactions.columns for value in column.to_pylist())
    assert set(interactions["rating"].to_pylist()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_no_user_meets_an_item_twice(tiny_interactions: pl.DataFrame) -> None:
    assert tiny_interactions.select("user_id", "item_id").is_duplicated().sum() == 0


def test_every_user_has_at_least_three_interactions(tiny_interactions: pl.DataFrame) -> None:
    lengths = tiny_interactions.group_by("user_id").len()["len"]

    assert lengths.min() >= 3
    assert lengths.max() <= TINY.max_length
    assert tiny_interactions["user_id"].n_unique() > 0.9 * TINY.n_users


def test_timestamps_strictly_increase_within_each_user(tiny_interactions: pl.DataFrame) -> None:
    steps = tiny_interactions.select(
        pl.col("timestamp").diff().over("user_id").alias("step"),
        pl.col("timestamp").min().over("user_id").alias("first"),
    )

    assert steps["step"].drop_nulls().min() > 0
    assert steps["first"].min() >= TINY.start_timestamp


def test_popularity_is_skewed_towards_a_few_items() -> None:
    # Without planted transitions every draw is by Zipf popularity (per topic or global).
    interactions, _ = generate(tiny_config(p_follow=0.0))
    counts = np.sort(np.bincount(interactions["item_id"].to_numpy(), minlength=TINY.n_items + 1)[1:])[::-1]

    top_tenth_share = counts[: TINY.n_items // 10].sum() / counts.sum()

    assert top_tenth_share > 0.4, "a uniform catalogue would give 0.1"


@pytest.mark.parametrize("p_follow", [0.2, 0.8])
def test_share_of_planted_transitions_matches_p_follow(p_follow: float) -> None:
    config = tiny_config(p_follow=p_follow)
    interactions, _ = generate(config)
    # The catalogue is the first thing drawn from the seeded generator, so it can be rebuilt exactly.
    successors = _Catalogue.draw(config, np.random.default_rng(config.seed)).successors + 1
    previous, following = consecutive_pairs(pl.from_arrow(interactions))

    share = (successors[previous - 1] == following[:, None]).any(axis=1).mean()

    assert share == pytest.approx(p_follow, abs=0.05)


def test_next_item_is_predictable_from_the_previous_item(tiny_interactions: pl.DataFrame) -> None:
    previous, following = consecutive_pairs(tiny_interactions)
    pairs = pl.DataFrame({"previous": previous, "following": following})
    most_common_next = (
        pairs.group_by("previous", "following")
        .len()
        .group_by("previous")
        .agg(pl.col("len").max().alias("top"), pl.col("len").sum().alias("total"))
        .filter(pl.col("total") >= 10)
    )

    top_1_share = (most_common_next["top"].sum()) / most_common_next["total"].sum()

    assert most_common_next.height > TINY.n_items // 2
    assert top_1_share > 20 / TINY.n_items, "chance level is about 1 / n_items"


def test_first_attribute_is_the_topic_and_second_a_topic_facet() -> None:
    _, items = generate(TINY)
    attributes = np.asarray(items["attributes"].to_pylist())
    topics, facets = attributes[:, 0], attributes[:, 1]

    assert attributes.shape == (TINY.n_items, 2)
    assert set(topics.tolist()) == set(range(TINY.n_topics))
    assert np.all((facets - TINY.n_topics) // 3 == topics)
    titles = items["title"].to_pylist()
    assert all(f"(topic {topic})" in title for title, topic in zip(titles, topics, strict=True))


def test_users_mostly_stay_within_few_topics(tiny_interactions: pl.DataFrame) -> None:
    _, items = generate(TINY)
    topic_of = dict(zip(items["item_id"].to_pylist(), (a[0] for a in items["attributes"].to_pylist()), strict=True))
    previous, following = consecutive_pairs(tiny_interactions)

    same_topic = np.mean([topic_of[a] == topic_of[b] for a, b in zip(previous, following, strict=True)])

    assert same_topic > 0.8, f"random topics would agree {1 / TINY.n_topics:.0%} of the time"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(min_length=10, max_length=5), "min_length=10 is larger than max_length=5"),
        (dict(n_items=10, n_topics=11), "n_topics=11 exceeds n_items=10"),
        (dict(p_follow=1.5), "less than or equal to 1"),
        (dict(unknown_option=1), "Extra inputs are not permitted"),
    ],
)
def test_invalid_configs_are_rejected(overrides: dict, message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        SyntheticConfig(**overrides)


def test_the_fixed_presets_generate_what_they_always_have() -> None:
    """The drifting stream shares the generator: the fixed presets must not move (sums taken before it existed)."""
    interactions, items = generate(TINY)

    assert interactions.num_rows == 6128
    assert sum(interactions["item_id"].to_pylist()) == 635_020
    assert sum(interactions["timestamp"].to_pylist()) == 10_488_813_036_220
    assert sum(interactions["rating"].to_pylist()) == 23_630.0
    assert [attributes[1] for attributes in items["attributes"].to_pylist()[:8]] == [5, 10, 16, 7, 7, 19, 10, 6]


def test_a_planted_rating_is_drawn_as_the_logs_a_point_higher_on_the_users_home_topic() -> None:
    planted, rng = PlantedPreferences(TINY), np.random.default_rng(0)
    home = planted.home_topic[0]
    on, off = (np.flatnonzero((planted.catalogue.topic == home) == wanted) + 1 for wanted in (True, False))
    ratings = {
        side: np.array([planted.rating(0, int(item), rng) for item in np.tile(items, 20)])
        for side, items in (("on", on), ("off", off))
    }

    assert all(set(np.unique(r)) <= {1.0, 2.0, 3.0, 4.0, 5.0} for r in ratings.values())
    assert 0.8 < ratings["on"].mean() - ratings["off"].mean() < 1.2


STREAM = StreamConfig.preset(seed=0)


@pytest.fixture(scope="module")
def first_periods() -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    return [tuple(pl.from_arrow(table) for table in generate_period(STREAM, period)) for period in (0, 1)]


def topic_shares(interactions: pl.DataFrame, items: pl.DataFrame) -> dict[int, float]:
    topics = items.select("item_id", topic=pl.col("attributes").list.first())
    counts = interactions.join(topics, on="item_id").group_by("topic").len()
    return {topic: count / interactions.height for topic, count in counts.iter_rows()}


def test_a_period_is_a_function_of_the_seed_and_the_period_alone() -> None:
    interactions, items = generate_period(STREAM, 3)
    again_interactions, again_items = generate_period(StreamConfig.preset(seed=0), 3)

    assert interactions.equals(again_interactions) and items.equals(again_items)
    assert not interactions.equals(generate_period(StreamConfig.preset(seed=1), 3)[0])
    assert interactions.schema == INTERACTIONS_SCHEMA and items.schema == ITEMS_SCHEMA


def test_a_later_period_brings_back_users_later_in_time_and_new_users(first_periods) -> None:
    (base, _), (later, _) = first_periods
    returning = set(base["user_id"]) & set(later["user_id"])
    new = set(later["user_id"]) - set(base["user_id"])

    assert base["user_id"].n_unique() > 300 and 100 < len(returning) <= STREAM.returning_users
    assert len(new) >= 100 and all(int(user) >= STREAM.base.n_users for user in new)
    assert base["timestamp"].max() < later["timestamp"].min()
    period_end = STREAM.base.start_timestamp + 2 * STREAM.period_days * 86_400
    assert later["timestamp"].max() < period_end
    assert later.group_by("user_id").len()["len"].min() >= 3


def test_a_later_period_launches_items_that_take_a_real_share(first_periods) -> None:
    (_, base_items), (later, later_items) = first_periods
    launched = set(range(STREAM.base.n_items + 1, STREAM.base.n_items + STREAM.new_items + 1))

    assert set(later_items["item_id"]) == set(base_items["item_id"]) | launched
    # Items keep their ids and attributes from period to period.
    assert later_items.head(base_items.height).equals(base_items)
    assert later.filter(pl.col("item_id").is_in(launched)).height / later.height > 0.08


def test_the_topics_in_fashion_move_from_period_to_period(first_periods) -> None:
    (base, base_items), (later, later_items) = first_periods
    before, after = topic_shares(base, base_items), topic_shares(later, later_items)
    in_fashion_then, in_fashion_now = STREAM.fashion(0), STREAM.fashion(1)

    assert set(in_fashion_then.tolist()).isdisjoint(in_fashion_now.tolist())
    assert sum(after[t] for t in in_fashion_now) > sum(before[t] for t in in_fashion_now) + 0.05
    assert sum(after[t] for t in in_fashion_then) < sum(before[t] for t in in_fashion_then) - 0.05

"""A deterministic synthetic interaction log with structure a sequence model can learn.

Planted structure (so a test can tell a real sequence model from popularity counting):
- items belong to topics; attributes are tied to the topic (one topic attribute + one facet);
- popularity is Zipf-distributed over the catalogue;
- the items of a topic sit on a ring, and each item's "successors" are the next few items on it.
  With probability ``p_follow`` the next item of a user is a successor of the previous one,
  otherwise it is drawn by popularity from the user's home topic or from the whole catalogue.
  Popularity alone cannot see transitions;
- a user meets an item once (later repeats are dropped), as in the leave-one-out benchmarks where
  the history is excluded from the ranking.

Generation is vectorised over users, one sequence position at a time, so large presets are fast.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, model_validator

from recsys_tasks.contracts.tables import INTERACTIONS_SCHEMA, ITEMS_SCHEMA
from recsys_tasks.data.config import SyntheticPreset

_SECONDS_PER_DAY = 86_400


class SyntheticConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    n_users: int = Field(300, ge=10, description="Number of users.")
    n_items: int = Field(200, ge=10, description="Catalogue size.")
    n_topics: int = Field(10, ge=1, description="Topics partitioning the catalogue.")
    mean_length: float = Field(15.0, gt=0, description="Mean number of interactions per user beyond min_length.")
    min_length: int = Field(5, ge=3, description="Shortest user history.")
    max_length: int = Field(60, ge=3, description="Longest user history.")
    p_follow: float = Field(0.8, ge=0, le=1, description="Probability that the next item follows a planted transition.")
    n_successors: int = Field(2, ge=1, description="Planted successors per item.")
    zipf_exponent: float = Field(1.05, gt=0, description="Exponent of the Zipf popularity law.")
    start_timestamp: int = Field(1_704_067_200, description="First possible event, unix seconds (2024-01-01).")
    seed: int = Field(0, description="Everything is a function of this seed.")

    @model_validator(mode="after")
    def _check(self) -> SyntheticConfig:
        if self.min_length > self.max_length:
            raise ValueError(f"min_length={self.min_length} is larger than max_length={self.max_length}")
        if self.n_topics > self.n_items:
            raise ValueError(f"n_topics={self.n_topics} exceeds n_items={self.n_items}")
        return self

    @classmethod
    def preset(cls, name: SyntheticPreset, seed: int = 0) -> SyntheticConfig:
        return cls(**SYNTHETIC_PRESETS[name], seed=seed)


SYNTHETIC_PRESETS: dict[str, dict] = {
    "tiny": dict(n_users=400, n_items=200, n_topics=5, mean_length=12, max_length=40),
    "small": dict(n_users=2_000, n_items=1_000, n_topics=20, mean_length=20, max_length=100),
    "medium": dict(n_users=20_000, n_items=5_000, n_topics=50, mean_length=25, max_length=200),
    # Shaped like MovieLens-25M: 162k users, 59k items, about 150 interactions per user.
    "large": dict(n_users=162_000, n_items=59_000, n_topics=200, mean_length=150, max_length=2_000),
}


class _Catalogue:
    """Topic assignment, popularity and planted transitions of the synthetic catalogue."""

    def __init__(self, config: SyntheticConfig, rng: np.random.Generator):
        n_items, n_topics = config.n_items, config.n_topics
        self.topic = rng.permutation(np.arange(n_items) % n_topics)
        ranks = rng.permutation(n_items) + 1
        self.popularity = ranks.astype(np.float64) ** -config.zipf_exponent
        self.popularity /= self.popularity.sum()

        # Items sorted by topic, with a cumulative popularity, so that "draw an item of topic t by
        # popularity" is one searchsorted for a whole vector of users.
        self.by_topic = np.argsort(self.topic, kind="stable")
        self.cumulative = np.cumsum(self.popularity[self.by_topic])
        topic_mass = np.bincount(self.topic, weights=self.popularity, minlength=n_topics)
        self.topic_start = np.concatenate([[0.0], np.cumsum(topic_mass)[:-1]])
        self.topic_mass = topic_mass

        # Walking forward on a ring revisits an item only after a full lap, so sequences rarely repeat.
        self.successors = np.empty((n_items, config.n_successors), dtype=np.int64)
        for t in range(n_topics):
            ring = rng.permutation(np.flatnonzero(self.topic == t))
            for step in range(config.n_successors):
                self.successors[ring, step] = np.roll(ring, -(step + 1))

    def draw_from_topics(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        draws = self.topic_start[topics] + rng.random(len(topics)) * self.topic_mass[topics]
        positions = np.minimum(np.searchsorted(self.cumulative, draws), len(self.by_topic) - 1)
        return self.by_topic[positions]

    def draw_global(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.popularity), size=size, p=self.popularity)


def generate(config: SyntheticConfig) -> tuple[pa.Table, pa.Table]:
    """Return (interactions, items) tables in the canonical schema. Item ids start at 1."""
    rng = np.random.default_rng(config.seed)
    catalogue = _Catalogue(config, rng)
    users, items, times, home_topic = _walk(config, catalogue, rng)
    interactions = _interactions_table(config, catalogue, rng, users, items, times, home_topic)
    return interactions, _items_table(config, catalogue, rng)


def _walk(
    config: SyntheticConfig, catalogue: _Catalogue, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every user's events, position by position: (user, item, time) of each event, and each user's home topic."""
    lengths = np.minimum(config.min_length + rng.poisson(config.mean_length, config.n_users), config.max_length)
    home_topic = catalogue.topic[catalogue.draw_global(config.n_users, rng)]
    start = config.start_timestamp + rng.integers(0, 180 * _SECONDS_PER_DAY, config.n_users)

    item_columns, user_columns, time_columns = [], [], []
    current = catalogue.draw_from_topics(home_topic, rng)
    clock = start.copy()
    active = np.arange(config.n_users)
    for position in range(int(lengths.max())):
        if position > 0:
            follow = rng.random(len(active)) < config.p_follow
            stay_home = rng.random(len(active)) < 0.5
            successor = catalogue.successors[current, rng.integers(0, config.n_successors, len(active))]
            from_home = catalogue.draw_from_topics(home_topic[active], rng)
            from_anywhere = catalogue.draw_global(len(active), rng)
            current = np.where(follow, successor, np.where(stay_home, from_home, from_anywhere))
            clock = clock + 60 + rng.exponential(6 * 3600, len(active)).astype(np.int64)
        user_columns.append(active)
        item_columns.append(current)
        time_columns.append(clock)
        still = lengths[active] > position + 1
        active, current, clock = active[still], current[still], clock[still]
    return np.concatenate(user_columns), np.concatenate(item_columns), np.concatenate(time_columns), home_topic


def _interactions_table(
    config: SyntheticConfig,
    catalogue: _Catalogue,
    rng: np.random.Generator,
    users: np.ndarray,
    items: np.ndarray,
    times: np.ndarray,
    home_topic: np.ndarray,
) -> pa.Table:
    """The events with ratings (higher on the user's home topic), in user and time order, repeats dropped."""
    on_topic = catalogue.topic[items] == home_topic[users]
    ratings = np.clip(np.rint(3.2 + 1.0 * on_topic + rng.normal(0, 0.8, len(items))), 1, 5)

    order = np.lexsort((times, users))
    users, items, times, ratings = users[order], items[order], times[order], ratings[order]
    _, first_meeting = np.unique(users * config.n_items + items, return_index=True)
    keep = np.sort(first_meeting)
    # Dropping repeats can shorten a history below what leave-one-out needs; such users are left out.
    long_enough = np.bincount(users[keep], minlength=config.n_users) >= 3
    keep = keep[long_enough[users[keep]]]
    return pa.table(
        {
            "user_id": pa.array(users[keep].astype(str)),
            "item_id": pa.array(items[keep] + 1, pa.int64()),
            "timestamp": pa.array(times[keep], pa.int64()),
            "rating": pa.array(ratings[keep], pa.float32()),
        },
        schema=INTERACTIONS_SCHEMA,
    )


def _items_table(config: SyntheticConfig, catalogue: _Catalogue, rng: np.random.Generator) -> pa.Table:
    """The catalogue: titles, and attributes (the item's topic and one of three facets of it)."""
    facet = rng.integers(0, 3, config.n_items)
    item_ids = np.arange(1, config.n_items + 1)
    return pa.table(
        {
            "item_id": pa.array(item_ids, pa.int64()),
            "title": pa.array([f"Synthetic item {i} (topic {t})" for i, t in zip(item_ids, catalogue.topic)]),
            "attributes": pa.array(
                [[int(t), int(config.n_topics + 3 * t + f)] for t, f in zip(catalogue.topic, facet)],
                pa.list_(pa.int64()),
            ),
        },
        schema=ITEMS_SCHEMA,
    )

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

The ``drifting`` preset is a stream of periods (``StreamConfig``, ``generate_period``) on the same generator: period 0
is a base log; every later period brings back some earlier users later in time, adds new users, launches new items
that take a real share of the period's events, and moves the topics in fashion. Period ``p`` is a function of the
seed and ``p`` alone.
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
    start_spread_days: int = Field(180, ge=1, description="Users start within this many days of start_timestamp.")
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
    # Period 0 of the drifting stream (StreamConfig): users start in its first 3 days, a period lasts a week.
    "drifting": dict(n_users=400, n_items=300, n_topics=8, mean_length=10, max_length=30, start_spread_days=3),
}


class _Catalogue:
    """Topic assignment, popularity and planted transitions of the synthetic catalogue."""

    def __init__(self, topic: np.ndarray, popularity: np.ndarray, rings: list[np.ndarray], n_successors: int):
        self.topic = topic
        self.rings = rings
        self.popularity = popularity / popularity.sum()

        # Items sorted by topic, with a cumulative popularity, so that "draw an item of topic t by
        # popularity" is one searchsorted for a whole vector of users.
        self.by_topic = np.argsort(self.topic, kind="stable")
        self.cumulative = np.cumsum(self.popularity[self.by_topic])
        topic_mass = np.bincount(self.topic, weights=self.popularity, minlength=len(rings))
        self.topic_start = np.concatenate([[0.0], np.cumsum(topic_mass)[:-1]])
        self.topic_mass = topic_mass

        # The items of a topic sit on a ring (``rings[t]``) and the next few items on it are an item's successors:
        # walking forward on a ring revisits an item only after a full lap, so sequences rarely repeat.
        self.successors = np.empty((len(topic), n_successors), dtype=np.int64)
        for ring in rings:
            for step in range(n_successors):
                self.successors[ring, step] = np.roll(ring, -(step + 1))

    @classmethod
    def draw(cls, config: SyntheticConfig, rng: np.random.Generator) -> _Catalogue:
        """Topics, Zipf popularity and rings drawn from ``rng``."""
        topic = rng.permutation(np.arange(config.n_items) % config.n_topics)
        ranks = rng.permutation(config.n_items) + 1
        rings = [rng.permutation(np.flatnonzero(topic == t)) for t in range(config.n_topics)]
        return cls(topic, ranks.astype(np.float64) ** -config.zipf_exponent, rings, config.n_successors)

    def draw_from_topics(self, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        draws = self.topic_start[topics] + rng.random(len(topics)) * self.topic_mass[topics]
        positions = np.minimum(np.searchsorted(self.cumulative, draws), len(self.by_topic) - 1)
        return self.by_topic[positions]

    def draw_global(self, size: int, rng: np.random.Generator) -> np.ndarray:
        return rng.choice(len(self.popularity), size=size, p=self.popularity)


def generate(config: SyntheticConfig) -> tuple[pa.Table, pa.Table]:
    """Return (interactions, items) tables in the canonical schema. Item ids start at 1."""
    rng = np.random.default_rng(config.seed)
    catalogue = _Catalogue.draw(config, rng)
    users, items, times, home_topic = _walk(config, catalogue, rng)
    interactions = _interactions_table(config, catalogue, rng, users, items, times, home_topic)
    return interactions, _items_table(config.n_topics, catalogue.topic, rng.integers(0, 3, config.n_items))


def _user_draws(
    config: SyntheticConfig, catalogue: _Catalogue, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's history length and home topic: the walk's first draws."""
    lengths = np.minimum(config.min_length + rng.poisson(config.mean_length, config.n_users), config.max_length)
    return lengths, catalogue.topic[catalogue.draw_global(config.n_users, rng)]


class PlantedPreferences:
    """What a user of a fixed-size synthetic data set wants next, as the generator draws it.

    ``next_item(user, last)``: P(next item | the user's newest item) over item ids 1..n_items (index id − 1):
    ``p_follow`` spread over the newest item's successors, the rest by popularity, half within the user's home topic
    and half over the whole catalogue. The truth a simulated user answers slates with.

    ``changed_topics``: in that many topics (the first ones) the ring is drawn anew, so their items have other
    successors than the log shows: behaviour that changed after the log was taken.
    """

    # The random stream of the changed rings, apart from the generator's own.
    _CHANGED_RINGS = 4

    def __init__(self, config: SyntheticConfig, changed_topics: int = 0):
        if not 0 <= changed_topics <= config.n_topics:
            raise ValueError(f"changed_topics={changed_topics} is not between 0 and n_topics={config.n_topics}")
        rng = np.random.default_rng(config.seed)
        logged = _Catalogue.draw(config, rng)
        _, self.home_topic = _user_draws(config, logged, rng)
        redraw = np.random.default_rng([config.seed, self._CHANGED_RINGS])
        rings = [redraw.permutation(ring) if t < changed_topics else ring for t, ring in enumerate(logged.rings)]
        self.catalogue = _Catalogue(logged.topic, logged.popularity, rings, config.n_successors)
        self.config = config

    def next_item(self, user: int, last_item_id: int) -> np.ndarray:
        catalogue, config = self.catalogue, self.config
        home = self.home_topic[user]
        in_home = np.where(catalogue.topic == home, catalogue.popularity / catalogue.topic_mass[home], 0.0)
        probabilities = (1 - config.p_follow) * (0.5 * in_home + 0.5 * catalogue.popularity)
        np.add.at(probabilities, catalogue.successors[last_item_id - 1], config.p_follow / config.n_successors)
        return probabilities

    def rating(self, user: int, item_id: int, rng: np.random.Generator) -> float:
        """The rating the user gives the item, drawn as the generator draws the log's."""
        on_home_topic = self.catalogue.topic[item_id - 1] == self.home_topic[user]
        return float(_ratings(np.array([on_home_topic]), rng)[0])


def _ratings(on_home_topic: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Ratings of 1 to 5, a point higher on the user's home topic."""
    return np.clip(np.rint(3.2 + 1.0 * on_home_topic + rng.normal(0, 0.8, len(on_home_topic))), 1, 5)


def _walk(
    config: SyntheticConfig, catalogue: _Catalogue, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every user's events, position by position: (user, item, time) of each event, and each user's home topic."""
    lengths, home_topic = _user_draws(config, catalogue, rng)
    start = config.start_timestamp + rng.integers(0, config.start_spread_days * _SECONDS_PER_DAY, config.n_users)

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
    user_ids: np.ndarray | None = None,
) -> pa.Table:
    """The events with ratings (higher on the user's home topic), in user and time order, repeats dropped.

    ``user_ids[u]`` names user ``u`` (default: ``u`` itself).
    """
    ratings = _ratings(catalogue.topic[items] == home_topic[users], rng)

    order = np.lexsort((times, users))
    users, items, times, ratings = users[order], items[order], times[order], ratings[order]
    _, first_meeting = np.unique(users * config.n_items + items, return_index=True)
    keep = np.sort(first_meeting)
    # Dropping repeats can shorten a history below what leave-one-out needs; such users are left out.
    long_enough = np.bincount(users[keep], minlength=config.n_users) >= 3
    keep = keep[long_enough[users[keep]]]
    return pa.table(
        {
            "user_id": pa.array((users[keep] if user_ids is None else user_ids[users[keep]]).astype(str)),
            "item_id": pa.array(items[keep] + 1, pa.int64()),
            "timestamp": pa.array(times[keep], pa.int64()),
            "rating": pa.array(ratings[keep], pa.float32()),
        },
        schema=INTERACTIONS_SCHEMA,
    )


def _items_table(n_topics: int, topic: np.ndarray, facet: np.ndarray) -> pa.Table:
    """The catalogue: titles, and attributes (the item's topic and one of three facets of it)."""
    item_ids = np.arange(1, len(topic) + 1)
    return pa.table(
        {
            "item_id": pa.array(item_ids, pa.int64()),
            "title": pa.array([f"Synthetic item {i} (topic {t})" for i, t in zip(item_ids, topic)]),
            "attributes": pa.array(
                [[int(t), int(n_topics + 3 * t + f)] for t, f in zip(topic, facet)], pa.list_(pa.int64())
            ),
        },
        schema=ITEMS_SCHEMA,
    )


# --- the drifting stream ------------------------------------------------------------------------------------------

# Independent random streams of one seed: the items launched in a period, the users and walks of a period, and the
# base items' facets.
_LAUNCHES, _WALKS, _FACETS = 1, 2, 3


class StreamConfig(BaseModel):
    """A stream of periods with planted drift. ``base`` is period 0: its users, catalogue and clock start."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: SyntheticConfig
    period_days: int = Field(7, ge=1, description="Length of a period; events past its end are dropped.")
    returning_users: int = Field(150, ge=0, description="Users of earlier periods who come back each period.")
    new_users: int = Field(150, ge=0, description="Users first seen each period.")
    new_items: int = Field(20, ge=0, description="Items launched each period (new ids after the earlier ones).")
    new_item_share: float = Field(
        0.25, ge=0, lt=1, description="About the share of a period's popularity mass on the items launched in it."
    )
    launch_decay: float = Field(
        0.5, ge=0, le=1, description="Share of its launch popularity a new item keeps each later period."
    )
    fashion_topics: int = Field(2, ge=0, description="Topics in fashion in a period; the next ones are in the next.")
    fashion_boost: float = Field(1.5, ge=1, description="How much more popular a topic in fashion is.")

    @model_validator(mode="after")
    def _check(self) -> StreamConfig:
        if self.fashion_topics > self.base.n_topics:
            raise ValueError(f"fashion_topics={self.fashion_topics} exceeds n_topics={self.base.n_topics}")
        return self

    @classmethod
    def preset(cls, seed: int = 0) -> StreamConfig:
        return cls(base=SyntheticConfig.preset("drifting", seed=seed))

    def fashion(self, period: int) -> np.ndarray:
        """The topics in fashion in ``period``: the next ``fashion_topics`` after those of the period before."""
        return (period * self.fashion_topics + np.arange(self.fashion_topics)) % self.base.n_topics


def generate_period(stream: StreamConfig, period: int) -> tuple[pa.Table, pa.Table]:
    """Period ``period`` of the stream: (interactions, items) in the canonical schema.

    Users are numbered across periods (a returning user keeps the id); items keep their ids, and the items table is
    the catalogue as of the period (the base items and every item launched up to it). A returning user comes back
    with a taste drawn from the period's popularity, so tastes follow fashion too. Repeats are dropped within a
    period, not across periods.
    """
    base = stream.base
    catalogue, facet = _stream_catalogue(stream, period)
    rng = np.random.default_rng([base.seed, _WALKS, period])
    user_ids = _period_users(stream, period, rng)
    start = base.start_timestamp + period * stream.period_days * _SECONDS_PER_DAY
    config = base.model_copy(update={"n_users": len(user_ids), "n_items": len(facet), "start_timestamp": start})
    users, items, times, home_topic = _walk(config, catalogue, rng)
    # A history that runs past the period's end is cut there: the user's events of a later period continue it.
    within = times < start + stream.period_days * _SECONDS_PER_DAY
    interactions = _interactions_table(
        config, catalogue, rng, users[within], items[within], times[within], home_topic, user_ids
    )
    return interactions, _items_table(base.n_topics, catalogue.topic, facet)


def _period_users(stream: StreamConfig, period: int, rng: np.random.Generator) -> np.ndarray:
    """Ids of the period's users: some users of earlier periods, then the period's new users."""
    if period == 0:
        return np.arange(stream.base.n_users)
    known = stream.base.n_users + (period - 1) * stream.new_users
    returning = np.sort(rng.choice(known, size=min(stream.returning_users, known), replace=False))
    return np.concatenate([returning, known + np.arange(stream.new_users)])


def _stream_catalogue(stream: StreamConfig, period: int) -> tuple[_Catalogue, np.ndarray]:
    """The catalogue of ``period`` and each item's facet.

    Every period launches ``new_items`` items, each inserted at a random place of its topic's ring (it becomes a
    successor of the item before it). In their launch period they hold about ``new_item_share`` of the popularity
    mass, alike; each later period keeps ``launch_decay`` of it, down to a Zipf-drawn popularity of their own. The
    topics in fashion are ``fashion_boost`` times as popular.
    """
    base = stream.base
    drawn = _Catalogue.draw(base, np.random.default_rng(base.seed))
    rings = [ring.tolist() for ring in drawn.rings]
    topic, popularity, launched = [drawn.topic], [drawn.popularity], [np.full(base.n_items, -1)]
    facet = [np.random.default_rng([base.seed, _FACETS]).integers(0, 3, base.n_items)]
    zipf_total = (np.arange(1, base.n_items + 1, dtype=np.float64) ** -base.zipf_exponent).sum()
    for launch in range(1, period + 1):
        rng = np.random.default_rng([base.seed, _LAUNCHES, launch])
        first = base.n_items + (launch - 1) * stream.new_items
        launched_topic = rng.integers(0, base.n_topics, stream.new_items)
        ranks = rng.integers(1, base.n_items + 1, stream.new_items).astype(np.float64)
        for item, item_topic in zip(range(first, first + stream.new_items), launched_topic, strict=True):
            rings[item_topic].insert(int(rng.integers(0, len(rings[item_topic]) + 1)), item)
        topic.append(launched_topic)
        popularity.append(ranks**-base.zipf_exponent / zipf_total)
        launched.append(np.full(stream.new_items, launch))
        facet.append(rng.integers(0, 3, stream.new_items))
    topic_of, weight, launched_in = np.concatenate(topic), np.concatenate(popularity), np.concatenate(launched)
    # The base items' popularity sums to 1: a launch of this much each holds new_item_share of a plain period.
    launch_weight = stream.new_item_share / (1 - stream.new_item_share) / max(stream.new_items, 1)
    hype = launch_weight * stream.launch_decay ** np.maximum(period - launched_in, 0)
    weight = np.where(launched_in > 0, np.maximum(weight, hype), weight)
    weight = weight * np.where(np.isin(topic_of, stream.fashion(period)), stream.fashion_boost, 1.0)
    catalogue = _Catalogue(topic_of, weight, [np.asarray(ring, dtype=np.int64) for ring in rings], base.n_successors)
    return catalogue, np.concatenate(facet)

"""Augment stage: canonical interactions → model-ready sequences and augmented views.

Items are re-indexed 1..n_items (0 pads, n_items + 1 is [MASK]). Each user's chronological
sequence is split leave-one-out: the last item is the test target, the second-to-last the
validation target, everything before is training history. Augmented views are cut from the
training part only, so pre-training never sees a validation or test item.

With a serving log in the run (``data/impressions.parquet``), each event gets a shown negative: an item a slate
showed the user since their previous event and they did not click or buy (``shown_negatives``, 0 where there is
none). Of one slate, a dismissed item is taken first, then the highest placed: a user who clicked lower down saw it
and passed it over. The ranking head learns to tell these from what the user chose.
"""

from __future__ import annotations

import logging

import numpy as np
import polars as pl
import pyarrow as pa
from rich.progress import track

from recsys_tasks.augmentation.cleaning import clean
from recsys_tasks.augmentation.config import AugmentConfig, CleaningConfig
from recsys_tasks.augmentation.views import random_view
from recsys_tasks.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys_tasks.contracts.layout import (
    AUGMENT_SUMMARY_FILE,
    IMPRESSIONS_FILE,
    INTERACTIONS_FILE,
    ITEMS_FILE,
    SEQUENCES_FILE,
    VIEWS_FILE,
    VOCAB_FILE,
)
from recsys_tasks.contracts.reports import AugmentSummary, CleaningStep
from recsys_tasks.storage import RunDir

log = logging.getLogger(__name__)


def build_vocabulary(interactions: pl.DataFrame, items: pl.DataFrame, base: pl.DataFrame | None = None) -> pl.DataFrame:
    """Index 1..n for every item seen in the interactions, with its attributes when the catalogue has them.

    With a ``base`` vocabulary (the champion's, when adapting) its items keep their index and
    attributes, and items it lacks follow from n_base + 1 in id order: the model's rows stay its rows.
    """
    seen = interactions.select(pl.col(ITEM_COL).unique().sort())
    if base is not None:
        seen = seen.join(base.select(ITEM_COL), on=ITEM_COL, how="anti")
    first = 1 if base is None else base.height + 1
    new = seen.with_columns(pl.int_range(first, first + pl.len(), dtype=pl.Int32).alias("index")).join(
        items.select(ITEM_COL, "attributes"), on=ITEM_COL, how="left"
    )
    if base is None:
        return new
    return pl.concat([base.select(ITEM_COL, pl.col("index").cast(pl.Int32), "attributes"), new])


def shown_negatives(interactions: pl.DataFrame, impressions: pl.DataFrame, vocabulary: pl.DataFrame) -> pl.DataFrame:
    """``interactions`` with ``shown_negative``: the vocabulary index of the item the nearest slate shown to the user
    at or before the event, and after their previous event, offered and they did not take (0 where none).

    Of each slate one item: a dismissed one first, then the highest placed one that was not clicked or bought.
    """
    user_key = pl.col(USER_COL).cast(pl.String).alias("user_key")
    passed_over = (
        impressions.filter(~pl.col("positive") & pl.col(USER_COL).is_not_null())
        .join(vocabulary.select(ITEM_COL, "index"), on=ITEM_COL, how="inner")
        .sort(["request_id", "dismissed", "position"], descending=[False, True, False])
        .group_by("request_id", maintain_order=True)
        .first()
        .select(user_key, shown_at=TIME_COL, negative="index")
        .sort("shown_at")
    )
    events = interactions.with_columns(
        user_key,
        previous=pl.col(TIME_COL).shift(1).over(USER_COL, order_by=[TIME_COL, ITEM_COL]),
        row=pl.int_range(pl.len()),
    ).sort(TIME_COL)
    nearest = events.join_asof(
        passed_over, left_on=TIME_COL, right_on="shown_at", by="user_key", strategy="backward", check_sortedness=False
    )
    since_previous = pl.col("previous").is_null() | (pl.col("shown_at") > pl.col("previous"))
    taken = pl.col("negative").is_not_null() & since_previous & (pl.col("negative") != pl.col("index"))
    return (
        nearest.sort("row")
        .with_columns(shown_negative=pl.when(taken).then(pl.col("negative")).otherwise(0).cast(pl.Int32))
        .drop("user_key", "previous", "row", "shown_at", "negative")
    )


def build_sequences(
    interactions: pl.DataFrame, vocabulary: pl.DataFrame, user_order: pl.Series, impressions: pl.DataFrame | None = None
) -> pl.DataFrame:
    """One row per user: item indices in time order (ties broken by item id, so the order is stable),
    the rating of each (null for implicit feedback), and, with ``impressions``, each one's shown negative.

    Users come in ``user_order`` (the order of their first event in the log), not sorted by
    pseudonym: the pseudonyms change with the key, which the embedded default draws at random per
    home, and every row order downstream (views, batches, shuffles) starts from this one, so the
    same data and seeds would otherwise train a different model in every home.
    Cleaning's user core (≥ 3) guarantees every user a training item, a validation item and a test item.
    """
    indexed = interactions.join(vocabulary.select(ITEM_COL, "index"), on=ITEM_COL, how="inner")
    negatives = []
    if impressions is not None:
        indexed, negatives = (
            shown_negatives(indexed, impressions, vocabulary),
            [pl.col("shown_negative").alias("shown_negatives")],
        )
    sequences = (
        indexed.sort([USER_COL, TIME_COL, ITEM_COL])
        .group_by(USER_COL, maintain_order=True)
        .agg(
            pl.col("index").alias("items"),
            pl.col(RATING_COL).alias("ratings"),
            pl.col(TIME_COL).alias("timestamps"),
            *negatives,
        )
    )
    return user_order.to_frame(USER_COL).join(sequences, on=USER_COL, how="inner", maintain_order="left")


def augment(run: RunDir, config: AugmentConfig, base_vocabulary: pa.Table | None = None) -> AugmentSummary:
    """Sequences, vocabulary and views of the run's log; ``base_vocabulary``: the champion's, when adapting."""
    interactions, cleaning, user_order = _cleaned_interactions(run, config.cleaning)
    items = pl.from_arrow(run.read_parquet(ITEMS_FILE))
    base = None if base_vocabulary is None else pl.from_arrow(base_vocabulary)
    vocabulary = build_vocabulary(interactions, items, base)
    impressions = pl.from_arrow(run.read_parquet(IMPRESSIONS_FILE)) if run.exists(IMPRESSIONS_FILE) else None
    sequences = build_sequences(interactions, vocabulary, user_order, impressions)
    mask_index = vocabulary.height + 1
    views_table = _views_table(sequences, config, mask_index)
    summary = AugmentSummary(
        sequences_uri=run.write_parquet(
            SEQUENCES_FILE, sequences.with_columns(pl.col(USER_COL).cast(pl.String)).to_arrow()
        ),
        vocab_uri=run.write_parquet(VOCAB_FILE, vocabulary.to_arrow()),
        views_uri=run.write_parquet(VIEWS_FILE, views_table),
        users=sequences.height,
        items=vocabulary.height,
        max_length=config.max_length,
        mask_index=mask_index,
        view_pairs=views_table.num_rows,
        cleaning=cleaning,
    )
    run.write_json(AUGMENT_SUMMARY_FILE, summary.model_dump())
    return summary


def _cleaned_interactions(run: RunDir, config: CleaningConfig) -> tuple[pl.DataFrame, list[CleaningStep], pl.Series]:
    """(the cleaned interactions, the cleaning steps, logged, the users in the order of their first event)."""
    # Pseudonyms are 32-character strings; as a categorical each row holds a 4-byte code instead,
    # which is what keeps 25M-row logs within a few GB through cleaning, joins and sorting.
    logged = pl.from_arrow(run.read_parquet(INTERACTIONS_FILE)).with_columns(pl.col(USER_COL).cast(pl.Categorical))
    user_order = logged[USER_COL].unique(maintain_order=True)
    interactions, cleaning = clean(logged, config)
    del logged  # the log before cleaning is not kept alive through the rest of the stage
    for step in cleaning:
        log.info(
            "%-45s %10s rows %9s users %8s items  (-%s rows)",
            step.step,
            f"{step.rows:,}",
            f"{step.users:,}",
            f"{step.items:,}",
            f"{step.rows_removed:,}",
        )
    return interactions, cleaning, user_order


def _views_table(sequences: pl.DataFrame, config: AugmentConfig, mask_index: int) -> pa.Table:
    """``view_pairs_per_user`` pairs of random views of each user's training history (user_row, view_a, view_b)."""
    rng = np.random.default_rng(config.seed)
    view_user, view_a, view_b = [], [], []
    # Only the newest max_length training items are ever read; cutting them in polars first keeps
    # the Python objects per user small however long the histories are.
    training_windows = sequences.select(
        pl.col("items").list.head(pl.col("items").list.len() - 2).list.tail(config.max_length)
    )["items"]
    for row, window in enumerate(track(training_windows.to_list(), description="augmenting sequences", transient=True)):
        history = np.asarray(window, dtype=np.int32)
        for _ in range(config.view_pairs_per_user):
            view_user.append(row)
            for views in (view_a, view_b):
                views.append(
                    random_view(
                        history,
                        rng,
                        crop_ratio=config.crop_ratio,
                        mask_ratio=config.mask_ratio,
                        reorder_ratio=config.reorder_ratio,
                        mask_index=mask_index,
                    ).tolist()
                )
    return pa.table(
        {
            "user_row": pa.array(view_user, pa.int32()),
            "view_a": pa.array(view_a, pa.list_(pa.int32())),
            "view_b": pa.array(view_b, pa.list_(pa.int32())),
        }
    )

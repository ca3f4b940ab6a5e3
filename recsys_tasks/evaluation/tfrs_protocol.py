"""Protocol 2: the TensorFlow Recommenders tutorials' MovieLens-100K evaluation.

The tutorials shuffle all ratings with seed 42, train on 80% and test on the other 20%; retrieval is
scored by factorised top-K accuracy (is the test movie among the K best-scored of the whole
catalogue?) and ranking by rating RMSE. The published tutorial figures are top-100 accuracy about
0.23 (basic retrieval) and RMSE about 1.11 (multitask).

Here a sequence model is trained on each user's training ratings in time order (the pipeline's
own stages, run on the 80% part), and every test rating is scored with the user's whole training
history as the query. ``top_k`` counts exactly as FactorizedTopK does, over every movie, seen ones
included (they carry the model's learned repeat offset, applied to the whole training history);
``top_k_unseen`` additionally removes the user's training movies from the ranking, as a deployed
recommender would. A test movie the model never saw in training counts as a miss and
is predicted the mean training rating.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_tasks.constants import ITEM_COL, RATING_COL, USER_COL
from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, SAVED_MODEL, SequentialRecommender
from recsys_tasks.contracts.layout import INTERACTIONS_FILE, ITEMS_FILE, TEST_RATINGS_FILE
from recsys_tasks.contracts.metrics import exclude_seen, ranks_of_targets
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.errors import InputDataError
from recsys_tasks.storage import RunDir

TUTORIAL_SEED = 42
TOP_K = (1, 5, 10, 50, 100)


def split_ratings(source: RunDir, target: RunDir, test_fraction: float = 0.2, seed: int = TUTORIAL_SEED) -> dict:
    """Shuffle the source run's interactions; the target run gets the training part as its data."""
    interactions = source.read_parquet(INTERACTIONS_FILE)
    if pc.any(pc.is_null(interactions[RATING_COL])).as_py():
        raise InputDataError("protocol 2 needs explicit ratings on every interaction; this data has none or some")
    order = np.random.default_rng(seed).permutation(interactions.num_rows)
    n_test = round(interactions.num_rows * test_fraction)
    target.write_parquet(INTERACTIONS_FILE, interactions.take(np.sort(order[n_test:])))
    target.write_parquet(ITEMS_FILE, source.read_parquet(ITEMS_FILE))
    target.write_parquet(TEST_RATINGS_FILE, interactions.take(np.sort(order[:n_test])))
    return {"train": interactions.num_rows - n_test, "test": n_test}


def popularity_top_k(run: RunDir) -> dict[str, float]:
    """The same accuracy for ranking every movie by its number of training ratings."""
    train, test = run.read_parquet(INTERACTIONS_FILE), run.read_parquet(TEST_RATINGS_FILE)
    counts = pc.value_counts(train[ITEM_COL]).to_pylist()
    by_count = sorted(counts, key=lambda entry: -entry["counts"])
    rank_of = {entry["values"]: rank for rank, entry in enumerate(by_count)}
    ranks = np.asarray([rank_of.get(item, np.iinfo(np.int64).max) for item in test[ITEM_COL].to_pylist()])
    return {f"top_{k}": float((ranks < k).mean()) for k in TOP_K}


def evaluate_tfrs_protocol(run: RunDir, model_folder, batch_size: int = 512) -> dict[str, float]:
    """Top-K accuracy (with and without the user's seen movies) and, if the model has a rating head, RMSE."""
    import tensorflow as tf

    splits = LeaveOneOutSplits.load(run)
    test: pa.Table = run.read_parquet(TEST_RATINGS_FILE)
    model = SequentialRecommender.from_folder(model_folder)
    row_of_user = {user: row for row, user in enumerate(splits.user_ids)}
    user_rows = np.asarray([row_of_user.get(user, -1) for user in test[USER_COL].to_pylist()])
    if (user_rows < 0).any():
        raise InputDataError(f"{int((user_rows < 0).sum())} test ratings belong to users without training history")
    targets = np.asarray([model.index_of.get(item, 0) for item in test[ITEM_COL].to_pylist()])
    ratings = test[RATING_COL].to_numpy().astype(np.float64)
    histories = splits.padded_histories(0, splits.max_length)
    seen = splits.padded_histories(0, int(splits.lengths.max()))

    # One query per user, not per test rating: a user has about 20 test ratings on MovieLens-100K.
    # The user's whole training history gets the model's repeat offset, not only the newest max_length items.
    batches = [slice(start, start + batch_size) for start in range(0, len(histories), batch_size)]
    user_scores = np.concatenate([model.score_indices(histories[rows], seen[rows]) for rows in batches])
    ranks = {"all": [], "unseen": []}
    for start in range(0, len(targets), batch_size):
        rows, batch_targets = user_rows[start : start + batch_size], targets[start : start + batch_size]
        scores = user_scores[rows].astype(np.float64)
        scores[:, 0] = -np.inf
        for key, ranked in (("all", scores), ("unseen", exclude_seen(scores, seen[rows]))):
            # A movie unknown to the model (index 0) is ranked last: a miss at every K.
            ranks[key].append(
                np.where(batch_targets > 0, ranks_of_targets(ranked, batch_targets), np.iinfo(np.int64).max)
            )
    metrics = {}
    for key, suffix in (("all", ""), ("unseen", "_unseen")):
        joined = np.concatenate(ranks[key])
        metrics.update({f"top_{k}{suffix}": float((joined < k).mean()) for k in TOP_K})

    signatures = tf.saved_model.load(f"{model_folder}/{ARTIFACT_FILES[SAVED_MODEL]}").signatures
    if "rating" in signatures:
        predicted = np.empty(len(targets))
        for start in range(0, len(targets), batch_size):
            batch = slice(start, start + batch_size)
            outputs = signatures["rating"](
                history=tf.constant(histories[user_rows[batch]], tf.int32),
                item=tf.constant(np.maximum(targets[batch], 1), tf.int32),
            )
            predicted[batch] = next(iter(outputs.values())).numpy()
        predicted = np.where(targets > 0, predicted, splits.mean_training_rating())
        metrics["rmse"] = float(np.sqrt(np.mean((predicted - ratings) ** 2)))
    return metrics

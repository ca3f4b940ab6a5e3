"""Full-ranking leave-one-out metrics on hand-made score matrices."""

from __future__ import annotations

import numpy as np
import pytest

from recsys_tasks.contracts.metrics import (
    CUTOFFS,
    SCORES_PER_BATCH,
    evaluate_scores,
    exclude_seen,
    ranks_of_targets,
    summarise_ranks,
)

N_ITEMS = 30


def constant_scorer(inputs: np.ndarray) -> np.ndarray:
    return np.ones((len(inputs), N_ITEMS + 1))


def perfect_scorer(inputs: np.ndarray) -> np.ndarray:
    """Scores the item in each row's first input column (the target, by construction) above everything else."""
    scores = np.zeros((len(inputs), N_ITEMS + 1))
    scores[np.arange(len(inputs)), inputs[:, 0]] = 10.0
    return scores


def random_scorer(seed: int):
    """A fixed random score per (input row id, item), independent of how rows are batched."""
    table = np.random.default_rng(seed).normal(size=(1000, N_ITEMS + 1))

    def score(inputs: np.ndarray) -> np.ndarray:
        return table[inputs[:, 0]]

    return score


def no_history(rows: int) -> np.ndarray:
    return np.zeros((rows, 1), dtype=np.int64)


def test_exclude_seen_sets_history_and_padding_to_minus_infinity() -> None:
    scores = np.arange(12, dtype=np.float32).reshape(2, 6)
    seen = np.array([[0, 2, 4], [0, 0, 5]])

    masked = exclude_seen(scores, seen)

    expected = np.array([[-np.inf, 1, -np.inf, 3, -np.inf, 5], [-np.inf, 7, 8, 9, 10, -np.inf]])
    np.testing.assert_array_equal(masked, expected)
    assert masked.dtype == np.float64
    assert scores[0, 2] == 2, "the input scores must not be modified"


def test_ranks_are_zero_based_counts_of_better_items() -> None:
    scores = np.array([[-np.inf, 0.1, 0.9, 0.5, 0.3], [-np.inf, 0.4, 0.3, 0.2, 0.1]])

    np.testing.assert_array_equal(ranks_of_targets(scores, np.array([3, 4])), [1, 3])


@pytest.mark.parametrize("target", [1, 2, 7, N_ITEMS])
def test_ties_are_broken_towards_the_higher_index(target: int) -> None:
    # A constant scorer: every item with a higher index than the target is ranked before it.
    scores = exclude_seen(np.ones((1, N_ITEMS + 1)), no_history(1))

    assert ranks_of_targets(scores, np.array([target]))[0] == N_ITEMS - target


def test_a_constant_scorer_gets_no_credit_for_ties() -> None:
    targets = np.arange(1, N_ITEMS + 1)

    metrics = evaluate_scores(constant_scorer, no_history(N_ITEMS), no_history(N_ITEMS), targets, N_ITEMS)

    # Ties go to the higher index, so only the k highest targets sit in the top k.
    assert metrics["hr_at_5"] == pytest.approx(5 / N_ITEMS)
    assert metrics["hr_at_10"] == pytest.approx(10 / N_ITEMS)
    assert metrics["mrr"] == pytest.approx(np.mean(1 / targets))


def test_a_perfect_scorer_gets_every_metric_at_one() -> None:
    targets = np.arange(1, N_ITEMS + 1)
    inputs = targets[:, None]

    metrics = evaluate_scores(perfect_scorer, inputs, no_history(N_ITEMS), targets, N_ITEMS)

    for k in CUTOFFS:
        assert metrics[f"hr_at_{k}"] == 1.0
        assert metrics[f"ndcg_at_{k}"] == 1.0
    assert metrics["recall_at_20"] == 1.0
    assert metrics["mrr"] == 1.0


def test_ndcg_of_a_target_at_rank_two_is_one_half() -> None:
    metrics = summarise_ranks(np.array([2]), recommended=np.arange(1, 11), n_items=N_ITEMS)

    assert metrics["ndcg_at_5"] == pytest.approx(1 / np.log2(4)) == pytest.approx(0.5)
    assert metrics["hr_at_5"] == 1.0
    assert metrics["mrr"] == pytest.approx(1 / 3)


def test_hand_computed_metrics_for_several_users() -> None:
    ranks = np.array([0, 2, 7, 15, 40])

    metrics = summarise_ranks(ranks, recommended=np.arange(1, 11), n_items=N_ITEMS)

    assert metrics["hr_at_5"] == pytest.approx(2 / 5)
    assert metrics["hr_at_10"] == pytest.approx(3 / 5)
    assert metrics["hr_at_20"] == pytest.approx(4 / 5)
    assert metrics["ndcg_at_10"] == pytest.approx((1 + 0.5 + 1 / np.log2(9)) / 5)
    assert metrics["ndcg_at_20"] == pytest.approx((1 + 0.5 + 1 / np.log2(9) + 1 / np.log2(17)) / 5)
    assert metrics["mrr"] == pytest.approx(np.mean([1, 1 / 3, 1 / 8, 1 / 16, 1 / 41]))


def test_history_items_cannot_outrank_the_target() -> None:
    # Items 1..5 score highest, but they are the user's history, so the target (item 6) ranks first.
    scores = np.concatenate([[0.0], np.linspace(2, 1, N_ITEMS)])[None, :]
    history = np.array([[1, 2, 3, 4, 5]])

    metrics = evaluate_scores(lambda _: scores, history, history, np.array([6]), N_ITEMS)

    assert metrics["hr_at_5"] == 1.0
    assert metrics["mrr"] == 1.0


@pytest.mark.parametrize(
    ("recommended", "expected"),
    [
        (np.tile(np.arange(1, 11), 4), 10 / N_ITEMS),
        (np.arange(1, 31), 1.0),
        (np.array([3, 3, 3, 4]), 2 / N_ITEMS),
    ],
)
def test_coverage_counts_distinct_recommended_items(recommended: np.ndarray, expected: float) -> None:
    metrics = summarise_ranks(np.zeros(4, dtype=np.int64), recommended, N_ITEMS)

    assert metrics["coverage_at_10"] == pytest.approx(expected)


def test_coverage_of_evaluate_scores_counts_each_rows_top_ten() -> None:
    # Row r prefers items r+1 .. r+10 (in index order), so three rows shifted by 10 cover all 30 items.
    def shifted_scorer(inputs: np.ndarray) -> np.ndarray:
        scores = np.zeros((len(inputs), N_ITEMS + 1))
        for row, offset in enumerate(inputs[:, 0]):
            scores[row, offset + 1 : offset + 11] = 1.0
        return scores

    offsets = np.array([[0], [10], [20], [0]])

    metrics = evaluate_scores(shifted_scorer, offsets, no_history(4), np.array([1, 11, 21, 5]), N_ITEMS)

    assert metrics["coverage_at_10"] == pytest.approx(1.0)
    assert metrics["hr_at_10"] == 1.0


def test_batch_size_does_not_change_the_result() -> None:
    rng = np.random.default_rng(0)
    rows = 50
    inputs = np.arange(rows)[:, None]
    seen = rng.integers(0, N_ITEMS + 1, size=(rows, 4))
    targets = rng.integers(1, N_ITEMS + 1, size=rows)
    score = random_scorer(seed=1)

    one_by_one = evaluate_scores(score, inputs, seen, targets, N_ITEMS, batch_size=1)
    all_at_once = evaluate_scores(score, inputs, seen, targets, N_ITEMS, batch_size=1000)
    uneven = evaluate_scores(score, inputs, seen, targets, N_ITEMS, batch_size=7)

    assert one_by_one == pytest.approx(all_at_once)
    assert uneven == pytest.approx(all_at_once)
    assert 0 < all_at_once["hr_at_20"] < 1


def test_a_large_catalogue_is_ranked_a_few_users_at_a_time() -> None:
    n_items = SCORES_PER_BATCH // 3  # 1.4 million items: two users' scores fit in a batch
    batch_rows = []

    def score(inputs: np.ndarray) -> np.ndarray:
        batch_rows.append(len(inputs))
        scores = np.zeros((len(inputs), n_items + 1), np.float32)
        scores[np.arange(len(inputs)), inputs[:, 0]] = 1.0
        return scores

    targets = np.array([5, 70, 900, 12_000, n_items])
    metrics = evaluate_scores(score, targets[:, None], np.zeros((5, 1), np.int64), targets, n_items)

    assert batch_rows == [2, 2, 1]
    assert metrics["hr_at_5"] == 1.0


def test_coverage_never_counts_excluded_items() -> None:
    n_items = 12
    history = np.arange(1, 9)[None, :]  # 8 of 12 items seen: only items 9..12 can be recommended
    scores = np.random.default_rng(0).normal(size=(1, n_items + 1))

    metrics = evaluate_scores(lambda _: scores, history, history, np.array([10]), n_items)

    assert metrics["coverage_at_10"] == pytest.approx(4 / n_items)

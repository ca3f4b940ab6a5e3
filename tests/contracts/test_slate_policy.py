"""Serving policies: exact propensities that sum to one per position, and draws reproducible from the request id."""

import uuid

import numpy as np
import pytest

from recsys_tasks.contracts.slate_policy import SlatePolicy, request_seed

EXPLORING = SlatePolicy("epsilon_greedy", exploration=0.2, candidates=6)


@pytest.mark.parametrize("policy", [SlatePolicy(), EXPLORING, SlatePolicy("epsilon_greedy", 1.0, 4)])
def test_each_positions_probabilities_sum_to_one(policy):
    k, ranked = 3, policy.candidates_for(3, available=50)

    distribution = policy.distribution(k, ranked)

    assert distribution.shape == (ranked, k)
    np.testing.assert_allclose(distribution.sum(axis=0), 1.0)


def test_greedy_shows_the_top_k_in_order_for_sure():
    slate = SlatePolicy().choose(k=4, ranked=4, seed=1)

    assert slate.chosen.tolist() == [0, 1, 2, 3] and slate.propensities.tolist() == [1.0] * 4
    assert not slate.explored and slate.ranked_needed(k=4, candidates=20) == 4
    assert SlatePolicy().candidates_for(4, available=100) == 4


def test_epsilon_greedy_draws_from_the_top_candidates_and_logs_exact_propensities():
    k, ranked = 3, EXPLORING.candidates_for(3, available=50)
    shown = np.zeros((ranked, k))
    draws = 20_000
    explored = 0
    for seed in range(draws):
        slate = EXPLORING.choose(k, ranked, seed)
        assert len(set(slate.chosen.tolist())) == k
        assert slate.ranked_needed(k, ranked) == (ranked if slate.explored else k)
        assert slate.explored or slate.chosen.tolist() == [0, 1, 2]  # only an explored slate needs all candidates
        explored += slate.explored
        expected = EXPLORING.distribution(k, ranked)[slate.chosen, np.arange(k)]
        np.testing.assert_allclose(slate.propensities, expected)
        shown[slate.chosen, np.arange(k)] += 1

    assert abs(explored / draws - EXPLORING.exploration) <= 4 * np.sqrt(0.2 * 0.8 / draws)
    # The logged propensities are the frequencies the draws produce (4 standard errors at most).
    truth = EXPLORING.distribution(k, ranked)
    assert np.all(np.abs(shown / draws - truth) <= 4 * np.sqrt(truth * (1 - truth) / draws) + 1e-12)


def test_the_same_request_id_draws_the_same_slate():
    request_id = str(uuid.uuid4())
    slates = [EXPLORING.choose(3, 6, request_seed(request_id)).chosen.tolist() for _ in range(2)]

    assert slates[0] == slates[1]


def test_candidates_never_exceed_what_is_left_to_recommend():
    assert EXPLORING.candidates_for(k=3, available=4) == 4
    assert EXPLORING.candidates_for(k=10, available=50) == 10

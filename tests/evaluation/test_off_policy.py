"""Off-policy estimators on cases small enough to compute by hand, and on a seeded simulated bandit."""

import numpy as np
import pytest

from recsys_tasks.errors import InputDataError
from recsys_tasks.evaluation.off_policy import (
    LoggedDecisions,
    TargetPolicy,
    estimate_difference,
    estimate_policy_value,
    on_policy_value,
)

# Two slates of two positions. The target policy's choices per row, and what it gives the logged item:
# row 0: 10 for sure (w = 1 / 0.5 = 2); row 1: 11 or 12 evenly (w = 0.5 / 0.25 = 2);
# row 2: 12 or 10 at 0.8 / 0.2 (w = 0.2 / 0.5 = 0.4); row 3: 12 for sure (w = 1 / 0.5 = 2).
HAND = LoggedDecisions(
    slate=np.array([0, 0, 1, 1]),
    position=np.array([0, 1, 0, 1]),
    action=np.array([10, 11, 10, 12]),
    reward=np.array([1.0, 0.0, 0.0, 1.0]),
    propensity=np.array([0.5, 0.25, 0.5, 0.5]),
)
HAND_TARGET = TargetPolicy(
    actions=np.array([[10, 11], [11, 12], [12, 10], [12, 13]]),
    probabilities=np.array([[1.0, 0.0], [0.5, 0.5], [0.8, 0.2], [1.0, 0.0]]),
)


def test_ips_and_snips_match_the_hand_computed_values():
    estimates = estimate_policy_value(HAND, HAND_TARGET, estimators=("ips", "snips"))

    assert estimates["ips"].value == pytest.approx((2 * 1 + 2 * 0 + 0.4 * 0 + 2 * 1) / 4)
    assert estimates["snips"].value == pytest.approx(4 / (2 + 2 + 0.4 + 2))


def test_doubly_robust_matches_the_hand_computed_value():
    # Reward model fitted on all four rows: each position's rate is 0.5; an item's rate at a position is
    # (clicks + 20 × 0.5) / (shows + 20), so (10, top) = 11/22, (11, second) = 10/21, (12, second) = 11/21, and
    # items never logged at a position get 0.5. Per row: E_target[q] + w (r − q(logged)).
    terms = [0.5 + 2 * (1 - 0.5), 0.5 + 2 * (0 - 10 / 21), 0.5 + 0.4 * (0 - 0.5), 11 / 21 + 2 * (1 - 11 / 21)]

    estimate = estimate_policy_value(HAND, HAND_TARGET, estimators=("dr",), folds=1)["dr"]

    assert estimate.value == pytest.approx(sum(terms) / 4)


def test_the_logging_policy_evaluated_off_policy_is_its_on_policy_value():
    itself = TargetPolicy(actions=HAND.action[:, None], probabilities=HAND.propensity[:, None])

    estimates = estimate_policy_value(HAND, itself, estimators=("ips", "snips"))

    # Weights below one (the logging policy had other choices) scale IPS; with the policy's full distribution
    # every weight would be one. SNIPS normalises them away.
    assert estimates["snips"].value == pytest.approx(on_policy_value(HAND).value)


# Clicks in the simulated bandit: item i at position j is clicked with probability ITEM_RATE[i] × POSITION_BIAS[j].
ITEM_RATE, POSITION_BIAS = np.array([0.05, 0.1, 0.2, 0.3, 0.4]), np.array([1.0, 0.5])
# The policy that always shows item 4 on top and item 3 below, per shown item.
BEST_VALUE = (ITEM_RATE[4] * POSITION_BIAS[0] + ITEM_RATE[3] * POSITION_BIAS[1]) / 2


def simulated_bandit(slates: int, seed: int) -> LoggedDecisions:
    """Uniformly random slates of 2 of 5 items, clicked as ITEM_RATE × POSITION_BIAS says."""
    rng = np.random.default_rng(seed)
    shown = np.stack([rng.permutation(5)[:2] for _ in range(slates)])
    clicks = rng.random(shown.shape) < ITEM_RATE[shown] * POSITION_BIAS
    return LoggedDecisions(
        slate=np.repeat(np.arange(slates), 2),
        position=np.tile(np.arange(2), slates),
        action=shown.ravel(),
        reward=clicks.ravel().astype(float),
        propensity=np.full(2 * slates, 1 / 5),  # P(item at a position) of a uniform random slate
    )


def test_each_estimator_recovers_a_known_policy_value_within_its_interval():
    logged = simulated_bandit(slates=10_000, seed=7)
    best = TargetPolicy(
        actions=np.where(logged.position == 0, 4, 3)[:, None], probabilities=np.ones((len(logged.action), 1))
    )

    estimates = estimate_policy_value(logged, best, confidence=0.99, seed=3)

    for name, estimate in estimates.items():
        assert estimate.lower <= BEST_VALUE <= estimate.upper, (name, estimate, BEST_VALUE)
        assert estimate.upper - estimate.lower < 0.05, (name, estimate)
    assert on_policy_value(logged).upper < BEST_VALUE  # the uniform policy is clearly worse


def test_two_policies_compared_on_the_same_resampled_slates_have_a_narrow_paired_interval():
    logged = simulated_bandit(slates=4_000, seed=5)
    rows = len(logged.action)

    def always(top: int, second: int) -> TargetPolicy:
        return TargetPolicy(np.where(logged.position == 0, top, second)[:, None], np.ones((rows, 1)))

    # The two policies agree below and differ on top: items 4 and 3 there, a true difference of 0.05.
    best, close = always(4, 3), always(3, 3)
    difference = estimate_difference(logged, best, close, confidence=0.99, seed=3)
    separate = {
        name: estimate_policy_value(logged, policy, confidence=0.99, seed=3)
        for name, policy in (("best", best), ("close", close))
    }

    true_difference = (ITEM_RATE[4] - ITEM_RATE[3]) * POSITION_BIAS[0] / 2
    for name, paired in difference.items():
        assert paired.value == pytest.approx(separate["best"][name].value - separate["close"][name].value)
        assert paired.lower <= true_difference <= paired.upper, (name, paired)
        # Narrower than the span between the separate intervals' far ends, the unpaired way to bound it: the
        # bottom position, where the two agree, adds nothing to the paired one.
        unpaired = (
            separate["best"][name].upper
            - separate["close"][name].lower
            - (separate["best"][name].lower - separate["close"][name].upper)
        )
        assert paired.upper - paired.lower < 0.75 * unpaired, (name, paired, unpaired)
    same = estimate_difference(logged, best, best, seed=3)
    assert all((estimate.value, estimate.lower, estimate.upper) == (0, 0, 0) for estimate in same.values())


def test_intervals_narrow_with_more_logged_slates():
    widths = []
    for slates in (1_000, 16_000):
        logged = simulated_bandit(slates, seed=1)
        estimate = on_policy_value(logged)
        widths.append(estimate.upper - estimate.lower)
    assert widths[1] < widths[0] / 2


@pytest.mark.parametrize("propensity", [0.0, 1.5])
def test_a_propensity_outside_zero_one_is_refused(propensity):
    with pytest.raises(InputDataError, match=r"propensity must be in \(0, 1\]"):
        LoggedDecisions(
            slate=np.array([0]),
            position=np.array([0]),
            action=np.array([1]),
            reward=np.array([1.0]),
            propensity=np.array([propensity]),
        )

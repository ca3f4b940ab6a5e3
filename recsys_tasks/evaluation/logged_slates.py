"""Off-policy evaluation on the serving app's own log: what the challenger and the champion would have shown on the
logged histories, and the click-through each would have had, estimated from the slates users actually saw.

Each model is evaluated as it would be served: under the serving policy that logged the slate (greedy, or
epsilon-greedy with the same ε and number of candidates), ranking for the logged history and exclusions. A click
or a purchase on a shown item is reward 1; other shown items 0.
"""

from __future__ import annotations

import logging
from datetime import datetime

import numpy as np

from recsys_tasks.contracts.exported_model import SequentialRecommender
from recsys_tasks.contracts.feedback_store import POSITIVE_EVENTS, LoggedWindow
from recsys_tasks.contracts.reports import CHAMPION, MODEL, OffPolicyReport, PolicyEstimate
from recsys_tasks.contracts.slate_policy import SlatePolicy
from recsys_tasks.evaluation.off_policy import (
    ESTIMATORS,
    LoggedDecisions,
    TargetPolicy,
    estimate_difference,
    estimate_policy_value,
    on_policy_value,
)

log = logging.getLogger(__name__)
# Logged histories ranked per call of a model.
RANKING_BATCH = 256


def logged_decisions(window: LoggedWindow) -> LoggedDecisions:
    """One decision per shown item of the window's slates, rewarded 1 when the user clicked or bought it."""
    slate_index = {request_id: n for n, request_id in enumerate(window.slates["request_id"])}
    positive = window.feedback[window.feedback["event"].isin(POSITIVE_EVENTS)]
    rewarded = set(zip(positive["request_id"], positive["item_id"]))
    items = window.items
    return LoggedDecisions(
        slate=items["request_id"].map(slate_index).to_numpy(),
        position=items["position"].to_numpy() - 1,
        action=items["item_id"].to_numpy(),
        reward=np.array([(rid, item) in rewarded for rid, item in zip(items["request_id"], items["item_id"])], float),
        propensity=items["propensity"].to_numpy(),
    )


def answerable(window: LoggedWindow, model: SequentialRecommender) -> np.ndarray:
    """Which logged slates ``model`` can rank for: their history holds an item it knows and enough are left."""
    keep = []
    for history, exclude, candidates in zip(
        window.slates["history"], window.slates["exclude"], window.slates["candidates"]
    ):
        known = set(model.to_indices(history))
        left = model.n_items - len(known | set(model.to_indices(exclude)))
        keep.append(bool(known) and left >= candidates)
    return np.array(keep, dtype=bool)


def target_policy(window: LoggedWindow, decisions: LoggedDecisions, model: SequentialRecommender) -> TargetPolicy:
    """What ``model`` would show at each logged decision, under the policy that logged its slate."""
    slates = window.slates
    ranked: list[list[int]] = []
    for start in range(0, len(slates), RANKING_BATCH):
        batch = slates.iloc[start : start + RANKING_BATCH]
        answers = model.recommend(batch["history"].tolist(), batch["candidates"].tolist(), batch["exclude"].tolist())
        ranked += [answer.item_ids for answer in answers]
    width = int(slates["candidates"].max())
    actions = np.full((len(decisions.action), width), -1, dtype=np.int64)
    probabilities = np.zeros((len(decisions.action), width))
    # Each slate's policy as it was logged: (name, ε, k, candidates); a distribution per distinct one.
    logged_policies = list(zip(slates["policy"], slates["exploration"], slates["k"], slates["candidates"]))
    distributions: dict[tuple, np.ndarray] = {}
    for row, (slate, position) in enumerate(zip(decisions.slate.tolist(), decisions.position.tolist())):
        name, exploration, k, candidates = key = logged_policies[slate]
        if key not in distributions:
            distributions[key] = SlatePolicy(name, float(exploration), int(candidates)).distribution(k, candidates)
        column = distributions[key][:, position]
        actions[row, : len(column)] = ranked[slate]
        probabilities[row, : len(column)] = column
    return TargetPolicy(actions, probabilities)


def off_policy_report(
    window: LoggedWindow,
    models: dict[str, SequentialRecommender],
    start: datetime,
    end: datetime,
    confidence: float,
    resamples: int,
    seed: int = 0,
) -> OffPolicyReport:
    """Estimates of each model's click-through per shown item from the window's logged slates, with the reason
    when there is nothing to estimate from."""
    empty = OffPolicyReport(window_start=start, window_end=end, slates=len(window.slates))
    if window.slates.empty:
        return empty.model_copy(update={"reason": f"no slate was logged between {start:%Y-%m-%d} and {end:%Y-%m-%d}"})
    if not (window.slates["exploration"] > 0).any():
        return empty.model_copy(
            update={
                "reason": "every logged slate was served greedily: without exploration no other policy's "
                "slates can be estimated (serve with ADAPTREC_SERVING_POLICY=epsilon_greedy)"
            }
        )
    keep = np.logical_and.reduce([answerable(window, model) for model in models.values()])
    kept = set(window.slates["request_id"][keep])
    window = LoggedWindow(
        slates=window.slates[keep].reset_index(drop=True),
        items=window.items[window.items["request_id"].isin(kept)].reset_index(drop=True),
        feedback=window.feedback[window.feedback["request_id"].isin(kept)].reset_index(drop=True),
    )
    if window.slates.empty:
        return empty.model_copy(update={"reason": "no logged history holds an item every model knows"})
    decisions = logged_decisions(window)
    targets = {name: target_policy(window, decisions, model) for name, model in models.items()}
    estimates = {}
    for name, target in targets.items():
        found = estimate_policy_value(decisions, target, ESTIMATORS, confidence, resamples, seed=seed)
        estimates[name] = {estimator: PolicyEstimate(**value.as_dict()) for estimator, value in found.items()}
        log.info(
            "off-policy click-through of %s on %d logged slates: %s",
            name,
            len(window.slates),
            ", ".join(f"{estimator} {value.value:.4f}" for estimator, value in found.items()),
        )
    differences = {}
    if {MODEL, CHAMPION} <= set(targets):
        found = estimate_difference(
            decisions, targets[MODEL], targets[CHAMPION], ESTIMATORS, confidence, resamples, seed=seed
        )
        differences = {estimator: PolicyEstimate(**value.as_dict()) for estimator, value in found.items()}
    return OffPolicyReport(
        window_start=start,
        window_end=end,
        slates=len(keep),
        slates_used=len(window.slates),
        shown=len(decisions.action),
        clicks=int(decisions.reward.sum()),
        logged=PolicyEstimate(**on_policy_value(decisions, confidence, resamples, seed).as_dict()),
        estimates=estimates,
        differences=differences,
    )

"""Promote stage: the metric gate (after TFX's Evaluator "blessing") and the ``champion`` alias.

Checks 1–4 on the same test split of this run, 5 on the serving log:
1. absolute floor: NDCG@10 ≥ ``min_ndcg_at_10``;
2. lift over popularity: NDCG@10 ≥ popularity × (1 + ``min_lift_over_popularity``);
3. no regression: NDCG@10 ≥ champion × (1 − ``max_regression_vs_champion``), skipped without a champion;
4. for an adapted model whose report has both holdouts with the champion ranked on them, the same rule on
   each: ``no_regression_on_fresh`` (users active in the new window) and ``no_regression_on_stability``
   (the others: it must not have forgotten what the champion knew);
5. ``off_policy_vs_champion``, when the serving app logged at least ``off_policy_min_slates`` slates: the lower
   bound of the challenger's estimated click-through on them minus the champion's ≥ −``max_off_policy_regression``
   × the champion's estimate. The bound is paired (both on the same resampled slates): an unpaired one, the
   challenger's own lower bound against the champion's value, rejects a challenger no different from the champion
   until thousands of slates narrow its interval below the tolerance. With fewer slates, no exploration or no
   champion it is skipped, with the reason.
Pass: ``champion`` moves to the new version. Fail: the version is tagged rejected with the reasons
and ``champion`` stays. Either way the decision is recorded as version tags and in the run dir.
"""

from __future__ import annotations

import json
import logging

from mlflow.tracking import MlflowClient

from recsys_tasks.constants import CHAMPION_ALIAS, TAG_GATE_REASONS, TAG_GATE_REPORT, TAG_GATE_STATUS
from recsys_tasks.contracts.layout import DECISION_FILE
from recsys_tasks.contracts.metrics import PRIMARY_METRIC
from recsys_tasks.contracts.registry import version_with_alias
from recsys_tasks.contracts.reports import (
    CHAMPION,
    FRESH,
    MODEL,
    POPULARITY,
    STABILITY,
    EvaluationReport,
    GateCheck,
    GateDecision,
    Registration,
)
from recsys_tasks.errors import RegistryError
from recsys_tasks.registry.config import GateConfig
from recsys_tasks.storage import RunDir

log = logging.getLogger(__name__)


def _holdout_checks(report: EvaluationReport, config: GateConfig) -> list[GateCheck]:
    """No regression against the champion on the fresh and on the stability holdout; none unless both were ranked
    with the champion."""
    if not all(CHAMPION in report.holdouts.get(holdout, {}) for holdout in (FRESH, STABILITY)):
        return []
    checks = []
    for holdout in (FRESH, STABILITY):
        ndcg = report.holdouts[holdout][MODEL][PRIMARY_METRIC]
        champion = report.holdouts[holdout][CHAMPION][PRIMARY_METRIC]
        needed = champion * (1 - config.max_regression_vs_champion)
        users = report.holdout_users.get(holdout)
        checks.append(
            GateCheck(
                name=f"no_regression_on_{holdout}",
                passed=ndcg >= needed,
                observed=ndcg,
                required=needed,
                detail=f"{holdout} holdout ({users if users is not None else '?'} users): NDCG@10 {ndcg:.4f} vs "
                f"champion v{report.champion_version} {champion:.4f} × {1 - config.max_regression_vs_champion:.2f}",
            )
        )
    return checks


def _off_policy_check(report: EvaluationReport, config: GateConfig) -> list[GateCheck]:
    """The challenger's click-through estimated on the serving log against the champion's; skipped, with the reason,
    when there is not enough logged exploration to judge from (or no champion)."""
    off_policy, estimator = report.off_policy, config.off_policy_estimator
    if report.champion_version is None:
        reason = "no champion yet"
    elif off_policy is None:
        reason = "this run read no serving log"
    elif off_policy.reason:
        reason = off_policy.reason
    elif CHAMPION not in off_policy.estimates:
        reason = f"champion v{report.champion_version} cannot rank the logged histories (it predates recommend())"
    elif off_policy.slates_used < config.off_policy_min_slates:
        reason = f"{off_policy.slates_used} logged slates usable, {config.off_policy_min_slates} needed"
    elif not off_policy.differences:
        reason = "the report holds no paired model − champion estimate (evaluated before they were measured)"
    else:
        challenger, champion = off_policy.estimates[MODEL][estimator], off_policy.estimates[CHAMPION][estimator]
        difference = off_policy.differences[estimator]
        allowed = -config.max_off_policy_regression * champion.value
        return [
            GateCheck(
                name="off_policy_vs_champion",
                passed=difference.lower >= allowed,
                observed=difference.lower,
                required=allowed,
                detail=f"{estimator.upper()} click-through on {off_policy.slates_used} logged slates: "
                f"{challenger.value:.4f} vs champion v{report.champion_version} {champion.value:.4f}, difference "
                f"{difference.value:+.4f} [{difference.lower:+.4f}, {difference.upper:+.4f}] vs "
                f"−{config.max_off_policy_regression:.2f} × {champion.value:.4f}",
            )
        ]
    return [
        GateCheck(
            name="off_policy_vs_champion",
            passed=True,
            skipped=True,
            observed=0.0,
            required=0.0,
            detail=f"skipped: {reason}",
        )
    ]


def gate_checks(report: EvaluationReport, config: GateConfig) -> list[GateCheck]:
    """Every check of the gate on ``report``, each with its observed and required NDCG@10."""
    ndcg = report.metrics[MODEL][PRIMARY_METRIC]
    popularity = report.metrics[POPULARITY][PRIMARY_METRIC]
    needed_over_popularity = popularity * (1 + config.min_lift_over_popularity)
    checks = [
        GateCheck(
            name="absolute_floor",
            passed=ndcg >= config.min_ndcg_at_10,
            observed=ndcg,
            required=config.min_ndcg_at_10,
            detail=f"NDCG@10 {ndcg:.4f} vs floor {config.min_ndcg_at_10:.4f}",
        ),
        GateCheck(
            name="lift_over_popularity",
            passed=ndcg >= needed_over_popularity,
            observed=ndcg,
            required=needed_over_popularity,
            detail=f"NDCG@10 {ndcg:.4f} vs popularity {popularity:.4f} × {1 + config.min_lift_over_popularity:.2f}",
        ),
    ]
    if CHAMPION in report.metrics:
        champion = report.metrics[CHAMPION][PRIMARY_METRIC]
        needed = champion * (1 - config.max_regression_vs_champion)
        checks.append(
            GateCheck(
                name="no_regression_vs_champion",
                passed=ndcg >= needed,
                observed=ndcg,
                required=needed,
                detail=f"NDCG@10 {ndcg:.4f} vs champion v{report.champion_version} {champion:.4f} "
                f"× {1 - config.max_regression_vs_champion:.2f}",
            )
        )
    return checks + _holdout_checks(report, config) + _off_policy_check(report, config)


def _outcome(check: GateCheck) -> str:
    return "skipped" if check.skipped else "pass" if check.passed else "FAIL"


def promote(
    run: RunDir,
    client: MlflowClient,
    registration: Registration,
    report: EvaluationReport,
    config: GateConfig,
) -> GateDecision:
    name, version = registration.model_name, registration.version
    current = version_with_alias(client, name, CHAMPION_ALIAS)
    current_version = str(current.version) if current else None
    if current_version == version:
        log.info("%s version %s already holds %s (retried task): nothing to do", name, version, CHAMPION_ALIAS)
        return GateDecision(**run.read_json(DECISION_FILE))
    if current_version != report.champion_version:
        raise RegistryError(
            f"{CHAMPION_ALIAS} of {name} moved from version {report.champion_version} to {current_version} after this "
            "run evaluated it; re-run from the evaluate task so the gate compares against the current champion"
        )

    checks = gate_checks(report, config)
    passed = all(check.passed for check in checks)
    reasons = [f"{check.name}: {check.detail} — {_outcome(check)}" for check in checks]
    decision = GateDecision(
        passed=passed,
        reasons=reasons,
        checks=checks,
        model_name=name,
        version=version,
        champion_before=current_version,
        champion_after=version if passed else current_version,
    )
    # The decision is stored first, so a retry after the alias moved can read it back.
    run.write_json(DECISION_FILE, decision.model_dump())
    client.set_model_version_tag(name, version, TAG_GATE_STATUS, "passed" if passed else "rejected")
    client.set_model_version_tag(name, version, TAG_GATE_REASONS, "; ".join(reasons))
    client.set_model_version_tag(name, version, TAG_GATE_REPORT, json.dumps([c.model_dump() for c in checks]))
    if passed:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, version)
        log.info("gate passed: %s version %s is now %s", name, version, CHAMPION_ALIAS)
    else:
        log.warning(
            "gate rejected %s version %s; %s stays at %s. %s", name, version, CHAMPION_ALIAS, current_version, reasons
        )
    return decision

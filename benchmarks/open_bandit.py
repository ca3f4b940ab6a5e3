"""The standard check of off-policy estimators on the Open Bandit Dataset sample.

.venv/bin/python -m benchmarks.open_bandit [--resamples 1000] [--runs 100]   (or `make bench-open-bandit`)

ZOZOTOWN logged 10,000 impressions under each of two policies: uniform random and Bernoulli Thompson sampling
(BTS), 80 items, 3 positions, each row one item shown at one position with its propensity. The estimators of
``recsys_tasks.evaluation.off_policy`` estimate BTS's click-through per impression from the random policy's log;
the truth is BTS's on-policy click-through in its own log. BTS's action distribution is what the Open Bandit
Pipeline uses: the probability of each item at each position when each item's click rate is drawn from the
Beta prior ZOZOTOWN's BTS ran with (``benchmarks/data/zozotown_bts_prior.json``) and the top three are shown,
from ``--simulations`` seeded draws.

Relative error = |estimate − truth| / truth. Its mean and 95% interval come from ``--runs`` bootstrap resamples
of both logs (as the Open Bandit Pipeline's own example reports them); each estimate's interval is the
estimator's bootstrap interval on the full log.

Writes benchmarks/results/open-bandit.{json,md} and the table of the study tagged ``bench-open-bandit``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer

from benchmarks.common import SHARED_DATA, command, console, machine, write_results
from recsys_tasks.evaluation.off_policy import (
    ESTIMATORS,
    LoggedDecisions,
    TargetPolicy,
    estimate_policy_value,
    on_policy_value,
)

DATA = SHARED_DATA / "open-bandit-sample"
PRIOR = Path(__file__).parent / "data" / "zozotown_bts_prior.json"
CAMPAIGN = "all"
POSITIONS = 3
# The Open Bandit Pipeline's example on this sample (evaluate_off_policy_estimators.py, BTS from random,
# campaign all): mean relative errors and 95% intervals it reports, for the estimators both implement.
OBP_REPORTED = {"ips": (1.15873, 0.96190, 1.53333), "dr": (0.992942, 0.71789, 1.35594)}


def read_log(policy: str) -> LoggedDecisions:
    """One policy's log: every row is one impression (OBP's round), its position 0-based."""
    frame = pd.read_csv(DATA / policy / CAMPAIGN / f"{CAMPAIGN}.csv", usecols=lambda c: not c.startswith("user"))
    return LoggedDecisions(
        slate=np.arange(len(frame)),
        position=frame["position"].to_numpy() - 1,
        action=frame["item_id"].to_numpy(),
        reward=frame["click"].to_numpy(dtype=float),
        propensity=frame["propensity_score"].to_numpy(),
    )


def thompson_action_distribution(simulations: int, seed: int) -> np.ndarray:
    """P(item at position) [items, positions] of BTS with ZOZOTOWN's prior: top three of draws from each Beta."""
    prior = json.loads(PRIOR.read_text())[CAMPAIGN]
    alpha, beta = np.array(prior["alpha"]), np.array(prior["beta"])
    rng = np.random.default_rng(seed)
    counts = np.zeros((len(alpha), POSITIONS))
    for chunk in np.array_split(np.arange(simulations), max(1, simulations // 10_000)):
        draws = rng.beta(alpha, beta, size=(len(chunk), len(alpha)))
        top = np.argsort(-draws, axis=1)[:, :POSITIONS]
        for position in range(POSITIONS):
            counts[:, position] += np.bincount(top[:, position], minlength=len(alpha))
    return counts / simulations


def target_for(logged: LoggedDecisions, distribution: np.ndarray) -> TargetPolicy:
    items = np.arange(distribution.shape[0])
    return TargetPolicy(
        actions=np.broadcast_to(items, (len(logged.action), len(items))),
        probabilities=distribution[:, logged.position].T,
    )


def resampled(logged: LoggedDecisions, rng: np.random.Generator) -> LoggedDecisions:
    rows = rng.integers(0, len(logged.action), len(logged.action))
    return LoggedDecisions(
        slate=np.arange(len(rows)),
        position=logged.position[rows],
        action=logged.action[rows],
        reward=logged.reward[rows],
        propensity=logged.propensity[rows],
    )


def main(
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples of each estimate's interval")] = 1000,
    runs: Annotated[int, typer.Option(help="Bootstrap resamples of both logs for the relative error")] = 100,
    simulations: Annotated[int, typer.Option(help="Draws that make BTS's action distribution")] = 100_000,
    seed: int = 12345,
) -> None:
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} is missing: the Open Bandit Dataset sample comes with ../shared/data")
    random_log, bts_log = read_log("random"), read_log("bts")
    distribution = thompson_action_distribution(simulations, seed)
    truth = on_policy_value(bts_log, resamples=resamples, seed=seed)
    estimates = estimate_policy_value(random_log, target_for(random_log, distribution), resamples=resamples, seed=seed)
    console.print(f"BTS on-policy click-through {truth.value:.5f} [{truth.lower:.5f}, {truth.upper:.5f}]")

    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {name: [] for name in ESTIMATORS}
    for run in range(runs):
        logged, own = resampled(random_log, rng), resampled(bts_log, rng)
        value = own.reward.mean()
        found = estimate_policy_value(logged, target_for(logged, distribution), resamples=1, seed=seed + run)
        for name in ESTIMATORS:
            errors[name].append(abs(found[name].value - value) / value)

    result = {
        "data": {
            "campaign": CAMPAIGN,
            "random_impressions": len(random_log.action),
            "random_clicks": int(random_log.reward.sum()),
            "bts_impressions": len(bts_log.action),
            "bts_clicks": int(bts_log.reward.sum()),
        },
        "truth": truth.as_dict(),
        "estimators": {},
        "obp_reported_relative_error": {
            name: dict(zip(("mean", "lower", "upper"), v)) for name, v in OBP_REPORTED.items()
        },
        "settings": {"resamples": resamples, "runs": runs, "simulations": simulations, "seed": seed},
        "machine": machine(),
    }
    lines = [
        "| estimator | estimate | 95% interval | relative error | relative error, mean over resamples [95%] "
        "| OBP's example, same check |",
        "|---|---:|---|---:|---|---|",
    ]
    for name in ESTIMATORS:
        estimate, spread = estimates[name], np.array(errors[name])
        mean, lower, upper = spread.mean(), *np.quantile(spread, [0.025, 0.975])
        reported = OBP_REPORTED.get(name)
        result["estimators"][name] = estimate.as_dict() | {
            "relative_error": abs(estimate.value - truth.value) / truth.value,
            "relative_error_mean": mean,
            "relative_error_lower": lower,
            "relative_error_upper": upper,
        }
        lines.append(
            f"| {name.upper()} | {estimate.value:.5f} | [{estimate.lower:.5f}, {estimate.upper:.5f}] "
            f"| {result['estimators'][name]['relative_error']:.3f} | {mean:.3f} [{lower:.3f}, {upper:.3f}] "
            f"| {f'{reported[0]:.3f} [{reported[1]:.3f}, {reported[2]:.3f}]' if reported else '—'} |"
        )
    data = result["data"]
    markdown = "\n".join(
        [
            *lines,
            "",
            f"Truth: BTS's click-through in its own log, {truth.value:.5f} [{truth.lower:.5f}, {truth.upper:.5f}] "
            f"({data['bts_clicks']} clicks in {data['bts_impressions']:,} impressions). Estimated from the random "
            f"log: {data['random_clicks']} clicks in {data['random_impressions']:,} impressions. Campaign "
            f"`{CAMPAIGN}`; measured on {machine()} with `{command('benchmarks.open_bandit')}`.",
            "",
        ]
    )
    console.print(markdown)
    write_results("open-bandit", result, markdown, "bench-open-bandit")


if __name__ == "__main__":
    typer.run(main)

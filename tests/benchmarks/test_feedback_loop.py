"""One turn of the feedback loop, small: simulated users answer the real `recsys serve`, their clicks come back as
data through the gate, and a worse policy is stopped by the off-policy check on the logged slates alone."""

from __future__ import annotations

import numpy as np
import pyarrow.compute as pc

from benchmarks.feedback_loop import WORSE_RUN, ClickModel, SiteLog, play, reference_click_through, serving
from recsys_tasks.contracts.layout import INTERACTIONS_FILE, VALIDATION_RESULT_FILE
from recsys_tasks.contracts.registry import version_with_alias
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.contracts.tracking import connect
from recsys_tasks.data.config import ColumnMapping
from recsys_tasks.data.sources import read_table
from recsys_tasks.pipeline import run_dir, run_pipeline
from tests.conftest import tiny_champion

SLATES = 300


def share_of_logged_steps_the_truth_expects(users: ClickModel) -> float:
    """Of the logged steps, the share that went to an item the planted truth gives a successor's probability."""
    follows = [
        users.planted.next_item(user, history[step])[history[step + 1] - 1]
        for user, history in users.histories.items()
        for step in range(len(history) - 1)
    ]
    return float(np.mean(np.asarray(follows) > 0.3))


def test_the_planted_truth_is_what_the_synthetic_users_did_until_their_behaviour_changed() -> None:
    # p_follow = 0.8 of the logged steps follow a planted transition (probability 0.4 each).
    assert 0.75 < share_of_logged_steps_the_truth_expects(ClickModel.of()) < 0.85
    # In 2 of the 5 topics users now take other successors: about 2/5 of the followed steps no longer match.
    assert 0.4 < share_of_logged_steps_the_truth_expects(ClickModel.of(changed_topics=2)) < 0.55


def test_knowing_the_change_is_worth_more_than_knowing_the_log_and_both_more_than_popularity() -> None:
    unchanged = reference_click_through(ClickModel.of(), k=5, exploration=0.2, candidates=20)
    changed = reference_click_through(ClickModel.of(changed_topics=2), k=5, exploration=0.2, candidates=20)

    assert unchanged["the users' truth"] == unchanged["the log's truth"]
    assert changed["the users' truth"] > 1.3 * changed["the log's truth"] > 1.3 * 5 * changed["popularity"]


def test_clicks_come_back_through_the_gate_and_a_worse_policy_is_rejected_on_logged_slates(
    tmp_path, trained_tiny_run
) -> None:
    settings = tiny_champion(tmp_path / "home", "first", trained_tiny_run)
    users, site = ClickModel.of(), SiteLog.of(tmp_path / "site-events.parquet")
    with serving(settings.resolved_home, tmp_path / "serve.log", EXPLORATION="0.2") as server:
        played = play(server.url, users, SLATES, 5, np.random.default_rng(0), site)
    assert played.clicks > 0

    # A user who clicked nothing found their next item elsewhere: the site's log has it, as the table source reads.
    assert 0 < len(site.found) < SLATES and len(site.found) + played.clicks >= SLATES
    site.write()
    interactions, items = read_table(str(site.path), ColumnMapping(attributes="attributes"))
    assert interactions.num_rows == site.log.num_rows + len(site.found)
    assert interactions.slice(site.log.num_rows).to_pylist() == site.found
    assert items.select(["item_id", "attributes"]).equals(site.items.select(["item_id", "attributes"]))

    params = {**WORSE_RUN, "feedback": {"days": 1}, "off_policy_min_slates": 100, "finetune_epochs": 1}
    assert params["ranking_weight"] > 0  # the ranking head learns from the items users passed over
    results = run_pipeline(params, "worse", settings)

    # Every slate and click reached the store; the clicks of known users joined the run's interactions.
    feedback = results["ingest"]["feedback"]
    assert (feedback["slates"], feedback["events"]) == (SLATES, {"click": played.clicks})
    run = run_dir("worse", settings)
    interactions = run.read_parquet(INTERACTIONS_FILE)
    assert feedback["positives"] == played.clicks
    assert pc.sum(pc.greater(interactions["timestamp"], 1_750_000_000)).as_py() == played.clicks
    assert {"impressions", "feedback_events", "feedback_statistics"} <= set(
        run.read_json(VALIDATION_RESULT_FILE)["suites"]
    )
    assert LeaveOneOutSplits.load(run).shown_negatives.any()

    # Offline gates are wide open; the logged slates alone say no.
    off_policy = results["evaluate"]["off_policy"]
    assert off_policy["slates_used"] >= 100 and set(off_policy["estimates"]) == {"model", "champion"}
    decision = results["promote"]
    checks = {check["name"]: check for check in decision["checks"]}
    assert not decision["passed"] and not checks["off_policy_vs_champion"]["passed"]
    assert all(check["passed"] for name, check in checks.items() if name != "off_policy_vs_champion")
    assert str(version_with_alias(connect(settings), settings.model_name).version) == decision["champion_before"]

"""The end-of-run summary of an adapt run: its training mode and reason, and its holdouts against the champion."""

from __future__ import annotations

import pytest

from recsys_tasks.contracts.layout import DECISION_FILE, REGISTRATION_FILE, REPORT_FILE, VALIDATION_SUMMARY_FILE
from recsys_tasks.reporting import build_summary, render_summary
from recsys_tasks.settings import Settings
from recsys_tasks.storage import RunDir
from tests.conftest import write_training_plan


def figures(value: float) -> dict[str, float]:
    return {m: value for m in ("hr_at_10", "ndcg_at_10", "recall_at_20", "mrr", "coverage_at_10")}


@pytest.fixture
def finished_run(tmp_path) -> RunDir:
    """A run folder holding what the stages the summary reads leave (an adapted model's report, with holdouts)."""
    run = RunDir(str(tmp_path / "runs" / "night-5"))
    run.write_json(
        REPORT_FILE,
        {
            "metrics": {"model": figures(0.2), "champion": figures(0.19), "popularity": figures(0.05)},
            "users": 400,
            "items": 200,
            "holdouts": {
                "fresh": {"model": figures(0.3141), "champion": figures(0.2718)},
                "stability": {"model": figures(0.1234), "champion": figures(0.1321)},
            },
            "holdout_users": {"fresh": 1_150, "stability": 250},
        },
    )
    run.write_json(DECISION_FILE, {"passed": False, "reasons": ["x"], "champion_before": "4", "champion_after": "4"})
    run.write_json(REGISTRATION_FILE, {"model_name": "m", "version": "5"})
    run.write_json(
        VALIDATION_SUMMARY_FILE,
        {"evaluated": 21, "drift": None, "drift_baseline": "first run", "data_docs_uri": "x"},
    )
    return run


def test_an_adapt_run_shows_its_mode_reason_and_holdouts(finished_run, tmp_path):
    write_training_plan(finished_run.uri, mode="adapt", reason="12% of the rows are new", champion_version="4")

    summary = build_summary(finished_run, Settings(home=tmp_path), "night-5")
    text = render_summary(summary)

    assert summary["training"] == {"mode": "adapt", "reason": "12% of the rows are new"}
    assert "Training: adapt — 12% of the rows are new" in text
    lines = text.splitlines()
    fresh = next(line for line in lines if "│ fresh" in line)
    assert "1,150" in fresh and "│ model" in fresh and "0.3141" in fresh
    assert any("│ stability" in line and "│ champion" in line and "0.1321" in line for line in lines)
    # The new model's row comes first in each holdout, as in the main table.
    assert text.index("0.3141") < text.index("0.2718") < text.index("0.1234") < text.index("0.1321")


def test_a_run_without_a_plan_or_holdouts_shows_neither(finished_run, tmp_path):
    report = finished_run.read_json(REPORT_FILE)
    finished_run.write_json(REPORT_FILE, {**report, "holdouts": {}, "holdout_users": {}})

    summary = build_summary(finished_run, Settings(home=tmp_path), "night-5")
    text = render_summary(summary)

    assert summary["training"] is None and summary["holdouts"] == {}
    assert "Training:" not in text and "Holdouts" not in text and "stability" not in text
    assert "Gate REJECTED: m version 5" in text
    assert "Serving log" not in text


def test_the_serving_log_s_estimates_or_the_reason_there_are_none_are_shown(finished_run, tmp_path):
    report = finished_run.read_json(REPORT_FILE)
    estimate = {"snips": {}, "dr": {}}
    estimates = {
        "model": {**estimate, "ips": {"value": 0.0521, "lower": 0.0402, "upper": 0.0633}},
        "champion": {**estimate, "ips": {"value": 0.0330, "lower": 0.0301, "upper": 0.0362}},
    }
    finished_run.write_json(
        REPORT_FILE,
        {**report, "off_policy": {"slates_used": 2_500, "clicks": 410, "shown": 12_500, "estimates": estimates}},
    )
    text = render_summary(build_summary(finished_run, Settings(home=tmp_path), "night-5"), width=200)
    assert "Serving log: 2,500 logged slates, 410 clicks on 12,500 shown items; IPS click-through model 0.0521" in text
    assert "champion 0.0330 [0.0301, 0.0362]" in text

    finished_run.write_json(REPORT_FILE, {**report, "off_policy": {"estimates": {}, "reason": "no slate was logged"}})
    text = render_summary(build_summary(finished_run, Settings(home=tmp_path), "night-5"))
    assert "Serving log: no off-policy estimates (no slate was logged)" in text

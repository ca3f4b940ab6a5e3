"""The pipeline factory: stage lookup, the end-of-run summary, and what it hands an incremental run's stages."""

from __future__ import annotations

import pytest

from recsys_tasks.contracts.event_store import EventStore
from recsys_tasks.errors import ConfigError
from recsys_tasks.pipeline import STAGES, run_stage
from recsys_tasks.reporting import render_summary
from recsys_tasks.settings import Settings


def test_an_unknown_stage_is_refused():
    with pytest.raises(ConfigError, match="unknown stage 'deploy'"):
        run_stage("deploy", {}, "run")
    assert list(STAGES)[0] == "ingest" and list(STAGES)[-1] == "report"


def test_the_summary_shows_the_model_first_and_the_gate_reasons():
    summary = {
        "run_id": "r1",
        "users": 10,
        "items": 5,
        "metrics": {
            name: {m: value for m in ("hr_at_10", "ndcg_at_10", "recall_at_20", "mrr", "coverage_at_10")}
            for name, value in (("champion", 0.3), ("model", 0.2), ("popularity", 0.1))
        },
        "data_gate": {"expectations": 21, "drift": {"new_item_rate": 0.25}, "baseline": "run r0", "data_docs": "x"},
        "gate": {"passed": False, "reasons": ["no_regression_vs_champion: FAIL"], "champion_before": "3"},
        "registration": {"model_name": "m", "version": "4"},
        "champion_uri": "models:/m@champion",
        "tracking_uri": "sqlite:///x.db",
        "how_to_look": {"MLflow UI": "make mlflow-ui"},
    }
    text = render_summary(summary)
    assert text.index("│ model") < text.index("│ popularity") < text.index("│ champion")
    assert "Gate REJECTED: m version 4 — champion stays at 3" in text
    assert "no_regression_vs_champion: FAIL" in text
    assert "Data gate: all 21 expectations passed; drift: new item rate 0.250" in text


def test_the_drifting_stream_runs_a_period_a_run_through_ingest_and_the_gate(adaptrec_home):
    """The factory hands ingest and validate the data set's event store: each run adds the next accepted period."""
    settings = Settings(home=adaptrec_home)
    params = {"synthetic_size": "drifting"}
    for run_id, period in (("week-0", 0), ("week-1", 1)):
        ingested = run_stage("ingest", params, run_id, settings)
        validated = run_stage("validate", params, run_id, settings, upstream=ingested)
        assert ingested["window"]["period"] == validated["accepted_period"] == period

    store = EventStore(settings.resolved_events_uri, "synthetic-drifting-seed0")
    assert [partition.accepted for partition in store.partitions()] == [True, True]
    assert ingested["rows"] == store.read().num_rows and ingested["window"]["new_items"] == 20

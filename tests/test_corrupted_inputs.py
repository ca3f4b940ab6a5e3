"""Every kind of broken input stops the run at ingest or validate, says what is wrong, and changes nothing."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from recsys_tasks.constants import TAG_AIRFLOW_RUN_ID
from recsys_tasks.settings import Settings
from recsys_tasks.validation.drift import SnapshotStore
from tests.corrupted_inputs import CORPUS, clean_rows, run_corruption, stop_of, tab_separated, write_movielens


def test_the_clean_base_passes(tmp_path):
    write_movielens(tmp_path / "data", tab_separated(clean_rows()))
    params = {"data_source": "movielens-100k", "data_path": str(tmp_path / "data")}
    assert stop_of(params, "clean", Settings(home=tmp_path / "home")) == ("passed", "")


@pytest.mark.parametrize("corruption", CORPUS, ids=[c.kind for c in CORPUS])
def test_broken_input_stops_early_with_a_named_problem(tmp_path, corruption):
    settings = Settings(home=tmp_path / "home")
    store = SnapshotStore(settings.resolved_snapshots_uri)
    key = f"movielens-100k-{tmp_path / 'data'}"
    before = store.load(key)

    stage, message = run_corruption(corruption, tmp_path / "data", settings)

    assert (stage, "\n" in message) == (corruption.stops_at, False), message
    assert corruption.message in message
    assert "\t" not in message  # no raw input line (with its raw user id) is echoed
    run = settings.resolved_home / "runs" / "corrupted"
    assert not (run / "augment").exists()
    client = MlflowClient(settings.resolved_tracking_uri)
    assert client.search_registered_models() == []
    if stage == "validate":  # the failed result is on the run's MLflow run, for whoever looks there
        (mlflow_run,) = client.search_runs(
            [client.get_experiment_by_name(settings.experiment_name).experiment_id],
            filter_string=f"tags.`{TAG_AIRFLOW_RUN_ID}` = 'corrupted'",
        )
        logged = {artifact.path for artifact in client.list_artifacts(mlflow_run.info.run_id, "validation")}
        assert logged == {"validation/result.json", "validation/data_docs"}
    after = store.load(key)
    # The accepted baseline (if the case made one) is still the clean run's, never the broken one.
    assert (after[0].run_id if after else None) == ("baseline" if corruption.needs_accepted_baseline else None)
    assert before is None

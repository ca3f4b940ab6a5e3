"""Every kind of broken input stops the run at ingest or validate, says what is wrong, and changes nothing.

Each case runs ``recsys ingest``, ``validate`` and ``augment`` as commands, as a person would; well-formed
variants (byte-order marks, CRLF, unicode ids, ISO times, gzip) must pass all three.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from recsys_tasks.contracts.layout import SEQUENCES_FILE
from recsys_tasks.params import PipelineParams
from recsys_tasks.settings import Settings
from recsys_tasks.storage import RunDir
from recsys_tasks.validation.drift import SnapshotStore
from tests.corrupted_inputs import CORPUS, PASSED, RAW_USER, run_case


@pytest.fixture(scope="module")
def home(tmp_path_factory):
    """One AdaptRec home for the corpus: every case has its own data folder (so its own data set) and run id."""
    return tmp_path_factory.mktemp("corpus-home")


@pytest.mark.usefixtures("no_inherited_mlflow")
@pytest.mark.parametrize("case", CORPUS, ids=[case.kind for case in CORPUS])
def test_each_input_stops_where_it_must_with_a_named_problem(tmp_path, home, case, record_property):
    run_id = f"case-{CORPUS.index(case)}"
    outcome = run_case(case, tmp_path / "data", home, run_id)
    # What the case did, before any assertion: benchmarks/corrupted_inputs.py runs this test and tabulates it.
    for name, value in (
        ("kind", case.kind),
        ("stopped_at", outcome.stage),
        ("exit_code", outcome.exit_code),
        ("message", outcome.message),
        ("folders", [str(tmp_path / "data"), str(home)]),
    ):
        record_property(name, value)
    settings = Settings(home=home)

    assert outcome.stage == case.stops_at, outcome.message
    assert "Traceback" not in outcome.output
    assert RAW_USER not in outcome.output  # no raw user id is echoed, whatever went wrong
    if case.stops_at != PASSED:
        assert outcome.exit_code == 2
        assert case.message in outcome.message, outcome.message
        augment_folder = Path(RunDir.for_run(settings.resolved_runs_uri, run_id).path(SEQUENCES_FILE)).parent
        assert not augment_folder.exists()  # the augment stage wrote nothing, not even a part
    store = settings.resolved_tracking_uri  # for the registry too: an earlier test may have set a global one
    assert MlflowClient(tracking_uri=store, registry_uri=store).search_registered_models() == []
    dataset_key = PipelineParams.parse(outcome.params).dataset_key()
    accepted = SnapshotStore(settings.resolved_snapshots_uri).load(dataset_key)
    # Only data that passed the gate becomes the accepted snapshot; a broken run leaves the baseline's.
    expected = run_id if case.stops_at in (PASSED, "augment") else f"{run_id}-baseline" if case.baseline else None
    assert (accepted[0].run_id if accepted else None) == expected

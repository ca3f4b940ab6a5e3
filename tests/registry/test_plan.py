"""The plan fetches only the champion's training state from the registry, and tells a version without one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, TRAINING_STATE
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
from recsys_tasks.contracts.tracking import connect
from recsys_tasks.contracts.training_state import read_state
from recsys_tasks.pipeline import run_dir, run_stage
from recsys_tasks.registry.plan import download_training_state
from tests.conftest import TINY_PARAMS, home_with_trained_run


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory, trained_tiny_run):
    """Version 1 registered with its training state, version 2 as registered before versions carried one."""
    settings = home_with_trained_run(tmp_path_factory.mktemp("plan-home"), "with-state", trained_tiny_run)
    shutil.copytree(trained_tiny_run, run_dir("without-state", settings).uri)
    exported = run_dir("without-state", settings).path(EXPORTED_MODEL_DIR)
    shutil.rmtree(f"{exported}/{ARTIFACT_FILES[TRAINING_STATE]}")
    versions = {}
    for run_id in ("with-state", "without-state"):
        run_stage("evaluate", TINY_PARAMS, run_id, settings)
        versions[run_id] = run_stage("register", TINY_PARAMS, run_id, settings)["version"]
    return settings, versions


def test_only_the_training_state_is_downloaded(two_versions, tmp_path):
    settings, versions = two_versions
    state, folder = download_training_state(connect(settings), settings.model_name, versions["with-state"], tmp_path)
    exported = Path(run_dir("with-state", settings).path(EXPORTED_MODEL_DIR))
    assert state == read_state(exported / ARTIFACT_FILES[TRAINING_STATE])
    # Fetched: the state's folder alone, not the SavedModel and int8 variant registered beside it.
    downloaded = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert folder.name == ARTIFACT_FILES[TRAINING_STATE] and downloaded
    assert all(folder in path.parents for path in downloaded), downloaded


def test_a_version_without_a_training_state_has_none(two_versions, tmp_path):
    settings, versions = two_versions
    assert download_training_state(connect(settings), settings.model_name, versions["without-state"], tmp_path) is None
    assert not any(tmp_path.iterdir())

"""Shared test set-up: throwaway Airflow and AdaptRec homes, so tests never touch the developer's stores."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# The real public sets of ../shared/data; tests that read them skip when they are absent.
MOVIELENS_100K = SHARED_DATA / "ml-100k"
AMAZON_BEAUTY = SHARED_DATA / "amazon-beauty" / "Beauty.txt"
DIGINETICA_PERIODS = SHARED_DATA / "diginetica-periods"
VENV_BIN = Path(sys.executable).parent

# Airflow reads AIRFLOW_HOME when it is first imported: set it before any test module imports airflow.
_session_root = Path(tempfile.mkdtemp(prefix="adaptrec-tests-"))
os.environ.update(
    AIRFLOW_HOME=str(_session_root / "airflow"),
    AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
    AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
    AIRFLOW__CORE__LOAD_EXAMPLES="False",
    ADAPTREC_HOME=str(_session_root / "adaptrec"),
    TF_USE_LEGACY_KERAS="1",
    # The API server's tokens in the plugin tests: a key long enough for HS512, fresh per test session.
    AIRFLOW__API_AUTH__JWT_SECRET=secrets.token_hex(32),
)


def run_command(*args: str, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run a command of the virtualenv (airflow, recsys) and capture its output as text."""
    return subprocess.run(
        [str(VENV_BIN / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    """A TCP port free on loopback now, for a server a test starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_period_file(folder: Path, number: int, sessions: int = 30, length: int = 5, first_item: int = 1) -> Path:
    """``period_<number>.txt`` in the DIGINETICA layout: ``sessions`` sessions (ids from 100) of ``length`` actions,
    interleaved in time order, on the 40 items from ``first_item``."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = [
        f"{100 + session} {first_item + (session * 3 + step) % 40}"
        for step in range(length)
        for session in range(sessions)
    ]
    path = folder / f"period_{number}.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="session")
def airflow_database() -> Path:
    """A migrated SQLite Airflow metadata database with the ``gpu`` pool, as ``make run`` prepares it."""
    for command in (("airflow", "db", "migrate"), ("airflow", "pools", "set", "gpu", "1", "training")):
        result = run_command(*command)
        assert result.returncode == 0, result.stdout + result.stderr
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture
def adaptrec_home(tmp_path, monkeypatch) -> Path:
    """A fresh AdaptRec home (run directories + SQLite MLflow) for one test."""
    home = tmp_path / "adaptrec"
    monkeypatch.setenv("ADAPTREC_HOME", str(home))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


@pytest.fixture
def no_inherited_mlflow(monkeypatch) -> None:
    """Commands started by the test use the MLflow store of the home they are given, not one another test exported."""
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
        monkeypatch.delenv(name, raising=False)


@contextmanager
def mlflow_uris_restored() -> Iterator[None]:
    """mlflow.set_tracking_uri() and set_registry_uri() export MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI, which
    Settings reads, and keep the URIs in module globals, which win over the tracking URI an MlflowClient is given
    when it is given no registry URI: put all four back after."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    exported = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    current = (tracking_utils._tracking_uri, registry_utils._registry_uri)
    try:
        yield
    finally:
        for name, value in exported.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        tracking_utils._tracking_uri, registry_utils._registry_uri = current


@pytest.fixture(autouse=True, scope="module")
def _mlflow_uri_stays_in_its_module():
    """Keep one module's registry out of the next."""
    with mlflow_uris_restored():
        yield


TINY_PARAMS = {
    "synthetic_size": "tiny",
    "model_size": "tiny",
    "max_length": 20,
    "pretrain_epochs": 1,
    "finetune_epochs": 3,
}


TRAINING_STAGES = ("ingest", "validate", "augment", "pretrain", "finetune")


@pytest.fixture(scope="session")
def trained_tiny_run(tmp_path_factory) -> Path:
    """The folder of a run that trained a tiny model (ingest → finetune with TINY_PARAMS), once per session.

    Training is what makes the registry and serving tests slow, and none of them asserts on how the model
    was trained: each copies this folder into a home of its own (``home_with_trained_run``) and runs the
    stages from evaluate on there, so every module still has its own MLflow store and registry.
    """
    from recsys_tasks.pipeline import run_dir, run_stage
    from recsys_tasks.settings import Settings

    settings = Settings(home=tmp_path_factory.mktemp("trained-tiny-home"))
    # Session fixtures are set up before the module's URI guard records the environment: without this the
    # template home's MLflow store would become the store of every module that asked for this run.
    with mlflow_uris_restored():
        for stage in TRAINING_STAGES:
            run_stage(stage, TINY_PARAMS, "trained-tiny", settings)
    return Path(run_dir("trained-tiny", settings).uri)


def home_with_trained_run(home: Path, run_id: str, trained_run: Path):
    """Settings of a fresh home whose run ``run_id`` holds a copy of ``trained_run`` (ready for evaluate)."""
    from recsys_tasks.pipeline import run_dir
    from recsys_tasks.settings import Settings

    settings = Settings(home=home)
    shutil.copytree(trained_run, run_dir(run_id, settings).uri)
    return settings


def tiny_champion(home: Path, run_id: str, trained_run: Path):
    """Settings of a home holding a tiny model (a copy of ``trained_run``) registered and promoted to champion."""
    from recsys_tasks.pipeline import run_stage

    settings = home_with_trained_run(home, run_id, trained_run)
    for stage in ("evaluate", "register", "promote"):
        run_stage(stage, TINY_PARAMS, run_id, settings)
    return settings


def write_training_plan(run_folder: Path, **fields):
    """Give a run the plan a plan_training stage leaves (a ``TrainingPlan``; by default a retrain of the tiny set)."""
    from recsys_tasks.contracts.layout import TRAINING_PLAN_FILE
    from recsys_tasks.contracts.reports import TrainingPlan
    from recsys_tasks.storage import RunDir

    plan = TrainingPlan(
        **{"requested": "auto", "mode": "retrain", "reason": "no champion yet", "dataset_key": "synthetic-tiny-seed0"}
        | fields
    )
    RunDir(str(run_folder)).write_json(TRAINING_PLAN_FILE, plan.model_dump())
    return plan


def write_training_state(run_folder: Path, **fields):
    """Give a trained run's exported model the training state a training stage leaves (``TrainingState``, by default
    of a retrain, with ``replay_rows`` replay windows and the model's item vocabulary); no checkpoint."""
    import numpy as np
    import pyarrow.parquet as pq

    from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, ITEM_VOCAB, MODEL_META, TRAINING_STATE
    from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
    from recsys_tasks.contracts.training_state import TrainingState, write_state
    from recsys_tasks.storage import RunDir

    model = Path(RunDir(str(run_folder)).path(EXPORTED_MODEL_DIR))
    meta = RunDir(str(model)).read_json(ARTIFACT_FILES[MODEL_META])
    defaults = {
        "dataset_key": "synthetic-tiny-seed0",
        "mode": "retrain",
        "watermark": 1_719_968_525,
        "parent_version": None,
        "adapt_runs_since_retrain": 0,
        "new_rows": 1_200,
        "replay_rows": 3,
        "encoder": meta["encoder"],
        "finetune_mode": meta["finetune"]["mode"],
        "ranking_weight": meta["finetune"]["ranking_weight"],
    }
    state = TrainingState(**defaults | fields)
    replay = [np.arange(1, 5) + row for row in range(state.replay_rows)]
    vocabulary = pq.read_table(model / ARTIFACT_FILES[ITEM_VOCAB])
    write_state(model / ARTIFACT_FILES[TRAINING_STATE], state, vocabulary, replay)
    return state

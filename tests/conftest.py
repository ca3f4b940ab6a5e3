"""Shared test set-up: throwaway Airflow and AdaptRec homes, so tests never touch the developer's stores."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
# The real public sets of ../shared/data; tests that read them skip when they are absent.
MOVIELENS_100K = SHARED_DATA / "ml-100k"
AMAZON_BEAUTY = SHARED_DATA / "amazon-beauty" / "Beauty.txt"
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


@pytest.fixture(autouse=True, scope="module")
def _mlflow_uri_stays_in_its_module():
    """mlflow.set_tracking_uri() exports MLFLOW_TRACKING_URI; keep one module's registry out of the next."""
    exported = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    for name, value in exported.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


TINY_PARAMS = {
    "synthetic_size": "tiny",
    "model_size": "tiny",
    "max_length": 20,
    "pretrain_epochs": 1,
    "finetune_epochs": 3,
}


def tiny_champion(home: Path, run_id: str):
    """Settings of a home holding a tiny model trained, registered and promoted to champion by ``run_id``."""
    from recsys_tasks.pipeline import run_stage
    from recsys_tasks.settings import Settings

    settings = Settings(home=home)
    for stage in ("ingest", "validate", "augment", "pretrain", "finetune", "evaluate", "register", "promote"):
        run_stage(stage, TINY_PARAMS, run_id, settings)
    return settings

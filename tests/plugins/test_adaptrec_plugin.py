"""The Airflow UI plugin: the "MLflow run" link, the registry page and its JSON, and the page in a real browser.

The registry is a real SQLite MLflow registry seeded with the tags the register and promote tasks
write; the page is served by Airflow's own plugin loading, auth manager and API server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from recsys_tasks import constants
from recsys_tasks.pipeline import STAGES
from tests.conftest import REPO, VENV_BIN, free_port

PLUGIN_NAME = "adaptrec"
APP_PREFIX = "/adaptrec"
LINKED_TASKS = ("pretrain", "finetune", "adapt", "evaluate", "register", "promote")
SCREENSHOT_COPY_ENV = "ADAPTREC_PLUGIN_SCREENSHOT"  # set to a path to keep the browser test's screenshot
MANUAL_MOVE_NOTE = "promote from 1 by ops at 2026-11-27T09:00:00Z: <b>hand</b>-checked & approved"


def _check(name: str, passed: bool, detail: str) -> dict:
    """A gate check as registry.promote records it in the gate report tag."""
    return {"name": name, "passed": passed, "observed": 0.0, "required": 0.0, "detail": detail}


# Three nightly runs: v1 retrains and v2 adapts from it, both pass the gate (v2 becomes champion); v3, registered
# without lineage tags, regresses and is rejected.
SEEDED_VERSIONS = (
    {
        "airflow_run_id": "scheduled__2026-11-26T00:00:00+00:00",
        "metrics": {"ndcg_at_10": 0.5821, "hr_at_10": 0.7504, "mrr": 0.5302},
        "finetune_mode": "full",
        "trainable_parameters": 151_232,
        "lineage": {constants.TAG_TRAINING_MODE: "retrain"},
        "gate": "passed",
        "checks": [
            _check("absolute_floor", True, "NDCG@10 0.5821 vs floor 0.0100"),
            _check("lift_over_popularity", True, "NDCG@10 0.5821 vs popularity 0.0738 × 1.10"),
        ],
    },
    {
        "airflow_run_id": "scheduled__2026-11-27T00:00:00+00:00",
        "metrics": {"ndcg_at_10": 0.6154, "hr_at_10": 0.7865, "mrr": 0.5614},
        "finetune_mode": "full",
        "trainable_parameters": 151_232,
        "lineage": {
            constants.TAG_TRAINING_MODE: "adapt",
            constants.TAG_PARENT_VERSION: "1",
            constants.TAG_WINDOW: "period_1",
            constants.TAG_REPLAY_ROWS: "3000",
        },
        "gate": "passed",
        "checks": [
            _check("absolute_floor", True, "NDCG@10 0.6154 vs floor 0.0100"),
            _check("no_regression_vs_champion", True, "NDCG@10 0.6154 vs champion v1 0.5821 × 0.98"),
        ],
    },
    {
        "airflow_run_id": "manual__2026-11-28T18:29:23.967300+00:00",
        "metrics": {"ndcg_at_10": 0.5402, "hr_at_10": 0.7301, "mrr": 0.4987},
        "finetune_mode": "lora",
        "trainable_parameters": 20_480,
        "lineage": {},  # registered before versions carried lineage tags
        "gate": "rejected",
        "checks": [
            _check("absolute_floor", True, "NDCG@10 0.5402 vs floor 0.0100"),
            _check("no_regression_vs_champion", False, "NDCG@10 0.5402 vs champion v2 0.6154 × 0.98"),
        ],
    },
)


def seed_registry() -> dict[str, str]:
    """Register the versions above the way the pipeline does; return the MLflow run id of each Airflow run."""
    from recsys_tasks.contracts.tracking import RunTracker
    from recsys_tasks.settings import get_settings

    settings = get_settings()
    mlflow_runs = {}
    for seeded in SEEDED_VERSIONS:
        tracker = RunTracker.for_airflow_run(settings, seeded["airflow_run_id"])
        mlflow_runs[seeded["airflow_run_id"]] = tracker.run_id
        tracker.log_dict({"stand_in_for": "the exported pyfunc"}, "model/meta.json")
    client = tracker.client
    client.create_registered_model(settings.model_name)
    for seeded in SEEDED_VERSIONS:
        run_id = mlflow_runs[seeded["airflow_run_id"]]
        version = client.create_model_version(
            settings.model_name,
            source=f"{client.get_run(run_id).info.artifact_uri}/model",
            run_id=run_id,
            tags={
                constants.TAG_AIRFLOW_RUN_ID: seeded["airflow_run_id"],
                constants.TAG_FINETUNE_MODE: seeded["finetune_mode"],
                constants.TAG_TRAINABLE_PARAMETERS: str(seeded["trainable_parameters"]),
                **seeded["lineage"],
                **{f"{constants.TAG_TEST_METRIC_PREFIX}{k}": f"{v:.5f}" for k, v in seeded["metrics"].items()},
            },
        ).version
        client.set_registered_model_alias(settings.model_name, constants.CHALLENGER_ALIAS, version)
        reasons = [f"{c['name']}: {c['detail']} — {'pass' if c['passed'] else 'FAIL'}" for c in seeded["checks"]]
        client.set_model_version_tag(settings.model_name, version, constants.TAG_GATE_STATUS, seeded["gate"])
        client.set_model_version_tag(settings.model_name, version, constants.TAG_GATE_REASONS, "; ".join(reasons))
        client.set_model_version_tag(
            settings.model_name, version, constants.TAG_GATE_REPORT, json.dumps(seeded["checks"])
        )
        if seeded["gate"] == "passed":
            client.set_registered_model_alias(settings.model_name, constants.CHAMPION_ALIAS, version)
    client.set_model_version_tag(settings.model_name, "2", constants.TAG_MANUAL_MOVE, MANUAL_MOVE_NOTE)
    return mlflow_runs


@pytest.fixture(scope="module")
def seeded_home(tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A SQLite MLflow registry holding SEEDED_VERSIONS, as ADAPTREC_HOME for this module (and its servers)."""
    home = tmp_path_factory.mktemp("plugin") / "adaptrec"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ADAPTREC_HOME", str(home))
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.delenv("MLFLOW_REGISTRY_URI", raising=False)
        yield home, seed_registry()


@pytest.fixture(scope="module")
def plugin_parts(airflow_database):
    """The link and the app as Airflow's plugin manager loads them from AIRFLOW__CORE__PLUGINS_FOLDER."""
    from airflow import plugins_manager

    assert plugins_manager.get_import_errors() == {}
    links = {link.name: link for link in plugins_manager.get_global_operator_extra_links()}
    apps = {app["url_prefix"]: app["app"] for app in plugins_manager.get_fastapi_plugins()[0]}
    return links["MLflow run"], apps[APP_PREFIX]


@pytest.fixture(scope="module")
def client_as(plugin_parts):
    """An HTTP client of the plugin app carrying a real JWT of a user with the given role (None: anonymous)."""
    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    auth_manager = init_auth_manager()

    def client(role: str | None, authenticated: bool = True) -> TestClient:
        headers = {}
        if authenticated:
            token = auth_manager.generate_jwt(SimpleAuthManagerUser(username=f"{role}-user", role=role))
            headers["Authorization"] = f"Bearer {token}"
        return TestClient(plugin_parts[1], headers=headers)

    return client


def test_plugin_import_loads_no_heavy_library():
    heavy = ("mlflow", "tensorflow", "fastapi", "airflow.api_fastapi.core_api.security")
    probe = (
        "import runpy, sys, json; runpy.run_path(sys.argv[1]);"
        f"print(json.dumps([m for m in {heavy} if m in sys.modules]))"
    )
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", probe, str(REPO / "plugins" / "adaptrec_plugin.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_overview_has_versions_aliases_gates_and_metrics(seeded_home):
    from recsys_tasks.registry.dashboard import registry_overview
    from recsys_tasks.settings import get_settings

    overview = registry_overview(get_settings())
    assert overview.aliases == {constants.CHAMPION_ALIAS: 2, constants.CHALLENGER_ALIAS: 3}
    assert [v.version for v in overview.versions] == [3, 2, 1]
    newest, champion, first = overview.versions
    assert newest.aliases == [constants.CHALLENGER_ALIAS] and champion.aliases == [constants.CHAMPION_ALIAS]
    assert [v.gate_status for v in overview.versions] == ["rejected", "passed", "passed"]
    assert [(c.name, c.passed) for c in newest.gate_checks] == [
        ("absolute_floor", True),
        ("no_regression_vs_champion", False),
    ]
    assert newest.test_metrics == SEEDED_VERSIONS[2]["metrics"]
    assert (newest.finetune_mode, newest.trainable_parameters) == ("lora", 20_480)
    assert newest.airflow_run_id == SEEDED_VERSIONS[2]["airflow_run_id"]
    assert newest.mlflow_run_id == seeded_home[1][newest.airflow_run_id]
    assert champion.manual_move == MANUAL_MOVE_NOTE and first.manual_move is None
    assert (champion.training_mode, champion.parent_version, champion.window, champion.replay_rows) == (
        "adapt",
        "1",
        "period_1",
        3000,
    )
    assert (first.training_mode, first.parent_version, newest.training_mode) == ("retrain", None, None)


def test_page_shows_the_table_and_the_trend_chart_with_text_escaped(seeded_home):
    from recsys_tasks.registry.dashboard import registry_overview, render_page
    from recsys_tasks.settings import get_settings

    settings = get_settings()
    page = render_page(settings.model_name, registry_overview(settings), "http://mlflow.example:5000/")
    for text in (
        "champion</code> → v2",
        "challenger</code> → v3",
        "✗ no_regression_vs_champion: NDCG@10 0.5402 vs champion v2 0.6154 × 0.98",
        '<td class="number">0.6154</td>',
        '<td class="number">0.7301</td>',
        "20,480 trainable parameters",
        '<td>adapt<div class="note">from v1 on period_1, 3,000 replayed</div></td>',
        "<td>retrain</td>",
        "manual__2026-11-28T18:29:23.967300+00:00",
        f'href="http://mlflow.example:5000/#/models/{settings.model_name}/versions/3"',
        "&lt;b&gt;hand&lt;/b&gt;-checked &amp; approved",
    ):
        assert text in page
    assert "<b>hand</b>" not in page
    chart = page[page.index("<svg") : page.index("</svg>")]
    # One dot per version and metric; v3 (rejected) is hollow in both series.
    assert chart.count("<circle") == 6
    assert chart.count('fill="#ffffff"') == 2
    assert "v2 NDCG@10 0.6154 (gate passed)" in chart


def test_app_needs_a_user_who_may_read_the_dag(seeded_home, client_as):
    assert client_as(None, authenticated=False).get("/").status_code == 401
    assert client_as(None).get("/").status_code == 403
    page = client_as("viewer").get("/")
    assert page.status_code == 200 and "AdaptRec model registry" in page.text


def test_json_api_returns_the_same_data(seeded_home, client_as):
    response = client_as("viewer").get("/api/versions")
    assert response.status_code == 200
    body = response.json()
    assert [v["version"] for v in body["versions"]] == [3, 2, 1]
    assert body["versions"][0]["gate_status"] == "rejected"
    assert body["versions"][1]["test_metrics"]["ndcg_at_10"] == 0.6154


def test_a_model_not_registered_yet_gets_a_message(seeded_home, client_as, monkeypatch):
    monkeypatch.setenv("ADAPTREC_MODEL_NAME", "not-registered-yet")
    page = client_as("viewer").get("/")
    assert page.status_code == 200
    assert "No version of <code>not-registered-yet</code> is registered yet" in page.text
    assert client_as("viewer").get("/api/versions").status_code == 404


def test_unreachable_mlflow_is_a_one_line_503(seeded_home, client_as, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    page = client_as("viewer").get("/")
    assert page.status_code == 503
    assert "cannot be reached" in page.text and page.text.count("<p>") == 1
    assert client_as("viewer").get("/api/versions").status_code == 503


@pytest.mark.parametrize("task_id", LINKED_TASKS)
def test_training_and_registry_tasks_link_to_their_mlflow_run(seeded_home, plugin_parts, task_id):
    from airflow.models.taskinstancekey import TaskInstanceKey

    assert task_id in STAGES
    airflow_run_id = SEEDED_VERSIONS[0]["airflow_run_id"]
    key = TaskInstanceKey(constants.DAG_ID, task_id, airflow_run_id, try_number=1)
    url = plugin_parts[0].get_link(None, ti_key=key)  # the link reads the task instance key only
    assert url.startswith("http://127.0.0.1:5000/#/experiments/")
    assert url.endswith(f"/runs/{seeded_home[1][airflow_run_id]}")


def test_other_tasks_and_runs_without_mlflow_run_get_no_link(seeded_home, plugin_parts):
    from airflow.models.taskinstancekey import TaskInstanceKey

    link = plugin_parts[0]
    seeded_run = SEEDED_VERSIONS[0]["airflow_run_id"]
    assert link.get_link(None, ti_key=TaskInstanceKey(constants.DAG_ID, "ingest", seeded_run, 1)) == ""
    assert link.get_link(None, ti_key=TaskInstanceKey("another_dag", "pretrain", seeded_run, 1)) == ""
    assert link.get_link(None, ti_key=TaskInstanceKey(constants.DAG_ID, "pretrain", "manual__not-logged", 1)) == ""


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


@contextmanager
def api_server(log_file: Path, ready_within_s: float = 120) -> Iterator[str]:
    """``airflow api-server`` on a free loopback port, every visitor an admin; stopped on exit."""
    port = free_port()
    env = {**os.environ, "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True"}
    with log_file.open("w") as log:
        server = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "api-server", "--host", "127.0.0.1", "--port", str(port), "--apps", "core"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_within_s
        while True:
            assert server.poll() is None, f"api-server exited with {server.returncode}:\n{log_file.read_text()[-3000:]}"
            assert time.monotonic() < deadline, (
                f"api-server not ready in {ready_within_s} s:\n{log_file.read_text()[-3000:]}"
            )
            try:
                if http_get(f"{base_url}/api/v2/monitor/health")[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(1)
        yield base_url
    finally:
        # The server runs uvicorn workers in its own session: stop the whole group it started.
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def chromium_binary() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def headless_chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        check=True,
    )


def test_registry_page_in_a_real_browser(seeded_home, airflow_database, tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("no Chromium binary (chromium, chromium-browser, google-chrome) on PATH")
    profile, screenshot = tmp_path / "chromium-profile", tmp_path / "airflow-plugin-page.png"
    with api_server(tmp_path / "api-server.log") as base_url:
        # The server loaded the plugin: the REST API lists its link and its nav entry.
        status, body = http_get(f"{base_url}/api/v2/plugins")
        assert status == 200, body
        plugin = next(p for p in json.loads(body)["plugins"] if p["name"] == PLUGIN_NAME)
        assert plugin["global_operator_extra_links"] == ["<adaptrec_plugin.MlflowRunLink object>"]
        (nav_entry,) = plugin["external_views"]
        assert nav_entry["href"] == f"{APP_PREFIX}/"

        dom = headless_chromium(binary, profile, "--dump-dom", f"{base_url}{APP_PREFIX}/").stdout
        for text in (
            "AdaptRec model registry",
            "champion</code> → v2",
            "challenger</code> → v3",
            '<span class="badge gate-rejected">rejected</span>',
            "✗ no_regression_vs_champion: NDCG@10 0.5402 vs champion v2 0.6154 × 0.98",
            '<td class="number">0.7865</td>',
            SEEDED_VERSIONS[2]["airflow_run_id"],
            "<svg",
        ):
            assert text in dom

        # Airflow's own UI (a React app: the virtual-time budget lets it fetch and render) frames the page.
        ui_page = f"{base_url}/plugin/{nav_entry['url_route']}"
        rendering = ("--virtual-time-budget=20000", "--window-size=1280,900")
        ui_dom = headless_chromium(binary, profile, *rendering, "--dump-dom", ui_page).stdout
        assert f'src="{APP_PREFIX}/" title="{nav_entry["name"]}"' in ui_dom
        headless_chromium(binary, profile, *rendering, f"--screenshot={screenshot}", ui_page)
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 50_000  # the UI and the framed page, not a blank window
    if keep_at := os.environ.get(SCREENSHOT_COPY_ENV):
        shutil.copyfile(screenshot, keep_at)

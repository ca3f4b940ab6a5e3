"""The registered pyfunc as consumers use it: batch requests, exclusions, explanations, the int8
variant, and `mlflow models serve` answering real HTTP on loopback."""

from __future__ import annotations

import os
import subprocess
import time

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException

from recsys_tasks.contracts.layout import REPORT_FILE
from recsys_tasks.contracts.registry import model_uri
from recsys_tasks.contracts.reports import MODEL, MODEL_INT8, EvaluationReport
from recsys_tasks.contracts.tracking import connect
from recsys_tasks.pipeline import run_dir
from recsys_tasks.settings import Settings
from tests.conftest import VENV_BIN, free_port, tiny_champion

RUN_ID = "serving-test-run"


@pytest.fixture(scope="module")
def champion(tmp_path_factory, trained_tiny_run) -> Settings:
    settings = tiny_champion(tmp_path_factory.mktemp("serving-home"), RUN_ID, trained_tiny_run)
    connect(settings)
    return settings


def load(settings: Settings, variant: str = "float32"):
    return mlflow.pyfunc.load_model(model_uri(settings.model_name), model_config={"variant": variant})


def known_items(model, count: int) -> list[int]:
    return sorted(model.unwrap_python_model().index_of)[:count]


def test_a_batch_request_honours_history_exclusions_and_explains_each_item(champion):
    model = load(champion)
    items = known_items(model, 12)
    request = pd.DataFrame(
        {"history": [items[:4], items[4:6]], "k": [5, 3], "exclude": [items[6:10], None]},
    )
    answer = model.predict(request)

    for row, (history, k, exclude) in enumerate(zip(request["history"], request["k"], request["exclude"])):
        recommended = answer["item_ids"][row]
        assert len(set(recommended)) == k
        assert not set(recommended) & set(history) and not set(recommended) & set(exclude or [])
        assert list(answer["scores"][row]) == sorted(answer["scores"][row], reverse=True)
        assert len(answer["because"][row]) == k and set(answer["because"][row]) <= set(history)


def test_because_credits_the_attended_history_item_closest_to_each_recommendation(champion):
    recommender = load(champion).unwrap_python_model()
    first, second = 1, 2
    padded = recommender.pad([[first, second]])[0]
    attention = np.zeros(len(padded), dtype=np.float32)
    attention[-2:] = 0.5  # equal attention: the closer history item wins, and an item is closest to itself
    assert recommender.because(padded, attention, np.array([first, second])).tolist() == [first, second]
    attention[-2:] = [1.0, 0.0]  # all attention on the first item: it explains everything
    assert recommender.because(padded, attention, np.array([first, second, 3])).tolist() == [first, first, first]


def test_the_int8_variant_is_smaller_and_measured_against_float32(champion):
    report = EvaluationReport(**run_dir(RUN_ID, champion).read_json(REPORT_FILE))
    float32, int8 = report.variants["float32"], report.variants["int8"]
    assert int8.size_bytes < float32.size_bytes / 3
    assert int8.ndcg_at_10 == report.metrics[MODEL_INT8]["ndcg_at_10"]
    assert int8.ndcg_change_vs_float32 == pytest.approx(int8.ndcg_at_10 - report.metrics[MODEL]["ndcg_at_10"])
    assert abs(int8.ndcg_change_vs_float32) < 0.05
    assert int8.latency_ms["p99_ms"] > 0 and float32.latency_ms["p50_ms"] > 0

    full, quantised = load(champion), load(champion, "int8")
    assert (full.unwrap_python_model().variant, quantised.unwrap_python_model().variant) == ("float32", "int8")
    request = pd.DataFrame({"history": [known_items(full, 5)], "k": [10]})
    overlap = set(full.predict(request)["item_ids"][0]) & set(quantised.predict(request)["item_ids"][0])
    assert len(overlap) >= 8


def test_bad_requests_and_variants_are_refused_with_one_line(champion):
    model = load(champion)
    with pytest.raises(MlflowException, match="row 0: history has no item this model knows"):
        model.predict(pd.DataFrame({"history": [[10**12]]}))
    with pytest.raises(MlflowException, match=r"row 0: k=0 is outside 1\.\."):
        model.predict(pd.DataFrame({"history": [known_items(model, 2)], "k": [0]}))
    with pytest.raises(MlflowException, match="unknown model variant 'int4'"):
        load(champion, "int4")


def test_mlflow_models_serve_answers_real_http_on_loopback(champion):
    port = free_port()
    uri = champion.resolved_tracking_uri
    server = subprocess.Popen(
        [str(VENV_BIN / "mlflow"), "models", "serve", "-m", model_uri(champion.model_name)]
        + ["--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        # The server execs `uvicorn` by name: the virtualenv's bin must be on PATH.
        env={
            **os.environ,
            "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
            "MLFLOW_TRACKING_URI": uri,
            "MLFLOW_REGISTRY_URI": uri,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, f"mlflow models serve exited: {server.stderr.read()[-2000:]}"
            try:
                if requests.get(f"{base}/ping", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "mlflow models serve did not answer /ping within 180 s"
            time.sleep(1)

        items = known_items(load(champion), 6)
        body = {"dataframe_split": {"columns": ["history", "k", "exclude"], "data": [[items[:3], 4, items[3:5]]]}}
        answer = requests.post(f"{base}/invocations", json=body, timeout=60)
        assert answer.status_code == 200, answer.text
        (prediction,) = answer.json()["predictions"]
        assert len(set(prediction["item_ids"])) == 4 and not set(prediction["item_ids"]) & set(items[:5])
        assert set(prediction["because"]) <= set(items[:3])

        unknown = {"dataframe_split": {"columns": ["history"], "data": [[[10**12]]]}}
        refused = requests.post(f"{base}/invocations", json=unknown, timeout=60)
        assert refused.status_code == 400 and "history has no item this model knows" in refused.text
    finally:
        server.terminate()
        server.wait(timeout=30)


# The CLI's own entry point, then whether TensorFlow got imported on the way.
CLI_THEN_TENSORFLOW_IMPORTED = """
import sys
from recsys_tasks.cli import main
try:
    main()
finally:
    print("tensorflow imported:", "tensorflow" in sys.modules)
"""


@pytest.mark.parametrize(("variant", "tensorflow_imported"), [("int8", False), ("float32", True)])
def test_recsys_recommend_loads_tensorflow_only_for_the_float32_variant(champion, variant, tensorflow_imported):
    items = known_items(load(champion, "int8"), 3)
    result = subprocess.run(
        [str(VENV_BIN / "python"), "-c", CLI_THEN_TENSORFLOW_IMPORTED, "recommend"]
        + ["--history", ",".join(map(str, items)), "--k", "4", "--variant", variant],
        env={**os.environ, "ADAPTREC_HOME": str(champion.resolved_home)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tensorflow imported: {tensorflow_imported}" in result.stdout
    assert result.stdout.count("│") >= 4 * 5  # four rows of the table
    assert result.stderr == ""  # TensorFlow's and LiteRT's C++ start-up lines stay out of the terminal

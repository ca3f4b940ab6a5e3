"""The serving app over real HTTP: a tiny model trained and promoted through the pipeline, uvicorn on
loopback, httpx as the client. Auth, validation, limits, readiness, metrics and hot reload."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import httpx
import mlflow
import pytest
import uvicorn
from fastapi import HTTPException
from prometheus_client.parser import text_string_to_metric_families

from recsys_tasks.constants import CHAMPION_ALIAS
from recsys_tasks.contracts.feedback_store import FeedbackStore
from recsys_tasks.contracts.registry import model_uri, version_with_alias
from recsys_tasks.contracts.slate_policy import SlatePolicy, request_seed
from recsys_tasks.contracts.tracking import connect
from recsys_tasks.errors import ConfigError
from recsys_tasks.privacy import pseudonym, resolve_key
from recsys_tasks.serving.app import ModelCalls, ServingConfig, create_app, serving_config
from recsys_tasks.serving.schemas import MAX_HISTORY_LENGTH, MAX_K
from recsys_tasks.serving.server import BODY_GRACE_SECONDS, uvicorn_options
from recsys_tasks.settings import Settings
from tests.conftest import VENV_BIN, free_port, run_command, tiny_champion

RUN_ID = "serving-app-run"
TOKEN = "test-token-0123456789abcdef"
AUTHORISED = {"Authorization": f"Bearer {TOKEN}"}
MAX_BATCH = 8
READ_SECONDS = 1.0  # the module's server gives a client this long to send a request
UNKNOWN_IDS = [987_654_321, 987_654_322]
RECOMMENDATIONS = "/v1/recommendations"
FEEDBACK = "/v1/feedback"
FLUSH_SECONDS = 0.1


@pytest.fixture(scope="module")
def champion(tmp_path_factory, trained_tiny_run) -> Settings:
    return tiny_champion(tmp_path_factory.mktemp("serving-app-home"), RUN_ID, trained_tiny_run)


@pytest.fixture(scope="module")
def known_ids(champion) -> list[int]:
    """Every item id the champion knows (the whole tiny catalogue), ascending."""
    connect(champion)
    return sorted(mlflow.pyfunc.load_model(model_uri(champion.model_name)).unwrap_python_model().index_of)


def wait_until(condition: Callable[[], object], what: str, still_trying: Callable[[], bool] = lambda: True):
    deadline = time.monotonic() + 60
    while not (result := condition()):
        assert still_trying() and time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)
    return result


@contextmanager
def serving(app, max_connections: int = 1024) -> Iterator[str]:
    """``app`` under uvicorn, configured as ``recsys serve`` configures it, in a background thread on a loopback
    port of its own; yields the base URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    options = uvicorn_options(max_connections=max_connections)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", **options))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn to start", still_trying=thread.is_alive)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        listener.close()


def ready_version(http: httpx.Client) -> str | None:
    response = http.get("/readyz")
    return response.json()["model"]["version"] if response.status_code == 200 else None


def metric(http: httpx.Client, sample: str, **labels: str) -> float:
    """The value /metrics gives for ``sample`` with exactly ``labels`` (0 when it has none)."""
    families = text_string_to_metric_families(http.get("/metrics").text)
    return sum(
        found.value for family in families for found in family.samples if (found.name, found.labels) == (sample, labels)
    )


@pytest.fixture(scope="module")
def server(champion) -> Iterator[str]:
    """The URL of a server with the champion loaded; it polls too rarely to see the alias move meanwhile."""
    config = ServingConfig(
        token=TOKEN,
        poll_seconds=3600,
        max_batch=MAX_BATCH,
        read_seconds=READ_SECONDS,
        policy="greedy",  # the model's ranking as it is; exploration has tests of its own
        log_flush_seconds=FLUSH_SECONDS,
    )
    with serving(create_app(champion, config)) as url, httpx.Client(base_url=url) as probe:
        wait_until(lambda: ready_version(probe), "the champion to load")
        yield url


@pytest.fixture
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, headers=AUTHORISED, timeout=30) as http:
        yield http


def recommend(http: httpx.Client, *users: dict, **options) -> httpx.Response:
    return http.post(RECOMMENDATIONS, json={"users": list(users), **options})


def one_line_detail(response: httpx.Response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail, detail
    return detail


def test_a_batch_gets_k_new_items_per_user_best_first_with_a_reason_from_the_history(client, champion, known_ids):
    alice = {"user_id": "alice", "history": known_ids[:5], "k": 7, "exclude": known_ids[5:15]}
    bob = {"history": known_ids[20:22], "k": 3}
    response = recommend(client, alice, bob)

    assert response.status_code == 200, response.text
    body = response.json()
    version = str(version_with_alias(connect(champion), champion.model_name).version)
    assert body["model"] == {
        "name": champion.model_name,
        "version": version,
        "alias": CHAMPION_ALIAS,
        "variant": "float32",
    }
    for user, answer in zip((alice, bob), body["recommendations"], strict=True):
        items = [item["item_id"] for item in answer["items"]]
        scores = [item["score"] for item in answer["items"]]
        assert answer["user_id"] == user.get("user_id")
        assert len(set(items)) == len(items) == user["k"]
        assert not set(items) & (set(user["history"]) | set(user.get("exclude", [])))
        assert scores == sorted(scores, reverse=True)
        assert {item["because"] for item in answer["items"]} <= set(user["history"])


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="no token"),
        pytest.param({"Authorization": "Bearer not-the-token-0123456789"}, id="wrong token"),
        pytest.param({"Authorization": f"Basic {TOKEN}"}, id="not bearer"),
    ],
)
def test_recommendations_need_the_bearer_token_and_probes_do_not(server, known_ids, headers):
    with httpx.Client(base_url=server, headers=headers) as anonymous:
        refused = recommend(anonymous, {"history": known_ids[:2]})
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        one_line_detail(refused)
        assert all(anonymous.get(probe).status_code == 200 for probe in ("/healthz", "/readyz", "/metrics"))


@pytest.mark.parametrize(
    ("body", "status", "named"),
    [
        pytest.param({"users": [{"history": []}]}, 422, "users.0.history", id="empty history"),
        pytest.param({"users": [{"history": [1], "k": 0}]}, 422, "users.0.k", id="k=0"),
        pytest.param({"users": [{"history": [1], "k": MAX_K + 1}]}, 422, "users.0.k", id="k too large"),
        pytest.param({"users": [{"history": ["1"]}]}, 422, "users.0.history.0", id="id as text"),
        pytest.param({"users": [{"history": [-1]}]}, 422, "users.0.history.0", id="negative id"),
        pytest.param({"users": [{"history": [1] * (MAX_HISTORY_LENGTH + 1)}]}, 422, "users.0.history", id="long"),
        pytest.param({"users": [{"histroy": [1]}]}, 422, "users.0.histroy", id="misspelt field"),
        pytest.param({"users": []}, 422, "users", id="no users"),
        pytest.param({"users": [{"history": [1]}] * (MAX_BATCH + 1)}, 422, f"at most {MAX_BATCH}", id="big batch"),
        pytest.param([1, 2], 422, "body", id="not an object"),
        pytest.param(b'{"users": [{"history": [1,', 400, "not valid JSON", id="malformed JSON"),
        pytest.param(b"", 422, "body", id="no body"),
    ],
)
def test_a_bad_request_gets_a_one_line_4xx_and_the_server_carries_on(client, body, status, named):
    if isinstance(body, bytes):
        response = client.post(RECOMMENDATIONS, content=body, headers={"Content-Type": "application/json"})
    else:
        response = client.post(RECOMMENDATIONS, json=body)
    assert response.status_code == status, response.text
    assert named in one_line_detail(response)
    assert client.get("/healthz").status_code == 200


def test_unknown_item_ids_are_named_unless_the_client_asks_to_skip_them(client, known_ids):
    user = {"history": [known_ids[0], UNKNOWN_IDS[0], known_ids[1], UNKNOWN_IDS[1]], "k": 4}

    refused = recommend(client, user)
    assert refused.status_code == 422
    assert all(str(item) in one_line_detail(refused) for item in UNKNOWN_IDS)

    skipped = recommend(client, user, ignore_unknown=True)
    assert skipped.status_code == 200, skipped.text
    assert {item["because"] for item in skipped.json()["recommendations"][0]["items"]} <= set(known_ids[:2])

    nothing_left = recommend(client, {"history": UNKNOWN_IDS}, ignore_unknown=True)
    assert nothing_left.status_code == 422 and "no item this model knows" in one_line_detail(nothing_left)


def test_k_beyond_what_is_left_of_the_catalogue_is_refused_saying_what_is_left(client, known_ids):
    left = 3
    response = recommend(client, {"history": known_ids[: -left - 2], "exclude": known_ids[-2:], "k": left + 1})
    assert response.status_code == 422
    assert f"users.0.k: {left + 1} asked, but history and exclude leave {left} items" in one_line_detail(response)

    everything = recommend(client, {"history": known_ids[:-2], "exclude": known_ids[-2:], "k": 1})
    assert everything.status_code == 422 and "nothing is left" in one_line_detail(everything)


def test_requests_sent_at_once_each_get_their_own_users_answers(client, known_ids):
    users = [{"user_id": f"user-{n}", "history": known_ids[n : n + 3], "k": 5} for n in range(24)]
    one_by_one = [recommend(client, user).json()["recommendations"] for user in users]
    users_before = metric(client, "adaptrec_serving_model_call_users_sum")

    with ThreadPoolExecutor(12) as senders:
        at_once = list(senders.map(lambda user: recommend(client, user).json()["recommendations"], users))

    for alone, together in zip(one_by_one, at_once, strict=True):
        assert [item["item_id"] for item in together[0]["items"]] == [item["item_id"] for item in alone[0]["items"]]
        assert [item["score"] for item in together[0]["items"]] == pytest.approx(
            [item["score"] for item in alone[0]["items"]], rel=1e-5
        )
        assert together[0]["user_id"] == alone[0]["user_id"]
    assert metric(client, "adaptrec_serving_model_call_users_sum") - users_before == len(users)


class HeldModel:
    """Stands in for a loaded version in ``ModelCalls``: holds its calls until released, answers each user
    with its history reversed, and refuses a history of [666] as the real model refuses a row."""

    def __init__(self):
        self.released = threading.Event()
        self.users_per_call: list[int] = []

    def answers(self, histories, ks, exclusions):
        self.users_per_call.append(len(histories))
        self.released.wait(timeout=30)
        if [666] in histories:
            raise HTTPException(422, "the model refused the request: row 0: no item it knows")
        return [(history[::-1], [1.0] * len(history), history[:1]) for history in histories]


async def queued_behind_a_held_call(model: HeldModel, histories: list[list[int]], max_users: int) -> list:
    """Sends one request, then ``histories`` one request each while the model holds the first; their outcomes."""
    calls = ModelCalls(max_users=max_users)
    first = asyncio.create_task(calls.answers(model, [[1]], [1], [[]]))
    while not model.users_per_call:  # the first call is in the model's thread, held
        await asyncio.sleep(0.01)
    queued = [asyncio.create_task(calls.answers(model, [history], [1], [[]])) for history in histories]
    await asyncio.sleep(0.05)
    model.released.set()
    outcomes = await asyncio.gather(first, *queued, return_exceptions=True)
    calls.shutdown()
    return outcomes[1:]


def test_requests_queued_behind_a_model_call_are_answered_together_up_to_the_batch_limit():
    model = HeldModel()
    histories = [[n, n + 1] for n in range(2, 7)]

    outcomes = asyncio.run(queued_behind_a_held_call(model, histories, max_users=4))

    assert model.users_per_call == [1, 4, 1]
    assert outcomes == [[([n + 1, n], [1.0, 1.0], [n])] for n in range(2, 7)]


def test_a_row_the_model_refuses_fails_only_its_own_request_in_a_batch():
    model = HeldModel()

    outcomes = asyncio.run(queued_behind_a_held_call(model, [[2, 3], [666], [4, 5]], max_users=8))

    assert model.users_per_call == [1, 3, 1, 1, 1]  # the batch, then each request alone
    assert outcomes[0] == [([3, 2], [1.0, 1.0], [2])] and outcomes[2] == [([5, 4], [1.0, 1.0], [4])]
    assert isinstance(outcomes[1], HTTPException) and outcomes[1].status_code == 422


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_huge_body_is_refused_with_413_before_it_is_parsed(client, chunked):
    huge = b'{"users": [' + b" " * (2 * 1024 * 1024) + b"]}"
    content = (huge[start : start + 65536] for start in range(0, len(huge), 65536)) if chunked else huge
    response = client.post(RECOMMENDATIONS, content=content, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "larger than" in one_line_detail(response)
    assert client.get("/healthz").status_code == 200


def test_a_repeated_json_key_is_refused_naming_it(client, known_ids):
    body = f'{{"users": [{{"history": [{known_ids[0]}], "k": 3, "k": 5}}]}}'
    response = client.post(RECOMMENDATIONS, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "repeats the key 'k'" in one_line_detail(response)


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_not_sent_as_json_gets_415(client, known_ids, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"users": [{"history": known_ids[:1]}]})
    response = client.post(RECOMMENDATIONS, content=body, headers=headers)
    assert response.status_code == 415 and "application/json" in one_line_detail(response)


def raw_exchange(base_url: str, data: bytes, hang_up: bool = False) -> tuple[bytes, float]:
    """Sends ``data`` on a connection of its own and reads until the server closes it: (the answer, seconds it
    took). With ``hang_up`` the client closes its side right after sending."""
    host, port = httpx.URL(base_url).host, httpx.URL(base_url).port
    began = time.monotonic()  # before connecting: the server's clock starts when the connection opens
    with socket.create_connection((host, port), timeout=READ_SECONDS + BODY_GRACE_SECONDS + 10) as connection:
        connection.sendall(data)
        if hang_up:
            return b"", 0.0
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
        return answer, time.monotonic() - began


def short_body(path: str, authorised: bool) -> bytes:
    """A request that declares a 1,000-byte body and sends 50."""
    token = f"Authorization: Bearer {TOKEN}\r\n" if authorised else ""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\n{token}Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
    return head.encode() + b"{" + b" " * 49


def test_a_client_that_stops_sending_its_headers_gets_408_and_is_disconnected(server):
    answer, seconds = raw_exchange(server, f"POST {RECOMMENDATIONS} HTTP/1.1\r\nHost: x\r\n".encode())
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert READ_SECONDS <= seconds < READ_SECONDS + 3


@pytest.mark.parametrize(
    ("path", "authorised", "status"),
    [("/healthz", False, b"408"), (RECOMMENDATIONS, True, b"408"), (RECOMMENDATIONS, False, b"401")],
    ids=["open path", "with token", "without token"],
)
def test_a_body_shorter_than_declared_is_answered_and_the_connection_dropped_in_seconds(
    client, path, authorised, status
):
    served_500 = metric(client, "adaptrec_serving_requests_total", endpoint=path, status="500")
    answer, seconds = raw_exchange(client.base_url.__str__(), short_body(path, authorised))
    assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == status, answer
    assert seconds < READ_SECONDS + BODY_GRACE_SECONDS + 3
    assert metric(client, "adaptrec_serving_requests_total", endpoint=path, status="500") == served_500


def test_a_client_that_hangs_up_mid_body_is_counted_as_aborted_not_as_an_error(client):
    counted = {
        status: metric(client, "adaptrec_serving_requests_total", endpoint="/healthz", status=status)
        for status in ("aborted", "500")
    }
    raw_exchange(str(client.base_url), short_body("/healthz", authorised=False), hang_up=True)
    wait_until(
        lambda: (
            metric(client, "adaptrec_serving_requests_total", endpoint="/healthz", status="aborted")
            > counted["aborted"]
        ),
        "the aborted request to be counted",
    )
    assert metric(client, "adaptrec_serving_requests_total", endpoint="/healthz", status="500") == counted["500"]


def test_the_access_log_never_shows_a_token_sent_in_the_query_string(client, caplog):
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        client.get("/readyz?access_token=leaked-secret-1&page=2&api_key=leaked-secret-2")
        wait_until(lambda: any("/readyz" in record.getMessage() for record in caplog.records), "the access line")
    line = next(record.getMessage() for record in caplog.records if "/readyz" in record.getMessage())
    assert "leaked-secret" not in line and "access_token=[redacted]" in line and "page=2" in line


def test_connections_beyond_the_limit_get_503(champion):
    app = create_app(champion, ServingConfig(token=TOKEN, poll_seconds=3600))
    with serving(app, max_connections=2) as url:
        host, port = httpx.URL(url).host, httpx.URL(url).port
        idle = [socket.create_connection((host, port)) for _ in range(2)]
        try:
            with httpx.Client(base_url=url) as third:
                assert third.get("/healthz").status_code == 503
        finally:
            for connection in idle:
                connection.close()
        with httpx.Client(base_url=url) as later:
            wait_until(lambda: later.get("/healthz").status_code == 200, "the idle connections to go")


def test_readiness_says_which_version_is_loading(champion):
    app = create_app(champion, ServingConfig(token=TOKEN, poll_seconds=3600))
    with serving(app) as url, httpx.Client(base_url=url) as probe:
        answers = []
        wait_until(lambda: answers.append(probe.get("/readyz")) or answers[-1].status_code == 200, "the model")
    version = answers[-1].json()["model"]["version"]
    assert any(f"loading version {version}" in answer.text for answer in answers[:-1]), answers[0].text


def test_metrics_count_requests_by_endpoint_and_status_and_name_the_version_served(client, known_ids):
    recommend(client, {"history": known_ids[:3]})
    recommend(client, {"history": []})
    with httpx.Client(base_url=client.base_url) as anonymous:
        recommend(anonymous, {"history": known_ids[:3]})

    for status in ("200", "422", "401"):
        assert metric(client, "adaptrec_serving_requests_total", endpoint=RECOMMENDATIONS, status=status) >= 1
    assert metric(client, "adaptrec_serving_request_duration_seconds_count", endpoint=RECOMMENDATIONS) >= 3
    model = client.get("/readyz").json()["model"]
    assert metric(client, "adaptrec_serving_model_info", **model) == 1
    for outcome, count in {"loaded": 1, "load_failed": 0, "poll_failed": 0}.items():
        assert metric(client, "adaptrec_serving_model_reloads_total", outcome=outcome) == count


def test_without_a_champion_the_app_is_alive_but_not_ready(tmp_path, caplog, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # an empty registry of its own, not the champion's
    with caplog.at_level(logging.WARNING, logger="recsys_tasks.serving.app"):
        app = create_app(Settings(home=tmp_path), ServingConfig(token=None, poll_seconds=0.1))
    assert "without authentication" in caplog.text

    with serving(app) as url, httpx.Client(base_url=url) as http:
        assert http.get("/healthz").status_code == 200
        wait_until(lambda: "no 'champion' version" in http.get("/readyz").text, "the registry to be asked")
        assert http.get("/readyz").status_code == 503
        # Auth is off, so the request is refused for want of a model, not of a token.
        unready = recommend(http, {"history": [1]})
        assert unready.status_code == 503 and unready.headers["Retry-After"] == "1"
        assert "no model loaded yet" in one_line_detail(unready)


def test_production_mode_refuses_to_serve_without_a_token(tmp_path, monkeypatch):
    production = Settings(home=tmp_path, mode="production")
    with pytest.raises(ConfigError, match="set ADAPTREC_SERVING_TOKEN"):
        create_app(production, ServingConfig(token=None))
    with pytest.raises(ConfigError, match="at least 16 characters"):
        serving_config(token="short")
    monkeypatch.setenv("ADAPTREC_SERVING_TOKEN", TOKEN)
    assert serving_config().token.get_secret_value() == TOKEN
    with pytest.raises(ConfigError, match="production mode needs a pseudonymisation key"):
        create_app(production)  # served slates are logged with pseudonymised user ids
    create_app(Settings(home=tmp_path, mode="production", pseudonymisation_key="k" * 32))

    no_token = {"ADAPTREC_MODE": "production", "ADAPTREC_SERVING_TOKEN": ""}
    result = run_command("recsys", "serve", "--port", "0", env=no_token, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.strip().startswith("error:") and "\n" not in result.stderr.strip()
    assert "set ADAPTREC_SERVING_TOKEN" in result.stderr


def test_the_app_follows_champion_to_a_new_version_and_keeps_serving_through_a_broken_one(
    champion, known_ids, tmp_path
):
    registry = connect(champion)
    first = version_with_alias(registry, champion.model_name)

    def promote_new_version(source: str, run_id: str | None = None) -> str:
        version = str(registry.create_model_version(champion.model_name, source, run_id).version)
        registry.set_registered_model_alias(champion.model_name, CHAMPION_ALIAS, version)
        return version

    app = create_app(champion, ServingConfig(token=TOKEN, poll_seconds=0.2))
    try:
        with serving(app) as url, httpx.Client(base_url=url, headers=AUTHORISED, timeout=30) as http:
            wait_until(lambda: ready_version(http) == str(first.version), "the first champion to load")

            # The same trained model registered again, as the next nightly run would, and promoted.
            second = promote_new_version(first.source, first.run_id)
            wait_until(lambda: ready_version(http) == second, f"version {second} to replace {first.version}")
            assert recommend(http, {"history": known_ids[:3]}).json()["model"]["version"] == second

            # A version without a loadable model (an empty folder): counted, and the version serving stays.
            promote_new_version(tmp_path.as_uri())
            failures = "adaptrec_serving_model_reloads_total"
            wait_until(lambda: metric(http, failures, outcome="load_failed") >= 1, "the broken version to fail")
            # Tried again after 0.4 s, 0.8 s, 1.6 s, ..., not on each of the 0.2 s polls.
            time.sleep(1.5)
            assert metric(http, failures, outcome="load_failed") <= 3
            assert ready_version(http) == second
            assert recommend(http, {"history": known_ids[:3]}).json()["model"]["version"] == second
    finally:
        registry.set_registered_model_alias(champion.model_name, CHAMPION_ALIAS, first.version)


def test_the_int8_variant_serves_the_same_version_when_configured(champion, known_ids):
    app = create_app(champion, ServingConfig(token=TOKEN, poll_seconds=3600, variant="int8"))
    with serving(app) as url, httpx.Client(base_url=url, headers=AUTHORISED, timeout=30) as http:
        wait_until(lambda: ready_version(http), "the int8 variant to load")
        response = recommend(http, {"history": known_ids[:4], "k": 5})
    assert response.status_code == 200, response.text
    assert response.json()["model"]["variant"] == "int8"
    items = response.json()["recommendations"][0]["items"]
    assert len({item["item_id"] for item in items}) == 5 and not {item["item_id"] for item in items} & set(
        known_ids[:4]
    )


def test_several_workers_each_load_the_champion_and_share_the_metrics(champion, known_ids, tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "ADAPTREC_HOME": str(champion.home),
        "MLFLOW_TRACKING_URI": champion.resolved_tracking_uri,
        "ADAPTREC_SERVING_TOKEN": TOKEN,
        "ADAPTREC_SERVING_VARIANT": "int8",  # LiteRT: no TensorFlow to import in each worker
    }
    command = [str(VENV_BIN / "recsys"), "serve", "--port", str(port), "--workers", "2"]
    log = tmp_path / "serve.log"
    with log.open("w") as output:
        server = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        ready_workers: set[int] = set()

        def both_ready() -> bool:
            try:
                with httpx.Client(base_url=url) as fresh:  # a connection of its own: any worker may take it
                    answer = fresh.get("/readyz")
            except httpx.ConnectError:  # not listening yet
                return False
            if answer.status_code == 200:
                ready_workers.add(answer.json()["worker"])
            return len(ready_workers) == 2

        wait_until(
            lambda: (server.poll() is None or pytest.fail(log.read_text()[-3000:])) and both_ready(),
            "two workers to be ready",
        )
        for _ in range(6):
            with httpx.Client(base_url=url, headers=AUTHORISED) as fresh:
                assert recommend(fresh, {"history": known_ids[:3], "k": 2}).status_code == 200
        with httpx.Client(base_url=url) as probe:
            # Each worker counted its own requests; any worker's /metrics sums all of them.
            assert metric(probe, "adaptrec_serving_requests_total", endpoint=RECOMMENDATIONS, status="200") == 6
            workers_serving = metric(probe, "adaptrec_serving_model_reloads_total", outcome="loaded")
        assert workers_serving == 2
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def logged_window(settings: Settings, slates: int, events: int = 0):
    """The feedback store's whole log, once it holds at least ``slates`` slates and ``events`` events."""
    store = FeedbackStore.open(settings.resolved_feedback_uri)
    everything = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))

    def enough():
        window = store.window(*everything)
        return window if len(window.slates) >= slates and len(window.feedback) >= events else None

    return wait_until(enough, f"{slates} slates and {events} events in the feedback store")


def test_every_slate_served_is_logged_with_its_items_and_a_pseudonymous_user(client, champion, known_ids):
    raw_user = "alice@example.com"
    before = len(logged_window(champion, 0).slates)

    answer = recommend(client, {"user_id": raw_user, "history": known_ids[:4], "k": 3}).json()

    slate = answer["recommendations"][0]
    assert answer["policy"] == {"name": "greedy", "exploration": 0.0}
    assert [item["propensity"] for item in slate["items"]] == [1.0, 1.0, 1.0]
    window = logged_window(champion, before + 1)
    row = window.slates.set_index("request_id").loc[slate["request_id"]]
    assert row["user_pseudonym"] == pseudonym(raw_user, resolve_key(champion))
    assert (row["model_version"], row["variant"], row["policy"], row["k"]) == (
        answer["model"]["version"],
        "float32",
        "greedy",
        3,
    )
    assert row["history"] == known_ids[:4]
    shown = window.items[window.items["request_id"] == slate["request_id"]]
    assert shown["item_id"].tolist() == [item["item_id"] for item in slate["items"]]
    assert shown["position"].tolist() == [1, 2, 3]
    assert raw_user.encode() not in Path(champion.resolved_feedback_uri.removeprefix("sqlite:///")).read_bytes()


def test_feedback_on_a_shown_item_is_recorded_against_its_slate(client, champion, known_ids):
    slate = recommend(client, {"history": known_ids[:4], "k": 3}).json()["recommendations"][0]
    clicked, bought = slate["items"][0]["item_id"], slate["items"][2]["item_id"]
    before = len(logged_window(champion, 0).feedback)
    events = [
        {"request_id": slate["request_id"], "item_id": clicked, "event": "click"},
        {
            "request_id": slate["request_id"],
            "item_id": bought,
            "event": "purchase",
            "timestamp": datetime.now(UTC).isoformat(),
        },
    ]

    response = client.post(FEEDBACK, json={"events": events})

    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 2
    recorded = logged_window(champion, 1, events=before + 2).feedback
    mine = recorded[recorded["request_id"] == slate["request_id"]].sort_values("id")
    assert mine[["item_id", "event"]].values.tolist() == [[clicked, "click"], [bought, "purchase"]]


@pytest.mark.parametrize(
    ("change", "status", "named"),
    [
        ({"request_id": "00000000-0000-4000-8000-000000000000"}, 404, "events.0.request_id: no slate"),
        ({"item_id": 987_654_321}, 422, "events.0.item_id: 987654321 was not shown in slate"),
        ({"event": "like"}, 422, "events.0.event"),
        (
            {"timestamp": "2999-01-01T00:00:00+00:00"},
            422,
            "events.0.timestamp: 2999-01-01T00:00:00+00:00 is not between",
        ),
        ({"timestamp": "2026-01-01T00:00:00"}, 422, "events.0.timestamp: Input should have timezone info"),
    ],
)
def test_feedback_that_does_not_match_a_served_slate_gets_a_one_line_4xx(client, known_ids, change, status, named):
    slate = recommend(client, {"history": known_ids[:4], "k": 2}).json()["recommendations"][0]
    event = {"request_id": slate["request_id"], "item_id": slate["items"][0]["item_id"], "event": "click"} | change

    response = client.post(FEEDBACK, json={"events": [event]})

    assert response.status_code == status, response.text
    assert named in one_line_detail(response)


def test_feedback_needs_the_bearer_token(server, known_ids):
    with httpx.Client(base_url=server) as anonymous:
        response = anonymous.post(FEEDBACK, json={"events": [{"request_id": "x", "item_id": 1, "event": "click"}]})
    assert response.status_code == 401


def test_an_exploring_policy_logs_exact_propensities_reproducible_from_the_request_id(
    client, champion, known_ids, tmp_path
):
    settings = champion.model_copy(update={"feedback_uri": f"sqlite:///{tmp_path / 'feedback.db'}"})
    policy = SlatePolicy("epsilon_greedy", exploration=0.5, candidates=6)
    config = ServingConfig(policy=policy.name, exploration=policy.exploration, candidates=policy.candidates)
    history, k = known_ids[:4], 3
    # The model's own ranking, from the module's greedy server of the same champion.
    ranked = recommend(client, {"history": history, "k": policy.candidates}).json()["recommendations"][0]["items"]
    greedy = [item["item_id"] for item in ranked]
    with serving(create_app(settings, config)) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_until(lambda: ready_version(http), "the champion to load")
        slates = [recommend(http, {"history": history, "k": k}).json()["recommendations"][0] for _ in range(30)]

    for slate in slates:
        drawn = policy.choose(k, policy.candidates, seed=request_seed(slate["request_id"])).chosen
        assert [item["item_id"] for item in slate["items"]] == [greedy[index] for index in drawn]
        expected = policy.distribution(k, policy.candidates)[drawn, range(k)]
        assert [item["propensity"] for item in slate["items"]] == pytest.approx(expected.tolist())
    assert any(item["propensity"] < 0.5 for slate in slates for item in slate["items"])  # some slates explored
    assert len(logged_window(settings, 30).items) == 30 * k


def test_a_feedback_store_outage_drops_logged_slates_but_never_fails_a_recommendation(champion, known_ids):
    nowhere = f"postgresql+psycopg://adaptrec@127.0.0.1:{free_port()}/feedback?connect_timeout=2"
    settings = champion.model_copy(update={"feedback_uri": nowhere})
    config = ServingConfig(log_flush_seconds=FLUSH_SECONDS, policy="greedy")
    with serving(create_app(settings, config)) as url, httpx.Client(base_url=url, timeout=30) as http:
        wait_until(lambda: ready_version(http), "the champion to load")
        answers = [recommend(http, {"history": known_ids[:3], "k": 2}) for _ in range(5)]
        assert [answer.status_code for answer in answers] == [200] * 5
        wait_until(
            lambda: metric(http, "adaptrec_serving_log_dropped_total", kind="slates", reason="database_error") == 5,
            "the five slates to be counted as dropped",
        )
        slate = answers[0].json()["recommendations"][0]
        # Its own worker still knows the slate; the event is accepted and dropped with the outage.
        event = {"request_id": slate["request_id"], "item_id": slate["items"][0]["item_id"], "event": "click"}
        assert http.post(FEEDBACK, json={"events": [event]}).status_code == 202
        unknown = {"request_id": "00000000-0000-4000-8000-000000000000", "item_id": 1, "event": "click"}
        refused = http.post(FEEDBACK, json={"events": [unknown]})
        assert refused.status_code == 503 and "feedback store cannot be read" in one_line_detail(refused)
        assert metric(http, "adaptrec_serving_logged_total", kind="slates") == 0


def test_feedback_reaches_a_worker_that_did_not_serve_the_slate(champion, known_ids, tmp_path):
    settings = champion.model_copy(update={"feedback_uri": f"sqlite:///{tmp_path / 'shared-feedback.db'}"})
    FeedbackStore.open(settings.resolved_feedback_uri)  # migrated before the workers start, as `recsys serve` does
    config = ServingConfig(log_flush_seconds=FLUSH_SECONDS, policy="greedy")
    with (
        serving(create_app(settings, config)) as first,
        serving(create_app(settings, config)) as second,
        httpx.Client(base_url=first, timeout=30) as serving_worker,
        httpx.Client(base_url=second, timeout=30) as other_worker,
    ):
        for http in (serving_worker, other_worker):
            wait_until(lambda http=http: ready_version(http), "the champion to load")
        slate = recommend(serving_worker, {"history": known_ids[:3], "k": 2}).json()["recommendations"][0]
        event = {"request_id": slate["request_id"], "item_id": slate["items"][1]["item_id"], "event": "dismiss"}

        assert other_worker.post(FEEDBACK, json={"events": [event]}).status_code == 202
    assert logged_window(settings, 1, events=1).feedback["event"].tolist() == ["dismiss"]

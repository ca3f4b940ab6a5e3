"""A first-party HTTP server for the registered recommender, for what MLflow's own model server lacks.

- Bearer-token auth (``ADAPTREC_SERVING_TOKEN``); ``/healthz``, ``/readyz`` and ``/metrics`` stay open for
  probes and scrapers. Production mode refuses to start without a token.
- Validation with one-line 4xx errors; a body over the limit gets 413 before anything parses it, one that does
  not arrive in time 408, one not sent as JSON 415, one that repeats a key 400.
- Requests go to the model's ``recommend()`` with the validated lists: no DataFrame per request; requests that
  queue behind a model call are answered by one call together.
- A serving policy (contracts.slate_policy) picks each slate from the model's ranking, now and then exploring;
  every slate is logged with its request id, pseudonymised user and propensities, and ``/v1/feedback``
  records clicks, purchases and dismissals against it (serving.impressions: off the request path).
- Hot reload: a background thread polls the registry and swaps in the version holding the alias once
  that version has loaded and answered a smoke request, so a broken version never replaces a working one.
- Prometheus metrics: requests by endpoint and status sent (``aborted`` when the client went away first),
  latency, the version served, reload outcomes. A version that fails to load is retried with back-off.
- The access log never shows the value of a token-like query parameter.

``recsys serve`` runs it (recsys_tasks.serving.server: workers, deadlines on slow clients); ``create_app``
builds it for any ASGI server.
"""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import math
import os
import re
import threading
import time
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import TYPE_CHECKING, Literal

import pandas as pd
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from recsys_tasks.constants import CHAMPION_ALIAS
from recsys_tasks.contracts.feedback_store import FeedbackEvent, LoggedSlate, ShownItem
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.contracts.slate_policy import PolicyName, Slate, SlatePolicy, request_seed
from recsys_tasks.errors import ConfigError, first_line
from recsys_tasks.privacy import pseudonym, resolve_key
from recsys_tasks.serving.impressions import FeedbackStoreUnavailable, ImpressionLog
from recsys_tasks.serving.schemas import (
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    Readiness,
    RecommendationRequest,
    RecommendationResponse,
    UserRequest,
)
from recsys_tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

    from recsys_tasks.contracts.exported_model import SequentialRecommender

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MIN_TOKEN_LENGTH = 16
RELOAD_OUTCOMES = ("loaded", "load_failed", "poll_failed")
STOP_TIMEOUT_SECONDS = 5.0
# A version that failed to load is tried again after the poll interval doubled per failure, at most this long.
MAX_RETRY_SECONDS = 3600.0
# Where the app's lifespan tells the server how long a client may take to send a request.
READ_SECONDS_STATE = "adaptrec_read_seconds"
# Query parameters whose value the access log never shows (a token sent in the URL by mistake, say).
SECRET_PARAMETER = re.compile(r"([?&][^=&#]*(?:token|key|secret|password|passwd|auth|session)[^=&#]*=)[^&#]*", re.I)
# A user's answer: recommended item ids, their scores, and for each the history item it is there because of.
Answer = tuple[list, list, list]
# How far a feedback event's timestamp may lie outside [slate served, received] (clients' clocks drift).
CLOCK_SKEW = timedelta(minutes=5)
# How many offending ids or validation errors one error line names before it says "and N more".
NAMED_IN_ERRORS = 10


class ServingConfig(BaseSettings):
    """Serving options; each has an environment variable, e.g. ``ADAPTREC_SERVING_TOKEN``."""

    model_config = SettingsConfigDict(env_prefix="ADAPTREC_SERVING_", extra="ignore", env_ignore_empty=True)

    token: SecretStr | None = Field(None, description="Bearer token clients send; none = no auth (embedded mode).")
    alias: str = Field(CHAMPION_ALIAS, min_length=1, description="Registry alias to serve and follow.")
    variant: Literal["float32", "int8"] = Field(
        "float32", description="Which variant of each version to serve: float32, or int8 (smaller and faster)."
    )
    poll_seconds: float = Field(10.0, gt=0, description="How often to ask the registry whether the alias moved.")
    max_batch: int = Field(256, ge=1, description="Most users in one request.")
    max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest request body; larger gets 413 unread.")
    read_seconds: float = Field(
        5.0, gt=0, le=300, description="Time a client has to send a request's headers, and then its body (else 408)."
    )
    policy: PolicyName = Field(
        "epsilon_greedy",
        description="How a slate is chosen from the model's ranking: greedy (its top k), or epsilon_greedy (with "
        "probability `exploration`, k of its top `candidates` at random); each shown item's propensity is logged.",
    )
    exploration: float = Field(0.05, ge=0, le=1, description="ε of epsilon_greedy: the share of slates explored.")
    candidates: int = Field(
        20, ge=1, le=1000, description="How many of the model's best items an explored slate is drawn from."
    )
    log_slates: bool = Field(
        True, description="Log every served slate and its feedback to the feedback store (ADAPTREC_FEEDBACK_URI)."
    )
    log_queue: int = Field(
        10_000, ge=10, description="Most slates and events waiting to be logged; beyond it they are dropped, counted."
    )
    log_flush_seconds: float = Field(0.5, gt=0, le=60, description="Longest a logged slate waits to be written.")

    @property
    def slate_policy(self) -> SlatePolicy:
        return SlatePolicy(self.policy, self.exploration, self.candidates)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token needs at least {MIN_TOKEN_LENGTH} characters, or it can be guessed")
        return token


def _listed(values: list, separator: str = ", ") -> str:
    named = separator.join(str(value) for value in values[:NAMED_IN_ERRORS])
    return named if len(values) <= NAMED_IN_ERRORS else f"{named} and {len(values) - NAMED_IN_ERRORS} more"


def _described(errors: list[dict], skip: int = 0) -> str:
    """Validation errors on one line, by location: ``users.0.k: Input should be less than or equal to 100``."""
    return _listed([f"{'.'.join(map(str, error['loc'][skip:])) or 'body'}: {error['msg']}" for error in errors], "; ")


def serving_config(**values) -> ServingConfig:
    """The serving options: ``values`` over the environment, or a one-line ConfigError naming what is wrong."""
    try:
        return ServingConfig(**values)
    except ValidationError as exc:
        raise ConfigError(f"serving configuration (ADAPTREC_SERVING_*): {_described(exc.errors())}") from None


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status, headers=headers)


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, loaded. Swapped as a whole and never changed, so a request sees one version."""

    info: ModelInfo
    pyfunc: PyFuncModel
    recommender: SequentialRecommender
    index_of: dict[int, int]
    accepts_exclude: bool

    @classmethod
    def load(cls, model_name: str, version: str, alias: str, variant: str) -> LoadedModel:
        import mlflow

        # By version, not by alias: what is swapped in is exactly the version the registry reported.
        pyfunc = mlflow.pyfunc.load_model(version_uri(model_name, version), model_config={"variant": variant})
        inputs = pyfunc.metadata.get_input_schema()
        recommender = pyfunc.unwrap_python_model()
        model = cls(
            info=ModelInfo(name=model_name, version=version, alias=alias, variant=variant),
            pyfunc=pyfunc,
            recommender=recommender,
            index_of=recommender.index_of,
            # MLflow silently drops input columns a signature lacks: a version registered before `exclude`
            # existed would recommend excluded items, so the app refuses such requests instead.
            accepts_exclude=inputs is not None and "exclude" in inputs.input_names(),
        )
        # A version that loads but cannot answer must never replace one that can; this also builds
        # TensorFlow's call graph here rather than on the first request.
        pyfunc.predict(pd.DataFrame({"history": [[next(iter(model.index_of))]], "k": [1]}))
        return model

    def known_history(self, position: int, user: UserRequest, ignore_unknown: bool) -> list[int]:
        unknown = [item for item in user.history if item not in self.index_of]
        if unknown and not ignore_unknown:
            raise HTTPException(
                422,
                f"users.{position}.history: item ids this model does not know: {_listed(unknown)} "
                "(send ignore_unknown: true to skip them)",
            )
        known = [item for item in user.history if item in self.index_of]
        if not known:
            raise HTTPException(422, f"users.{position}.history: no item this model knows")
        return known

    def _room(self, position: int, user: UserRequest, history: list[int]) -> int:
        """How many items are left to recommend to a user; refuses one left fewer than k, saying how many."""
        left = len(self.index_of) - len({*history, *(item for item in user.exclude if item in self.index_of)})
        if not left:
            raise HTTPException(
                422, f"users.{position}: history and exclude hold every item this model knows: nothing is left"
            )
        if user.k > left:
            raise HTTPException(
                422, f"users.{position}.k: {user.k} asked, but history and exclude leave {left} items to recommend"
            )
        return left

    def validated(self, request: RecommendationRequest) -> tuple[list[list[int]], list[int]]:
        """Each user's history as the model knows it and how many items are left to recommend to them, or a 422
        naming what the model cannot answer."""
        users = request.users
        histories = [self.known_history(n, user, request.ignore_unknown) for n, user in enumerate(users)]
        if not self.accepts_exclude and any(user.exclude for user in users):
            raise HTTPException(
                422, f"version {self.info.version} of {self.info.name} predates `exclude`: send no exclude list"
            )
        return histories, [self._room(n, user, history) for n, (user, history) in enumerate(zip(users, histories))]

    def answers(self, histories: list, ks: list[int], exclusions: list) -> list[Answer]:
        """(item ids, scores, because) per user, from the model's ``recommend()`` with validated lists
        (``predict`` and its DataFrames only for versions that predate ``recommend()``)."""
        from mlflow.exceptions import MlflowException

        try:
            if hasattr(self.recommender, "recommend"):
                return [tuple(answer) for answer in self.recommender.recommend(histories, ks, exclusions)]
            inputs = {"history": histories, "k": ks} | ({"exclude": exclusions} if self.accepts_exclude else {})
            prediction = self.pyfunc.predict(pd.DataFrame(inputs))
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            raise HTTPException(422, f"the model refused the request: {first_line(exc)}") from None
        # Versions registered before `because` existed do not say why; their items get because=null.
        items = [list(row) for row in prediction["item_ids"]]
        because = [list(row) for row in prediction["because"]] if "because" in prediction else None
        return [
            (row, list(scores), because[n] if because else [None] * len(row))
            for n, (row, scores) in enumerate(zip(items, prediction["scores"]))
        ]


@dataclass
class _QueuedCall:
    model: LoadedModel
    histories: list[list[int]]
    ks: list[int]
    exclusions: list[list[int]]
    answered: asyncio.Future


_CALL_LISTS = ("histories", "ks", "exclusions")


class ModelCalls:
    """Calls the model one call at a time, in a thread of its own, batching the requests that queue meanwhile.

    One call at a time per worker process: NumPy's BLAS and TensorFlow each spread one call over every core,
    so calls side by side only fight over the cores (throughput comes from worker processes). Requests that
    arrive while a call runs are answered together by the next one: one encoder call and one matrix product
    for all their users. A request that finds the model idle is called at once, so batching never waits.
    """

    def __init__(self, max_users: int, users_per_call: Histogram | None = None):
        self.max_users, self._users_per_call = max_users, users_per_call
        self._queue: deque[_QueuedCall] = deque()
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._drain: asyncio.Task | None = None

    async def answers(self, model: LoadedModel, histories: list, ks: list[int], exclusions: list) -> list[Answer]:
        answered = asyncio.get_running_loop().create_future()
        self._queue.append(_QueuedCall(model, histories, ks, exclusions, answered))
        if self._drain is None:
            self._drain = asyncio.create_task(self._call_until_empty())
        return await answered

    def shutdown(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)

    async def _call_until_empty(self) -> None:
        try:
            while self._queue:
                await self._call(self._next_batch())
        finally:
            self._drain = None

    def _next_batch(self) -> list[_QueuedCall]:
        """The oldest queued calls to one model version, up to ``max_users`` users (at least one call)."""
        batch = [self._queue.popleft()]
        users = len(batch[0].histories)
        while self._queue and self._queue[0].model is batch[0].model:
            users += len(self._queue[0].histories)
            if users > self.max_users:
                break
            batch.append(self._queue.popleft())
        return batch

    async def _call(self, batch: list[_QueuedCall]) -> None:
        loop, model = asyncio.get_running_loop(), batch[0].model
        merged = [list(chain.from_iterable(getattr(call, field) for call in batch)) for field in _CALL_LISTS]
        if self._users_per_call is not None:
            self._users_per_call.observe(len(merged[0]))
        try:
            answers = await loop.run_in_executor(self._thread, model.answers, *merged)
        except Exception as exc:
            if isinstance(exc, HTTPException) and len(batch) > 1:
                # The model refused a row: call again one by one, so that only that row's request fails.
                for call in batch:
                    await self._call([call])
            else:
                _settle(batch, error=exc)
            return
        _settle(batch, answers=answers)


def _settle(batch: list[_QueuedCall], answers: list[Answer] | None = None, error: BaseException | None = None):
    """Gives each queued call its own users' answers, or the error (a client that went away gets nothing)."""
    start = 0
    for call in batch:
        if not call.answered.done():  # done already: its client went away and the request was cancelled
            if error is not None:
                call.answered.set_exception(error)
            else:
                call.answered.set_result(answers[start : start + len(call.histories)])
        start += len(call.histories)


class ServingMetrics:
    """The app's Prometheus metrics, in a registry of its own so that several apps in one process never clash."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "adaptrec_serving_requests",
            "HTTP requests by endpoint and status code.",
            ["endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "adaptrec_serving_request_duration_seconds",
            "Time to answer a request.",
            ["endpoint"],
            registry=self.registry,
        )
        self.model = Gauge(
            "adaptrec_serving_model_info",
            "The model version being served (value 1; 0: served before).",
            ["name", "version", "alias", "variant"],
            registry=self.registry,
            multiprocess_mode="liveall",  # with several workers: each worker's own, labelled by pid
        )
        self._served: tuple[str, ...] | None = None
        self.reloads = Counter(
            "adaptrec_serving_model_reloads",
            "Attempts to follow the alias, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in RELOAD_OUTCOMES:  # a failure count of 0 is shown, not absent
            self.reloads.labels(outcome)
        self.logged = Counter(
            "adaptrec_serving_logged",
            "Slates and feedback events written to the feedback store.",
            ["kind"],
            registry=self.registry,
        )
        self.log_dropped = Counter(
            "adaptrec_serving_log_dropped",
            "Slates and feedback events not logged, by reason (queue_full, database_error).",
            ["kind", "reason"],
            registry=self.registry,
        )
        self.call_users = Histogram(
            "adaptrec_serving_model_call_users",
            "Users answered by one model call (requests that queue behind a call are answered together).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
            registry=self.registry,
        )

    def observe(self, endpoint: str, status: str, seconds: float) -> None:
        self.requests.labels(endpoint, status).inc()
        self.latency.labels(endpoint).observe(seconds)

    def serving(self, info: ModelInfo) -> None:
        if self._served is not None:
            # Set to 0 first: with several workers the value lives in a file that removing the series leaves.
            self.model.labels(*self._served).set(0)
            self.model.remove(*self._served)
        self._served = (info.name, info.version, info.alias, info.variant)
        self.model.labels(*self._served).set(1)

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or with several workers all of theirs."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        everyone = CollectorRegistry()
        multiprocess.MultiProcessCollector(everyone)
        return generate_latest(everyone)


class ChampionWatcher:
    """Follows the registry alias from a background thread and swaps in each version it moves to."""

    def __init__(self, settings: Settings, config: ServingConfig, metrics: ServingMetrics):
        self.settings, self.metrics = settings, metrics
        self.alias, self.variant, self.poll_seconds = config.alias, config.variant, config.poll_seconds
        self.current: LoadedModel | None = None
        self.loading: str | None = None  # the version being loaded, while it loads
        self.problem = "the registry has not been asked yet"
        # Versions that failed to load: failed attempts so far, and when (time.monotonic) to try again.
        self._failed: dict[str, tuple[int, float]] = {}
        self._client: MlflowClient | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._follow, name=f"follow-{self.alias}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        # A load still running is abandoned with the daemon thread at exit rather than holding up shutdown.
        self._thread.join(timeout=STOP_TIMEOUT_SECONDS)

    def _follow(self) -> None:
        while not self._stopping.is_set():
            self.check()
            self._stopping.wait(self.poll_seconds)

    def check(self) -> None:
        """Ask the registry once; load the alias's version if it is not the one serving."""
        from recsys_tasks.contracts.registry import version_with_alias
        from recsys_tasks.contracts.tracking import connect

        name = self.settings.model_name
        try:
            self._client = self._client or connect(self.settings)
            holder = version_with_alias(self._client, name, self.alias)
        except Exception as exc:  # a registry outage must not end the thread: the next poll tries again
            self.metrics.reloads.labels("poll_failed").inc()
            self._note(f"cannot ask the registry at {self.settings.resolved_tracking_uri}: {first_line(exc)}")
            return
        if holder is None:
            self._note(f"{name} has no '{self.alias}' version in the registry")
            return
        version = str(holder.version)
        if self.current is not None and self.current.info.version == version:
            self.problem = ""  # so that a problem coming back is logged again
            return
        attempts, next_try = self._failed.get(version, (0, 0.0))
        if time.monotonic() < next_try:
            return
        self.loading = version
        try:
            loaded = LoadedModel.load(name, version, self.alias, self.variant)
        except Exception as exc:  # whatever breaks the new version, the one serving stays
            attempts += 1
            delay = min(self.poll_seconds * 2**attempts, MAX_RETRY_SECONDS)
            self._failed[version] = (attempts, time.monotonic() + delay)
            self.metrics.reloads.labels("load_failed").inc()
            self._note(
                f"version {version} of {name} failed to load (attempt {attempts}, next in {delay:.0f} s), "
                f"so it is not served: {first_line(exc)}"
            )
            return
        finally:
            self.loading = None
        self._failed.pop(version, None)
        before, self.current = self.current, loaded
        _out_of_the_collectors_sight()
        self.metrics.serving(loaded.info)
        self.metrics.reloads.labels("loaded").inc()
        self.problem = ""
        log.info(
            "serving %s version %s (%s; before: %s)",
            name,
            version,
            self.alias,
            before.info.version if before else "none",
        )

    def _note(self, problem: str) -> None:
        if problem != self.problem:  # logged once when it starts, not once per poll
            log.warning("%s", problem)
        self.problem = problem


def _out_of_the_collectors_sight() -> None:
    """Freezes every object alive now (the model, TensorFlow, MLflow) so that Python's cycle collector stops
    walking them: otherwise a full collection, which requests' garbage triggers now and then, walks hundreds of
    thousands of objects and stalls that request. Unfrozen and collected first, so that the version just replaced
    can be freed; this pause happens once per reload, in the watcher's thread."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


class RequestMetrics:
    """Counts and times every request by endpoint and the status sent; turns an unexpected error into a one-line
    500. A request that got no answer because its client went away is counted as ``aborted``, not as an error."""

    def __init__(self, app: ASGIApp, metrics: ServingMetrics, endpoints: frozenset[str]):
        self.app, self.metrics, self.endpoints = app, metrics, endpoints

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Labelled by route, never by raw path: any client could otherwise create label values without end.
        endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
        status: int | None = None

        async def send_noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        began = time.perf_counter()
        try:
            await self.app(scope, receive, send_noting_status)
        except Exception as exc:
            log.exception("unexpected error answering %s %s", scope["method"], endpoint)
            if status is not None:  # too late for a 500: the server closes the connection
                raise
            status = 500
            message = f"internal error ({type(exc).__name__}); the server log has the details"
            await _error(500, message)(scope, receive, send)
        finally:
            self.metrics.observe(endpoint, "aborted" if status is None else str(status), time.perf_counter() - began)


class BearerTokenAuth:
    """Lets a request through only with ``Authorization: Bearer <token>``; the probe endpoints stay open.

    FastAPI's ``HTTPBearer`` reads the header; it runs here, in a middleware, rather than as a route
    dependency, because FastAPI reads and parses a route's body before its dependencies run: a
    client without the token would get 400 or 413 answers about its body instead of 401.
    """

    _bearer = HTTPBearer(auto_error=False)

    def __init__(self, app: ASGIApp, token: str):
        self.app, self.token = app, token.encode()

    async def _authorised(self, scope: Scope) -> bool:
        credentials = await self._bearer(Request(scope))
        # compare_digest takes as long for a near miss as for a wild guess: the token leaks nothing by timing.
        return credentials is not None and hmac.compare_digest(credentials.credentials.strip().encode(), self.token)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in OPEN_PATHS and not await self._authorised(scope):
            response = _error(401, "send Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class RequestBody:
    """Reads the whole request body before the app sees any of it, and hands it on in one piece.

    - a body over ``max_bytes`` gets 413 (unread when its declared length says so);
    - a body that has not arrived ``read_seconds`` after the request began gets 408, so a client that declares
      more than it sends cannot hold the connection;
    - posted to ``json_paths``, a body must come as ``application/json`` (415) and name each key once (400): JSON
      parsers keep the last of repeated keys, so a repeated one would be ignored without a word.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, read_seconds: float, json_paths: frozenset[str]):
        self.app, self.max_bytes, self.read_seconds, self.json_paths = app, max_bytes, read_seconds, json_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        body = bytearray()
        deadline = asyncio.get_running_loop().time() + self.read_seconds
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                await _error(408, f"the request body did not arrive within {self.read_seconds:g} s")(
                    scope, receive, send
                )
                return
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        posted_json = scope["method"] == "POST" and scope["path"] in self.json_paths
        if posted_json and (problem := _json_body_problem(headers, bytes(body))):
            await _error(*problem)(scope, receive, send)
            return
        handed_on = False

        async def replay() -> Message:
            nonlocal handed_on
            if handed_on:  # after the body, only a disconnect can come
                return await receive()
            handed_on = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(413, f"the request body is larger than {self.max_bytes} bytes")(scope, receive, send)


def _json_body_problem(headers: Headers, body: bytes) -> tuple[int, str] | None:
    """(status, message) when a JSON endpoint's body is not sent as JSON or repeats a key; None when fine."""
    media_type = headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json":
        return 415, f"send the body as Content-Type: application/json, not {media_type or 'no Content-Type'}"
    repeated: list[str] = []

    def keep_repeated(pairs: list[tuple[str, object]]) -> dict:
        keys: set[str] = set()
        for key, _ in pairs:
            if key in keys:
                repeated.append(key)
            keys.add(key)
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=keep_repeated)
    except ValueError:
        return None  # malformed: the request's validation says where
    return (400, f"the body repeats the key {repeated[0]!r}: send each key once") if repeated else None


class RedactSecrets(logging.Filter):
    """Replaces the value of any token-, key- or password-like query parameter in access-log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's access line: (client, method, path with query, HTTP version, status).
        if isinstance(record.args, tuple) and len(record.args) >= 3 and isinstance(record.args[2], str):
            args = list(record.args)
            args[2] = SECRET_PARAMETER.sub(r"\1[redacted]", args[2])
            record.args = tuple(args)
        return True


def redact_access_log() -> None:
    """Installs ``RedactSecrets`` on uvicorn's access logger, once per process."""
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactSecrets) for existing in access.filters):
        access.addFilter(RedactSecrets())


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    malformed = next((error for error in errors if error["type"] == "json_invalid"), None)
    if malformed is not None:
        return _error(
            400, f"the body is not valid JSON: {malformed['ctx']['error']} at character {malformed['loc'][-1]}"
        )
    # Locations start with "body", which says nothing to a client that sent one.
    return _error(422, _described(errors, skip=1))


@dataclass(frozen=True)
class ServedSlate:
    request_id: str
    items: list[dict]  # the response's items: item_id, score, because, propensity
    candidates: int  # how many of the model's best items the policy draws an explored slate from


def _served_slate(request_id: str, answer: Answer, slate: Slate, candidates: int) -> ServedSlate:
    """The items of a drawn slate, from the model's ranked answer."""
    items, scores, because = answer
    shown = [
        {"item_id": items[index], "score": scores[index], "because": because[index], "propensity": propensity}
        for index, propensity in zip(slate.chosen.tolist(), slate.propensities.tolist())
    ]
    return ServedSlate(request_id, shown, candidates)


def _logged(
    info: ModelInfo,
    policy: SlatePolicy,
    users: list[UserRequest],
    histories: list[list[int]],
    slates: list[ServedSlate],
    key: bytes,
) -> list[LoggedSlate]:
    """The feedback store's rows of served slates; a user id is kept only as its pseudonym."""
    served_at = datetime.now(UTC)
    return [
        LoggedSlate.model_construct(
            request_id=slate.request_id,
            served_at=served_at,
            user_pseudonym=pseudonym(user.user_id, key) if user.user_id is not None else None,
            model_name=info.name,
            model_version=info.version,
            variant=info.variant,
            policy=policy.name,
            exploration=policy.share_explored,
            candidates=slate.candidates,
            history=history,
            exclude=user.exclude,
            k=user.k,
            items=[
                ShownItem.model_construct(
                    item_id=item["item_id"], position=position, score=item["score"], propensity=item["propensity"]
                )
                for position, item in enumerate(slate.items, start=1)
            ],
        )
        for user, history, slate in zip(users, histories, slates)
    ]


def create_app(settings: Settings, config: ServingConfig | None = None) -> FastAPI:
    """The serving app for ``settings``' registry; it starts following the alias when the server starts."""
    config = config or serving_config()
    if config.token is None:
        if settings.mode == "production":
            raise ConfigError("production mode serves only behind a bearer token: set ADAPTREC_SERVING_TOKEN")
        log.warning("ADAPTREC_SERVING_TOKEN is not set: serving without authentication (embedded mode)")
    redact_access_log()
    metrics = ServingMetrics()
    watcher = ChampionWatcher(settings, config, metrics)
    retry_after = {"Retry-After": str(math.ceil(config.poll_seconds))}

    model_calls = ModelCalls(max_users=config.max_batch, users_per_call=metrics.call_users)
    policy = config.slate_policy
    impressions, pseudonym_key = None, b""
    if config.log_slates:
        pseudonym_key = resolve_key(settings)  # user ids are logged as pseudonyms only, as ingest writes them
        impressions = ImpressionLog(
            settings.resolved_feedback_uri,
            capacity=config.log_queue,
            flush_seconds=config.log_flush_seconds,
            logged=metrics.logged,
            dropped=metrics.log_dropped,
        )

    @asynccontextmanager
    async def follow_alias_while_serving(app: FastAPI):
        watcher.start()
        if impressions is not None:
            impressions.start()
        yield {READ_SECONDS_STATE: config.read_seconds}  # the server's state: its protocol reads the deadline
        watcher.stop()
        model_calls.shutdown()
        if impressions is not None:
            impressions.stop()

    app = FastAPI(title="AdaptRec recommendations", lifespan=follow_alias_while_serving)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"description": "No model loaded yet."}})
    async def readyz():
        """Readiness: a model version is loaded and serving."""
        model, loading = watcher.current, watcher.loading
        if model is None:
            problem = f"loading version {loading}" if loading else watcher.problem
            return _error(503, f"no model loaded yet: {problem}", retry_after)
        return Readiness(status="ready", model=model.info, loading=loading, worker=os.getpid())

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    # The body is built as plain JSON: the response model documents it, and validating what the model
    # answered once more would only cost time.
    @app.post("/v1/recommendations", response_model=RecommendationResponse)
    async def recommendations(request: RecommendationRequest) -> JSONResponse:
        """Top-k items for each user's history, none from the history or `exclude`: the model's best first, or
        now and then (`policy`) a slate drawn from its best candidates. Each user's slate has a request id for
        feedback, and each item its propensity."""
        model = watcher.current  # read once: a reload during this request does not change its model
        if model is None:
            raise HTTPException(503, f"no model loaded yet: {watcher.problem}", headers=retry_after)
        if len(request.users) > config.max_batch:
            raise HTTPException(422, f"users: at most {config.max_batch} per request, got {len(request.users)}")
        histories, room = model.validated(request)
        users = request.users
        request_ids = [str(uuid.uuid4()) for _ in users]
        pools = [policy.candidates_for(user.k, left) for user, left in zip(users, room)]
        drawn = [policy.choose(u.k, pool, request_seed(rid)) for u, pool, rid in zip(users, pools, request_ids)]
        ranked = [slate.ranked_needed(user.k, pool) for user, slate, pool in zip(users, drawn, pools)]
        answers = await model_calls.answers(model, histories, ranked, [user.exclude for user in users])
        slates = [_served_slate(*served) for served in zip(request_ids, answers, drawn, pools)]
        if impressions is not None:
            impressions.served(_logged(model.info, policy, users, histories, slates, pseudonym_key))
        return JSONResponse(
            {
                "model": model.info.model_dump(),
                "policy": {"name": policy.name, "exploration": policy.share_explored},
                "recommendations": [
                    {"user_id": user.user_id, "request_id": slate.request_id, "items": slate.items}
                    for user, slate in zip(users, slates)
                ],
            }
        )

    if impressions is not None:

        @app.post("/v1/feedback", response_model=FeedbackResponse, status_code=202)
        async def feedback(request: FeedbackRequest) -> JSONResponse:
            """Records what users did with the slates they were shown: click, purchase or dismiss an item."""
            received = datetime.now(UTC)
            slates: dict[str, tuple[datetime, set[int]]] = {}
            events = []
            for n, sent in enumerate(request.events):
                if sent.request_id not in slates:
                    try:
                        shown = await impressions.shown(sent.request_id)
                    except FeedbackStoreUnavailable as exc:
                        raise HTTPException(503, str(exc), headers=retry_after) from None
                    if shown is None:
                        raise HTTPException(404, f"events.{n}.request_id: no slate {sent.request_id!r} was served")
                    slates[sent.request_id] = shown
                served_at, items = slates[sent.request_id]
                if sent.item_id not in items:
                    raise HTTPException(
                        422, f"events.{n}.item_id: {sent.item_id} was not shown in slate {sent.request_id}"
                    )
                occurred = sent.timestamp or received
                if not served_at - CLOCK_SKEW <= occurred <= received + CLOCK_SKEW:
                    raise HTTPException(
                        422,
                        f"events.{n}.timestamp: {occurred.isoformat()} is not between the slate being served "
                        f"({served_at.isoformat()}) and now",
                    )
                events.append(
                    FeedbackEvent.model_construct(
                        request_id=sent.request_id,
                        item_id=sent.item_id,
                        event=sent.event,
                        occurred_at=occurred,
                        received_at=received,
                    )
                )
            impressions.received(events)
            return JSONResponse({"accepted": len(events), "received_at": received.isoformat()}, status_code=202)

    # Added innermost first: metrics see every answer, auth runs before any body is read.
    app.add_middleware(
        RequestBody,
        max_bytes=config.max_body_bytes,
        read_seconds=config.read_seconds,
        json_paths=frozenset({"/v1/recommendations", "/v1/feedback"}),
    )
    if config.token is not None:
        app.add_middleware(BearerTokenAuth, token=config.token.get_secret_value())
    app.add_middleware(RequestMetrics, metrics=metrics, endpoints=frozenset(route.path for route in app.routes))
    return app

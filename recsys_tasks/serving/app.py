"""A first-party HTTP server for the registered recommender, for what MLflow's own model server lacks.

- Bearer-token auth (``ADAPTREC_SERVING_TOKEN``); ``/healthz``, ``/readyz`` and ``/metrics`` stay open for
  probes and scrapers. Production mode refuses to start without a token.
- Validation with one-line 4xx errors; a body over the limit gets 413 before anything parses it.
- Hot reload: a background thread polls the registry and swaps in the version holding the alias once
  that version has loaded and answered a smoke request, so a broken version never replaces a working one.
- Prometheus metrics: requests by endpoint and status, latency, the version served, reload outcomes.

``recsys serve`` runs it; ``create_app`` builds it for any ASGI server.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass
from itertools import repeat
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
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.errors import ConfigError
from recsys_tasks.serving.schemas import (
    ModelInfo,
    Readiness,
    RecommendationRequest,
    RecommendationResponse,
    RecommendedItem,
    UserRecommendations,
    UserRequest,
)
from recsys_tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow.pyfunc import PyFuncModel
    from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MIN_TOKEN_LENGTH = 16
RELOAD_OUTCOMES = ("loaded", "load_failed", "poll_failed")
STOP_TIMEOUT_SECONDS = 5.0
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

    @field_validator("token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < MIN_TOKEN_LENGTH:
            raise ValueError(f"the token needs at least {MIN_TOKEN_LENGTH} characters, or it can be guessed")
        return token


def _first_line(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


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
    index_of: dict[int, int]
    accepts_exclude: bool

    @classmethod
    def load(cls, model_name: str, version: str, alias: str, variant: str) -> LoadedModel:
        import mlflow

        # By version, not by alias: what is swapped in is exactly the version the registry reported.
        pyfunc = mlflow.pyfunc.load_model(version_uri(model_name, version), model_config={"variant": variant})
        inputs = pyfunc.metadata.get_input_schema()
        model = cls(
            info=ModelInfo(name=model_name, version=version, alias=alias, variant=variant),
            pyfunc=pyfunc,
            index_of=pyfunc.unwrap_python_model().index_of,
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

    def recommend(self, request: RecommendationRequest) -> RecommendationResponse:
        from mlflow.exceptions import MlflowException

        inputs = {
            "history": [self.known_history(n, user, request.ignore_unknown) for n, user in enumerate(request.users)],
            "k": [user.k for user in request.users],
        }
        if self.accepts_exclude:
            inputs["exclude"] = [user.exclude for user in request.users]
        elif any(user.exclude for user in request.users):
            raise HTTPException(
                422, f"version {self.info.version} of {self.info.name} predates `exclude`: send no exclude list"
            )
        try:
            prediction = self.pyfunc.predict(pd.DataFrame(inputs))
        except MlflowException as exc:
            if exc.error_code != "INVALID_PARAMETER_VALUE":
                raise
            raise HTTPException(422, f"the model refused the request: {_first_line(exc)}") from None
        # Versions registered before `because` existed do not say why; their items get because=null.
        because = prediction["because"] if "because" in prediction else repeat(repeat(None))
        return RecommendationResponse(
            model=self.info,
            recommendations=[
                UserRecommendations(
                    user_id=user.user_id,
                    items=[
                        RecommendedItem(item_id=item, score=score, because=reason)
                        for item, score, reason in zip(items, scores, reasons)
                    ],
                )
                for user, items, scores, reasons in zip(
                    request.users, prediction["item_ids"], prediction["scores"], because
                )
            ],
        )


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
            "The model version being served (value 1).",
            ["name", "version", "alias", "variant"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "adaptrec_serving_model_reloads",
            "Attempts to follow the alias, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        for outcome in RELOAD_OUTCOMES:  # a failure count of 0 is shown, not absent
            self.reloads.labels(outcome)

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        self.latency.labels(endpoint).observe(seconds)

    def serving(self, info: ModelInfo) -> None:
        self.model.clear()
        self.model.labels(info.name, info.version, info.alias, info.variant).set(1)


class ChampionWatcher:
    """Follows the registry alias from a background thread and swaps in each version it moves to."""

    def __init__(self, settings: Settings, config: ServingConfig, metrics: ServingMetrics):
        self.settings, self.metrics = settings, metrics
        self.alias, self.variant, self.poll_seconds = config.alias, config.variant, config.poll_seconds
        self.current: LoadedModel | None = None
        self.problem = "the registry has not been asked yet"
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
            self._note(f"cannot ask the registry at {self.settings.resolved_tracking_uri}: {_first_line(exc)}")
            return
        if holder is None:
            self._note(f"{name} has no '{self.alias}' version in the registry")
            return
        version = str(holder.version)
        if self.current is not None and self.current.info.version == version:
            self.problem = ""  # so that a problem coming back is logged again
            return
        try:
            loaded = LoadedModel.load(name, version, self.alias, self.variant)
        except Exception as exc:  # whatever breaks the new version, the one serving stays
            self.metrics.reloads.labels("load_failed").inc()
            self._note(f"version {version} of {name} failed to load, so it is not served: {_first_line(exc)}")
            return
        before, self.current = self.current, loaded
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


class RequestMetrics:
    """Counts and times every request by endpoint and status; turns an unexpected error into a one-line 500."""

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
            message = f"internal error ({type(exc).__name__}); the server log has the details"
            await _error(500, message)(scope, receive, send)
        finally:
            self.metrics.observe(endpoint, status or 500, time.perf_counter() - began)


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


class BodySizeLimit:
    """Refuses a request body over ``max_bytes`` with 413 before the app reads or parses any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        # A chunked body declares no length: read it here, up to the limit, and hand it on in one piece.
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        handed_on = False

        async def replay() -> Message:
            nonlocal handed_on
            if handed_on:  # after the body, only a disconnect can come
                return await receive()
            handed_on = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        await _error(413, f"the request body is larger than {self.max_bytes} bytes")(scope, receive, send)


async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    malformed = next((error for error in errors if error["type"] == "json_invalid"), None)
    if malformed is not None:
        return _error(
            400, f"the body is not valid JSON: {malformed['ctx']['error']} at character {malformed['loc'][-1]}"
        )
    # Locations start with "body", which says nothing to a client that sent one.
    return _error(422, _described(errors, skip=1))


def create_app(settings: Settings, config: ServingConfig | None = None) -> FastAPI:
    """The serving app for ``settings``' registry; it starts following the alias when the server starts."""
    config = config or serving_config()
    if config.token is None:
        if settings.mode == "production":
            raise ConfigError("production mode serves only behind a bearer token: set ADAPTREC_SERVING_TOKEN")
        log.warning("ADAPTREC_SERVING_TOKEN is not set: serving without authentication (embedded mode)")
    metrics = ServingMetrics()
    watcher = ChampionWatcher(settings, config, metrics)
    retry_after = {"Retry-After": str(math.ceil(config.poll_seconds))}

    @asynccontextmanager
    async def follow_alias_while_serving(app: FastAPI):
        watcher.start()
        yield
        watcher.stop()

    app = FastAPI(title="AdaptRec recommendations", lifespan=follow_alias_while_serving)
    app.add_exception_handler(RequestValidationError, _invalid_request)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "alive"}

    @app.get("/readyz", response_model=Readiness, responses={503: {"description": "No model loaded yet."}})
    async def readyz():
        """Readiness: a model version is loaded and serving."""
        model = watcher.current
        if model is None:
            return _error(503, f"no model loaded yet: {watcher.problem}", retry_after)
        return Readiness(status="ready", model=model.info)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # A plain def: FastAPI runs it in its thread pool, so TensorFlow's CPU work never blocks the event loop.
    @app.post("/v1/recommendations")
    def recommendations(request: RecommendationRequest) -> RecommendationResponse:
        """Top-k items for each user's history, best first, none from the history or `exclude`."""
        model = watcher.current  # read once: a reload during this request does not change its model
        if model is None:
            raise HTTPException(503, f"no model loaded yet: {watcher.problem}", headers=retry_after)
        if len(request.users) > config.max_batch:
            raise HTTPException(422, f"users: at most {config.max_batch} per request, got {len(request.users)}")
        return model.recommend(request)

    # Added innermost first: metrics see every answer, auth runs before any body is read.
    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes)
    if config.token is not None:
        app.add_middleware(BearerTokenAuth, token=config.token.get_secret_value())
    app.add_middleware(RequestMetrics, metrics=metrics, endpoints=frozenset(route.path for route in app.routes))
    return app

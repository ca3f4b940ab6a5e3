"""Running the serving app: uvicorn with one or more worker processes, deadlines on slow clients, a bounded number
of connections.

``recsys serve`` calls ``run``; tests and other embedders build the same server with ``uvicorn_options``.
Each worker process builds its own app (``app_from_environment``), loads the alias's version itself, follows
the alias and answers ``/readyz`` for itself. With several workers, Prometheus metrics are kept in files that
every worker's ``/metrics`` sums (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from recsys_tasks.serving.app import READ_SECONDS_STATE, ServingConfig, create_app, serving_config
from recsys_tasks.settings import get_settings

log = logging.getLogger(__name__)

APP_FACTORY = "recsys_tasks.serving.server:app_from_environment"
THREAD_POOL_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
)
# A connection that has sent a whole request's headers has this much longer for its body than the app's own
# deadline, so that the app's 408 goes out first; after that the connection is dropped.
BODY_GRACE_SECONDS = 1.0


class RequestDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol with deadlines on clients that send slowly.

    A request's headers must arrive within the app's ``read_seconds`` (which its lifespan puts in the server's
    state) of the request's first byte, or of the connection opening:
    else it is answered 408 and the connection closed, before any app code runs. Its body then has
    ``read_seconds`` (the app answers 408 when it waits for it) plus a grace, after which the connection is
    dropped, including a body nobody reads because the request was already answered (a 401, say).
    """

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self._deadline: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm(self._headers_too_slow)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._deadline is None:  # a keep-alive connection starts its next request
            self._arm(self._headers_too_slow)

    def on_headers_complete(self) -> None:
        self._arm(self._body_too_slow, BODY_GRACE_SECONDS)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def _arm(self, handler, extra_seconds: float = 0.0) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(self._read_seconds() + extra_seconds, handler)

    def _read_seconds(self) -> float:
        return float(self.app_state.get(READ_SECONDS_STATE, ServingConfig.model_fields["read_seconds"].default))

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_too_slow(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        message = f"request headers did not arrive within {self._read_seconds():g} s"
        self.transport.write(
            b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
            + f"content-length: {len(message)}\r\nconnection: close\r\n\r\n{message}".encode()
        )
        self.transport.close()

    def _body_too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()


def uvicorn_options(workers: int = 1, max_connections: int = 1024) -> dict:
    """uvicorn's settings of the serving app, for ``uvicorn.Config`` or ``uvicorn.run``."""
    return {
        "workers": workers,
        "http": RequestDeadlineProtocol,
        # Beyond this many connections and tasks at once, new requests get 503 instead of piling up.
        "limit_concurrency": max_connections,
        "timeout_keep_alive": 5,
        # None: uvicorn's lines go through the handlers already set up (the CLI's, or the worker's own).
        "log_config": None,
    }


def plain_logging() -> None:
    """One plain line per record on stderr, for every logger of the process.

    A server logs a line per request: rendered through rich (the CLI's handler), that line cost more than
    answering the request.
    """
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(process)d] %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


def app_from_environment():
    """The app of one worker process, from the environment (``ADAPTREC_*`` and ``ADAPTREC_SERVING_*``)."""
    plain_logging()
    return create_app(get_settings(), serving_config())


def migrate_feedback_store() -> None:
    """Brings the feedback store's schema up to date once, before workers start logging to it. A database that is
    down now only delays logging: each worker's log connects (and migrates) when it can."""
    from recsys_tasks.contracts.feedback_store import FeedbackStore

    if not serving_config().log_slates:
        return
    uri = get_settings().resolved_feedback_uri
    try:
        FeedbackStore.open(uri)
    except Exception as exc:
        log.warning("the feedback store cannot be opened now; slates are logged once it can: %s", exc)


def run(host: str, port: int, workers: int, max_connections: int) -> None:
    """Serves until interrupted; with several ``workers``, each is a process of its own on the same socket.

    The serving options come from the environment, so that every worker reads the same ones.
    """
    import uvicorn

    # Progress bars of every model download would bury the server's log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    app = app_from_environment()  # also refuses a bad configuration here, once, before any worker starts
    migrate_feedback_store()
    if workers > 1:
        # Each worker counts into files here; every worker's /metrics sums them all.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="adaptrec-serving-metrics-")
        # BLAS and TensorFlow size their thread pools to every core, in every worker: the workers' threads
        # would outnumber the cores and spin against each other. Each worker gets its share (read when a
        # worker process imports them; a variable already set is left alone).
        share = str(max(1, (os.cpu_count() or 1) // workers))
        for variable in THREAD_POOL_VARIABLES:
            os.environ.setdefault(variable, share)
        log.info("serving with %d worker processes", workers)
        app = APP_FACTORY
    uvicorn.run(app, host=host, port=port, factory=workers > 1, **uvicorn_options(workers, max_connections))

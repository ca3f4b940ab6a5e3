"""What every benchmark script shares: where results go, the studies' tables, progress lines, the machine."""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import typer
from rich.console import Console
from rich.logging import RichHandler

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).parent / "results"
# Run folders of the model benchmarks; bench-quality and bench-pretraining share its prepared data.
BENCH_WORK = ROOT / ".adaptrec" / "bench"
STUDIES = ROOT / "docs" / "experiments"

BIN = Path(sys.executable).parent
# Piped into a log file, rich would wrap the tables at 80 columns.
console = Console(width=None if sys.stdout.isatty() else 160)


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU"


def command(module: str) -> str:
    """The command line that ran the benchmark ``module``, as its results quote it."""
    return " ".join([f".venv/bin/python -m {module}", *map(shlex.quote, sys.argv[1:])])  # '' stays visible


def write_results(name: str, result: dict, markdown: str, study_tag: str) -> None:
    """benchmarks/results/<name>.json and .md, and the study's table between the ``study_tag`` markers."""
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    update_studies(study_tag, markdown)


def update_studies(tag: str, markdown: str) -> None:
    """Replace the text between ``<!-- tag:begin -->`` and ``<!-- tag:end -->`` in every study that has them."""
    begin, end = f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"
    for study in sorted(STUDIES.glob("*.md")):
        text = study.read_text()
        if begin in text:
            before, rest = text.split(begin, 1)
            study.write_text(before + begin + "\n" + markdown + end + rest.split(end, 1)[1])


def whole_numbers(option: str, value: str) -> list[int]:
    """A comma-separated option of non-negative whole numbers, sorted, each once; else a one-line error."""
    try:
        numbers = sorted({int(part) for part in value.split(",")})
    except ValueError:
        raise typer.BadParameter(f"{option} {value!r} is not a comma-separated list of whole numbers") from None
    if numbers[0] < 0:
        raise typer.BadParameter(f"{option} {value!r} holds a negative number")
    return numbers


def show_progress() -> None:
    """Stage and epoch lines from the package's loggers, through rich."""
    handler = RichHandler(console=console, show_path=False)
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=[handler])
    for noisy in ("tensorflow", "absl", "great_expectations", "mlflow", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports free on loopback now, for servers a benchmark starts."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


class Server:
    """`recsys serve` with ``workers`` processes on a free loopback port, ready once every worker has loaded the
    model; ``settings``: ServingConfig fields by environment name without the prefix (``{"VARIANT": "int8"}``)."""

    def __init__(self, home: Path, workers: int, log: Path, settings: dict[str, str]):
        self.port, self.workers = free_ports(1)[0], workers
        env = os.environ | {
            "ADAPTREC_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}",
            **{f"ADAPTREC_SERVING_{name}": value for name, value in settings.items()},
        }
        command = [str(BIN / "recsys"), "serve", "--port", str(self.port), "--workers", str(workers)]
        with log.open("w") as output:
            self.process = subprocess.Popen(
                command, env=env, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready(log)

    def _wait_ready(self, log: Path, within_s: float = 600) -> None:
        ready: set[int] = set()
        deadline = time.monotonic() + within_s
        while len(ready) < self.workers:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not get ready; its log ends:\n{log.read_text()[-3000:]}")
            try:
                answer = httpx.get(f"{self.url}/readyz", timeout=10)
                if answer.status_code == 200:
                    ready.add(answer.json()["worker"])
            except httpx.HTTPError:
                pass
            time.sleep(0.2)

    def resident_mib_per_worker(self) -> float:
        """Mean resident memory of the worker processes (the server itself when it has one worker)."""
        main = psutil.Process(self.process.pid)
        workers = [child for child in main.children(recursive=True) if "spawn_main" in " ".join(child.cmdline())]
        return round(float(np.mean([worker.memory_info().rss for worker in workers or [main]])) / 2**20, 0)

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=60)

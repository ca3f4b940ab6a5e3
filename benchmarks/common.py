"""What every benchmark script shares: where results go, the studies' tables, progress lines, the machine."""

from __future__ import annotations

import json
import logging
import os
import platform
import shlex
import socket
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).parent / "results"
# Run folders of the model benchmarks; bench-quality and bench-pretraining share its prepared data.
BENCH_WORK = ROOT / ".adaptrec" / "bench"
STUDIES = ROOT / "docs" / "experiments"

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
    for noisy in ("tensorflow", "absl", "great_expectations", "mlflow", "alembic"):
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

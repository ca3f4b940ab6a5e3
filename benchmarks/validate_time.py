"""Wall time of the validate stage on MovieLens-100K (100,000 rows), as a task pays it: one fresh process.

.venv/bin/python -m benchmarks.validate_time [--repeats 3] [--source PATH] [--label NAME]

Each repeat ingests the data into a fresh home, then times ``recsys validate`` twice in new processes:
the first run creates the MLflow database of the home, the second finds it. Both are timed with the
virtualenv's compiled bytecode and again with every module compiled from source (an empty
``-X pycache_prefix`` under ``PYTHONDONTWRITEBYTECODE=1``: what each process paid before ``make install``
compiled the bytecode). The import of Great Expectations alone is timed the same two ways.
``--source`` runs another checkout's ``recsys_tasks`` (e.g. a ``git worktree`` of an older commit) with this
virtualenv, to compare code versions; results go to ``benchmarks/results/validate-time[-LABEL].{json,md}``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from benchmarks.common import RESULTS, ROOT, SHARED_DATA, command, console, machine

MOVIELENS_100K = SHARED_DATA / "ml-100k"
PARAMS = json.dumps({"data_source": "movielens-100k", "data_path": str(MOVIELENS_100K)})
BYTECODE = {"compiled": [], "from source": ["-X", "pycache_prefix={empty}"]}


def _python(bytecode: str, empty: Path) -> list[str]:
    return [sys.executable, *[flag.format(empty=empty) for flag in BYTECODE[bytecode]]]


def _timed(arguments: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(arguments, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(arguments[-6:])} failed: {result.stderr.strip().splitlines()[-1]}")
    return elapsed


def measure(source: Path, repeats: int) -> dict[str, list[float]]:
    timings: dict[str, list[float]] = {}
    for repeat in range(repeats):
        for bytecode in BYTECODE:
            with tempfile.TemporaryDirectory() as scratch:
                empty, home = Path(scratch) / "pycache", Path(scratch) / "home"
                env = {
                    **os.environ,
                    "ADAPTREC_HOME": str(home),
                    "PYTHONPATH": str(source),
                    "PYTHONDONTWRITEBYTECODE": "1",
                }
                cli = [*_python(bytecode, empty), "-m", "recsys_tasks.cli"]
                _timed([*cli, "ingest", "--run-id", "bench", "--conf", PARAMS], env)
                for attempt in ("first validate (creates the MLflow database)", "validate again"):
                    seconds = _timed([*cli, "validate", "--run-id", "bench", "--conf", PARAMS], env)
                    timings.setdefault(f"{attempt}, {bytecode}", []).append(seconds)
                seconds = _timed([*_python(bytecode, empty), "-c", "import great_expectations"], env)
                timings.setdefault(f"import great_expectations alone, {bytecode}", []).append(seconds)
            console.print(f"repeat {repeat + 1}/{repeats}, {bytecode}: done")
    return timings


def main(
    repeats: Annotated[int, typer.Option(min=1, help="Fresh homes per bytecode variant.")] = 3,
    source: Annotated[Path, typer.Option(help="Checkout whose recsys_tasks is timed.")] = ROOT,
    label: Annotated[str, typer.Option(help="Suffix of the result files, e.g. 'before'.")] = "",
) -> None:
    if not MOVIELENS_100K.is_dir():
        raise SystemExit(f"MovieLens-100K not found at {MOVIELENS_100K}: this benchmark reads ../shared/data")
    timings = measure(source.resolve(), repeats)
    rows = [(name, statistics.median(values), min(values), max(values)) for name, values in timings.items()]
    lines = [
        f"`{command('benchmarks.validate_time')}`; {machine()}; {repeats} fresh homes; code from "
        f"`{source.resolve().name}`.",
        "",
        "| what | median (s) | min (s) | max (s) |",
        "|---|---|---|---|",
        *[f"| {name} | {median:.1f} | {low:.1f} | {high:.1f} |" for name, median, low, high in rows],
    ]
    markdown = "\n".join(lines) + "\n"
    console.print(markdown)
    name = "validate-time" + (f"-{label}" if label else "")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"repeats": repeats, "seconds": timings}, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)
    console.print(f"written to {RESULTS / name}.md")


if __name__ == "__main__":
    typer.run(main)

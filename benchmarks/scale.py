"""Ingest, validate, augment, pretrain and finetune at 1M, 5M and 25M interactions; wall time and peak
memory per stage.

The data is the synthetic generator shaped like MovieLens-25M (162k users and 59k items at 25M
rows, about 155 interactions per user), written to Parquet first and read through the generic
``table`` source, so each stage runs exactly as in the pipeline, each in a fresh process whose
peak resident memory the kernel reports (wait4). The two model stages run 0 epochs: what is
measured is everything around training that grows with the data (the training rows and
histories, ranking every validation user against the whole catalogue, the export and its int8
variant), not training itself, whose batches are cut one at a time.

    .venv/bin/python -m benchmarks.scale [--rows 1000000 5000000 25000000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from recsys_tasks.data.synthetic import SyntheticConfig, generate

RESULT = Path(__file__).parent / "results" / "scale.md"
# MovieLens-25M has about 155 interactions per user; a mean history of 220 generated events keeps
# about 155 once repeats are dropped (measured: 945,779 rows from 6,451 users at mean 200).
INTERACTIONS_PER_USER = 155
GENERATED_MEAN_LENGTH = 220
STAGES = ("ingest", "validate", "augment", "pretrain", "finetune")


def run_measured(command: list[str], env: dict) -> tuple[float, float]:
    """(seconds, peak RSS in GiB) of one child process; its output goes to stderr."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=sys.stderr)
    _, status, usage = os.wait4(process.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command)} failed")
    return time.perf_counter() - started, usage.ru_maxrss / 2**20


def generate_to(rows_wanted: int, path: str) -> None:
    config = synthetic_config(rows_wanted)
    pq.write_table(generate(config)[0], path)


def synthetic_config(rows_wanted: int) -> SyntheticConfig:
    return SyntheticConfig(
        n_users=max(10, rows_wanted // INTERACTIONS_PER_USER),
        n_items=59_000,
        n_topics=200,
        mean_length=GENERATED_MEAN_LENGTH,
        max_length=2_000,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 25_000_000])
    parser.add_argument("--generate-to", help=argparse.SUPPRESS)  # internal: the generating child process
    arguments = parser.parse_args()
    if arguments.generate_to:
        generate_to(arguments.rows[0], arguments.generate_to)
        return
    lines = [
        "| rows | users | generate (s) | " + " | ".join(f"{s} (s) | {s} peak (GiB)" for s in STAGES) + " | total (s) |",
        "|---" * (4 + 2 * len(STAGES)) + "|",
    ]
    for wanted in arguments.rows:
        with tempfile.TemporaryDirectory() as scratch:
            data = f"{scratch}/interactions.parquet"
            # Every step runs in its own child: a parent holding the data would inflate the children's
            # peak memory (Linux keeps the high-water mark of the forked parent's pages across exec).
            generated, _ = run_measured(
                [sys.executable, "-m", "benchmarks.scale", "--rows", str(wanted), "--generate-to", data],
                dict(os.environ),
            )
            rows = pq.ParquetFile(data).metadata.num_rows
            conf = json.dumps({"data_source": "table", "data_path": data, "pretrain_epochs": 0, "finetune_epochs": 0})
            env = {**os.environ, "ADAPTREC_HOME": f"{scratch}/home", "MLFLOW_LOGGING_LEVEL": "WARNING"}
            measured = [
                run_measured(
                    [sys.executable, "-m", "recsys_tasks.cli", stage, "--run-id", "scale", "--conf", conf], env
                )
                for stage in STAGES
            ]
        cells = " | ".join(f"{seconds:.1f} | {peak:.2f}" for seconds, peak in measured)
        total = sum(seconds for seconds, _ in measured)
        lines.append(f"| {rows:,} | {synthetic_config(wanted).n_users:,} | {generated:.1f} | {cells} | {total:.1f} |")
        print(lines[-1], flush=True)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""One tiny DAG run on the embedded default against the Celery deployment, and the soak on that deployment.

.venv/bin/python -m benchmarks.deployment   (or `make bench-deployment`; from the repository root)

- **Embedded:** `airflow dags test` on SQLite with SQLite MLflow and local artifacts, as `make run` runs it,
  in a fresh home; the database migration before it is not timed.
- **Celery:** tests/dags/soak_celery_deployment.py, run with pytest: PostgreSQL, Redis, an MLflow server on
  PostgreSQL serving artifacts, Airflow's scheduler, dag-processor, api-server and two Celery workers, on
  loopback; ten runs triggered through the REST API one after the other, alternating good data, a corrupted
  file and an untrained model. This script reads back what the soak recorded (benchmarks and tests stay
  independent packages) and runs the embedded DAG with the Params of the soak's first run, so the two times
  compare.

Writes benchmarks/results/deployment.{json,md} and the table of the study tagged ``bench-deployment``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from rich.table import Table

from benchmarks.common import ROOT, command, console, machine, write_results

SOAK = ROOT / "tests" / "dags" / "soak_celery_deployment.py"
BIN = Path(sys.executable).parent


class SoakRecord:
    """A pytest plugin that keeps what the soak test recorded and whether it passed."""

    def __init__(self) -> None:
        self.properties: dict = {}
        self.outcome = "not run"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when == "call":
            self.properties, self.outcome = dict(report.user_properties), report.outcome


def embedded_run_seconds(conf: dict) -> float:
    """Seconds of one `airflow dags test` of the DAG with ``conf`` in a fresh embedded home."""
    home = Path(tempfile.mkdtemp(prefix="adaptrec-bench-embedded-"))
    env = os.environ | {
        "ADAPTREC_HOME": str(home),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "TF_USE_LEGACY_KERAS": "1",
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    for setup in (["db", "migrate"], ["pools", "set", "gpu", "1", "training"]):
        subprocess.run([str(BIN / "airflow"), *setup], env=env, check=True, capture_output=True)
    started = time.monotonic()
    test = subprocess.run(
        [str(BIN / "airflow"), "dags", "test", "recsys_nightly_retrain", "-c", json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = round(time.monotonic() - started, 1)
    if "state=success" not in test.stdout + test.stderr:
        raise SystemExit(f"the embedded run failed; its output ends:\n{(test.stdout + test.stderr)[-3000:]}")
    return seconds


def main() -> int:
    console.print("soak on the Celery deployment (ten runs) …")
    record = SoakRecord()
    pytest.main([str(SOAK), "-q", "-p", "no:cacheprovider"], plugins=[record])
    runs = record.properties.get("runs", [])
    if not runs:
        raise SystemExit(f"the soak recorded nothing (test {record.outcome})")
    conf = record.properties["good_conf"]
    console.print("embedded run (SQLite Airflow and MLflow, `airflow dags test`) with the soak's first Params …")
    embedded = embedded_run_seconds(conf)
    console.print(f"  {embedded} s")

    watched = list(runs[0]["resident_mib"])
    table = Table("run", "data", "state", "seconds", "failed tasks", "new versions", "champion", "gate", "expected")
    lines = [
        "| run | data | state | seconds | failed tasks | new versions | champion after | gate | as expected |",
        "|---:|---|---|---:|---|---:|---|---|---|",
    ]
    for run in runs:
        gate = {None: "–", True: "passed", False: "rejected"}[run["gate_passed"]]
        cells = [
            str(run["run"]),
            run["kind"],
            run["state"],
            f"{run['seconds']:.0f}",
            ", ".join(run["failed_tasks"]) or "–",
            str(run["new_versions"]),
            (f"v{run['champion']}" if run["champion"] else "–") + (" (moved)" if run["champion_moved"] else ""),
            gate,
            "yes" if run["expected"] else "**no**",
        ]
        table.add_row(*cells)
        lines.append("| " + " | ".join(cells) + " |")
    console.print(table)
    memory = ["", "| resident MiB | " + " | ".join(watched) + " |", "|---|" + "---:|" * len(watched)]
    for run in (runs[0], runs[-1]):
        resident = " | ".join(f"{run['resident_mib'][name]:.0f}" for name in watched)
        memory.append(f"| after run {run['run']} | {resident} |")
    celery = runs[0]["seconds"]
    summary = [
        "",
        f"One tiny run ({json.dumps(conf)}): embedded SQLite {embedded:.0f} s, "
        f"Celery + PostgreSQL + MLflow server {celery:.0f} s (run 1 of the soak). "
        f"Unexpected outcomes: {sum(not run['expected'] for run in runs)} of {len(runs)}; soak test {record.outcome} "
        f"(memory bound: +{record.properties['memory_growth_bound']:.0%} from run 1 to run {len(runs)}).",
        "",
        f"Measured on {machine()} with `{command('benchmarks.deployment')}`.",
        "",
    ]
    markdown = "\n".join(lines + memory + summary)
    result = {
        "embedded_seconds": embedded,
        "celery_seconds": celery,
        "conf": conf,
        "soak_outcome": record.outcome,
        "memory_growth_bound": record.properties["memory_growth_bound"],
        "runs": runs,
        "machine": machine(),
        "command": command("benchmarks.deployment"),
    }
    write_results("deployment", result, markdown, "bench-deployment")
    return 0 if record.outcome == "passed" else 1


if __name__ == "__main__":
    sys.exit(main())

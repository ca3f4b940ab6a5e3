"""`recsys serve` under load on loopback, against the model's in-process `recommend()` and a NumPy floor.

    make bench-serving-http     (needs `wrk`: apt-get install wrk)

For each catalogue (the synthetic large one; Amazon Beauty when ../shared/data has it) the runs that
`make bench-serving` prepares are registered and given the alias ``bench-http``; each variant (float32, int8)
is then served by `recsys serve` and driven by wrk, one request per user (batch 1, k = 10), rotating
through the histories of real users:

- with one worker per CPU core, at concurrency 1, 16 and 64;
- with one worker, at concurrency 1 and 16 (what the workers add);
- in the same run, the variant's `recommend()` in-process and the NumPy floor (precomputed user vectors,
  one matrix product, a top-10 selection), batch 1, on the same histories.

Writes benchmarks/results/serving-http.{json,md} and the table of the study tagged ``bench-serving-http``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from benchmarks.common import (
    ROOT,
    SHARED_DATA,
    Server,
    command,
    console,
    machine,
    show_progress,
    write_results,
)
from benchmarks.serving import DATASETS, TOP_K, _floor, _prepare, _round_robin
from recsys_tasks.contracts.layout import REGISTRATION_FILE

ALIAS = "bench-http"
TOKEN = "bench-http-token-0123456789"
VARIANTS = ("float32", "int8")
CONCURRENCY = (1, 16, 64)
ONE_WORKER_CONCURRENCY = (1, 16)
HISTORIES = 2000
WRK_SCRIPT = """
local bodies = {}
for line in io.lines(os.getenv("ADAPTREC_BENCH_BODIES")) do bodies[#bodies + 1] = line end
local headers = {["Content-Type"] = "application/json"}
headers["Authorization"] = "Bearer " .. os.getenv("ADAPTREC_BENCH_TOKEN")
local turn = 0
request = function()
  turn = turn % #bodies + 1
  return wrk.format("POST", "/v1/recommendations", headers, bodies[turn])
end
"""


def registered(run, home: Path) -> None:
    """The run's model registered in ``home``'s registry and given ``ALIAS`` (promotion gates aside)."""
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.pipeline import run_stage
    from recsys_tasks.settings import Settings

    settings = Settings(home=home)
    if not run.exists(REGISTRATION_FILE):
        run_stage("register", {}, "serving", settings)
    version = run.read_json(REGISTRATION_FILE)["version"]
    connect(settings).set_registered_model_alias(settings.model_name, ALIAS, version)


def user_histories(run) -> tuple[list[list[int]], int]:
    """The histories of ``HISTORIES`` users drawn with a fixed seed (all but each one's test item), and the
    catalogue's size."""
    from recsys_tasks.contracts.scoring import item_ids_of
    from recsys_tasks.contracts.splits import LeaveOneOutSplits

    splits = LeaveOneOutSplits.load(run)
    item_ids = item_ids_of(run, splits.n_items)
    users = np.random.default_rng(0).choice(len(splits.sequences), size=HISTORIES, replace=False)
    return [item_ids[splits.sequences[user][:-1]].tolist() for user in users], splits.n_items


def in_process(run, variant: str, histories: list[list[int]], calls: int) -> dict:
    """p50/p99 at batch 1 of the variant's ``recommend()`` and of the NumPy floor on the variant's item table."""
    from recsys_tasks.contracts.exported_model import SequentialRecommender
    from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
    from recsys_tasks.latency import latency_percentiles

    model = SequentialRecommender.from_folder(Path(run.uri) / EXPORTED_MODEL_DIR, variant)
    answers = [partial(model.recommend, [history], [TOP_K], [None]) for history in histories[:200]]
    result = {"recommend": latency_percentiles(_round_robin(answers), calls)}
    floors = [_floor(model.item_vectors, model.encode(model.pad([model.to_indices(h)]))[0]) for h in histories[:200]]
    result["floor"] = latency_percentiles(_round_robin(floors), calls)
    return {path: {"p50_ms": row["p50_ms"], "p99_ms": row["p99_ms"]} for path, row in result.items()}


def wrk(url: str, concurrency: int, seconds: int, bodies: Path, script: Path) -> dict:
    """wrk's p50, p99, requests/s and errors (non-2xx answers, socket errors and timeouts)."""
    env = os.environ | {"ADAPTREC_BENCH_BODIES": str(bodies), "ADAPTREC_BENCH_TOKEN": TOKEN}
    threads = min(concurrency, 2)
    args = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    output = subprocess.run([*args, url], env=env, capture_output=True, text=True, check=True).stdout

    def latency_ms(percent: str) -> float:
        value, unit = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M).groups()
        return round(float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit], 3)

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(map(int, socket_errors.groups())) if socket_errors else 0
    return {
        "p50_ms": latency_ms("50"),
        "p99_ms": latency_ms("99"),
        "rps": round(float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)), 1),
        "errors": errors,
    }


def markdown(result: dict, items: dict[str, int], cores: int) -> str:
    lines = []
    for catalogue, variants in result.items():
        lines += [
            f"**{catalogue}** ({items[catalogue]:,} items; batch 1, top-{TOP_K})",
            "",
            "| variant | path | p50 ms | p99 ms | requests/s | errors |",
            "|---|---|---:|---:|---:|---:|",
        ]
        for variant in VARIANTS:
            measured = variants[variant]
            for label, runs in (
                (f"HTTP, {cores} workers", measured["http"]),
                ("HTTP, 1 worker", measured["http_one_worker"]),
            ):
                for concurrency, row in runs.items():
                    lines.append(
                        f"| {variant} | {label}, concurrency {concurrency} | {row['p50_ms']:.2f} | {row['p99_ms']:.2f} "
                        f"| {row['rps']:,.0f} | {row['errors']} |"
                    )
            for path in ("recommend", "floor"):
                row = measured[path]
                name = "in-process `recommend()`" if path == "recommend" else "NumPy floor"
                lines.append(f"| {variant} | {name} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} | | |")
        lines += [
            "",
            "| variant | HTTP p99 c=1 ÷ recommend() p99 | rps c=16, all workers ÷ rps c=1, 1 worker | MiB per worker |",
        ]
        lines += ["|---|---:|---:|---:|"]
        for variant in VARIANTS:
            measured = variants[variant]
            ratio = measured["http"]["1"]["p99_ms"] / measured["recommend"]["p99_ms"]
            scaling = measured["http"]["16"]["rps"] / measured["http_one_worker"]["1"]["rps"]
            lines.append(f"| {variant} | {ratio:.2f}× | {scaling:.2f}× | {measured['resident_mib_per_worker']:.0f} |")
        lines.append("")
    lines.append(f"Measured on {machine()} with `{command('benchmarks.serving_http')}`.")
    return "\n".join(lines) + "\n"


def main(
    datasets: Annotated[list[str], typer.Option("--dataset", help="synthetic-large and/or amazon-beauty")] = None,
    work: Annotated[Path, typer.Option(help="Where `make bench-serving` keeps its runs")] = ROOT
    / ".adaptrec"
    / "bench-serving",
    seconds: Annotated[int, typer.Option(help="Seconds of load per measurement")] = 10,
    calls: Annotated[int, typer.Option(help="In-process calls per path")] = 1000,
) -> None:
    if shutil.which("wrk") is None:
        raise typer.BadParameter("wrk is not installed: apt-get install wrk")
    chosen = datasets or [name for name in DATASETS if name.startswith("synthetic") or SHARED_DATA.exists()]
    show_progress()
    cores = os.cpu_count() or 1
    scratch = Path(tempfile.mkdtemp(prefix="adaptrec-bench-http-"))
    script = scratch / "requests.lua"
    script.write_text(WRK_SCRIPT)
    # {catalogue: {variant: {"http": {concurrency: ...}, "http_one_worker": ..., "recommend": ..., "floor": ...}}}
    result: dict[str, dict] = {}
    items: dict[str, int] = {}
    for catalogue in chosen:
        params = dict(DATASETS[catalogue], pretrain_epochs=0)
        if "data_path" in params:
            params["data_path"] = str(SHARED_DATA / params["data_path"])
        home = work / catalogue
        run = _prepare(home, params)
        registered(run, home)
        histories, items[catalogue] = user_histories(run)
        bodies = scratch / f"{catalogue}.jsonl"
        bodies.write_text("".join(json.dumps({"users": [{"history": h, "k": TOP_K}]}) + "\n" for h in histories))
        measured: dict = {}
        for variant in VARIANTS:
            console.print(f"{catalogue}, {variant}: in-process")
            row = in_process(run, variant, histories, calls)
            for label, workers, levels in (
                ("http", cores, CONCURRENCY),
                ("http_one_worker", 1, ONE_WORKER_CONCURRENCY),
            ):
                settings = {"TOKEN": TOKEN, "VARIANT": variant, "ALIAS": ALIAS, "POLL_SECONDS": "3600"}
                server = Server(home, workers, scratch / f"{catalogue}-{variant}-{workers}.log", settings)
                try:
                    wrk(server.url, 4, 2, bodies, script)  # warm-up: every worker's first calls
                    row[label] = {}
                    for concurrency in levels:
                        row[label][str(concurrency)] = wrk(server.url, concurrency, seconds, bodies, script)
                        console.print(
                            f"  {workers} worker(s), concurrency {concurrency}: {row[label][str(concurrency)]}"
                        )
                    if workers == cores:
                        row |= {"workers": workers, "resident_mib_per_worker": server.resident_mib_per_worker()}
                finally:
                    server.stop()
            measured[variant] = row
        result[catalogue] = measured
    text = markdown(result, items, cores)
    console.print(text)
    write_results("serving-http", result, text, "bench-serving-http")


if __name__ == "__main__":
    typer.run(main)

"""Fine-tuning epoch time and CPU time of the finetune stage, with and without the Makefile's malloc settings.

make bench-epoch [BENCH_ARGS='--repeats 2 --epochs 3 --preload /usr/lib/x86_64-linux-gnu/libjemalloc.so.2']

The Makefile exports glibc malloc settings (``MALLOC_*``) to every process it starts; this benchmark reads
them from its own environment, so run it through ``make bench-epoch`` (it refuses to run without them).
One home under ``--work`` is prepared once (ingest, validate, augment, pre-training of 0 epochs) on the
built-in synthetic data; then the finetune stage runs in a fresh process per allocator, interleaved
(default, Makefile settings, [preloaded allocator,] default, ...), so that the other load of the machine
falls on every variant alike. Each process logs with timestamps, which split its wall time into start and
imports of the CLI's modules (until the stage's first line), imports of the stage's libraries with data and
model preparation, the first epoch (with the first validation and the tracing of the training step), the
later epochs, and the export after the last epoch. User and system CPU seconds, peak resident memory and
minor page faults (the kernel's work that the malloc settings target; a count that the machine's other load
does not change) come from the child's resource usage. The per-epoch losses of every variant are compared:
an allocator must not change them.
Results go to ``benchmarks/results/epoch-time.{json,md}`` and the studies' ``bench-epoch`` tables.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from benchmarks.common import ROOT, command, console, machine, write_results

# The stage is driven through ``run_stage`` with a timestamped log format: the CLI's log lines carry
# whole seconds only.
CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(created).3f %(message)s", stream=sys.stderr)
for noisy in ("tensorflow", "absl", "mlflow", "alembic"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
from recsys_tasks.pipeline import run_stage
run_stage(sys.argv[1], {"pretrain_epochs": 0, "finetune_epochs": int(sys.argv[2])}, "bench")
"""
PREPARE = ("ingest", "validate", "augment", "pretrain")
EPOCH_LINE = re.compile(r"^(\d+\.\d+) finetune epoch (\d+)/\d+  loss (\S+)")
TIMED_LINE = re.compile(r"^(\d+\.\d+) (.*)$")


def _malloc_free(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if not key.startswith("MALLOC_") and key != "LD_PRELOAD"}


def variants(preload: Path | None) -> dict[str, dict[str, str]]:
    """The environments compared: the Makefile's, the same without malloc settings, and an optional preload."""
    settings = {key: value for key, value in os.environ.items() if key.startswith("MALLOC_")}
    if not settings:
        raise SystemExit("no MALLOC_* variable in the environment: run this through `make bench-epoch`")
    chosen = {
        "glibc malloc, defaults": _malloc_free(dict(os.environ)),
        "glibc malloc, " + " ".join(f"{key}={value}" for key, value in sorted(settings.items())): dict(os.environ),
    }
    if preload is not None:
        if not preload.is_file():
            raise SystemExit(f"{preload} does not exist (Debian: apt-get install libjemalloc2)")
        chosen[f"LD_PRELOAD={preload.name}"] = {**_malloc_free(dict(os.environ)), "LD_PRELOAD": str(preload)}
    return chosen


def _run(stage: str, epochs: int, env: dict[str, str]) -> tuple[float, float, float, os.struct_rusage, str]:
    """(start, end, wall, resource usage) of one stage process and its log."""
    arguments = [sys.executable, "-c", CHILD, stage, str(epochs)]
    start, started = time.time(), time.perf_counter()
    process = subprocess.Popen(arguments, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    log = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{stage} failed:\n{log[-3000:]}")
    return start, start + wall, wall, usage, log


def _phases(start: float, end: float, log: str) -> dict:
    """Where one finetune process spent its wall time, from its log's timestamps."""
    lines = [(float(match[1]), match[2]) for match in map(TIMED_LINE.match, log.splitlines()) if match]
    stage_start = next(t for t, text in lines if text.startswith("stage finetune"))
    model_ready = next(t for t, text in lines if text.startswith("fine-tuning ("))
    epochs = [(float(match[1]), float(match[3])) for match in map(EPOCH_LINE.match, log.splitlines()) if match]
    ends = [model_ready] + [t for t, _ in epochs]
    return {
        "until the stage starts": stage_start - start,
        "imports, data and model": model_ready - stage_start,
        "first epoch": ends[1] - ends[0],
        "later epochs": [later - earlier for earlier, later in zip(ends[1:], ends[2:])],
        "after the last epoch": end - ends[-1],
        "losses": [loss for _, loss in epochs],
    }


def measure(work: Path, repeats: int, epochs: int, preload: Path | None) -> dict[str, list[dict]]:
    chosen = variants(preload)
    home = work / "home"
    base = {"ADAPTREC_HOME": str(home), "PYTHONPATH": str(ROOT)}
    if not (home / "runs" / "bench" / "pretrain").is_dir():
        for stage in PREPARE:
            console.print(f"preparing: {stage}")
            _run(stage, epochs, {**os.environ, **base})
    results: dict[str, list[dict]] = {name: [] for name in chosen}
    for repeat in range(repeats):
        for name, env in chosen.items():
            start, end, wall, usage, log = _run("finetune", epochs, {**env, **base})
            user, system = usage.ru_utime, usage.ru_stime
            row = {
                "wall": wall,
                "user": user,
                "sys": system,
                "minor faults": usage.ru_minflt,
                "peak RSS GiB": usage.ru_maxrss / 2**20,  # Linux counts KiB
                **_phases(start, end, log),
            }
            results[name].append(row)
            console.print(
                f"repeat {repeat + 1}/{repeats}, {name}: wall {wall:.1f} s, user {user:.1f} s, sys {system:.1f} s, "
                f"{usage.ru_minflt / 1e6:.2f} M minor faults, "
                f"epochs {', '.join(f'{seconds:.1f}' for seconds in [row['first epoch'], *row['later epochs']])} s"
            )
    return results


def _median(rows: list[dict], key: str) -> float:
    return statistics.median(row[key] for row in rows)


def table(results: dict[str, list[dict]], repeats: int, epochs: int) -> str:
    lines = [
        f"`{command('benchmarks.epoch_time')}` (through `make bench-epoch`); {machine()}; synthetic small data, "
        f"`recsys finetune` of {epochs} epochs in a fresh process, {repeats} interleaved repeats per variant; "
        "medians, seconds.",
        "",
        "| allocator | wall | user CPU | sys CPU | minor page faults (M) | peak RSS (GiB) | until the stage starts "
        "| imports, data and model | first epoch | later epoch | after the last epoch |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in results.items():
        later = statistics.median(seconds for row in rows for seconds in row["later epochs"])
        cells = [_median(rows, key) for key in ("wall", "user", "sys")] + [
            _median(rows, "minor faults") / 1e6,
            _median(rows, "peak RSS GiB"),
        ]
        cells += [_median(rows, key) for key in ("until the stage starts", "imports, data and model")]
        cells += [_median(rows, "first epoch"), later, _median(rows, "after the last epoch")]
        lines.append(f"| {name} | " + " | ".join(f"{cell:.1f}" for cell in cells) + " |")
    losses = {json.dumps(row["losses"]) for rows in results.values() for row in rows}
    lines += ["", f"Per-epoch losses identical in every process: {'yes' if len(losses) == 1 else 'no'}."]
    return "\n".join(lines) + "\n"


def main(
    repeats: Annotated[int, typer.Option(min=1, help="Processes per variant, interleaved.")] = 2,
    epochs: Annotated[int, typer.Option(min=2, help="Fine-tuning epochs per process.")] = 3,
    preload: Annotated[Path | None, typer.Option(help="Also time an allocator library under LD_PRELOAD.")] = None,
    work: Annotated[Path, typer.Option(help="Folder of the prepared home (kept between runs).")] = ROOT
    / ".adaptrec"
    / "bench-epoch",
) -> None:
    results = measure(work.resolve(), repeats, epochs, preload)
    markdown = table(results, repeats, epochs)
    console.print(markdown)
    write_results("epoch-time", {"repeats": repeats, "epochs": epochs, "results": results}, markdown, "bench-epoch")


if __name__ == "__main__":
    typer.run(main)

"""Fine-tuning throughput on one process, on one MultiWorkerMirroredStrategy worker and on two, on this machine.

.venv/bin/python -m benchmarks.multi_worker [--size small] [--epochs 3]   (or `make bench-multi-worker`)

Each arm runs `recsys finetune` on one prepared run (ingest → validate → plan_training → augment → pretrain
through the CLI, once): ``none`` as one process without a strategy; ``1 worker`` and ``2 workers`` as that many
processes with ADAPTREC_DISTRIBUTION=multi_worker and TF_CONFIG naming workers on loopback. The global batch
is the same in every arm, so each arm trains the same steps; examples/s = training rows × epochs run / the stage's
training seconds (which include each epoch's validation ranking, the same in every arm). On two cores two
workers cannot be faster: the figures show what the strategy and its collectives cost.

Writes benchmarks/results/multi-worker.{json,md} and the table of the study tagged ``bench-multi-worker``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from benchmarks.common import command, console, free_ports, machine, write_results

BIN = Path(sys.executable).parent
RUN_ID = "multi-worker-bench"
ARMS = {"none": 0, "1 worker": 1, "2 workers": 2}


def recsys(stage: str, conf: dict, env: dict[str, str]) -> subprocess.Popen:
    args = [str(BIN / "recsys"), stage, "--run-id", RUN_ID, "--conf", json.dumps(conf)]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finished(process: subprocess.Popen, what: str) -> str:
    output, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"{what} failed:\n{output[-3000:]}")
    return output


def stage_summary(output: str) -> dict:
    """The JSON summary `recsys <stage>` prints (native libraries may log after it)."""
    return json.JSONDecoder().raw_decode(output, output.index("{\n"))[0]


def finetune_arm(workers: int, conf: dict, env: dict[str, str]) -> dict:
    """The chief's fine-tuning summary with ``workers`` MultiWorkerMirroredStrategy workers (0: no strategy)."""
    if not workers:
        return stage_summary(finished(recsys("finetune", conf, env), "finetune"))
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(workers)]}
    processes = [
        recsys(
            "finetune",
            conf,
            env
            | {
                "ADAPTREC_DISTRIBUTION": "multi_worker",
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            },
        )
        for index in range(workers)
    ]
    outputs = [finished(process, f"finetune worker {index}") for index, process in enumerate(processes)]
    return stage_summary(outputs[0])


def main(
    size: Annotated[str, typer.Option(help="Synthetic preset (tiny, small, medium)")] = "small",
    epochs: Annotated[int, typer.Option(help="Most fine-tuning epochs of every arm")] = 3,
) -> None:
    home = Path(tempfile.mkdtemp(prefix="adaptrec-bench-multi-worker-"))
    env = os.environ | {"ADAPTREC_HOME": str(home), "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    conf = {
        "synthetic_size": size,
        "model_size": "tiny",
        "pretrain_epochs": 0,
        "finetune_epochs": epochs,
        "training_mode": "retrain",
    }
    for stage in ("ingest", "validate", "plan_training", "augment", "pretrain"):
        console.print(f"preparing: {stage}")
        finished(recsys(stage, conf, env), stage)
    rows = {}
    for arm, workers in ARMS.items():
        console.print(f"fine-tuning: {arm}")
        summary = finetune_arm(workers, conf, env)
        rows[arm] = summary
        console.print(f"  {summary['seconds']} s, losses {summary['training_losses']}")
    training_rows = rows["none"]["training_rows"]
    lines = [
        "| arm | epochs | seconds | examples/s | loss, last epoch | val NDCG@10 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    result = {"size": size, "epochs": epochs, "training_rows": training_rows, "arms": {}}
    for arm, summary in rows.items():
        per_second = training_rows * summary["epochs_run"] / summary["seconds"]
        lines.append(
            f"| {arm} | {summary['epochs_run']} | {summary['seconds']:.1f} | {per_second:,.0f} "
            f"| {summary['training_losses'][-1]:.4f} | {summary['validation']['ndcg_at_10']:.4f} |"
        )
        result["arms"][arm] = {
            "epochs": summary["epochs_run"],
            "seconds": summary["seconds"],
            "examples_per_second": round(per_second, 1),
            "training_losses": summary["training_losses"],
            "ndcg_at_10": summary["validation"]["ndcg_at_10"],
        }
    markdown = "\n".join(
        [
            *lines,
            "",
            f"Synthetic preset `{size}`, {training_rows:,} training rows, {epochs} epochs, tiny encoder; measured on "
            f"{machine()} with `{command('benchmarks.multi_worker')}`.",
            "",
        ]
    )
    console.print(markdown)
    write_results("multi-worker", result | {"machine": machine()}, markdown, "bench-multi-worker")


if __name__ == "__main__":
    typer.run(main)

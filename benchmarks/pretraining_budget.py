"""How much pre-training helps full fine-tuning, as a function of the pre-training budget.

    make bench-pretraining DATASET=amazon-beauty STEPS=0,900,1800,3600     (reads ../shared/data)

For each budget in optimizer steps (0 = the transformer from scratch) the encoder is pre-trained
with the package defaults (Cloze + masked attributes + next item on augmented views + contrastive),
then fine-tuned `full` with the defaults and the same fine-tuning budget as ``benchmarks.quality``.
Only the validation split is read: this is a tuning question, so it must not touch the test split.
Prints and writes benchmarks/results/pretraining-budget-<dataset>.json and .md, and the README's
table. Each budget's result is kept in its run folder (``bench_result.json``), so budgets can be
measured by separate invocations side by side and gathered by one that names them all.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from benchmarks.common import BENCH_WORK, RESULTS, SHARED_DATA, console, machine, show_progress, update_readme
from benchmarks.quality import DATASETS, RESULT_FILE, Bench, _epoch_budget

SHOWN = ("hr_at_10", "ndcg_at_10", "ndcg_at_20", "mrr")


def _measure(bench: Bench, steps: int, finetune_steps: int, patience_steps: int, examples: str) -> dict:
    from recsys_tasks.training.finetune import finetune
    from recsys_tasks.training.pretrain import pretrain

    run_id = f"pretraining-budget-{steps}"
    run = bench.run(run_id)
    if run.exists(RESULT_FILE):  # measured by an earlier invocation: not trained again
        return run.read_json(RESULT_FILE)
    pretrain_config, finetune_config = _epoch_budget(
        bench.run("prepared"), steps, finetune_steps, patience_steps, examples
    )
    bench.fork("prepared", run_id)
    pretrained = pretrain(run, pretrain_config)
    tuned = finetune(run, finetune_config)
    result = {
        "pretrain_epochs": pretrain_config.epochs,
        "validation": tuned.validation,
        "best_epoch": tuned.best_epoch,
        "finetune_epochs": tuned.epochs_run,
        "pretrain_seconds": pretrained.seconds,
        "finetune_seconds": tuned.seconds,
    }
    run.write_json(RESULT_FILE, result)
    return result


def _markdown(result: dict) -> str:
    lines = [
        f"Full fine-tuning after each pre-training budget on {result['dataset']}: validation split only "
        f"(fine-tuning at most {result['finetune_steps']:,} steps, stopping after {result['patience_steps']:,} "
        "without gain).",
        "",
        "| pre-training steps | epochs | val HR@10 | val NDCG@10 | val NDCG@20 | val MRR | best fine-tuning epoch "
        "| pre-train s | fine-tune s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for steps, row in result["budgets"].items():
        validation = row["validation"]
        lines.append(
            f"| {int(steps):,} | {row['pretrain_epochs']} | "
            + " | ".join(f"{validation[m]:.4f}" for m in SHOWN)
            + f" | {row['best_epoch']} of {row['finetune_epochs']}"
            + f" | {row['pretrain_seconds']:,.0f} | {row['finetune_seconds']:,.0f} |"
        )
    lines += ["", f"Measured on {result['machine']} with `{result['command']}`.", ""]
    return "\n".join(lines)


def main(
    dataset: Annotated[str, typer.Option(help="amazon-beauty or ml-100k")] = "amazon-beauty",
    data_root: Annotated[Path, typer.Option(help="Folder holding the data sets")] = SHARED_DATA,
    work: Annotated[Path, typer.Option(help="Where the runs go (the prepared data is bench-quality's)")] = BENCH_WORK,
    steps: Annotated[
        str, typer.Option(help="Pre-training budgets in optimizer steps, comma-separated")
    ] = "0,900,1800,3600",
    finetune_steps: Annotated[int, typer.Option(help="Most fine-tuning optimizer steps")] = 15_000,
    patience_steps: Annotated[int, typer.Option(help="Fine-tuning steps without validation gain")] = 1_500,
    examples: Annotated[str, typer.Option(help="Fine-tuning rows: prefixes or windows")] = "prefixes",
) -> None:
    if dataset not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {dataset!r}: choose {', '.join(DATASETS)}")
    if examples not in ("prefixes", "windows"):
        raise typer.BadParameter(f"unknown examples {examples!r}: choose prefixes or windows")
    try:
        budgets = sorted({int(value) for value in steps.split(",")})
    except ValueError:
        raise typer.BadParameter(f"--steps {steps!r} is not a comma-separated list of whole numbers") from None
    if budgets[0] < 0:
        raise typer.BadParameter(f"--steps {steps!r} holds a negative budget")
    data_path = data_root / DATASETS[dataset]["data_path"]
    if not data_path.exists():
        raise typer.BadParameter(f"{data_path} does not exist: the benchmark reads ../shared/data")
    show_progress()
    bench = Bench(work / dataset, {**DATASETS[dataset], "data_path": str(data_path)})
    bench.prepare("prepared")
    rows = {}
    for budget in budgets:
        console.rule(f"{budget:,} pre-training steps")
        rows[str(budget)] = _measure(bench, budget, finetune_steps, patience_steps, examples)
    result = {
        "dataset": dataset,
        "finetune_steps": finetune_steps,
        "patience_steps": patience_steps,
        "examples": examples,
        "budgets": rows,
        "machine": machine(),
        "command": " ".join([".venv/bin/python -m benchmarks.pretraining_budget", *sys.argv[1:]]),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"pretraining-budget-{dataset}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = _markdown(result)
    (RESULTS / f"pretraining-budget-{dataset}.md").write_text(markdown)
    update_readme(f"bench-pretraining:{dataset}", markdown)
    table = Table("pre-training steps", "val NDCG@10", "val HR@10", "best epoch", "pre-train s", "fine-tune s")
    for budget, row in rows.items():
        table.add_row(
            f"{int(budget):,}",
            f"{row['validation']['ndcg_at_10']:.4f}",
            f"{row['validation']['hr_at_10']:.4f}",
            f"{row['best_epoch']} of {row['finetune_epochs']}",
            f"{row['pretrain_seconds']:,.0f}",
            f"{row['finetune_seconds']:,.0f}",
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)

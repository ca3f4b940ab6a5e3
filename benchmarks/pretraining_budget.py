"""How much pre-training helps full fine-tuning, as a function of the pre-training budget.

    make bench-pretraining DATASET=amazon-beauty STEPS=0,900,1800,3600     (reads ../shared/data)

For each budget in optimizer steps (0 = the transformer from scratch) the encoder is pre-trained
with the package defaults (Cloze + masked attributes + next item on augmented views + contrastive),
then fine-tuned `full` with the defaults and the same fine-tuning budget as ``benchmarks.quality``.
Only the validation split is read: this is a tuning question, so it must not touch the test split.
Prints and writes benchmarks/results/pretraining-budget-<dataset>.json and .md, and the study's
table. Each budget's result is kept in its run folder (``bench_result.json``), so budgets can be
measured by separate invocations side by side and gathered by one that names them all.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from benchmarks.common import BENCH_WORK, SHARED_DATA, command, console, machine, whole_numbers, write_results
from benchmarks.quality import (
    RESULT_FILE,
    Bench,
    DataRootOption,
    DatasetOption,
    ExamplesOption,
    FinetuneStepsOption,
    PatienceStepsOption,
    WorkOption,
    _epoch_budget,
    open_bench,
)

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
    dataset: DatasetOption = "amazon-beauty",
    data_root: DataRootOption = SHARED_DATA,
    work: WorkOption = BENCH_WORK,
    steps: Annotated[
        str, typer.Option(help="Pre-training budgets in optimizer steps, comma-separated")
    ] = "0,900,1800,3600",
    finetune_steps: FinetuneStepsOption = 15_000,
    patience_steps: PatienceStepsOption = 1_500,
    examples: ExamplesOption = "prefixes",
) -> None:
    budgets = whole_numbers("--steps", steps)
    bench = open_bench(dataset, data_root, work, examples)
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
        "command": command("benchmarks.pretraining_budget"),
    }
    write_results(f"pretraining-budget-{dataset}", result, _markdown(result), f"bench-pretraining:{dataset}")
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

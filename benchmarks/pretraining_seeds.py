"""Does pre-training beat the same transformer from scratch, seed after seed?

    make bench-seeds DATASET=ml-100k SEEDS=0,1,2     (reads ../shared/data)

One seed's gap between two models can be noise: the seed sets the initialisation, the Cloze
masks and the order and dropout of every batch, and on MovieLens-100K's 943 test users that
moves NDCG@10 with a standard deviation of about 0.002 (README). For each seed this trains
``transformer from scratch (full)`` and ``pre-trained + full`` exactly as ``benchmarks.quality``
does (same defaults, same step budget options; the prepared data, augmented views included, is
shared), and reports validation and test NDCG@10 per seed, their mean and standard deviation,
and on how many seeds pre-training scored higher. Each model's result is kept in its run folder
(``bench_result.json``), so seeds can be measured by separate invocations side by side and
gathered by one that names them all.
Writes benchmarks/results/pretraining-seeds-<dataset>.json and .md, and the README's table.
"""

from __future__ import annotations

import statistics
from typing import Annotated

import typer
from rich.table import Table

from benchmarks.common import BENCH_WORK, SHARED_DATA, command, console, machine, whole_numbers, write_results
from benchmarks.quality import (
    DataRootOption,
    DatasetOption,
    ExamplesOption,
    FinetuneStepsOption,
    PatienceStepsOption,
    PretrainStepsOption,
    WorkOption,
    _epoch_budget,
    _train,
    open_bench,
)

MODELS = {"scratch": "transformer from scratch (full)", "pretrained": "pre-trained + full"}
METRIC = "ndcg_at_10"


def _row(seed: int, results: dict[str, dict]) -> dict:
    return {
        "seed": seed,
        **{f"{split}_{model}": results[model][split][METRIC] for split in ("validation", "test") for model in MODELS},
        **{f"best_epoch_{model}": results[model]["best_epoch"] for model in MODELS},
    }


def _summary(rows: list[dict]) -> dict:
    """Mean and sample standard deviation of each column, and the seeds on which pre-training scored higher."""
    summary: dict = {}
    for split in ("validation", "test"):
        for model in MODELS:
            values = [row[f"{split}_{model}"] for row in rows]
            summary[f"{split}_{model}"] = {
                "mean": statistics.fmean(values),
                "stdev": statistics.stdev(values) if len(values) > 1 else None,
            }
        summary[f"{split}_pretraining_wins"] = sum(row[f"{split}_pretrained"] > row[f"{split}_scratch"] for row in rows)
    return summary


def _markdown(result: dict) -> str:
    columns = [f"{split} {label}" for split in ("val", "test") for label in ("scratch", "pre-trained")]
    lines = [
        f"NDCG@10 of `{MODELS['scratch']}` and `{MODELS['pretrained']}` on {result['dataset']}, seed by seed "
        f"(pre-training {result['steps']['pretrain']:,} steps; fine-tuning at most {result['steps']['finetune']:,}, "
        f"stopping after {result['steps']['patience']:,} without gain; fine-tuning rows: {result['examples']}).",
        "",
        "| seed | " + " | ".join(columns) + " | test difference | best epoch scratch / pre-trained |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for row in result["seeds"]:
        cells = [row[f"{split}_{model}"] for split in ("validation", "test") for model in MODELS]
        lines.append(
            f"| {row['seed']} | "
            + " | ".join(f"{value:.4f}" for value in cells)
            + f" | {row['test_pretrained'] - row['test_scratch']:+.4f}"
            + f" | {row['best_epoch_scratch']} / {row['best_epoch_pretrained']} |"
        )
    summary = result["summary"]
    seeds = len(result["seeds"])
    if seeds > 1:  # one seed has no spread to show
        spread = [summary[f"{split}_{model}"] for split in ("validation", "test") for model in MODELS]
        lines.append(
            "| mean ± sd | "
            + " | ".join(f"{cell['mean']:.4f} ± {cell['stdev']:.4f}" for cell in spread)
            + f" | {summary['test_pretrained']['mean'] - summary['test_scratch']['mean']:+.4f} | |"
        )
    lines += [
        "",
        f"Pre-training scored higher on {summary['validation_pretraining_wins']} of {seeds} seeds on validation "
        f"and {summary['test_pretraining_wins']} of {seeds} on test.",
        "",
        f"Measured on {result['machine']} with `{result['command']}`.",
        "",
    ]
    return "\n".join(lines)


def main(
    dataset: DatasetOption = "amazon-beauty",
    data_root: DataRootOption = SHARED_DATA,
    work: WorkOption = BENCH_WORK,
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated")] = "0,1,2",
    pretrain_steps: PretrainStepsOption = 1_200,
    finetune_steps: FinetuneStepsOption = 15_000,
    patience_steps: PatienceStepsOption = 1_500,
    examples: ExamplesOption = "prefixes",
) -> None:
    chosen_seeds = whole_numbers("--seeds", seeds)
    bench = open_bench(dataset, data_root, work, examples)
    pretrain, finetune = _epoch_budget(bench.run("prepared"), pretrain_steps, finetune_steps, patience_steps, examples)
    rows = []
    for seed in chosen_seeds:
        pretrain_epochs = {"scratch": 0, "pretrained": pretrain.epochs}
        results = {}
        for model, epochs in pretrain_epochs.items():
            console.rule(f"seed {seed}: {MODELS[model]}")
            results[model] = _train(
                bench,
                f"{model}-s{seed}",
                pretrain.model_copy(update={"epochs": epochs, "seed": seed}),
                finetune.model_copy(update={"seed": seed}),
            )
        rows.append(_row(seed, results))
    result = {
        "dataset": dataset,
        "steps": {"pretrain": pretrain_steps, "finetune": finetune_steps, "patience": patience_steps},
        "examples": examples,
        "seeds": rows,
        "summary": _summary(rows),
        "machine": machine(),
        "command": command("benchmarks.pretraining_seeds"),
    }
    write_results(f"pretraining-seeds-{dataset}", result, _markdown(result), f"bench-seeds:{dataset}")
    table = Table("seed", *(f"{split} {model}" for split in ("val", "test") for model in MODELS))
    for row in rows:
        table.add_row(
            str(row["seed"]),
            *(f"{row[f'{split}_{model}']:.4f}" for split in ("validation", "test") for model in MODELS),
        )
    console.print(table)


if __name__ == "__main__":
    typer.run(main)

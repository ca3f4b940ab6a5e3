"""Does pre-training beat the same transformer from scratch, and do the parameter-efficient modes
stay within 10% of full fine-tuning, seed after seed?

    make bench-seeds DATASET=ml-100k SEEDS=0,1,2     (reads ../shared/data)

One seed's gap between two models can be noise: the seed sets the initialisation, the Cloze masks
and the order and dropout of every batch, and on MovieLens-100K's 943 test users that moves NDCG@10
with a standard deviation of about 0.002 (the model-quality study). For each seed this trains ``transformer from
scratch (full)`` and ``pre-trained + full`` exactly as ``benchmarks.quality`` does (same defaults,
same step budget options; the prepared data, augmented views included, is shared), and reports
validation and test NDCG@10 per seed, their mean and standard deviation, and on how many seeds
pre-training scored higher. From each seed's pre-trained encoder it also fine-tunes the ``--peft``
modes (by default ``frozen`` + adapters and ``lora``, as the quality benchmark does) and reports
each one's NDCG@10 as a share of ``pre-trained + full``'s (and its HR@10, the issue's other headline
metric), with the share of parameters it trains. Each model's result is kept in its run folder
(``bench_result.json``), so seeds can be measured by separate invocations side by side and gathered
by one that names them all. With ``--refit`` every model is refit on train + validation targets once
validation has chosen its epochs (``FinetuneConfig.refit``), in run folders and results of its own;
a seed's pre-trained encoder is reused from its run without the refit when that has finished (the
same seed pre-trains the same encoder). ``--model-size`` trains another encoder preset than
``small``, in run folders and results named with it; ``--no-scratch`` leaves out the model from
scratch where only the parameter-efficient modes are in question.
Writes benchmarks/results/pretraining-seeds-<dataset>[-<size>][-refit].json and .md, and the study's table.
"""

from __future__ import annotations

import statistics
from typing import Annotated

import typer
from rich.table import Table

from benchmarks.common import BENCH_WORK, SHARED_DATA, command, console, machine, whole_numbers, write_results
from benchmarks.quality import (
    RESULT_FILE,
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
from recsys_tasks.models.config import MODEL_SIZES

MODELS = {"scratch": "transformer from scratch (full)", "pretrained": "pre-trained + full"}
# The parameter-efficient modes, named as the quality benchmark's rows.
PEFT_MODELS = {
    "frozen": "pre-trained + frozen + adapters",
    "lora": "pre-trained + LoRA",
    "head": "pre-trained + head only",
}
METRIC = "ndcg_at_10"
# The parameter-efficient modes' shares are also given of full's HR@10, the issue's other headline metric.
HIT_METRIC = "hr_at_10"
SPLITS = ("validation", "test")
# The bar: a parameter-efficient mode within 10% of full fine-tuning.
PEFT_SHARE_TARGET = 0.9


def _row(seed: int, results: dict[str, dict]) -> dict:
    row: dict = {"seed": seed}
    for model, result in results.items():
        row |= {f"{split}_{model}": result[split][METRIC] for split in SPLITS}
        row |= {f"{split}_{model}_{HIT_METRIC}": result[split][HIT_METRIC] for split in SPLITS}
        row[f"best_epoch_{model}"] = result["best_epoch"]
        row[f"trainable_{model}"] = result["trainable_parameters"]
    return row


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "stdev": statistics.stdev(values) if len(values) > 1 else None}


def _summary(rows: list[dict], models: list[str], peft: list[str]) -> dict:
    """Mean and sample standard deviation of each column, the seeds on which pre-training scored higher
    (when scratch was trained), and each parameter-efficient mode's share of full fine-tuning's NDCG@10,
    of its HR@10 and of its parameters."""
    summary: dict = {}
    for split in SPLITS:
        for model in [*models, *peft]:
            summary[f"{split}_{model}"] = _mean_sd([row[f"{split}_{model}"] for row in rows])
        if "scratch" in models:
            wins = sum(row[f"{split}_pretrained"] > row[f"{split}_scratch"] for row in rows)
            summary[f"{split}_pretraining_wins"] = wins
        for mode in peft:
            for metric_suffix in ("", f"_{HIT_METRIC}"):
                shares = [
                    row[f"{split}_{mode}{metric_suffix}"] / row[f"{split}_pretrained{metric_suffix}"] for row in rows
                ]
                summary[f"{split}_{mode}{metric_suffix}_share_of_full"] = _mean_sd(shares)
                summary[f"{split}_{mode}{metric_suffix}_within_target"] = sum(
                    share >= PEFT_SHARE_TARGET for share in shares
                )
    for mode in peft:
        summary[f"{mode}_parameter_share"] = rows[0][f"trainable_{mode}"] / rows[0]["trainable_pretrained"]
    return summary


def _markdown(result: dict) -> str:
    refit = (
        "; every model refit on train + validation targets for the epochs validation chose, its validation "
        "figures those of the choosing run"
        if result["refit"]
        else ""
    )
    setting = (
        f"on {result['dataset']}, seed by seed ({result['model_size']} encoder; pre-training "
        f"{result['steps']['pretrain']:,} steps; fine-tuning at most {result['steps']['finetune']:,}, stopping after "
        f"{result['steps']['patience']:,} without gain; fine-tuning rows: {result['examples']}{refit})."
    )
    if "scratch" in result["models"]:
        lines = [*_scratch_markdown(result, setting), ""]
    else:
        lines = [f"`{MODELS['pretrained']}` and the parameter-efficient modes {setting}", ""]
    if result["peft"]:
        lines += [*_peft_markdown(result), ""]
    lines += [f"Measured on {result['machine']} with `{result['command']}`.", ""]
    return "\n".join(lines)


def _scratch_markdown(result: dict, setting: str) -> list[str]:
    """NDCG@10 from scratch and pre-trained, seed by seed, and on how many seeds pre-training scored higher."""
    columns = [f"{split} {label}" for split in ("val", "test") for label in ("scratch", "pre-trained")]
    lines = [
        f"NDCG@10 of `{MODELS['scratch']}` and `{MODELS['pretrained']}` {setting}",
        "",
        "| seed | " + " | ".join(columns) + " | test difference | best epoch scratch / pre-trained |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for row in result["seeds"]:
        cells = [row[f"{split}_{model}"] for split in SPLITS for model in MODELS]
        lines.append(
            f"| {row['seed']} | "
            + " | ".join(f"{value:.4f}" for value in cells)
            + f" | {row['test_pretrained'] - row['test_scratch']:+.4f}"
            + f" | {row['best_epoch_scratch']} / {row['best_epoch_pretrained']} |"
        )
    summary = result["summary"]
    seeds = len(result["seeds"])
    if seeds > 1:  # one seed has no spread to show
        spread = [summary[f"{split}_{model}"] for split in SPLITS for model in MODELS]
        lines.append(
            "| mean ± sd | "
            + " | ".join(_spread(cell, ".4f") for cell in spread)
            + f" | {summary['test_pretrained']['mean'] - summary['test_scratch']['mean']:+.4f} | |"
        )
    lines += [
        "",
        f"Pre-training scored higher on {summary['validation_pretraining_wins']} of {_seed_count(seeds)} on validation "
        f"and {summary['test_pretraining_wins']} of {seeds} on test.",
    ]
    return lines


def _peft_markdown(result: dict) -> list[str]:
    """Each parameter-efficient mode's test NDCG@10 and its share of full fine-tuning's (and of its HR@10
    on test), seed by seed."""
    peft, summary, seeds = result["peft"], result["summary"], len(result["seeds"])
    columns = [f"{cell} {mode}" for mode in peft for cell in ("test", "test share", "val share", "test HR@10 share")]
    lines = [
        "Parameter-efficient modes against `pre-trained + full` (shares of its NDCG@10 unless HR@10 is named): "
        + "; ".join(
            f"`{mode}` trains {result['seeds'][0][f'trainable_{mode}']:,} parameters "
            f"({summary[f'{mode}_parameter_share']:.1%} of full's)"
            for mode in peft
        )
        + ".",
        "",
        "| seed | val full | test full | " + " | ".join(columns) + " |",
        "|---" * (len(columns) + 3) + "|",
    ]
    for row in result["seeds"]:
        cells = [f"{row[f'{split}_pretrained']:.4f}" for split in SPLITS]
        for mode in peft:
            cells += [
                f"{row[f'test_{mode}']:.4f}",
                *(f"{row[f'{split}_{mode}'] / row[f'{split}_pretrained']:.1%}" for split in reversed(SPLITS)),
                f"{row[f'test_{mode}_{HIT_METRIC}'] / row[f'test_pretrained_{HIT_METRIC}']:.1%}",
            ]
        lines.append(f"| {row['seed']} | " + " | ".join(cells) + " |")
    if seeds > 1:
        cells = [_spread(summary[f"{split}_pretrained"], ".4f") for split in SPLITS]
        for mode in peft:
            cells += [
                _spread(summary[f"test_{mode}"], ".4f"),
                *(_spread(summary[f"{split}_{mode}_share_of_full"], ".1%") for split in reversed(SPLITS)),
                _spread(summary[f"test_{mode}_{HIT_METRIC}_share_of_full"], ".1%"),
            ]
        lines.append("| mean ± sd | " + " | ".join(cells) + " |")
    lines += [
        "",
        " ".join(
            f"`{mode}` came within {1 - PEFT_SHARE_TARGET:.0%} of full's NDCG@10 on "
            f"{summary[f'test_{mode}_within_target']} of {_seed_count(seeds)} on test "
            f"({summary[f'validation_{mode}_within_target']} on validation), of its HR@10 on "
            f"{summary[f'test_{mode}_{HIT_METRIC}_within_target']} on test "
            f"({summary[f'validation_{mode}_{HIT_METRIC}_within_target']} on validation)."
            for mode in peft
        ),
    ]
    return lines


def _seed_count(seeds: int) -> str:
    return f"{seeds} seed" if seeds == 1 else f"{seeds} seeds"


def _spread(cell: dict, number_format: str) -> str:
    return f"{cell['mean']:{number_format}} ± {cell['stdev']:{number_format}}"


def main(
    dataset: DatasetOption = "amazon-beauty",
    data_root: DataRootOption = SHARED_DATA,
    work: WorkOption = BENCH_WORK,
    seeds: Annotated[str, typer.Option(help="Seeds, comma-separated")] = "0,1,2",
    pretrain_steps: PretrainStepsOption = 1_200,
    finetune_steps: FinetuneStepsOption = 15_000,
    patience_steps: PatienceStepsOption = 1_500,
    examples: ExamplesOption = "prefixes",
    peft: Annotated[
        str,
        typer.Option(
            help="Parameter-efficient modes to fine-tune from each seed's pre-trained encoder, comma-separated: "
            "frozen, lora, head; '' for none"
        ),
    ] = "frozen,lora",
    refit: Annotated[
        bool, typer.Option(help="Refit every model on train + validation targets once validation chose its epochs")
    ] = False,
    model_size: Annotated[str, typer.Option(help=f"Encoder preset: {', '.join(MODEL_SIZES)}")] = "small",
    scratch: Annotated[
        bool, typer.Option(help="Also train the transformer from scratch, to compare pre-training with")
    ] = True,
) -> None:
    chosen_seeds = whole_numbers("--seeds", seeds)
    peft_modes = list(dict.fromkeys(mode for mode in peft.split(",") if mode))  # each once, in the order given
    unknown = [mode for mode in peft_modes if mode not in PEFT_MODELS]
    if unknown:
        raise typer.BadParameter(
            f"--peft names unknown modes {', '.join(unknown)}: choose from {', '.join(PEFT_MODELS)}"
        )
    if model_size not in MODEL_SIZES:
        raise typer.BadParameter(f"unknown --model-size {model_size!r}: choose from {', '.join(MODEL_SIZES)}")
    if not scratch and not peft_modes:
        raise typer.BadParameter("--no-scratch with --peft '' leaves nothing to compare pre-trained + full with")
    bench = open_bench(dataset, data_root, work, examples)
    pretrain, finetune = _epoch_budget(bench.run("prepared"), pretrain_steps, finetune_steps, patience_steps, examples)
    pretrain = pretrain.model_copy(update={"model_size": model_size})
    finetune = finetune.model_copy(update={"refit": refit})
    # Runs and results of another encoder size or with the refit are named apart; small's keep the plain names.
    size_suffix = "" if model_size == "small" else f"-{model_size}"
    suffix = size_suffix + ("-refit" if refit else "")
    models = ["scratch", "pretrained"] if scratch else ["pretrained"]
    rows = []
    for seed in chosen_seeds:
        pretrained_encoder = f"pretrained{size_suffix}-s{seed}"
        reuse_encoder = refit and bench.run(pretrained_encoder).exists(RESULT_FILE)
        pretrain_epochs = {"scratch": 0, "pretrained": pretrain.epochs}
        results = {}
        for model in models:
            epochs = pretrain_epochs[model]
            console.rule(f"seed {seed}: {MODELS[model]}{suffix}")
            results[model] = _train(
                bench,
                f"{model}{suffix}-s{seed}",
                pretrain.model_copy(update={"epochs": epochs, "seed": seed}),
                finetune.model_copy(update={"seed": seed}),
                encoder_from=pretrained_encoder if model == "pretrained" and reuse_encoder else None,
            )
        for mode in peft_modes:
            console.rule(f"seed {seed}: {PEFT_MODELS[mode]}{suffix}")
            results[mode] = _train(
                bench,
                f"{mode}{suffix}-s{seed}",
                pretrain,
                finetune.model_copy(update={"mode": mode, "seed": seed}),
                encoder_from=f"pretrained{suffix}-s{seed}",
            )
        rows.append(_row(seed, results))
    result = {
        "dataset": dataset,
        "model_size": model_size,
        "steps": {"pretrain": pretrain_steps, "finetune": finetune_steps, "patience": patience_steps},
        "examples": examples,
        "models": models,
        "peft": peft_modes,
        "refit": refit,
        "seeds": rows,
        "summary": _summary(rows, models, peft_modes),
        "machine": machine(),
        "command": command("benchmarks.pretraining_seeds"),
    }
    write_results(f"pretraining-seeds-{dataset}{suffix}", result, _markdown(result), f"bench-seeds:{dataset}{suffix}")
    shown = [(split, model) for split in SPLITS for model in models] + [("test", mode) for mode in peft_modes]
    table = Table("seed", *(f"{split} {model}" for split, model in shown))
    for row in rows:
        table.add_row(str(row["seed"]), *(f"{row[f'{split}_{model}']:.4f}" for split, model in shown))
    console.print(table)


if __name__ == "__main__":
    typer.run(main)

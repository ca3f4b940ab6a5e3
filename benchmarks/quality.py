"""Model quality on the public data sets against baselines and published numbers.

    make bench-quality DATASET=amazon-beauty     (or ml-100k; reads ../shared/data)

Protocol 1 (leave-one-out, every item ranked, the user's history excluded), on the same test split:
popularity, EASE (λ chosen on validation), the transformer trained from scratch, and the
pre-trained transformer fine-tuned in every mode (full, frozen + adapters, LoRA, head only,
multi-task retrieval + ranking). With ``--ablations`` also pre-training with fewer objectives and
without attribute fusion. On ml-100k, protocol 2 (the TFRS tutorials' random 80/20 split,
top-K accuracy and rating RMSE) as well.

Every model uses the package's default hyper-parameters. The budget is set here in optimizer steps
(a fine-tuning epoch of one row per target is 380 steps on MovieLens-100K, 514 on Amazon Beauty)
and turned into epochs per data set; the study's Amazon Beauty tables pre-train 3,600 steps
(``--pretrain-steps 3600``), which fits the 45-minute CPU budget there; MovieLens-100K the default
1,200, as its full 50-item windows cost over twice as much per step. MovieLens-100K fine-tunes on
windows (``--examples windows --finetune-steps 4500 --patience-steps 200``): with 100-movie
histories one row per target is 39 times the encoder work. Fine-tuning stops on the validation
split; each test number is read once.
Writes benchmarks/results/<dataset>.json and .md, and the study's table for the data set.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from benchmarks.common import BENCH_WORK, SHARED_DATA, command, console, machine, show_progress, write_results
from recsys_tasks.settings import Settings

RESULT_FILE = "bench_result.json"
DATASETS = {
    "amazon-beauty": {"data_source": "sequence", "data_path": "amazon-beauty/Beauty.txt"},
    "ml-100k": {"data_source": "movielens-100k", "data_path": "ml-100k"},
}
SHOWN_METRICS = ("hr_at_5", "hr_at_10", "hr_at_20", "ndcg_at_5", "ndcg_at_10", "ndcg_at_20", "mrr", "coverage_at_10")
# Published rows on the same Amazon Beauty files and protocol (BSARec, AAAI 2024, Table 2).
PUBLISHED = {
    "amazon-beauty": {
        "SASRec": {"hr_at_10": 0.0605, "ndcg_at_10": 0.0318},
        "S3-Rec": {"hr_at_10": 0.0647, "ndcg_at_10": 0.0327},
        "ICLRec": {"hr_at_10": 0.0744, "ndcg_at_10": 0.0403},
        "DuoRec": {"hr_at_10": 0.0845, "ndcg_at_10": 0.0443},
        "BSARec": {"hr_at_10": 0.1008, "ndcg_at_10": 0.0611},
    },
    "ml-100k": {},
}
# The ablations' objectives on augmented views (next item and contrastive), switched off.
_WITHOUT_VIEW_OBJECTIVES = {"autoregressive_weight": 0.0, "contrastive_weight": 0.0}
TUTORIAL_PROTOCOL_2 = {"TFRS basic retrieval tutorial": {"top_100": 0.23}, "TFRS multitask tutorial": {"rmse": 1.11}}


class Bench:
    """Run folders under one home: the prepared data once, then one run per model, each from a copy."""

    def __init__(self, home: Path, params: dict):
        self.settings = Settings(home=home)
        self.params = params

    def run(self, run_id: str):
        from recsys_tasks.pipeline import run_dir

        return run_dir(run_id, self.settings)

    def prepare(self, run_id: str) -> None:
        from recsys_tasks.pipeline import run_stage

        if self.run(run_id).exists("augment/summary.json"):
            return
        for stage in ("ingest", "validate", "augment"):
            run_stage(stage, self.params, run_id, self.settings)

    def fork(self, source: str, run_id: str) -> None:
        """A fresh run holding copies of the data and sequences of ``source`` (and nothing trained before)."""
        target = Path(self.run(run_id).uri)
        shutil.rmtree(target, ignore_errors=True)
        for folder in ("data", "augment"):
            shutil.copytree(Path(self.run(source).uri) / folder, target / folder)


# The options every model benchmark takes (their defaults stay in each ``main``).
DatasetOption = Annotated[str, typer.Option(help="amazon-beauty or ml-100k")]
DataRootOption = Annotated[Path, typer.Option(help="Folder holding the data sets")]
WorkOption = Annotated[
    Path, typer.Option(help="Where the runs go; benchmarks given the same one share the prepared data")
]
PretrainStepsOption = Annotated[int, typer.Option(help="Pre-training optimizer steps")]
FinetuneStepsOption = Annotated[int, typer.Option(help="Most fine-tuning optimizer steps")]
PatienceStepsOption = Annotated[int, typer.Option(help="Fine-tuning steps without validation gain")]
ExamplesOption = Annotated[
    str, typer.Option(help="Fine-tuning rows: prefixes (one per target) or windows (see FinetuneConfig)")
]


def open_bench(dataset: str, data_root: Path, work: Path, examples: str) -> Bench:
    """The bench of ``dataset`` under ``work``, its data prepared; a bad option is a one-line error naming it."""
    if dataset not in DATASETS:
        raise typer.BadParameter(f"unknown dataset {dataset!r}: choose {', '.join(DATASETS)}")
    if examples not in ("prefixes", "windows"):
        raise typer.BadParameter(f"unknown examples {examples!r}: choose prefixes or windows")
    data_path = data_root / DATASETS[dataset]["data_path"]
    if not data_path.exists():
        raise typer.BadParameter(f"{data_path} does not exist: the benchmark reads ../shared/data")
    show_progress()
    bench = Bench(work / dataset, {**DATASETS[dataset], "data_path": str(data_path)})
    bench.prepare("prepared")
    return bench


def _test_metrics(run, model_folder=None, scorer=None, use_full_history=False) -> dict[str, float]:
    from recsys_tasks.contracts.exported_model import SequentialRecommender
    from recsys_tasks.contracts.metrics import evaluate_scores
    from recsys_tasks.contracts.splits import LeaveOneOutSplits

    splits = LeaveOneOutSplits.load(run)
    inputs, seen, targets = splits.holdout("test")
    if scorer is None:
        scorer = SequentialRecommender.from_folder(model_folder).score_indices
    return evaluate_scores(scorer, seen if use_full_history else inputs, seen, targets, splits.n_items)


def _train(bench: Bench, run_id: str, pretrain_config, finetune_config, encoder_from: str | None = None) -> dict:
    """Pre-train (unless ``encoder_from`` names a run whose encoder to reuse), fine-tune, score the test split."""
    from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
    from recsys_tasks.training.finetune import finetune
    from recsys_tasks.training.pretrain import pretrain

    run = bench.run(run_id)
    if run.exists(RESULT_FILE):  # measured by an earlier, interrupted invocation: not trained again
        return run.read_json(RESULT_FILE)
    bench.fork("prepared", run_id)
    if encoder_from is None:
        pretrained = pretrain(run, pretrain_config)
        pretrain_seconds = pretrained.seconds
    else:
        shutil.copytree(Path(bench.run(encoder_from).uri) / "pretrain", Path(run.uri) / "pretrain")
        pretrain_seconds = 0.0
    tuned = finetune(run, finetune_config)
    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        metrics = _test_metrics(run, folder)
    result = {
        "test": metrics,
        "validation": tuned.validation,
        "trainable_parameters": tuned.trainable_parameters,
        "total_parameters": tuned.total_parameters,
        "pretrain_seconds": pretrain_seconds,
        "finetune_seconds": tuned.seconds,
        "finetune_epochs": tuned.epochs_run,
        "best_epoch": tuned.best_epoch,
        "refit_epochs": tuned.refit_epochs,
    }
    run.write_json(RESULT_FILE, result)
    return result


def _epoch_budget(run, pretrain_steps: int, finetune_steps: int, patience_steps: int, examples: str):
    """(pre-training config, fine-tuning config) with the step budget turned into this data set's epochs."""
    import math

    from recsys_tasks.contracts.splits import LeaveOneOutSplits
    from recsys_tasks.training.config import FinetuneConfig, PretrainConfig

    pretrain, finetune = PretrainConfig(), FinetuneConfig(examples=examples)
    view_pairs = run.read_json("augment/summary.json")["view_pairs"]
    rows = len(LeaveOneOutSplits.load(run).next_item_rows(finetune.examples))
    pretrain_epoch = math.ceil(view_pairs / pretrain.batch_size)
    finetune_epoch = math.ceil(rows / finetune.batch_size)
    epochs = {
        "pretrain": math.ceil(pretrain_steps / pretrain_epoch),
        "finetune": math.ceil(finetune_steps / finetune_epoch),
        "patience": max(3, math.ceil(patience_steps / finetune_epoch)),
    }
    console.print(f"steps per epoch: pre-training {pretrain_epoch}, fine-tuning {finetune_epoch} → {epochs}")
    return (
        pretrain.model_copy(update={"epochs": epochs["pretrain"]}),
        finetune.model_copy(update={"epochs": epochs["finetune"], "patience": epochs["patience"]}),
    )


def _save_partial(bench: Bench, rows: dict) -> None:
    """Rows so far, so that an interrupted benchmark keeps what it measured."""
    (Path(bench.settings.resolved_home) / "partial.json").write_text(json.dumps(rows, indent=2))


def _protocol_1(bench: Bench, budget: tuple[int, int, int, str], ablations: bool, refit: bool) -> dict[str, dict]:
    from recsys_tasks.contracts.splits import LeaveOneOutSplits
    from recsys_tasks.evaluation.baselines import popularity_scorer, tuned_ease

    bench.prepare("prepared")
    prepared = bench.run("prepared")
    splits = LeaveOneOutSplits.load(prepared)
    rows: dict[str, dict] = {}

    console.rule("popularity")
    rows["popularity"] = {"test": _test_metrics(prepared, scorer=popularity_scorer(splits)), "trainable_parameters": 0}
    console.rule("EASE")
    ease_run = bench.run("ease")
    if ease_run.exists(RESULT_FILE):  # measured by an earlier invocation: not fitted again
        rows["EASE"] = ease_run.read_json(RESULT_FILE)
    else:
        started = time.perf_counter()
        ease, validation = tuned_ease(splits)
        rows["EASE"] = {
            "test": _test_metrics(prepared, scorer=ease.scorer(), use_full_history=True),
            "trainable_parameters": int((ease.weights != 0).sum()),
            "finetune_seconds": round(time.perf_counter() - started, 1),
            "l2": ease.l2,
            "validation_ndcg_at_10_by_l2": validation,
        }
        ease_run.write_json(RESULT_FILE, rows["EASE"])

    pretrain, finetune = _epoch_budget(prepared, *budget)
    variants = {
        "transformer from scratch (full)": (pretrain.model_copy(update={"epochs": 0}), finetune, None),
        "pre-trained + full": (pretrain, finetune, None),
        "pre-trained + frozen + adapters": (
            pretrain,
            finetune.model_copy(update={"mode": "frozen"}),
            "pre-trained + full",
        ),
        "pre-trained + LoRA": (pretrain, finetune.model_copy(update={"mode": "lora"}), "pre-trained + full"),
        "pre-trained + head only": (pretrain, finetune.model_copy(update={"mode": "head"}), "pre-trained + full"),
        "pre-trained + full, multi-task (retrieval + ranking)": (
            pretrain,
            finetune.model_copy(update={"ranking_weight": 0.5}),
            "pre-trained + full",
        ),
    }
    if ablations:
        variants |= {
            "pre-trained, Cloze only + full": (
                pretrain.model_copy(update={**_WITHOUT_VIEW_OBJECTIVES, "attribute_weight": 0.0}),
                finetune,
                None,
            ),
            "pre-trained, Cloze + attributes + full": (
                pretrain.model_copy(update=_WITHOUT_VIEW_OBJECTIVES),
                finetune,
                None,
            ),
            "no attribute fusion, pre-trained + full": (
                pretrain.model_copy(update={"use_attributes": False}),
                finetune,
                None,
            ),
        }
    if refit:
        refit_on_validation = finetune.model_copy(update={"refit": True})
        variants |= {
            "transformer from scratch (full), refit on train + validation": (
                pretrain.model_copy(update={"epochs": 0}),
                refit_on_validation,
                None,
            ),
            "pre-trained + full, refit on train + validation": (pretrain, refit_on_validation, "pre-trained + full"),
        }
    run_ids = {name: f"model-{number}" for number, name in enumerate(variants)}
    for name, (pretrain_config, finetune_config, encoder_from) in variants.items():
        console.rule(name)
        rows[name] = _train(
            bench, run_ids[name], pretrain_config, finetune_config, run_ids[encoder_from] if encoder_from else None
        )
        _print_rows({name: rows[name]})
        _save_partial(bench, rows)
    return rows


def _protocol_2(bench: Bench, budget: tuple[int, int, int, str]) -> dict[str, dict]:
    from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
    from recsys_tasks.evaluation.tfrs_protocol import evaluate_tfrs_protocol, popularity_top_k, split_ratings
    from recsys_tasks.pipeline import run_stage
    from recsys_tasks.training.finetune import finetune
    from recsys_tasks.training.pretrain import pretrain

    console.rule("protocol 2: random 80/20 split of the ratings")
    bench.prepare("prepared")
    split = split_ratings(bench.run("prepared"), bench.run("protocol-2"))
    run = bench.run("protocol-2")
    # 80% of the data is a different data set: its drift baseline must not be the full data's.
    settings = bench.settings.model_copy(update={"snapshots_uri": str(Path(bench.run("protocol-2").uri) / "snapshots")})
    for stage in ("validate", "augment"):
        run_stage(stage, bench.params, "protocol-2", settings)
    pretrain_config, finetune_config = _epoch_budget(run, *budget)
    pretrained = pretrain(run, pretrain_config)
    tuned = finetune(run, finetune_config.model_copy(update={"ranking_weight": 1.0}))
    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        metrics = evaluate_tfrs_protocol(run, folder)
    return {
        "popularity": {"test": popularity_top_k(run)},
        "pre-trained + full, multi-task (retrieval + rating)": {
            "test": metrics,
            "trainable_parameters": tuned.trainable_parameters,
            "pretrain_seconds": pretrained.seconds,
            "finetune_seconds": tuned.seconds,
        },
        "split": split,
    }


def _print_rows(rows: dict[str, dict]) -> None:
    table = Table(*("model", "HR@10", "NDCG@10", "HR@20", "NDCG@20", "MRR", "trainable", "train s"))
    for name, row in rows.items():
        test = row["test"]
        seconds = row.get("pretrain_seconds", 0) + row.get("finetune_seconds", 0)
        table.add_row(
            name,
            *(f"{test[m]:.4f}" for m in ("hr_at_10", "ndcg_at_10", "hr_at_20", "ndcg_at_20", "mrr")),
            f"{row.get('trainable_parameters', 0):,}",
            f"{seconds:,.0f}",
        )
    console.print(table)


def _markdown(dataset: str, result: dict) -> str:
    header = "| model | " + " | ".join(
        m.replace("_at_", "@").upper().replace("MRR", "MRR").replace("COVERAGE", "Cov") for m in SHOWN_METRICS
    )
    lines = [
        f"Protocol 1 on {dataset} ({result['users']:,} users, {result['items']:,} items): leave-one-out, every item "
        "ranked, history excluded; test split.",
        "",
        header + " | trainable params | pre-train s | fine-tune s |",
        "|---" * (len(SHOWN_METRICS) + 4) + "|",
    ]
    for name, row in result["protocol_1"].items():
        test = row["test"]
        lines.append(
            f"| {name} | "
            + " | ".join(f"{test[m]:.4f}" for m in SHOWN_METRICS)
            + f" | {row.get('trainable_parameters', 0):,}"
            + f" | {row.get('pretrain_seconds', 0):,.0f} | {row.get('finetune_seconds', 0):,.0f} |"
        )
    for name, published in PUBLISHED.get(dataset, {}).items():
        lines.append(
            f"| {name} (published) | "
            + " | ".join(f"{published[m]:.4f}" if m in published else "" for m in SHOWN_METRICS)
            + " | | | |"
        )
    if "protocol_2" in result:
        p2 = result["protocol_2"]
        lines += [
            "",
            f"Protocol 2 (TFRS tutorials): ratings shuffled with seed 42, {p2['split']['train']:,} train / "
            f"{p2['split']['test']:,} test; top-K over every movie (as FactorizedTopK), and with the user's "
            "training movies removed.",
            "",
            "| model | top-1 | top-10 | top-50 | top-100 | top-100, seen removed | RMSE |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, row in p2.items():
            if name == "split":
                continue
            test = row["test"]
            cells = [
                f"{test[k]:.4f}" if k in test else ""
                for k in ("top_1", "top_10", "top_50", "top_100", "top_100_unseen", "rmse")
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        for name, published in TUTORIAL_PROTOCOL_2.items():
            lines.append(
                f"| {name} (published) | | | | {published.get('top_100', '')} | | {published.get('rmse', '')} |"
            )
    lines += [
        "",
        f"Measured on {result['machine']} with `{result['command']}`; total {result['seconds'] / 60:.1f} min.",
    ]
    return "\n".join(lines) + "\n"


def main(
    dataset: DatasetOption = "amazon-beauty",
    data_root: DataRootOption = SHARED_DATA,
    work: WorkOption = BENCH_WORK,
    pretrain_steps: PretrainStepsOption = 1_200,
    finetune_steps: FinetuneStepsOption = 15_000,
    patience_steps: PatienceStepsOption = 1_500,
    examples: ExamplesOption = "prefixes",
    ablations: Annotated[
        bool, typer.Option(help="Also pre-train with fewer objectives, and without attributes")
    ] = False,
    refit: Annotated[
        bool, typer.Option(help="Also refit scratch and pre-trained + full on train + validation targets")
    ] = False,
) -> None:
    started = time.perf_counter()
    bench = open_bench(dataset, data_root, work, examples)
    budget = (pretrain_steps, finetune_steps, patience_steps, examples)
    result = {
        "dataset": dataset,
        "steps": {"pretrain": pretrain_steps, "finetune": finetune_steps, "patience": patience_steps},
        "examples": examples,
    }
    result["protocol_1"] = _protocol_1(bench, budget, ablations, refit)
    if dataset == "ml-100k":
        result["protocol_2"] = _protocol_2(bench, budget)
    from recsys_tasks.contracts.layout import AUGMENT_SUMMARY_FILE

    summary = bench.run("prepared").read_json(AUGMENT_SUMMARY_FILE)
    result |= {
        "users": summary["users"],
        "items": summary["items"],
        "seconds": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "command": command("benchmarks.quality"),
    }
    write_results(dataset, result, _markdown(dataset, result), f"bench-quality:{dataset}")
    _print_rows(result["protocol_1"])


if __name__ == "__main__":
    typer.run(main)

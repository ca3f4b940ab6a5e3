"""Serving latency and the int8 variant against a plain NumPy floor.

    make bench-serving          (synthetic large catalogue; Amazon Beauty too when ../shared/data has it)

For each data set the pipeline's own stages prepare the data and export a model (fine-tuning
epochs per data set below: latency does not depend on the weights, the int8 accuracy does).
Then, on the same histories of real users:

- floor: the user vectors already computed, one NumPy matrix product with the item table and a
  top-10 selection (``argpartition`` + sort): the least work any top-10 answer needs;
- the model's ``recommend`` (history ids in; top-10 ids, scores and explanations out: encoding the
  history, scoring, excluding the history, explaining), float32 and int8 variants;
- the same through the pyfunc's ``predict``, which adds the DataFrames in and out.

p50/p99 over many calls at batch 1 and batch 64, and each variant's size and test NDCG@10 from the
evaluate stage. Writes benchmarks/results/serving.{json,md} and the serving-latency study's table.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Annotated

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from benchmarks.common import ROOT, SHARED_DATA, command, console, machine, show_progress, write_results
from recsys_tasks.settings import Settings

# Fine-tuning epochs per data set: the synthetic catalogue is there for its size (latency does not
# depend on the weights), Amazon Beauty for a trained model whose int8 accuracy means something.
DATASETS = {
    "synthetic-large": {"data_source": "synthetic", "synthetic_size": "large", "finetune_epochs": 0},
    "amazon-beauty": {"data_source": "sequence", "data_path": "amazon-beauty/Beauty.txt", "finetune_epochs": 10},
}
RUN_ID = "serving"
TOP_K = 10
BATCH_SIZES = (1, 64)
TARGET_RATIO = 3.0


def _prepare(home: Path, params: dict):
    """The data set through the pipeline up to evaluate, once; returns the run directory."""
    from recsys_tasks.pipeline import run_dir, run_stage

    settings = Settings(home=home)
    run = run_dir(RUN_ID, settings)
    for stage, done in (
        ("ingest", "data/interactions.parquet"),
        ("validate", "validation/summary.json"),
        ("augment", "augment/summary.json"),
        ("pretrain", "pretrain/summary.json"),
        ("finetune", "finetune/model/_SUCCESS"),
        ("evaluate", "evaluate/report.json"),
    ):
        if not run.exists(done):
            run_stage(stage, params, RUN_ID, settings)
    return run


def _floor(item_vectors: np.ndarray, users: np.ndarray):
    """Top-10 from precomputed user vectors: one matrix product and a partial sort."""

    def top_k():
        scores = users @ item_vectors.T
        best = np.argpartition(-scores, TOP_K, axis=1)[:, :TOP_K]
        return np.take_along_axis(best, np.argsort(-np.take_along_axis(scores, best, axis=1), axis=1), axis=1)

    return top_k


def _round_robin(calls: list[Callable[[], object]]) -> Callable[[], object]:
    """One call after the other, so successive timed requests are different users."""
    turn = itertools.count()
    return lambda: calls[next(turn) % len(calls)]()


def _measure(run, calls: int) -> dict:
    from recsys_tasks.contracts.exported_model import VARIANTS, SequentialRecommender
    from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR
    from recsys_tasks.contracts.scoring import item_ids_of
    from recsys_tasks.contracts.splits import LeaveOneOutSplits
    from recsys_tasks.latency import latency_percentiles

    splits = LeaveOneOutSplits.load(run)
    item_ids = item_ids_of(run, splits.n_items)
    rng = np.random.default_rng(0)
    users = rng.choice(len(splits.sequences), size=max(BATCH_SIZES) * 8, replace=False)
    histories = [item_ids[splits.sequences[user][:-1]].tolist() for user in users]
    folder = Path(run.uri) / EXPORTED_MODEL_DIR
    rows = {}
    for batch_size in BATCH_SIZES:
        requests = [
            pd.DataFrame({"history": histories[start : start + batch_size], "k": TOP_K})
            for start in range(0, len(histories), batch_size)
        ][:8]
        for variant in VARIANTS:
            model = SequentialRecommender.from_folder(folder, variant)
            paths = {
                "recommend": [
                    partial(model.recommend, request["history"].tolist(), request["k"].tolist(), [None] * len(request))
                    for request in requests
                ],
                "pyfunc predict": [partial(model.predict, None, request) for request in requests],
            }
            for path, answers in paths.items():
                rows[f"{path} {variant}, batch {batch_size}"] = {
                    "variant": variant,
                    "batch": batch_size,
                    **latency_percentiles(_round_robin(answers), calls),
                }
            if variant == "float32":
                # The floor scores the very same user vectors against the very same float32 item table.
                pads = [model.pad([model.to_indices(h) for h in request["history"]]) for request in requests]
                floors = [_floor(model.item_vectors, model.encode(padded)[0]) for padded in pads]
                rows[f"NumPy floor, batch {batch_size}"] = {
                    "variant": "floor",
                    "batch": batch_size,
                    **latency_percentiles(_round_robin(floors), calls),
                }
    return {"items": splits.n_items, "users": len(splits.sequences), "latency": rows}


def _markdown(result: dict) -> str:
    lines = []
    for dataset, measured in result["datasets"].items():
        lines += [
            f"**{dataset}** ({measured['items']:,} items; model fine-tuned for {measured['finetune_epochs']} epochs; "
            f"top-{TOP_K}, {result['calls']} calls per row)",
            "",
            "| path | batch | p50 ms | p99 ms | p99 ÷ floor p99 |",
            "|---|---|---|---|---|",
        ]
        for name, row in measured["latency"].items():
            floor = measured["latency"][f"NumPy floor, batch {row['batch']}"]["p99_ms"]
            lines.append(
                f"| {name.rsplit(',', 1)[0]} | {row['batch']} | {row['p50_ms']:.3f} | {row['p99_ms']:.3f} "
                f"| {row['p99_ms'] / floor:.2f}× |"
            )
        lines += [
            "",
            "| variant | size on disk | test NDCG@10 | change vs float32 |",
            "|---|---|---|---|",
            *(
                f"| {name} | {v['size_bytes'] / 1e6:.2f} MB | {v['ndcg_at_10']:.5f} "
                f"| {v['ndcg_change_vs_float32']:+.5f} ({v['ndcg_change_vs_float32'] / v['ndcg_at_10']:+.2%}) |"
                for name, v in measured["variants"].items()
            ),
            "",
        ]
    lines.append(f"Measured on {result['machine']} with `{result['command']}`.")
    return "\n".join(lines) + "\n"


def main(
    datasets: Annotated[list[str], typer.Option("--dataset", help="synthetic-large and/or amazon-beauty")] = None,
    data_root: Annotated[Path, typer.Option(help="Folder holding the public data sets")] = SHARED_DATA,
    work: Annotated[Path, typer.Option(help="Where the runs go")] = ROOT / ".adaptrec" / "bench-serving",
    finetune_epochs: Annotated[
        int | None, typer.Option(help="Fine-tuning epochs for every data set (default: per data set)")
    ] = None,
    calls: Annotated[int, typer.Option(help="Timed calls per row")] = 500,
) -> None:
    chosen = datasets or [name for name in DATASETS if name.startswith("synthetic") or data_root.exists()]
    unknown = set(chosen) - set(DATASETS)
    if unknown:
        raise typer.BadParameter(f"unknown dataset {sorted(unknown)}: choose from {', '.join(DATASETS)}")
    show_progress()
    result = {"calls": calls, "datasets": {}}
    for dataset in chosen:
        params = dict(DATASETS[dataset], pretrain_epochs=0)
        if finetune_epochs is not None:
            params["finetune_epochs"] = finetune_epochs
        if "data_path" in params:
            params["data_path"] = str(data_root / params["data_path"])
            if not Path(params["data_path"]).exists():
                raise typer.BadParameter(f"{params['data_path']} does not exist: the benchmark reads ../shared/data")
        started = time.perf_counter()
        run = _prepare(work / dataset, params)
        console.print(f"{dataset}: prepared in {time.perf_counter() - started:.0f} s; measuring")
        measured = _measure(run, calls)
        measured["variants"] = run.read_json("evaluate/report.json")["variants"]
        measured["finetune_epochs"] = params["finetune_epochs"]
        result["datasets"][dataset] = measured
        table = Table(title=f"{dataset}: top-{TOP_K} latency (ms)")
        for column in ("path", "p50", "p99"):
            table.add_column(column)
        for name, row in measured["latency"].items():
            table.add_row(name, f"{row['p50_ms']:.3f}", f"{row['p99_ms']:.3f}")
        console.print(table)
    result |= {"machine": machine(), "command": command("benchmarks.serving")}
    markdown = _markdown(result)
    write_results("serving", result, markdown, "bench-serving")
    console.print(markdown)


if __name__ == "__main__":
    typer.run(main)

"""Continual adaptation against retraining: ADER's protocol on a log cut into periods.

make bench-continual [BENCH_ARGS='--dataset diginetica --share 0.25']

Period 0 is the older history; for t = 1 … T−1 every arm is updated with period t (the first update of
all arms is the same model, trained from scratch on period 0) and tested on period t + 1. Arms, from the
same code as the pipeline's adapt path (``recsys_tasks.training.continual``):

- ``static``: the period-0 model, never updated;
- ``joint``: retrained from scratch on periods 0 … t at every update;
- ``finetune``: the previous model, grown to the new items, trained on period t alone;
- ``replay``: the same plus a replay set of earlier rows (herding), trained on their next item;
- ``replay_distill``: the replayed rows distilled towards the previous model's scores instead (ADER);
- ``replay_distill_pretrain``: the same after the encoder's self-supervised pre-training continued on
  the period's sequences (cloze, next item and contrastive views, as the pretrain stage).

Evaluation rule (ADER's ``util.py``): in a test period, items the arm's data has not seen by period t
are removed from the sequences, sequences left with one item are dropped, and every later position is
predicted from the items before it; all items seen up to period t are ranked, the sequence's own items
included (nothing is excluded); Recall@20 and MRR@20 (reciprocal rank, 0 beyond 20) are averaged over
predictions, then over updates. HR@10 and NDCG@10 are reported alongside. Validation: a random 10% of
each update's new rows, as ADER. Forgetting: each arm's Recall@20 on period 2's test after the last
update against right after period 1, both ranking only the items known after period 1. Compute per
update: wall seconds (the update's test included, a few seconds) and examples (training rows × epochs
run, plus sequences × epochs of continued pre-training).

Data sets: ``diginetica`` (ADER's periods, sessions), ``ml-100k`` (weekly periods of returning users)
and ``synthetic-drifting`` (the stream the pipeline's tests use). Each finished update of each arm is
kept under ``--work`` and not trained again, so the benchmark resumes where it stopped; runs that
differ only in how they update share the period-0 model. Results: ``benchmarks/results/<name>.{json,md}``
(``--name``, default ``continual-<dataset>``), the plot ``docs/experiments/<name>.png`` (also logged to
MLflow) and the study's table.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, get_args

import numpy as np
import typer

from benchmarks.common import BENCH_WORK, SHARED_DATA, STUDIES, command, console, machine, show_progress, write_results

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ARMS = ("static", "joint", "finetune", "replay", "replay_distill", "replay_distill_pretrain")
VALIDATION_SHARE = 0.1
SHOWN = {"recall_at_20": "Recall@20", "mrr_at_20": "MRR@20", "hr_at_10": "HR@10", "ndcg_at_10": "NDCG@10"}


@dataclass(frozen=True)
class Period:
    """The sequences a period adds: item indices (first appearance order over all periods), each sequence
    ``items[offsets[s]:offsets[s + 1]]`` with targets from its position ``first_targets[s]`` on."""

    items: np.ndarray
    offsets: np.ndarray
    first_targets: np.ndarray
    known_items: int
    """Items seen up to and including this period."""


def _kept(key: str, share: float) -> bool:
    digest = hashlib.blake2b(key.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") / 2**64 < share


def read_diginetica(folder: Path, share: float) -> list[Period]:
    """ADER's DIGINETICA periods (``period_N.txt``: ``session item`` lines in time order), each session a
    sequence of its own. ``share`` of the catalogue is kept, by a hash of the item id, with every click on
    those items: the sessions get shorter (those left with one click are dropped) but each kept item keeps
    all its data, so the log stays as dense per item as the full one (a share of the sessions instead
    would leave most items a handful of clicks)."""
    index: dict[int, int] = {}
    periods = []
    for number in range(len(list(folder.glob("period_*.txt")))):
        lines = np.loadtxt(folder / f"period_{number}.txt", dtype=np.int64, ndmin=2)
        sessions: dict[int, list[int]] = {}
        for session, item in lines:
            if _kept(f"item:{item}", share):
                sessions.setdefault(int(session), []).append(int(item))
        sequences = [items for items in sessions.values() if len(items) >= 2]
        for items in sequences:
            for item in items:
                index.setdefault(item, len(index) + 1)
        periods.append(_period([[index[item] for item in items] for items in sequences], None, len(index)))
    return periods


def read_movielens_weeks(folder: Path, share: float, weeks: int = 17) -> list[Period]:
    """MovieLens-100K cut into periods by time: the last ``weeks`` − 1 weeks one period each, everything
    before them period 0; ``share`` of the users."""
    ratings = np.loadtxt(folder / "u.data", dtype=np.int64)
    week = 7 * 86_400
    cuts = ratings[:, 3].max() + 1 - week * np.arange(weeks - 1, 0, -1)
    period_of = np.searchsorted(cuts, ratings[:, 3], side="right")
    return periods_of_log(ratings[:, 0], ratings[:, 1], ratings[:, 3], period_of, weeks, share)


def read_drifting_synthetic(share: float, periods: int = 17) -> list[Period]:
    """The drifting synthetic stream the pipeline's tests use (``synthetic_size: drifting``, seed 0): weekly
    periods whose topics shift in and out of fashion and which launch new items; ``share`` of the users."""
    from recsys_tasks.constants import ITEM_COL, TIME_COL, USER_COL
    from recsys_tasks.data.synthetic import StreamConfig, generate_period

    stream = StreamConfig.preset(seed=0)
    tables = [generate_period(stream, period)[0] for period in range(periods)]
    users = np.concatenate([table[USER_COL].to_numpy(zero_copy_only=False).astype(np.int64) for table in tables])
    items = np.concatenate([table[ITEM_COL].to_numpy() for table in tables])
    times = np.concatenate([table[TIME_COL].to_numpy() for table in tables])
    period_of = np.concatenate([np.full(len(table), period) for period, table in enumerate(tables)])
    return periods_of_log(users, items, times, period_of, periods, share)


def periods_of_log(
    users: np.ndarray, items: np.ndarray, times: np.ndarray, period_of: np.ndarray, periods: int, share: float
) -> list[Period]:
    """A timestamped log of returning users as periods: a user's sequence in a period is their whole history
    up to its end, its targets the period's events (histories stay whole as model input, as in the
    pipeline's adapt runs); ``share`` of the users, by a hash of their id."""
    order = np.lexsort((items, times, users))
    users, items, period_of = users[order], items[order], period_of[order]
    index: dict[int, int] = {}
    result = []
    for number in range(periods):
        sequences, first_targets = [], []
        for user in np.unique(users[period_of == number]):
            if not _kept(f"user:{user}", share):
                continue
            mine = (users == user) & (period_of <= number)
            history, new = items[mine], period_of[mine] == number
            for item in history[new]:
                index.setdefault(int(item), len(index) + 1)
            if len(history) >= 2:
                sequences.append([index.get(int(item), 0) for item in history])
                first_targets.append(max(int(np.argmax(new)), 1))
        result.append(_period(sequences, np.asarray(first_targets, np.int64), len(index)))
    return result


def _period(sequences: list[list[int]], first_targets: np.ndarray | None, known_items: int) -> Period:
    from recsys_tasks.contracts.splits import _offsets

    lengths = np.asarray([len(sequence) for sequence in sequences], np.int64)
    items = np.concatenate([np.asarray(s, np.int32) for s in sequences]) if sequences else np.zeros(0, np.int32)
    first = np.ones(len(sequences), np.int64) if first_targets is None else first_targets
    return Period(items, _offsets(lengths), first, known_items)


def rows_of(period: Period, max_length: int, known_items: int | None = None):
    """Next-item rows of ``period``; with ``known_items``, items beyond it removed from the sequences first
    and targets that were at or after the first target position kept (the test rule)."""
    from recsys_tasks.contracts.splits import NextItemRows, _offsets

    if known_items is None:
        return NextItemRows.prefixes(period.items, period.offsets, max_length, period.first_targets)
    sequences, first_targets = [], []
    for start, end, first in zip(period.offsets[:-1], period.offsets[1:], period.first_targets, strict=True):
        sequence = period.items[start:end]
        keep = (sequence > 0) & (sequence <= known_items)
        if keep.sum() >= 2:
            sequences.append(sequence[keep])
            first_targets.append(max(int(keep[:first].sum()), 1))
    lengths = np.asarray([len(s) for s in sequences], np.int64)
    items = np.concatenate(sequences) if sequences else np.zeros(0, np.int32)
    return NextItemRows.prefixes(items, _offsets(lengths), max_length, np.asarray(first_targets, np.int64))


def split_validation(rows, seed: int):
    """(training rows, validation rows): a random ``VALIDATION_SHARE`` of the rows held out, as ADER."""
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = int(len(rows) * VALIDATION_SHARE)
    return rows.subset(np.sort(order[cut:])), rows.subset(np.sort(order[:cut]))


def holdout(rows, max_length: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, nothing excluded, targets) of prefix rows, for ranking."""
    batch = rows.take(np.arange(len(rows)), max_length)
    return batch["inputs"], np.zeros((len(rows), 1), np.int32), rows.items[rows.ends].astype(np.int64)


def test_metrics(model, rows, known_items: int, max_length: int) -> dict[str, float]:
    """Recall@20, MRR@20, HR@10 and NDCG@10 over every prediction, all ``known_items`` ranked, none excluded.
    Every arm gets the same test rows; items beyond a model's own table (the static model's) cannot be
    recommended and read as padding in its inputs."""
    from recsys_tasks.contracts.metrics import ranks_of_targets

    inputs, _, targets = holdout(rows, max_length)
    own = min(model.encoder.config.n_items, known_items)
    inputs = np.where(inputs > own, 0, inputs)  # items the model never saw read as padding (static)
    ranks = []
    for start in range(0, len(targets), 512):
        batch = slice(start, start + 512)
        scores = np.full((len(targets[batch]), known_items + 1), -np.inf)
        scores[:, 1 : own + 1] = model.ranking_scores(inputs[batch]).numpy()[:, 1 : own + 1]
        ranks.append(ranks_of_targets(scores, targets[batch]))
    ranks = np.concatenate(ranks)
    return {
        "recall_at_20": float((ranks < 20).mean()),
        "mrr_at_20": float(np.where(ranks < 20, 1.0 / (ranks + 1.0), 0.0).mean()),
        "hr_at_10": float((ranks < 10).mean()),
        "ndcg_at_10": float(np.where(ranks < 10, 1.0 / np.log2(ranks + 2.0), 0.0).mean()),
        "predictions": len(ranks),
    }


BASE = "base"


class Store:
    """Finished updates under ``folder/<arm>/update_<t>/``: weights, replay set and figures. The period-0
    model every arm starts from is kept under ``base_folder``, shared by runs that differ only in how
    they update."""

    def __init__(self, folder: Path, base_folder: Path):
        self.folder, self.base_folder = folder, base_folder

    def _path(self, arm: str, update: int) -> Path:
        return (self.base_folder if arm == BASE else self.folder) / arm / f"update_{update:02d}"

    def has(self, arm: str, update: int) -> bool:
        return (self._path(arm, update) / "result.json").is_file()

    def save(self, arm: str, update: int, model, replay, result: dict) -> None:
        path = self._path(arm, update)
        path.mkdir(parents=True, exist_ok=True)
        np.savez(path / "weights.npz", *[weight.numpy() for weight in model.parameters()])
        (path / "encoder.json").write_text(model.encoder.config.model_dump_json())
        if replay is not None:
            np.savez(path / "replay.npz", items=replay.items, starts=replay.starts, ends=replay.ends)
        (path / "result.json").write_text(json.dumps(result))  # last: it marks the update finished

    def load(self, arm: str, update: int):
        from recsys_tasks.contracts.splits import NextItemRows
        from recsys_tasks.models.config import EncoderConfig
        from recsys_tasks.training.continual import empty_model

        path = self._path(arm, update)
        config = EncoderConfig.model_validate_json((path / "encoder.json").read_text())
        model = empty_model(config)
        with np.load(path / "weights.npz") as weights:
            for variable, key in zip(model.parameters(), weights.files, strict=True):
                variable.assign(weights[key])
        replay = None
        if (path / "replay.npz").is_file():
            with np.load(path / "replay.npz") as saved:
                replay = NextItemRows(saved["items"], None, saved["starts"], saved["ends"], saved["ends"])
        return model, replay, json.loads((path / "result.json").read_text())


def _frequencies(rows, n_items: int) -> np.ndarray:
    return np.bincount(rows.items[rows.ends], minlength=n_items + 2).astype(np.float64)


def train_from_scratch(rows, n_items: int, encoder_overrides: dict, finetune):
    from recsys_tasks.models.config import EncoderConfig
    from recsys_tasks.training.continual import fresh_model
    from recsys_tasks.training.finetune import compile_for, train_with_validation

    training, validation = split_validation(rows, finetune.seed)
    config = EncoderConfig.of_size(**encoder_overrides, n_items=n_items)
    model = fresh_model(config, _frequencies(training, n_items), finetune.seed)
    compile_for(model, training, finetune, jit_compile=False)
    outcome = train_with_validation(model, training, holdout(validation, config.max_length), n_items, finetune)
    return model, outcome, training


def pretraining_inputs(period: Period, known_items: int, max_length: int, config):
    """The continued pre-training of ``replay_distill_pretrain`` on ``period``: its sequences (the newest
    ``max_length`` items) and a pair of random views of each, drawn as the augment stage draws them."""
    from recsys_tasks.augmentation.config import AugmentConfig
    from recsys_tasks.augmentation.views import random_view
    from recsys_tasks.contracts.splits import left_pad, left_pad_slices
    from recsys_tasks.training.continual import ContinuedPretraining

    augment = AugmentConfig(max_length=max_length)
    rng = np.random.default_rng(config.seed)
    histories = left_pad_slices(period.items, period.offsets[:-1], period.offsets[1:], max_length)
    views: dict[str, list[np.ndarray]] = {"view_a": [], "view_b": []}
    for start, end in zip(period.offsets[:-1], period.offsets[1:]):
        for drawn in views.values():
            drawn.append(
                random_view(
                    period.items[start:end][-max_length:],
                    rng,
                    crop_ratio=augment.crop_ratio,
                    mask_ratio=augment.mask_ratio,
                    reorder_ratio=augment.reorder_ratio,
                    mask_index=known_items + 1,
                )
            )
    return ContinuedPretraining(config, histories, {name: left_pad(drawn, max_length) for name, drawn in views.items()})


def run_benchmark(
    periods: list[Period],
    store: Store,
    arms: tuple[str, ...],
    encoder: dict,
    finetune,
    adapt,
    pretrain,
    updates: int,
) -> dict:
    """Updates 1 … ``updates`` of every arm not yet in ``store``; the summary over all of them.

    ``finetune`` trains the period-0 model and every ``joint`` update; the adaptive arms train with
    ``adapt.learning_rate`` when it is set, else with ``finetune``'s."""
    from recsys_tasks.training.continual import adapt_model
    from recsys_tasks.training.replay import select_replay

    max_length = encoder["max_length"]
    last = len(periods) - 2  # the last update is tested on the last period
    adapt_configs = {
        "finetune": adapt.model_copy(update={"replay_size": 0}),
        "replay": adapt.model_copy(update={"distillation": False}),
        "replay_distill": adapt.model_copy(update={"distillation": True}),
        "replay_distill_pretrain": adapt.model_copy(update={"distillation": True}),
    }
    warm_finetune = finetune.model_copy(update={"learning_rate": adapt.learning_rate or finetune.learning_rate})
    forgetting_test = rows_of(periods[2], max_length, periods[1].known_items)

    def test(model, update: int) -> dict:
        known = periods[update].known_items
        return test_metrics(model, rows_of(periods[update + 1], max_length, known), known, max_length)

    if not store.has(BASE, 0):
        console.rule("update 0: every arm starts from one model trained on period 0")
        started = time.perf_counter()
        base_rows = rows_of(periods[0], max_length)
        model, outcome, training = train_from_scratch(base_rows, periods[0].known_items, encoder, finetune)
        seconds = time.perf_counter() - started
        store.save(BASE, 0, model, None, {"seconds": seconds, "examples": len(training) * outcome.epochs_run})
    base = store.load(BASE, 0)[0]
    # The first replay set follows this run's replay settings; the period-0 model is shared by runs that differ in them.
    base_training, _ = split_validation(rows_of(periods[0], max_length), finetune.seed)
    base_replay = select_replay(base, base_training, adapt.replay_size, adapt.replay_rule, finetune.seed)
    for arm in arms:
        previous, replay = base, base_replay
        joint_rows = rows_of(periods[0], max_length)
        for update in range(1, min(updates, last) + 1):
            new_rows = rows_of(periods[update], max_length)
            joint_rows = joint_rows.concatenate(new_rows)
            if store.has(arm, update):
                previous, replay, _ = store.load(arm, update)
                continue
            console.rule(f"{arm}: update {update} of {last}")
            n_items = periods[update].known_items
            started = time.perf_counter()
            if arm == "static":
                model, examples = previous, 0
            elif arm == "joint":
                model, outcome, training = train_from_scratch(joint_rows, n_items, encoder, finetune)
                examples = len(training) * outcome.epochs_run
            else:
                training, validation = split_validation(new_rows, finetune.seed + update)
                pretraining = (
                    pretraining_inputs(periods[update], n_items, max_length, pretrain)
                    if arm == "replay_distill_pretrain"
                    else None
                )
                model, outcome, next_replay = adapt_model(
                    previous,
                    training,
                    replay,
                    n_items,
                    _frequencies(training, n_items),
                    holdout(validation, max_length),
                    warm_finetune,
                    adapt_configs[arm],
                    pretraining=pretraining,
                )
                trained_on = (
                    training if replay is None or not adapt_configs[arm].replay_size else training.concatenate(replay)
                )
                examples, replay = len(trained_on) * outcome.epochs_run, next_replay
                if pretraining is not None:  # a sequence per pre-training example
                    examples += len(pretraining.histories) * pretrain.epochs
            result = {"test": test(model, update), "seconds": time.perf_counter() - started, "examples": examples}
            if update in (1, last):
                key = "period_2_after_period_1" if update == 1 else "period_2_after_last"
                result[key] = test_metrics(model, forgetting_test, periods[1].known_items, max_length)
            store.save(arm, update, model, replay, result)
            previous = model
    return summarise(store, arms, last)


def summarise(store: Store, arms: tuple[str, ...], last: int) -> dict:
    """Per arm: the metrics averaged over updates, compute per update, forgetting and the per-period lists.

    Every arm is averaged over the same updates: those all of them have finished (each arm finishes its
    updates in order, so these are updates 1 … k); forgetting needs the arm's last update.
    """
    finished = {arm: sum(1 for update in range(1, last + 1) if store.has(arm, update)) for arm in arms}
    common = min(finished.values(), default=0)
    summary = {}
    for arm in arms:
        updates = [store.load(arm, update)[2] for update in range(1, common + 1)]
        if not updates:
            continue
        tests = [update["test"] for update in updates]
        forgetting = None
        if finished[arm] == last:
            after_last = store.load(arm, last)[2]["period_2_after_last"]["recall_at_20"]
            forgetting = updates[0]["period_2_after_period_1"]["recall_at_20"] - after_last
        summary[arm] = {
            **{metric: float(np.mean([test[metric] for test in tests])) for metric in SHOWN},
            "seconds_per_update": float(np.mean([update["seconds"] for update in updates])),
            "examples_per_update": int(np.mean([update["examples"] for update in updates])),
            "forgetting": forgetting,
            "updates": len(updates),
            "finished_updates": finished[arm],
            "per_period": {metric: [test[metric] for test in tests] for metric in SHOWN},
        }
    return summary


def markdown(summary: dict, dataset: str, share: float, cli: str) -> str:
    updates = max(figures["updates"] for figures in summary.values())
    lines = [
        f"Continual adaptation on {dataset} ({share:.0%} of the data, see the study), {machine()}; averages over "
        f"updates 1–{updates}, which every arm has finished.",
        f"Command: `{cli}`",
        "",
        "| arm | " + " | ".join(SHOWN.values()) + " | seconds / update | examples / update | forgetting (Recall@20) |",
        "|---|" + "---:|" * (len(SHOWN) + 3),
    ]
    for arm, figures in summary.items():
        forgetting = "–" if figures["forgetting"] is None else f"{figures['forgetting']:+.4f}"
        lines.append(
            f"| {arm} | "
            + " | ".join(f"{figures[metric]:.4f}" for metric in SHOWN)
            + f" | {figures['seconds_per_update']:.1f} | {figures['examples_per_update']:,} | {forgetting} |"
        )
    periods = max(figures["updates"] for figures in summary.values())
    lines += [
        "",
        "Recall@20 per tested period:",
        "",
        "| arm | " + " | ".join(str(p + 2) for p in range(periods)) + " |",
    ]
    lines.append("|---|" + "---:|" * periods)
    for arm, figures in summary.items():
        lines.append(f"| {arm} | " + " | ".join(f"{v:.3f}" for v in figures["per_period"]["recall_at_20"]) + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, dataset: str, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for axis, metric in zip(axes, ("recall_at_20", "mrr_at_20"), strict=True):
        for arm, figures in summary.items():
            values = figures["per_period"][metric]
            axis.plot(range(2, len(values) + 2), values, marker="o", markersize=3, label=arm)
        axis.set_xlabel("tested period")
        axis.set_title(f"{dataset}: {SHOWN[metric]}")
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    return figure


def _log_to_mlflow(figure, result: dict, name: str) -> None:
    import mlflow

    from recsys_tasks.settings import get_settings

    mlflow.set_tracking_uri(get_settings().resolved_tracking_uri)
    mlflow.set_experiment("adaptrec-bench-continual")
    with mlflow.start_run(run_name=name):
        mlflow.log_figure(figure, f"{name}.png")
        mlflow.log_dict(result, f"{name}.json")
        for arm, figures in result["arms"].items():
            mlflow.log_metrics({f"{arm}_{m}": figures[m] for m in SHOWN})


def _digest(settings: dict) -> str:
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


READERS = {
    "diginetica": lambda share: read_diginetica(SHARED_DATA / "diginetica-periods", share),
    "ml-100k": lambda share: read_movielens_weeks(SHARED_DATA / "ml-100k", share),
    "synthetic-drifting": read_drifting_synthetic,
}


def main(
    dataset: Annotated[str, typer.Option(help=", ".join(READERS))] = "diginetica",
    share: Annotated[
        float, typer.Option(help="Share of the data kept: of the items (diginetica), of the users (the others)")
    ] = 0.25,
    arms: Annotated[str, typer.Option(help="Comma-separated arms")] = ",".join(ARMS),
    replay_size: Annotated[int, typer.Option(help="Rows in the replay set")] = 3000,
    replay_rule: Annotated[str, typer.Option(help="herding, loss or random")] = "herding",
    distillation_weight: Annotated[float, typer.Option(help="ADER's λ_base")] = 0.8,
    adapt_learning_rate: Annotated[
        float | None, typer.Option(help="Learning rate of the adaptive arms' updates (default: the from-scratch rate)")
    ] = None,
    pretrain_epochs: Annotated[
        int, typer.Option(help="Epochs of continued pre-training per update (replay_distill_pretrain)")
    ] = 3,
    updates: Annotated[int, typer.Option(help="Stop after this many updates (trials); the rest show as missing")] = 99,
    name: Annotated[
        str | None,
        typer.Option(help="Results benchmarks/results/<name>.{json,md}, plot docs/experiments/<name>.png"),
    ] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs an update trains")] = 20,
    model_size: Annotated[str, typer.Option(help="tiny, small or base")] = "small",
    work: Annotated[Path, typer.Option(help="Where finished updates are kept")] = BENCH_WORK / "continual",
    report_only: Annotated[
        bool, typer.Option(help="Train nothing: tabulate the updates finished so far (the rest show as missing)")
    ] = False,
) -> None:
    from recsys_tasks.training.config import AdaptConfig, FinetuneConfig, PretrainConfig, ReplayRule

    if dataset not in READERS:
        raise typer.BadParameter(f"unknown dataset {dataset!r}: choose {', '.join(READERS)}")
    chosen = tuple(arm.strip() for arm in arms.split(","))
    if unknown := set(chosen) - set(ARMS):
        raise typer.BadParameter(f"unknown arms {sorted(unknown)}: choose from {', '.join(ARMS)}")
    if not 0 < share <= 1:
        raise typer.BadParameter(f"--share {share} is not in (0, 1]")
    if replay_rule not in get_args(ReplayRule):
        raise typer.BadParameter(f"unknown --replay-rule {replay_rule!r}: choose {', '.join(get_args(ReplayRule))}")
    show_progress()
    periods = READERS[dataset](share)
    console.print(
        f"{dataset}: {len(periods)} periods, {sum(len(p.offsets) - 1 for p in periods):,} sequences, "
        f"{periods[-1].known_items:,} items"
    )
    encoder = {"size": model_size, "max_length": 50, "dropout": 0.5}
    finetune = FinetuneConfig(epochs=epochs, patience=3, learning_rate=1e-3, batch_size=256)
    adapt = AdaptConfig(
        replay_size=replay_size,
        replay_rule=replay_rule,
        distillation_weight=distillation_weight,
        learning_rate=adapt_learning_rate,
    )
    pretrain = PretrainConfig(model_size=model_size, dropout=encoder["dropout"], epochs=pretrain_epochs)
    base_settings = {"share": share, "encoder": encoder, "finetune": finetune.model_dump()}
    settings = base_settings | {"adapt": adapt.model_dump(), "pretrain": pretrain.model_dump()}
    store = Store(work / dataset / _digest(settings), work / dataset / f"base-{_digest(base_settings)}")
    if report_only:
        summary = summarise(store, chosen, len(periods) - 2)
    else:
        summary = run_benchmark(periods, store, chosen, encoder, finetune, adapt, pretrain, updates)
    cli = command("benchmarks.continual")
    result = {"dataset": dataset, "command": cli, "machine": machine(), "settings": settings, "arms": summary}
    name = name or f"continual-{dataset}"
    figure = plot(summary, dataset, STUDIES / f"{name}.png")
    write_results(name, result, markdown(summary, dataset, share, cli), f"bench-{name}")
    _log_to_mlflow(figure, result, name)
    console.print(markdown(summary, dataset, share, cli))


if __name__ == "__main__":
    typer.run(main)

"""Evaluate stage: the new model, the popularity baseline and the current champion, on one test split.

All three are ranked with the same protocol (contracts.metrics) on the same users in the same
run, so the gate compares like with like. The champion is scored through the registered pyfunc
itself, with its own item vocabulary mapped onto this run's catalogue (items it never saw score
-inf, i.e. it cannot recommend them).

With a feedback store, the model and the champion are also judged on the slates the serving app logged over the
last ``off_policy_days``: their click-through estimated off-policy (evaluation.logged_slates).

An adapted model (the run's training plan says ``adapt``) is also ranked, with the champion, on two
holdouts of the same test users: ``fresh``, whose test item happened after the champion's data
watermark, and ``stability``, the others, where forgetting what the champion knew would show.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime, timedelta

import mlflow
import numpy as np
import pandas as pd
from mlflow.tracking import MlflowClient

from recsys_tasks.contracts.exported_model import VARIANTS, SequentialRecommender
from recsys_tasks.contracts.feedback_store import FeedbackStore
from recsys_tasks.contracts.int8_variant import variant_sizes
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR, PLOT_FILE, REPORT_FILE, TRAINING_PLAN_FILE
from recsys_tasks.contracts.metrics import PRIMARY_METRIC, RANK_METRICS, ScoreFunction, evaluate_scores
from recsys_tasks.contracts.registry import version_uri, version_with_alias
from recsys_tasks.contracts.reports import (
    CHAMPION,
    FRESH,
    MODEL,
    MODEL_INT8,
    POPULARITY,
    STABILITY,
    EvaluationReport,
    OffPolicyReport,
    TrainingPlan,
    VariantReport,
)
from recsys_tasks.contracts.scoring import item_ids_of, recommender_scorer
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.contracts.tracking import RunTracker
from recsys_tasks.errors import first_line
from recsys_tasks.evaluation.baselines import popularity_scorer
from recsys_tasks.evaluation.config import EvaluateConfig
from recsys_tasks.evaluation.logged_slates import off_policy_report
from recsys_tasks.latency import latency_percentiles
from recsys_tasks.storage import RunDir

log = logging.getLogger(__name__)


def _variant_reports(
    candidates: dict[str, SequentialRecommender],
    sizes: dict[str, int],
    metrics: dict[str, dict[str, float]],
    history: np.ndarray,
    latency_calls: int,
) -> dict[str, VariantReport]:
    """Size, test NDCG@10 and top-10 latency (batch 1, through the pyfunc's predict) of each variant."""
    request = pd.DataFrame({"history": [history.tolist()], "k": [10]})
    ndcg = {"float32": metrics[MODEL][PRIMARY_METRIC], "int8": metrics[MODEL_INT8][PRIMARY_METRIC]}
    return {
        variant: VariantReport(
            size_bytes=sizes[variant],
            ndcg_at_10=ndcg[variant],
            ndcg_change_vs_float32=ndcg[variant] - ndcg["float32"],
            latency_ms=latency_percentiles(lambda model=model: model.predict(None, request), latency_calls),
        )
        for variant, model in candidates.items()
    }


def holdout_members(run: RunDir, splits: LeaveOneOutSplits) -> dict[str, np.ndarray]:
    """Which test users fall in each holdout (boolean masks over the users), for an adapt run; {} otherwise.

    ``fresh``: the user's test item happened after the plan's watermark (the champion's data); ``stability``: the
    rest. A retrain (or a run without a plan) has no holdouts, nor has an adapt run whose sequences lack times.
    """
    if not run.exists(TRAINING_PLAN_FILE):
        return {}
    plan = TrainingPlan(**run.read_json(TRAINING_PLAN_FILE))
    if plan.mode != "adapt":
        return {}
    if plan.watermark is None or splits.timestamps is None:
        missing = "a watermark in the plan" if plan.watermark is None else "timestamps in the sequences"
        log.warning("adapt run without %s: no fresh and stability holdouts, only the whole test split", missing)
        return {}
    fresh = splits.held_out_timestamps("test") > plan.watermark
    return {FRESH: fresh, STABILITY: ~fresh}


def _plot(metrics: dict[str, dict[str, float]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = list(RANK_METRICS)
    figure, axis = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(metrics)
    for offset, (name, values) in enumerate(metrics.items()):
        positions = np.arange(len(shown)) + offset * width
        bars = axis.bar(positions, [values[m] for m in shown], width, label=name)
        axis.bar_label(bars, fmt="%.3f", fontsize=7)
    axis.set_xticks(np.arange(len(shown)) + width * (len(metrics) - 1) / 2, list(RANK_METRICS.values()))
    axis.set_title("Test split, full ranking, history excluded")
    axis.set_ylim(0, 1.2 * max(max(values[m] for m in shown) for values in metrics.values()))
    axis.legend(ncol=len(metrics), loc="upper center", frameon=False)
    figure.tight_layout()
    return figure


def _off_policy(
    feedback_uri: str, model_name: str, models: dict[str, SequentialRecommender], config: EvaluateConfig
) -> OffPolicyReport:
    """Estimates on the serving log of the last ``off_policy_days``; a store that cannot be read is a reason, not
    an error: the gate then skips its off-policy check."""
    end = datetime.now(UTC)
    start = end - timedelta(days=config.off_policy_days)
    try:
        window = FeedbackStore.open(feedback_uri).window(start, end, model_name)
    except Exception as exc:
        log.warning("the feedback store cannot be read, no off-policy estimates: %s", exc)
        reason = f"the feedback store cannot be read: {first_line(exc)}"
        return OffPolicyReport(window_start=start, window_end=end, reason=reason)
    return off_policy_report(window, models, start, end, config.off_policy_confidence, config.off_policy_resamples)


def evaluate(
    run: RunDir,
    config: EvaluateConfig,
    client: MlflowClient,
    model_name: str,
    tracker: RunTracker | None = None,
    feedback_uri: str | None = None,
) -> EvaluationReport:
    splits = LeaveOneOutSplits.load(run)
    inputs, seen, targets = splits.holdout("test")
    item_ids = item_ids_of(run, splits.n_items)

    def rank(
        score: ScoreFunction, model_inputs: np.ndarray = inputs, users: np.ndarray | slice = slice(None)
    ) -> dict[str, float]:
        return evaluate_scores(
            score, model_inputs[users], seen[users], targets[users], splits.n_items, config.batch_size
        )

    with run.reading_folder(EXPORTED_MODEL_DIR) as folder:
        candidates = {variant: SequentialRecommender.from_folder(folder, variant) for variant in VARIANTS}
        sizes = variant_sizes(folder)
    metrics = {
        MODEL: rank(candidates["float32"].score_indices),
        MODEL_INT8: rank(candidates["int8"].score_indices),
        POPULARITY: rank(popularity_scorer(splits)),
    }
    variants = _variant_reports(candidates, sizes, metrics, item_ids[seen[0][seen[0] > 0]], config.latency_calls)

    champion = version_with_alias(client, model_name) if config.compare_with_champion else None
    if champion is not None:
        log.info("ranking the current champion, %s version %s", model_name, champion.version)
        # By version, not alias: the gate must judge against exactly the version recorded here.
        champion_model = mlflow.pyfunc.load_model(version_uri(model_name, champion.version)).unwrap_python_model()
        # The champion reads the whole history (up to its own max length), not this run's window.
        champion_scorer = recommender_scorer(champion_model, item_ids)
        metrics[CHAMPION] = rank(champion_scorer, model_inputs=seen)

    holdouts, holdout_users = {}, {}
    for holdout, members in holdout_members(run, splits).items():
        if not members.any():
            log.info("the %s holdout has no test user: left out of the report", holdout)
            continue
        holdout_users[holdout] = int(members.sum())
        holdouts[holdout] = {MODEL: rank(candidates["float32"].score_indices, users=members)}
        if champion is not None:
            holdouts[holdout][CHAMPION] = rank(champion_scorer, model_inputs=seen, users=members)
        log.info(
            "%s holdout, %d users: NDCG@10 %s",
            holdout,
            holdout_users[holdout],
            ", ".join(f"{name} {values[PRIMARY_METRIC]:.4f}" for name, values in holdouts[holdout].items()),
        )

    off_policy = None
    if feedback_uri is not None:
        judged = {MODEL: candidates["float32"]}
        if champion is not None and hasattr(champion_model, "recommend"):  # versions before recommend() cannot
            judged[CHAMPION] = champion_model
        off_policy = _off_policy(feedback_uri, model_name, judged, config)

    report = EvaluationReport(
        metrics=metrics,
        champion_version=str(champion.version) if champion else None,
        users=len(targets),
        items=splits.n_items,
        variants=variants,
        holdouts=holdouts,
        holdout_users=holdout_users,
        off_policy=off_policy,
    )
    figure = _plot(metrics)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=120)
    report.plot_uri = run.write_bytes(PLOT_FILE, png.getvalue())
    report.report_uri = run.write_json(REPORT_FILE, report.model_dump(mode="json"))
    if tracker:
        tracker.log_metrics({f"{name}_test_{k}": v for name, values in metrics.items() for k, v in values.items()})
        if holdouts:
            tracker.log_metrics(
                {
                    f"{name}_{holdout}_{k}": v
                    for holdout, rows in holdouts.items()
                    for name, values in rows.items()
                    for k, v in values.items()
                }
                | {f"{holdout}_users": users for holdout, users in holdout_users.items()}
            )
        tracker.log_metrics(
            {
                f"serving_{variant}_{key}": value
                for variant, variant_report in variants.items()
                for key, value in {"size_bytes": variant_report.size_bytes, **variant_report.latency_ms}.items()
            }
        )
        if off_policy is not None and off_policy.estimates:
            tracker.log_metrics(
                {
                    f"{name}_offpolicy_{estimator}_{bound}": getattr(value, bound)
                    for name, values in off_policy.estimates.items()
                    for estimator, value in values.items()
                    for bound in ("value", "lower", "upper")
                }
                | {"offpolicy_slates": off_policy.slates_used, "offpolicy_clicks": off_policy.clicks}
            )
        tracker.log_figure(figure, "evaluation/comparison.png")
        tracker.log_dict(report.model_dump(mode="json"), "evaluation/report.json")
    return report

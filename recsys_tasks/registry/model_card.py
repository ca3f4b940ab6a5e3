"""The model card of a registered version: what it was trained on, how good it is, what it costs.

Written when the version is registered (gate pending) and again when the gate decides, as
``model_card/model_card.{md,json}`` in the version's MLflow run; the version's
``adaptrec.model_card`` tag points at the markdown. Everything in it is read from the run
directory and the evaluation report, so the card says exactly what the pipeline measured.

Its "Training" section (how the version was trained: retrain or adapt, why, from which parent, on
which window, and the fresh and stability holdouts of an adapted model) says what the version's
lineage tags say; a version trained without a plan or training state has no such section.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from recsys_tasks.constants import (
    TAG_ADAPT_RUNS,
    TAG_MODEL_CARD,
    TAG_NEW_ROWS,
    TAG_PARENT_VERSION,
    TAG_REPLAY_ROWS,
    TAG_TRAINING_MODE,
    TAG_TRAINING_REASON,
    TAG_WATERMARK,
    TAG_WINDOW,
)
from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, MODEL_META, TRAINING_STATE
from recsys_tasks.contracts.layout import (
    AUGMENT_SUMMARY_FILE,
    EXPORTED_MODEL_DIR,
    INTERACTIONS_FILE,
    VALIDATION_SUMMARY_FILE,
)
from recsys_tasks.contracts.metrics import RANK_METRICS
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.contracts.reports import (
    AugmentSummary,
    EvaluationReport,
    GateDecision,
    OffPolicyReport,
    Registration,
    ValidationSummary,
)
from recsys_tasks.contracts.training_state import STATE_FILE, TrainingState
from recsys_tasks.registry.register import lineage_tags, read_plan
from recsys_tasks.storage import RunDir

MODEL_CARD_FOLDER = "model_card"
# The lineage tags the card's "Training" section shows, in its order, with their printed names.
TRAINING_LINES = {
    TAG_TRAINING_MODE: "mode",
    TAG_TRAINING_REASON: "reason",
    TAG_PARENT_VERSION: "parent version",
    TAG_WINDOW: "window",
    TAG_WATERMARK: "data watermark",
    TAG_NEW_ROWS: "new rows",
    TAG_REPLAY_ROWS: "replay rows",
    TAG_ADAPT_RUNS: "adapt runs since the last retrain",
}


class ModelCard(BaseModel):
    model_name: str
    version: str
    airflow_run_id: str
    data: dict[str, Any]
    training: dict[str, Any]
    trainable_parameters: int
    total_parameters: int
    metrics: dict[str, dict[str, float]]
    variants: dict[str, dict[str, Any]]
    gate: dict[str, Any]
    lineage: dict[str, str] = {}
    """The version's lineage tags (register.lineage_tags); empty for a model trained without a plan or state."""
    holdouts: dict[str, dict[str, dict[str, float]]] = {}
    holdout_users: dict[str, int] = {}
    off_policy: OffPolicyReport | None = None


def build_model_card(
    registration: Registration,
    airflow_run_id: str,
    model_meta: dict[str, Any],
    data: dict[str, Any],
    report: EvaluationReport,
    decision: GateDecision | None,
    lineage: dict[str, str] | None = None,
) -> ModelCard:
    """The card of ``registration``; ``decision`` is None until the promote stage has run the gate; ``lineage``:
    the version's lineage tags."""
    gate = (
        {"status": "passed" if decision.passed else "rejected", "reasons": decision.reasons}
        if decision
        else {"status": "pending", "reasons": []}
    )
    return ModelCard(
        model_name=registration.model_name,
        version=registration.version,
        airflow_run_id=airflow_run_id,
        data=data,
        training={
            "encoder": model_meta["encoder"],
            "finetune": model_meta["finetune"],
            "exported_epochs": model_meta["exported_epochs"],
            "refit_epochs": model_meta.get("refit_epochs", 0),  # absent from models exported before the refit
        },
        trainable_parameters=model_meta["trainable_parameters"],
        total_parameters=model_meta["total_parameters"],
        metrics=report.metrics,
        variants={name: variant.model_dump() for name, variant in report.variants.items()},
        gate=gate,
        lineage=lineage or {},
        holdouts=report.holdouts,
        holdout_users=report.holdout_users,
        off_policy=report.off_policy,
    )


def _row(cells) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _training_targets(training: dict[str, Any]) -> str:
    """Which targets the exported weights learnt from, and which epochs they are."""
    epochs = training["exported_epochs"]
    kept = f"epoch {epochs[0]}" if len(epochs) == 1 else f"the average of epochs {epochs[0]}–{epochs[-1]}"
    if training["refit_epochs"]:
        return f"training + validation targets ({kept} of a refit, after validation chose them)"
    return f"training targets ({kept}, chosen on validation)"


def _training_section(card: ModelCard) -> list[str]:
    """The "Training" section: how the version was trained and, for an adapted one, its holdouts; [] when the
    card knows neither."""
    if not card.lineage and not card.holdouts:
        return []
    lines = ["## Training"]
    for tag, label in TRAINING_LINES.items():
        if tag not in card.lineage:
            continue
        value = card.lineage[tag]
        if tag == TAG_WATERMARK:
            value = f"{datetime.fromtimestamp(int(value), UTC):%Y-%m-%d %H:%M:%S} UTC ({value})"
        elif tag == TAG_PARENT_VERSION:
            value = f"version {value}"
        lines.append(f"- {label}: {value}")
    if card.holdouts:
        lines += [
            "",
            "Holdouts of the test users: `fresh`, whose test item is newer than the champion's data; `stability`, "
            "the others (where forgetting shows).",
            "",
            _row(["holdout", "users", "model", *RANK_METRICS]),
            _row(["---"] * (len(RANK_METRICS) + 3)),
            *(
                _row([holdout, card.holdout_users.get(holdout, ""), name, *(f"{values[m]:.4f}" for m in RANK_METRICS)])
                for holdout, rows in card.holdouts.items()
                for name, values in rows.items()
            ),
        ]
    return [*lines, ""]


def _off_policy_section(card: ModelCard) -> list[str]:
    """Click-through estimated on the serving log, per model and estimator; why there is none, when there is none."""
    report = card.off_policy
    if report is None:
        return []
    lines = ["## Off-policy estimates (serving log)"]
    window = f"{report.window_start:%Y-%m-%d %H:%M} – {report.window_end:%Y-%m-%d %H:%M} UTC"
    if report.reason:
        return [*lines, f"None for {window}: {report.reason}.", ""]
    lines += [
        f"{report.slates_used:,} logged slates ({report.shown:,} shown items, {report.clicks:,} clicked or bought) "
        f"served {window}; their own click-through per shown item {report.logged.value:.4f} "
        f"[{report.logged.lower:.4f}, {report.logged.upper:.4f}].",
        "",
        _row(["model", "estimator", "click-through per shown item", "bootstrap interval"]),
        _row(["---"] * 4),
        *(
            _row([name, estimator, f"{value.value:.4f}", f"[{value.lower:.4f}, {value.upper:.4f}]"])
            for name, values in report.estimates.items()
            for estimator, value in values.items()
        ),
        *(
            _row(
                [
                    "model − champion (paired)",
                    estimator,
                    f"{value.value:+.4f}",
                    f"[{value.lower:+.4f}, {value.upper:+.4f}]",
                ]
            )
            for estimator, value in report.differences.items()
        ),
    ]
    return [*lines, ""]


def render_markdown(card: ModelCard) -> str:
    encoder, finetune = card.training["encoder"], card.training["finetune"]
    lines = [
        f"# {card.model_name} version {card.version}",
        "",
        f"Trained by Airflow run `{card.airflow_run_id}`. Load it with "
        f"`mlflow.pyfunc.load_model('{version_uri(card.model_name, card.version)}')`; add "
        "`model_config={'variant': 'int8'}` for the quantised variant.",
        "",
        "## Gate",
        f"**{card.gate['status']}**",
        *(f"- {reason}" for reason in card.gate["reasons"]),
        "",
        "## Data",
        *(f"- {key}: {value}" for key, value in card.data.items()),
        "",
        "## Model",
        f"- transformer: {encoder['n_layers']} layers, {encoder['n_heads']} heads, width {encoder['d_model']}, "
        f"history length {encoder['max_length']}, {encoder['n_items']:,} items, {encoder['n_attributes']} attributes",
        f"- fine-tuning: mode `{finetune['mode']}`, loss `{finetune['loss']}`, "
        f"ranking weight {finetune['ranking_weight']}",
        f"- parameters: {card.trainable_parameters:,} trainable of {card.total_parameters:,}",
        f"- trained on: {_training_targets(card.training)}",
        "",
        *_training_section(card),
        "## Test metrics (leave-one-out, full ranking, history excluded)",
        _row(["model", *RANK_METRICS]),
        _row(["---"] * (len(RANK_METRICS) + 1)),
        *(_row([name, *(f"{values[m]:.4f}" for m in RANK_METRICS)]) for name, values in card.metrics.items()),
        "",
        *_off_policy_section(card),
        "## Serving variants (top-10, batch 1, through the pyfunc)",
        _row(["variant", "size", "NDCG@10", "change vs float32", "p50 ms", "p99 ms"]),
        _row(["---"] * 6),
        *(
            _row(
                [
                    name,
                    f"{variant['size_bytes'] / 1e6:.2f} MB",
                    f"{variant['ndcg_at_10']:.4f}",
                    f"{variant['ndcg_change_vs_float32']:+.4f}",
                    f"{variant['latency_ms']['p50_ms']:.2f}",
                    f"{variant['latency_ms']['p99_ms']:.2f}",
                ]
            )
            for name, variant in card.variants.items()
        ),
        "",
        "## Intended use and limits",
        "- Next-item retrieval from a user's recent item history (external item ids, oldest first).",
        "- Items absent from the training window are unknown to this version and are never recommended.",
        "- `because` names the history item that contributed most to each recommendation "
        "(attention × item similarity): an explanation of the model, not a causal claim.",
    ]
    return "\n".join(lines) + "\n"


def publish_model_card(client: MlflowClient, card: ModelCard, mlflow_run_id: str) -> str:
    """Log the card to the version's run (replacing an earlier one) and tag the version with where it is."""
    client.log_dict(mlflow_run_id, card.model_dump(mode="json"), f"{MODEL_CARD_FOLDER}/model_card.json")
    client.log_text(mlflow_run_id, render_markdown(card), f"{MODEL_CARD_FOLDER}/model_card.md")
    location = f"runs:/{mlflow_run_id}/{MODEL_CARD_FOLDER}/model_card.md"
    client.set_model_version_tag(card.model_name, card.version, TAG_MODEL_CARD, location)
    return location


def publish_run_model_card(
    run: RunDir,
    client: MlflowClient,
    data_set: str,
    airflow_run_id: str,
    registration: Registration,
    report: EvaluationReport,
    decision: GateDecision | None,
) -> str:
    """Build the version's card from what this run's stages wrote to ``run`` and publish it."""
    validation = ValidationSummary(**run.read_json(VALIDATION_SUMMARY_FILE))
    augmented = AugmentSummary(**run.read_json(AUGMENT_SUMMARY_FILE))
    data = {
        "data set": data_set,
        "snapshot": run.uri_of(INTERACTIONS_FILE),
        "users × items after cleaning": f"{augmented.users:,} × {augmented.items:,}",
        "expectations": f"{validation.evaluated} evaluated, "
        + ("all passed" if validation.success else f"{len(validation.failed)} failed"),
        "drift": validation.drift_baseline,
    }
    model_meta = run.read_json(f"{EXPORTED_MODEL_DIR}/{ARTIFACT_FILES[MODEL_META]}")
    state_file = f"{EXPORTED_MODEL_DIR}/{ARTIFACT_FILES[TRAINING_STATE]}/{STATE_FILE}"
    state = TrainingState(**run.read_json(state_file)) if run.exists(state_file) else None
    lineage = lineage_tags(state, read_plan(run))
    card = build_model_card(registration, airflow_run_id, model_meta, data, report, decision, lineage)
    return publish_model_card(client, card, registration.mlflow_run_id)

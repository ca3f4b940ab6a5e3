"""The end-of-run summary: what a person looks at after a run (task log, ``recsys report``)."""

from __future__ import annotations

from typing import Any

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

from recsys_tasks.constants import CHAMPION_ALIAS
from recsys_tasks.contracts.layout import (
    DECISION_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    TRAINING_PLAN_FILE,
    VALIDATION_SUMMARY_FILE,
    WINDOW_FILE,
)
from recsys_tasks.contracts.metrics import SHOWN_METRICS
from recsys_tasks.contracts.registry import model_uri
from recsys_tasks.contracts.reports import CHAMPION, MODEL, MODEL_INT8, POPULARITY, TrainingPlan
from recsys_tasks.settings import Settings
from recsys_tasks.storage import RunDir

ROW_ORDER = [MODEL, MODEL_INT8, POPULARITY, CHAMPION]


def build_summary(run: RunDir, settings: Settings, run_id: str) -> dict[str, Any]:
    if not run.exists(DECISION_FILE):
        return _untrained_summary(run, settings, run_id)
    report = run.read_json(REPORT_FILE)
    decision = run.read_json(DECISION_FILE)
    registration = run.read_json(REGISTRATION_FILE)
    validation = run.read_json(VALIDATION_SUMMARY_FILE)
    plan = TrainingPlan(**run.read_json(TRAINING_PLAN_FILE)) if run.exists(TRAINING_PLAN_FILE) else None
    tracking_uri = settings.resolved_tracking_uri
    return {
        "run_id": run_id,
        "run_dir": run.uri,
        "metrics": report["metrics"],
        "variants": report.get("variants", {}),
        # A run without a plan (trained before plans existed) shows no training line.
        "training": {"mode": plan.mode, "reason": plan.reason} if plan else None,
        "holdouts": report.get("holdouts", {}),
        "off_policy": report.get("off_policy"),
        "holdout_users": report.get("holdout_users", {}),
        "users": report["users"],
        "items": report["items"],
        "gate": decision,
        "data_gate": {
            "expectations": validation["evaluated"],
            "drift": validation["drift"],
            "baseline": validation["drift_baseline"],
            "data_docs": validation["data_docs_uri"],
        },
        "registration": registration,
        "champion_uri": model_uri(registration["model_name"]),
        "tracking_uri": tracking_uri,
        "how_to_look": {
            "MLflow UI": "make mlflow-ui, then open http://127.0.0.1:5000 (runs, metrics, plots and the registry)",
            "Airflow UI": "make airflow-ui, then open http://127.0.0.1:8080 (airflow standalone prints the login)",
            "Recommend": "make recommend HISTORY=1,2,3 (recsys recommend --history 1,2,3 --k 10)",
        },
    }


def _untrained_summary(run: RunDir, settings: Settings, run_id: str) -> dict[str, Any]:
    """A run that stopped before training (nothing new to learn): why, and that the champion stays."""
    plan = TrainingPlan(**run.read_json(TRAINING_PLAN_FILE)) if run.exists(TRAINING_PLAN_FILE) else None
    window = run.read_json(WINDOW_FILE) if run.exists(WINDOW_FILE) else None
    reason = plan.reason if plan else window["note"] if window else "the run stopped before training"
    return {
        "run_id": run_id,
        "run_dir": run.uri,
        "trained": False,
        "reason": reason,
        "champion_uri": model_uri(settings.model_name),
        "tracking_uri": settings.resolved_tracking_uri,
    }


def metrics_table(metrics: dict[str, dict[str, float]]) -> Table:
    table = Table()
    table.add_column("model")
    for label in SHOWN_METRICS.values():
        table.add_column(label, justify="right")
    # The new model first, then what it is judged against (the JSON report stores keys sorted).
    for name in [name for name in ROW_ORDER if name in metrics] + sorted(set(metrics) - set(ROW_ORDER)):
        table.add_row(name, *(f"{metrics[name][key]:.4f}" for key in SHOWN_METRICS))
    return table


def holdouts_table(holdouts: dict[str, dict[str, dict[str, float]]], users: dict[str, int]) -> Table:
    """The model and the champion on each holdout of an adapted model's test users (fresh, stability)."""
    table = Table(
        title="Holdouts: fresh (test item newer than the champion's data) and stability (the others)",
        title_justify="left",
    )
    for column in ("holdout", "users", "model"):
        table.add_column(column, justify="right" if column == "users" else "left")
    for label in SHOWN_METRICS.values():
        table.add_column(label, justify="right")
    for holdout, rows in holdouts.items():
        for name in [name for name in ROW_ORDER if name in rows] + sorted(set(rows) - set(ROW_ORDER)):
            count = f"{users[holdout]:,}" if holdout in users else ""
            table.add_row(holdout, count, name, *(f"{rows[name][key]:.4f}" for key in SHOWN_METRICS))
    return table


def _data_gate_line(data_gate: dict[str, Any]) -> Text:
    drift = data_gate["drift"]
    measured = (
        ", ".join(f"{name.replace('_', ' ')} {value:.3f}" for name, value in drift.items())
        if drift
        else data_gate["baseline"]
    )
    return Text(f"Data gate: all {data_gate['expectations']} expectations passed; drift: {measured}")


def _serving_line(variants: dict[str, dict[str, Any]]) -> Text:
    if not variants:  # a summary written before the evaluate stage measured its variants
        return Text()
    return Text(
        "Serving variants (top-10, batch 1): "
        + "; ".join(
            f"{name} {variant['size_bytes'] / 1e6:.1f} MB, p99 {variant['latency_ms']['p99_ms']:.2f} ms, "
            f"NDCG@10 {variant['ndcg_change_vs_float32']:+.4f}"
            for name, variant in variants.items()
        )
    )


def _off_policy_line(summary: dict[str, Any]) -> list[Text]:
    """Click-through estimated on the serving log, per model (IPS, the gate's default), or why there is none;
    nothing for a run that read no serving log."""
    off_policy = summary.get("off_policy")
    if not off_policy:
        return []
    if not off_policy.get("estimates"):
        return [Text(f"Serving log: no off-policy estimates ({off_policy.get('reason')})")]
    estimates = "; ".join(
        f"{name} {values['ips']['value']:.4f} [{values['ips']['lower']:.4f}, {values['ips']['upper']:.4f}]"
        for name, values in sorted(off_policy["estimates"].items(), key=lambda pair: pair[0] != MODEL)
    )
    return [
        Text(
            f"Serving log: {off_policy['slates_used']:,} logged slates, {off_policy['clicks']:,} clicks on "
            f"{off_policy['shown']:,} shown items; IPS click-through {estimates}"
        )
    ]


def _training_line(summary: dict[str, Any]) -> list[Text]:
    """The run's training mode and why; nothing for a run without a plan (or a summary written before plans)."""
    training = summary.get("training")
    return [Text(f"Training: {training['mode']} — {training['reason']}")] if training else []


def _holdouts(summary: dict[str, Any]) -> list[Table]:
    """The holdout table of an adapted model; nothing for any other run."""
    holdouts = summary.get("holdouts")
    return [holdouts_table(holdouts, summary.get("holdout_users", {}))] if holdouts else []


def render_summary(summary: dict[str, Any], width: int = 110) -> str:
    if summary.get("trained") is False:
        return (
            f"Run {summary['run_id']} trained no model: {summary['reason']}.\n"
            f"Consumers keep loading {summary['champion_uri']} from {summary['tracking_uri']}\n"
        )
    gate, registration = summary["gate"], summary["registration"]
    verdict = Text(
        f"Gate {'PASSED' if gate['passed'] else 'REJECTED'}: {registration['model_name']} "
        f"version {registration['version']} — {CHAMPION_ALIAS} "
        + (
            f"moved {gate['champion_before'] or '(none)'} → {gate['champion_after']}"
            if gate["passed"]
            else f"stays at {gate['champion_before'] or '(none)'}"
        ),
        style="bold green" if gate["passed"] else "bold red",
    )
    reasons = Text("\n".join(f"  • {reason}" for reason in gate["reasons"]))
    looks = Table.grid(padding=(0, 2))
    for what, how in summary["how_to_look"].items():
        looks.add_row(what, how)
    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    with console.capture() as capture:
        console.print(
            Group(
                Text(f"Run {summary['run_id']}", style="bold"),
                Text(
                    f"Test split: {summary['users']:,} users × {summary['items']:,} items, every item ranked, "
                    "the user's history excluded"
                ),
                _data_gate_line(summary["data_gate"]),
                *_training_line(summary),
                metrics_table(summary["metrics"]),
                *_holdouts(summary),
                _serving_line(summary.get("variants", {})),
                *_off_policy_line(summary),
                verdict,
                reasons,
                Text(f"Consumers load {summary['champion_uri']} from {summary['tracking_uri']}"),
                looks,
            )
        )
    return capture.get()

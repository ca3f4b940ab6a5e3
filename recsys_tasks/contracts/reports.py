"""The typed JSON artifacts stages leave for each other (read back with ``Model(**run.read_json(FILE))``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

# Rows of the evaluation report: the new model, its int8 variant, and what it is judged against.
MODEL, MODEL_INT8, POPULARITY, CHAMPION = "model", "model_int8", "popularity", "champion"
# The two holdouts an adapted model is judged on against the champion: the newest event of the users active in
# the new window, and that of the users who were not (their taste from earlier periods: forgetting shows there).
FRESH, STABILITY = "fresh", "stability"

TrainingMode = Literal["retrain", "adapt"]
# A plan may also train nothing: the data holds nothing the champion has not learnt.
PlannedMode = Literal["retrain", "adapt", "skip"]
RequestedTrainingMode = Literal["auto", "adapt", "retrain"]


class TrainingPlan(BaseModel):
    """How this run trains, decided before training (the plan_training stage), and why."""

    requested: RequestedTrainingMode
    mode: PlannedMode
    reason: str = Field(description="One line: why this mode (what made auto choose it).")
    dataset_key: str
    champion_version: str | None = Field(None, description="The version an adapt run continues from.")
    watermark: int | None = Field(None, description="The champion's data watermark: later events are new to it.")
    adapt_runs_since_retrain: int = Field(0, description="Of the version this run registers: 0 after a retrain.")
    window: str | None = Field(None, description="The new period's label, for an incremental data set.")


class CleaningStep(BaseModel):
    step: str
    rows: int
    users: int
    items: int
    rows_removed: int


class AugmentSummary(BaseModel):
    sequences_uri: str
    vocab_uri: str
    views_uri: str
    users: int
    items: int
    max_length: int
    mask_index: int
    view_pairs: int
    cleaning: list[CleaningStep]


class IngestWindow(BaseModel):
    """What an incremental ingest took from its source: one period of the data set's event store."""

    dataset_key: str
    period: int | None = Field(description="The period's index in the event store; None when nothing was new.")
    label: str | None = Field(description="The period's name in its source: a file name or an ISO data interval.")
    added: bool = Field(description="False when the store held this period already (a re-run) or nothing was new.")
    new_rows: int
    new_users: int = Field(description="Users of the period with no event in any other accepted period.")
    new_items: int = Field(description="Items of the period with no event in any other accepted period.")
    history_rows: int = Field(description="Rows of data/interactions.parquet: every accepted period plus this one.")
    watermark_before: int | None = Field(description="Last timestamp of the other accepted periods, unix seconds.")
    first_timestamp: int | None
    last_timestamp: int | None
    note: str = Field(description="One line: what was ingested, or why nothing was.")


class FeedbackWindow(BaseModel):
    """What ingest read back from the feedback store: the slates served in [start, end) and what users did."""

    start: datetime
    end: datetime
    slates: int
    shown: int = Field(description="Items the slates showed (rows of data/impressions.parquet).")
    events: dict[str, int] = Field(description="Events recorded against the slates, by kind.")
    positives: int = Field(description="Clicked or bought (request, item) pairs of known users: interaction rows.")
    anonymous_slates: int = Field(description="Slates served without a user id: evaluated, not trained on.")


class ValidationSummary(BaseModel):
    """Outcome of the data gate."""

    success: bool = Field(description="True when every expectation passed.")
    evaluated: int = Field(description="Number of expectations evaluated over all suites.")
    failed: list[str] = Field(description="One line per failed expectation: suite, expectation, column, problem.")
    result_uri: str = Field(description="URI of the full Great Expectations result JSON.")
    data_docs_uri: str = Field(description="URI of the Data Docs index.html.")
    drift: dict[str, float] | None = Field(description="Drift statistics against the accepted snapshot, if any.")
    drift_baseline: str = Field(description="Which accepted snapshot drift was measured against, or why not.")
    snapshot_uri: str | None = Field(description="Where this data set's statistics were accepted as the new baseline.")
    accepted_period: int | None = Field(
        None, description="Incremental runs: the period accepted in the data set's event store."
    )


class VariantReport(BaseModel):
    """One serving variant of the new model: what it costs to ship and to call, and what it loses."""

    size_bytes: int
    ndcg_at_10: float
    ndcg_change_vs_float32: float
    latency_ms: dict[str, float]


class PolicyEstimate(BaseModel):
    """Expected clicks per shown item, and its bootstrap interval."""

    value: float
    lower: float
    upper: float


class OffPolicyReport(BaseModel):
    """Click-through estimated from the serving app's logged slates, per model and estimator."""

    window_start: datetime
    window_end: datetime
    slates: int = Field(0, description="Slates the serving app logged in the window for this registered model.")
    slates_used: int = Field(0, description="Of them, those whose history every evaluated model can rank for.")
    shown: int = 0
    clicks: int = Field(0, description="Shown items clicked or bought.")
    logged: PolicyEstimate | None = Field(None, description="The click-through the logged slates had.")
    estimates: dict[str, dict[str, PolicyEstimate]] = Field(
        default_factory=dict, description="Per model (model, champion), per estimator (ips, snips, dr)."
    )
    differences: dict[str, PolicyEstimate] = Field(
        default_factory=dict,
        description="Per estimator, the model's estimate minus the champion's, with a paired interval (both on the "
        "same resampled slates).",
    )
    reason: str | None = Field(None, description="Why there are no estimates, when there are none.")


class EvaluationReport(BaseModel):
    metrics: dict[str, dict[str, float]]
    champion_version: str | None
    users: int
    items: int
    variants: dict[str, VariantReport] = {}
    holdouts: dict[str, dict[str, dict[str, float]]] = Field(
        default_factory=dict,
        description="Adapt runs: per holdout (fresh, stability), the model's and the champion's metrics on it.",
    )
    holdout_users: dict[str, int] = Field(default_factory=dict, description="Users in each holdout.")
    off_policy: OffPolicyReport | None = Field(None, description="Estimates on the serving log, when one was read.")
    report_uri: str = ""
    plot_uri: str = ""


class Registration(BaseModel):
    model_name: str
    version: str
    model_uri: str
    mlflow_run_id: str
    newly_registered: bool


class GateCheck(BaseModel):
    name: str
    passed: bool
    skipped: bool = Field(False, description="Not judged (the reason is in detail); a skipped check never blocks.")
    observed: float
    required: float
    detail: str


class GateDecision(BaseModel):
    passed: bool
    reasons: list[str]
    checks: list[GateCheck]
    model_name: str
    version: str
    champion_before: str | None
    champion_after: str | None

"""The pipeline factory: Params → each stage's typed config → the stage function → a small JSON result.

Every entry point (the Airflow adapter, the CLI, the tests) goes through ``run_stage``. A stage reads its
inputs from the run directory named by its upstream result (or, for the first stage, by the run id) and
returns what it wrote, with ``run_dir`` added, for the stages after it: that result is what Airflow passes
along as XCom. Stages meet only through the run directory, so any stage can run alone, in another process or
container, given the run id.

Airflow imports this module when it parses the DAG: heavy libraries (TensorFlow, MLflow, Great Expectations)
are imported by the stage runners only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from recsys_tasks.augmentation.config import AugmentConfig
from recsys_tasks.contracts.layout import (
    CHAMPION_STATE_DIR,
    DATA_DOCS_FOLDER,
    DECISION_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    RUN_SUMMARY_FILE,
    TRAINING_PLAN_FILE,
    VALIDATION_RESULT_FILE,
    VALIDATION_SUMMARY_FILE,
    WINDOW_FILE,
)
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.errors import ConfigError, StageSkipped
from recsys_tasks.evaluation.config import EvaluateConfig
from recsys_tasks.models.config import EncoderConfig
from recsys_tasks.params import PipelineParams
from recsys_tasks.registry.config import GateConfig, TrainingPlanConfig
from recsys_tasks.serving.config import BatchRecommendConfig
from recsys_tasks.settings import Settings, get_settings
from recsys_tasks.storage import RunDir
from recsys_tasks.training.config import AdaptConfig, FinetuneConfig, PretrainConfig
from recsys_tasks.validation.config import DriftConfig

log = logging.getLogger(__name__)

# The stages that train, per mode: a run takes one of the two paths (an Airflow branch; the CLI skips the other).
TRAINING_PATHS = {"retrain": ("pretrain", "finetune"), "adapt": ("adapt",), "skip": ()}

StageRunner = Callable[[PipelineParams, RunDir, Settings, str], dict]


def run_dir(airflow_run_id: str, settings: Settings) -> RunDir:
    return RunDir.for_run(settings.resolved_runs_uri, airflow_run_id)


def _tracker(settings: Settings, run_id: str):
    from recsys_tasks.contracts.tracking import RunTracker

    return RunTracker.for_airflow_run(settings, run_id)


# --- stage runners: Params, run dir, settings, run id → the stage → a small JSON result -------------------


def _event_store(params: PipelineParams, settings: Settings):
    from recsys_tasks.contracts.event_store import EventStore

    return EventStore(settings.resolved_events_uri, params.dataset_key())


def _ingest(
    params: PipelineParams,
    run: RunDir,
    settings: Settings,
    run_id: str,
    data_interval: tuple[datetime, datetime] | None = None,
) -> dict:
    from recsys_tasks.data.ingest import ingest
    from recsys_tasks.privacy import resolve_key

    config = params.stage_config(IngestConfig)
    store = _event_store(params, settings) if config.incremental else None
    summary = ingest(run, config, resolve_key(settings), store, data_interval, settings.resolved_feedback_uri)
    return summary.model_dump(mode="json")


def _validate(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.validation.drift import SnapshotStore
    from recsys_tasks.validation.validate import DriftCheck, validate

    drift_check = DriftCheck(
        SnapshotStore(settings.resolved_snapshots_uri), params.dataset_key(), run_id, params.stage_config(DriftConfig)
    )
    tracker = _tracker(settings, run_id)
    try:
        summary = validate(
            run, params.data_gate, drift_check, settings.great_expectations_log_level, _event_store(params, settings)
        ).model_dump()
    finally:
        # Passed or failed, the result and the Data Docs go to the run's MLflow run too.
        if run.exists(VALIDATION_RESULT_FILE):
            tracker.log_dict(run.read_json(VALIDATION_RESULT_FILE), VALIDATION_RESULT_FILE)
        if run.folder_is_complete(DATA_DOCS_FOLDER):
            with run.reading_folder(DATA_DOCS_FOLDER) as docs:
                tracker.log_artifacts(docs, DATA_DOCS_FOLDER)
    run.write_json(VALIDATION_SUMMARY_FILE, summary)
    return summary


def _plan_training(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.reports import IngestWindow, ValidationSummary
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.registry.plan import ModelShape, plan_training

    finetune = params.stage_config(FinetuneConfig)
    encoder = EncoderConfig.of_size(
        params.stage_config(PretrainConfig).model_size,
        n_items=1,
        max_length=params.stage_config(AugmentConfig).max_length,
    )
    shape = ModelShape(
        encoder=encoder.model_dump(), finetune_mode=finetune.mode, ranking_weight=finetune.ranking_weight
    )
    window = IngestWindow(**run.read_json(WINDOW_FILE)) if run.exists(WINDOW_FILE) else None
    plan = plan_training(
        run,
        connect(settings),
        settings.model_name,
        params.stage_config(TrainingPlanConfig),
        params.dataset_key(),
        shape,
        ValidationSummary(**run.read_json(VALIDATION_SUMMARY_FILE)),
        window,
    )
    return plan.model_dump()


def _plan(params: PipelineParams, run: RunDir):
    """The run's training plan; a run without the plan_training stage (stages run one by one) retrains."""
    from recsys_tasks.contracts.reports import TrainingPlan

    if run.exists(TRAINING_PLAN_FILE):
        return TrainingPlan(**run.read_json(TRAINING_PLAN_FILE))
    return TrainingPlan(
        requested="retrain", mode="retrain", reason="run without plan_training", dataset_key=params.dataset_key()
    )


def _augment(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.augmentation.augment import augment
    from recsys_tasks.contracts.training_state import VOCABULARY_FILE

    base_vocabulary = None
    if _plan(params, run).mode == "adapt":
        base_vocabulary = run.read_parquet(f"{CHAMPION_STATE_DIR}/{VOCABULARY_FILE}")
    return augment(run, params.stage_config(AugmentConfig), base_vocabulary).model_dump()


def _on_the_path(stage: str, params: PipelineParams, run: RunDir):
    """The run's plan; a training stage off the plan's path (run by hand, stage by stage) is skipped."""
    plan = _plan(params, run)
    if stage not in TRAINING_PATHS[plan.mode]:
        raise StageSkipped(f"this run's plan is {plan.mode} ({plan.reason}); {stage} is not on its path")
    return plan


def _pretrain(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.training.pretrain import pretrain

    _on_the_path("pretrain", params, run)
    config, tracker = params.stage_config(PretrainConfig), _tracker(settings, run_id)
    return pretrain(run, config, tracker, settings.distribution).model_dump()


def _finetune(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.training.finetune import finetune

    plan = _on_the_path("finetune", params, run)
    config, tracker = params.stage_config(FinetuneConfig), _tracker(settings, run_id)
    adapt = params.stage_config(AdaptConfig)
    return finetune(run, config, tracker, plan, adapt, settings.distribution).model_dump()


def _adapt(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.training.adapt import adapt

    config, plan = params.stage_config(AdaptConfig), _on_the_path("adapt", params, run)
    return adapt(run, params.stage_config(FinetuneConfig), config, plan, _tracker(settings, run_id)).model_dump()


def _evaluate(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.evaluation.evaluate import evaluate

    tracker = _tracker(settings, run_id)
    config = params.stage_config(EvaluateConfig)
    report = evaluate(run, config, tracker.client, settings.model_name, tracker, settings.resolved_feedback_uri)
    return report.model_dump(mode="json")


def _register(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.reports import EvaluationReport
    from recsys_tasks.registry.model_card import publish_run_model_card
    from recsys_tasks.registry.register import register

    tracker = _tracker(settings, run_id)
    report = EvaluationReport(**run.read_json(REPORT_FILE))
    registration = register(run, tracker.client, settings.model_name, tracker.run_id, run_id, report)
    run.write_json(REGISTRATION_FILE, registration.model_dump())
    publish_run_model_card(run, tracker.client, params.dataset_key(), run_id, registration, report, decision=None)
    return registration.model_dump()


def _promote(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.reports import EvaluationReport, Registration
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.registry.model_card import publish_run_model_card
    from recsys_tasks.registry.promote import promote

    client = connect(settings)
    registration = Registration(**run.read_json(REGISTRATION_FILE))
    report = EvaluationReport(**run.read_json(REPORT_FILE))
    decision = promote(run, client, registration, report, params.stage_config(GateConfig))
    publish_run_model_card(run, client, params.dataset_key(), run_id, registration, report, decision)
    return decision.model_dump()


def _batch_recommend(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.reports import GateDecision
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.serving.batch import batch_recommend

    config = params.stage_config(BatchRecommendConfig)
    if not config.enabled:
        raise StageSkipped("batch_recommendations is off for this run")
    decision = GateDecision(**run.read_json(DECISION_FILE))
    if not decision.passed:
        raise StageSkipped(f"the gate rejected version {decision.version}: the champion did not change")
    connect(settings)
    # By version: exactly the champion this run crowned, even if the alias has moved on since.
    return batch_recommend(run, version_uri(decision.model_name, decision.version), config).model_dump()


def _report(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.reporting import build_summary, render_summary

    summary = build_summary(run, settings, run_id)
    run.write_json(RUN_SUMMARY_FILE, summary)
    log.info("\n%s", render_summary(summary))
    return {"summary_uri": run.uri_of(RUN_SUMMARY_FILE), "gate_passed": (summary.get("gate") or {}).get("passed")}


def training_path(plan: Mapping[str, Any]) -> tuple[str, ...]:
    """The training stages of the run whose plan_training result is ``plan``."""
    return TRAINING_PATHS[plan["mode"]]


def stages_off_the_path(plan: Mapping[str, Any]) -> set[str]:
    """The training stages the run whose plan_training result is ``plan`` does not take."""
    return {stage for path in TRAINING_PATHS.values() for stage in path} - set(training_path(plan))


STAGES: dict[str, StageRunner] = {
    "ingest": _ingest,
    "validate": _validate,
    "plan_training": _plan_training,
    "augment": _augment,
    "pretrain": _pretrain,
    "finetune": _finetune,
    "adapt": _adapt,
    "evaluate": _evaluate,
    "register": _register,
    "promote": _promote,
    "batch_recommend": _batch_recommend,
    "report": _report,
}


def run_stage(
    stage: str,
    raw_params: Mapping[str, Any],
    run_id: str,
    settings: Settings | None = None,
    upstream: Mapping[str, Any] | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
) -> dict:
    """Run one stage of the run ``run_id`` and return its JSON-serialisable result.

    ``upstream`` is the result of the stage before it; its ``run_dir`` is where this stage reads.
    ``data_interval`` is the run's [start, end) (Airflow's data interval), which ingest windows a source by.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    params = PipelineParams.parse(raw_params)
    settings = settings or get_settings()
    run = RunDir(upstream["run_dir"]) if upstream else run_dir(run_id, settings)
    log.info("stage %s of run %s in %s", stage, run_id, run.uri)
    # Only ingest reads the data interval: it is where a source is windowed.
    runner = partial(_ingest, data_interval=data_interval) if stage == "ingest" else STAGES[stage]
    return {**runner(params, run, settings, run_id), "run_dir": run.uri}


def run_pipeline(
    raw_params: Mapping[str, Any],
    run_id: str,
    settings: Settings | None = None,
    data_interval: tuple[datetime, datetime] | None = None,
    on_stage: Callable[[str], None] | None = None,
    on_skip: Callable[[str, str], None] | None = None,
) -> dict[str, dict | None]:
    """Every stage of one run in order, as the DAG runs them; each stage's result, None for a skipped one.

    Only the plan's training path runs. A stage with nothing to do (``StageSkipped``) leaves the stages
    after it nothing to read, so only the report runs after it and says why; batch_recommend is a side
    branch whose skip stops nothing.
    """
    results: dict[str, dict | None] = {}
    not_taken: set[str] = set()
    for stage in STAGES:
        if stage in not_taken:
            continue
        if on_stage:
            on_stage(stage)
        try:
            results[stage] = run_stage(stage, raw_params, run_id, settings, data_interval=data_interval)
        except StageSkipped as exc:
            results[stage] = None
            if on_skip:
                on_skip(stage, str(exc))
            if stage not in ("batch_recommend", "report"):
                not_taken = set(STAGES) - {"report"}
            continue
        if stage == "plan_training":
            not_taken = stages_off_the_path(results[stage])
    return results

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
    DATA_DOCS_FOLDER,
    DECISION_FILE,
    REGISTRATION_FILE,
    REPORT_FILE,
    RUN_SUMMARY_FILE,
    VALIDATION_RESULT_FILE,
    VALIDATION_SUMMARY_FILE,
)
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.errors import ConfigError, StageSkipped
from recsys_tasks.evaluation.config import EvaluateConfig
from recsys_tasks.params import PipelineParams
from recsys_tasks.registry.config import GateConfig
from recsys_tasks.serving.config import BatchRecommendConfig
from recsys_tasks.settings import Settings, get_settings
from recsys_tasks.storage import RunDir
from recsys_tasks.training.config import FinetuneConfig, PretrainConfig
from recsys_tasks.validation.config import DriftConfig

log = logging.getLogger(__name__)

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
    from recsys_tasks.data.privacy import resolve_key

    config = params.stage_config(IngestConfig)
    store = _event_store(params, settings) if config.incremental else None
    return ingest(run, config, resolve_key(settings), store, data_interval).model_dump()


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


def _augment(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.augmentation.augment import augment

    return augment(run, params.stage_config(AugmentConfig)).model_dump()


def _pretrain(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.training.pretrain import pretrain

    return pretrain(run, params.stage_config(PretrainConfig), _tracker(settings, run_id)).model_dump()


def _finetune(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.training.finetune import finetune

    return finetune(run, params.stage_config(FinetuneConfig), _tracker(settings, run_id)).model_dump()


def _evaluate(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.evaluation.evaluate import evaluate

    tracker = _tracker(settings, run_id)
    config = params.stage_config(EvaluateConfig)
    return evaluate(run, config, tracker.client, settings.model_name, tracker).model_dump()


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
    return {"summary_uri": run.uri_of(RUN_SUMMARY_FILE), "gate_passed": summary["gate"]["passed"]}


STAGES: dict[str, StageRunner] = {
    "ingest": _ingest,
    "validate": _validate,
    "augment": _augment,
    "pretrain": _pretrain,
    "finetune": _finetune,
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

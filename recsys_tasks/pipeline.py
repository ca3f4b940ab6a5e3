"""The pipeline factory: one Params model → every stage's typed config → the stage functions.

Airflow, the CLI and tests all go through ``run_stage``; it resolves the run directory from the
run id, builds the stage config from the Params, runs the stage and returns a small JSON summary
(what goes into XCom). Stages hand data to each other through the run directory only, so any
stage can be re-run alone, in another process or container, given the run id.

This module is imported when Airflow parses the DAG: heavy libraries (TensorFlow, MLflow, Great
Expectations) are imported inside the stage runners only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from recsys_tasks.augmentation.augment import AugmentConfig
from recsys_tasks.augmentation.cleaning import CleaningConfig
from recsys_tasks.contracts.layout import REGISTRATION_FILE, RUN_SUMMARY_FILE, VALIDATION_SUMMARY_FILE
from recsys_tasks.contracts.registry import version_uri
from recsys_tasks.data.ingest import DataSource, IngestConfig
from recsys_tasks.data.sources import ColumnMapping
from recsys_tasks.data.synthetic import SyntheticPreset
from recsys_tasks.errors import ConfigError, StageSkipped
from recsys_tasks.models.config import FinetuneMode, ModelSize, TrainingExamples
from recsys_tasks.settings import Settings, get_settings
from recsys_tasks.storage import RunDir
from recsys_tasks.training.accelerator import AcceleratorConfig
from recsys_tasks.validation.config import ValidationConfig

if TYPE_CHECKING:  # heavy modules: imported by the stage runners only
    from mlflow.tracking import MlflowClient

    from recsys_tasks.contracts.reports import EvaluationReport, GateDecision, Registration

log = logging.getLogger(__name__)


class PipelineParams(BaseModel):
    """Everything a person may set when triggering a run. Defaults are the nightly run's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_source: DataSource = Field(
        "synthetic", description="synthetic, movielens-100k / -1m / -25m (also 'latest'), sequence, or table."
    )
    data_path: str | None = Field(
        None,
        description="MovieLens: the unpacked folder. sequence: the 'user item item ...' .txt file. "
        "table: a CSV (with header) or Parquet file.",
    )
    column_mapping: ColumnMapping = Field(
        default_factory=ColumnMapping,
        description="table only: which columns hold user, item, timestamp and rating (null rating = implicit).",
    )
    data_gate: ValidationConfig = Field(
        default_factory=ValidationConfig,
        description="Thresholds of the data gate (ratings, timestamps, duplicates, shares of one user, item or "
        "second, swapped rows, table sizes); omitted fields keep their defaults.",
    )
    synthetic_size: SyntheticPreset = Field("small", description="Size of the built-in synthetic data set.")
    seed: int = Field(0, ge=0, description="Seed of data generation, augmentation and training.")
    model_size: ModelSize = Field("small", description="Transformer size: tiny, small, base or large (GPU).")
    max_length: int = Field(50, ge=2, le=1024, description="History length the model reads.")
    crop_ratio: float = Field(0.6, gt=0, le=1, description="Augmentation: share of a history a crop view keeps.")
    mask_ratio: float = Field(0.3, ge=0, lt=1, description="Augmentation: share of positions a mask view hides.")
    reorder_ratio: float = Field(0.3, ge=0, le=1, description="Augmentation: share a reorder view shuffles.")
    positive_min_rating: float | None = Field(
        None, description="Cleaning: ratings ≥ this are positives (e.g. 4); null keeps every event."
    )
    user_core: int = Field(3, ge=3, le=1000, description="Cleaning: fewest events per user (k-core).")
    item_core: int = Field(1, ge=1, le=1000, description="Cleaning: fewest events per item (k-core).")
    pretrain_epochs: int = Field(10, ge=0, le=1000, description="Self-supervised pre-training epochs (0 = none).")
    finetune_epochs: int = Field(
        20, ge=0, le=1000, description="Most fine-tuning epochs (early stopping on validation)."
    )
    finetune_mode: FinetuneMode = Field(
        "full",
        description="full: all weights; frozen: adapters + heads; lora: low-rank attention updates + heads; "
        "head: heads only.",
    )
    finetune_examples: TrainingExamples = Field(
        "prefixes",
        description="prefixes: a training row per target item (stronger); windows: a row per window of history "
        "with a target at every position (far less work per epoch on long histories).",
    )
    ranking_weight: float = Field(
        0.0,
        ge=0,
        le=100,
        description="Multi-task: weight of the ranking head (ratings, or clicks) next to retrieval; 0 = off.",
    )
    finetune_refit: bool = Field(
        False,
        description="After validation has chosen the epochs, train again on training + validation targets "
        "(the model then knows each user's newest interactions; about twice the fine-tuning time).",
    )
    mixed_precision: bool | None = Field(None, description="float16 compute; null = on where a GPU is visible.")
    xla: bool | None = Field(None, description="XLA-compile training steps; null = on where a GPU is visible.")
    batch_recommendations: bool = Field(
        False, description="After a promotion, write top-k for every known user from the new champion to Parquet."
    )
    batch_k: int = Field(10, ge=1, le=1000, description="Batch recommendations: items per user.")
    min_ndcg_at_10: float = Field(0.01, ge=0, le=1, description="Gate: absolute floor on test NDCG@10.")
    min_lift_over_popularity: float = Field(
        0.1, ge=0, le=100, description="Gate: required relative gain over popularity."
    )
    max_regression_vs_champion: float = Field(
        0.02, ge=0, le=1, description="Gate: tolerated relative NDCG@10 drop against the champion."
    )

    @model_validator(mode="after")
    def _path_matches_source(self) -> PipelineParams:
        if self.data_source != "synthetic" and not self.data_path:
            raise ValueError(f"data_source {self.data_source!r} needs data_path")
        return self

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> PipelineParams:
        """Validate Params with a one-line error naming every bad field."""
        try:
            return cls.model_validate(dict(raw))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or 'params'}: {error['msg']}" for error in exc.errors()
            )
            raise ConfigError(f"invalid pipeline params: {problems}") from None

    def dataset_key(self) -> str:
        """Which data set this is, for its drift baseline: a different seed or path is a different data set."""
        if self.data_source == "synthetic":
            return f"synthetic-{self.synthetic_size}-seed{self.seed}"
        return f"{self.data_source}-{self.data_path}"

    def ingest_config(self) -> IngestConfig:
        return IngestConfig(
            source=self.data_source,
            path=self.data_path,
            columns=self.column_mapping,
            synthetic_size=self.synthetic_size,
            seed=self.seed,
        )

    def accelerator(self) -> AcceleratorConfig:
        return AcceleratorConfig(mixed_precision=self.mixed_precision, xla=self.xla)

    def augment_config(self) -> AugmentConfig:
        return AugmentConfig(
            max_length=self.max_length,
            crop_ratio=self.crop_ratio,
            mask_ratio=self.mask_ratio,
            reorder_ratio=self.reorder_ratio,
            seed=self.seed,
            cleaning=CleaningConfig(
                positive_min_rating=self.positive_min_rating, user_core=self.user_core, item_core=self.item_core
            ),
        )


def airflow_params() -> dict[str, Any]:
    """Airflow ``Param``s generated from PipelineParams, so the UI form and the validation agree."""
    from airflow.sdk import Param

    schema = PipelineParams.model_json_schema()
    defaults = PipelineParams().model_dump(mode="json")
    params = {}
    for name, field in schema["properties"].items():
        if "$ref" in field:  # a nested model (column_mapping): inline it, Airflow resolves no references
            field = {**schema["$defs"][field["$ref"].rsplit("/", 1)[-1]], "description": field.get("description")}
        spec = {key: value for key, value in field.items() if key not in ("default", "title", "anyOf")}
        if "anyOf" in field:  # Optional[...] → a nullable JSON-schema type
            spec["type"] = [option["type"] for option in field["anyOf"]]
        if "enum" in field:
            spec.setdefault("type", "string")
        params[name] = Param(defaults[name], title=name.replace("_", " "), **spec)
    return params


def run_dir(airflow_run_id: str, settings: Settings) -> RunDir:
    return RunDir.for_run(settings.resolved_runs_uri, airflow_run_id)


# --- stage runners: Params + run id → stage call → small JSON --------------------------------------


def _ingest(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.data.ingest import ingest
    from recsys_tasks.data.privacy import resolve_key

    return ingest(run, params.ingest_config(), resolve_key(settings)).model_dump()


def _validate(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.layout import DATA_DOCS_FOLDER, VALIDATION_RESULT_FILE
    from recsys_tasks.validation.drift import SnapshotStore
    from recsys_tasks.validation.validate import DriftCheck, validate

    drift_check = DriftCheck(SnapshotStore(settings.resolved_snapshots_uri), params.dataset_key(), run_id)
    tracker = _tracker(settings, run_id)
    try:
        summary = validate(run, params.data_gate, drift_check, settings.great_expectations_log_level).model_dump()
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

    return augment(run, params.augment_config()).model_dump()


def _tracker(settings: Settings, run_id: str):
    from recsys_tasks.contracts.tracking import RunTracker

    return RunTracker.for_airflow_run(settings, run_id)


def _pretrain(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.training.pretrain import PretrainConfig, pretrain

    config = PretrainConfig(
        model_size=params.model_size, epochs=params.pretrain_epochs, seed=params.seed, accelerator=params.accelerator()
    )
    return pretrain(run, config, _tracker(settings, run_id)).model_dump()


def _finetune(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.training.finetune import FinetuneConfig, finetune

    config = FinetuneConfig(
        mode=params.finetune_mode,
        epochs=params.finetune_epochs,
        examples=params.finetune_examples,
        ranking_weight=params.ranking_weight,
        refit=params.finetune_refit,
        seed=params.seed,
        accelerator=params.accelerator(),
    )
    return finetune(run, config, _tracker(settings, run_id)).model_dump()


def _evaluate(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.evaluation.evaluate import EvaluateConfig, evaluate

    tracker = _tracker(settings, run_id)
    report = evaluate(run, EvaluateConfig(), tracker.client, settings.model_name, tracker)
    return report.model_dump()


def _register(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.layout import REPORT_FILE
    from recsys_tasks.contracts.reports import EvaluationReport
    from recsys_tasks.registry.register import register

    tracker = _tracker(settings, run_id)
    report = EvaluationReport(**run.read_json(REPORT_FILE))
    registration = register(run, tracker.client, settings.model_name, tracker.run_id, run_id, report)
    run.write_json(REGISTRATION_FILE, registration.model_dump())
    _publish_model_card(params, run, tracker.client, run_id, registration, report, decision=None)
    return registration.model_dump()


def _publish_model_card(
    params: PipelineParams,
    run: RunDir,
    client: MlflowClient,
    run_id: str,
    registration: Registration,
    report: EvaluationReport,
    decision: GateDecision | None,
) -> None:
    """The version's model card, from what this run's stages wrote."""
    from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, MODEL_META
    from recsys_tasks.contracts.layout import AUGMENT_SUMMARY_FILE, EXPORTED_MODEL_DIR, INTERACTIONS_FILE
    from recsys_tasks.registry.model_card import build_model_card, publish_model_card

    validation, augmented = run.read_json(VALIDATION_SUMMARY_FILE), run.read_json(AUGMENT_SUMMARY_FILE)
    data = {
        "data set": params.dataset_key(),
        "snapshot": run.uri_of(INTERACTIONS_FILE),
        "users × items after cleaning": f"{augmented['users']:,} × {augmented['items']:,}",
        "expectations": f"{validation['evaluated']} evaluated, "
        + ("all passed" if validation["success"] else f"{len(validation['failed'])} failed"),
        "drift": validation["drift_baseline"],
    }
    model_meta = run.read_json(f"{EXPORTED_MODEL_DIR}/{ARTIFACT_FILES[MODEL_META]}")
    card = build_model_card(registration, run_id, model_meta, data, report, decision)
    publish_model_card(client, card, registration.mlflow_run_id)


def _promote(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.layout import REPORT_FILE
    from recsys_tasks.contracts.reports import EvaluationReport, Registration
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.registry.promote import GateConfig, promote

    gate = GateConfig(
        min_ndcg_at_10=params.min_ndcg_at_10,
        min_lift_over_popularity=params.min_lift_over_popularity,
        max_regression_vs_champion=params.max_regression_vs_champion,
    )
    client, registration, report = (
        connect(settings),
        Registration(**run.read_json(REGISTRATION_FILE)),
        EvaluationReport(**run.read_json(REPORT_FILE)),
    )
    decision = promote(run, client, registration, report, gate)
    _publish_model_card(params, run, client, run_id, registration, report, decision)
    return decision.model_dump()


def _batch_recommend(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.contracts.layout import DECISION_FILE
    from recsys_tasks.contracts.reports import GateDecision
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.serving.batch import BatchRecommendConfig, batch_recommend

    if not params.batch_recommendations:
        raise StageSkipped("batch_recommendations is off for this run")
    decision = GateDecision(**run.read_json(DECISION_FILE))
    if not decision.passed:
        raise StageSkipped(f"the gate rejected version {decision.version}: the champion did not change")
    connect(settings)
    # By version: exactly the champion this run crowned, even if the alias has moved on since.
    model_uri = version_uri(decision.model_name, decision.version)
    return batch_recommend(run, model_uri, BatchRecommendConfig(k=params.batch_k)).model_dump()


def _report(params: PipelineParams, run: RunDir, settings: Settings, run_id: str) -> dict:
    from recsys_tasks.reporting import build_summary, render_summary

    summary = build_summary(run, settings, run_id)
    run.write_json(RUN_SUMMARY_FILE, summary)
    log.info("\n%s", render_summary(summary))
    return {"summary_uri": run.uri_of(RUN_SUMMARY_FILE), "gate_passed": summary["gate"]["passed"]}


STAGES: dict[str, Callable[[PipelineParams, RunDir, Settings, str], dict]] = {
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


def run_stage(stage: str, raw_params: Mapping[str, Any], run_id: str, settings: Settings | None = None) -> dict:
    """Run one stage of the run ``run_id`` and return its JSON-serialisable summary."""
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}: choose one of {', '.join(STAGES)}")
    params = PipelineParams.parse(raw_params)
    settings = settings or get_settings()
    run = run_dir(run_id, settings)
    log.info("stage %s of run %s in %s", stage, run_id, run.uri)
    return STAGES[stage](params, run, settings, run_id)


def _settings_with_airflow_secrets() -> Settings:
    """Settings, with the pseudonymisation key from Airflow's connections when the environment has none."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    from recsys_tasks.data.privacy import AIRFLOW_CONNECTION_ID

    settings = get_settings()
    if settings.pseudonymisation_key is not None:
        return settings
    try:
        password = Connection.get(AIRFLOW_CONNECTION_ID).password
    except AirflowNotFoundException:
        return settings
    return settings.model_copy(update={"pseudonymisation_key": SecretStr(password)}) if password else settings


def run_stage_in_airflow(stage: str, context: Mapping[str, Any]) -> dict:
    """Airflow entry point: bad input fails the task at once; an outage is left to the task's retries."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from recsys_tasks.errors import AdaptRecError

    try:
        return run_stage(stage, context["params"], context["run_id"], _settings_with_airflow_secrets())
    except StageSkipped as exc:
        raise AirflowSkipException(f"{stage}: {exc}") from None
    except AdaptRecError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(f"{stage}: {exc}") from None

"""The run's Params: one flat form whose every field is a field of a stage's config.

A field is declared once, in its stage's ``config`` module, with its default, bounds and description;
``PipelineParams`` is generated from ``PARAM_FIELDS`` and copies them, and ``stage_config`` builds
each stage's typed config back from the Params. The Airflow form (``airflow_adapter.airflow_params``)
and the CLI (``--set key=value``) read this same schema. Light on purpose: Airflow imports it when it
parses the DAG.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model, model_validator

from recsys_tasks.augmentation.config import AugmentConfig, CleaningConfig
from recsys_tasks.data.config import ColumnMapping, FeedbackConfig, IngestConfig
from recsys_tasks.errors import ConfigError
from recsys_tasks.evaluation.config import EvaluateConfig
from recsys_tasks.registry.config import GateConfig, TrainingPlanConfig
from recsys_tasks.serving.config import BatchRecommendConfig
from recsys_tasks.training.config import AcceleratorConfig, AdaptConfig, FinetuneConfig, PretrainConfig
from recsys_tasks.validation.config import DriftConfig, ValidationConfig

Config = TypeVar("Config", bound=BaseModel)

# Param name → every (stage config, field) it sets. The first is where the field is declared; a Param
# shared by several stages (the seed, the accelerator) must have the same type and default in each.
PARAM_FIELDS: dict[str, list[tuple[type[BaseModel], str]]] = {
    "data_source": [(IngestConfig, "source")],
    "data_path": [(IngestConfig, "path")],
    "synthetic_size": [(IngestConfig, "synthetic_size")],
    "data_window": [(IngestConfig, "window")],
    "seed": [(IngestConfig, "seed"), (AugmentConfig, "seed"), (PretrainConfig, "seed"), (FinetuneConfig, "seed")],
    "model_size": [(PretrainConfig, "model_size")],
    "max_length": [(AugmentConfig, "max_length")],
    "crop_ratio": [(AugmentConfig, "crop_ratio")],
    "mask_ratio": [(AugmentConfig, "mask_ratio")],
    "reorder_ratio": [(AugmentConfig, "reorder_ratio")],
    "positive_min_rating": [(CleaningConfig, "positive_min_rating")],
    "user_core": [(CleaningConfig, "user_core")],
    "item_core": [(CleaningConfig, "item_core")],
    "pretrain_epochs": [(PretrainConfig, "epochs")],
    "finetune_epochs": [(FinetuneConfig, "epochs")],
    "finetune_mode": [(FinetuneConfig, "mode")],
    "finetune_examples": [(FinetuneConfig, "examples")],
    "ranking_weight": [(FinetuneConfig, "ranking_weight")],
    "finetune_refit": [(FinetuneConfig, "refit")],
    "mixed_precision": [(AcceleratorConfig, "mixed_precision")],
    "xla": [(AcceleratorConfig, "xla")],
    "batch_recommendations": [(BatchRecommendConfig, "enabled")],
    "batch_k": [(BatchRecommendConfig, "k")],
    "training_mode": [(TrainingPlanConfig, "training_mode")],
    "retrain_every": [(TrainingPlanConfig, "retrain_every")],
    "max_drift_to_adapt": [(TrainingPlanConfig, "max_drift_to_adapt")],
    "min_ndcg_at_10": [(GateConfig, "min_ndcg_at_10")],
    "min_lift_over_popularity": [(GateConfig, "min_lift_over_popularity")],
    "max_regression_vs_champion": [(GateConfig, "max_regression_vs_champion")],
    "off_policy_min_slates": [(GateConfig, "off_policy_min_slates")],
    "off_policy_estimator": [(GateConfig, "off_policy_estimator")],
    "max_off_policy_regression": [(GateConfig, "max_off_policy_regression")],
}
# Params that are a whole stage config, shown in the form as one object; omitted fields keep their defaults.
CONFIG_PARAMS: dict[str, tuple[type[BaseModel], str]] = {
    "column_mapping": (
        ColumnMapping,
        "table only: which columns hold user, item, timestamp and rating (null rating = implicit).",
    ),
    "feedback": (
        FeedbackConfig,
        "The serving log that joins a run's data: days of served slates and feedback up to the run's end (0: none), "
        "and the rating a click or a purchase counts as.",
    ),
    "data_gate": (
        ValidationConfig,
        "Thresholds of the data gate (ratings, timestamp window, duplicates, shares of one user, item or second, "
        "swapped rows, table sizes).",
    ),
    "drift": (
        DriftConfig,
        "Drift limits against the data set's accepted snapshot (popularity and history-length PSI, new items, "
        "daily volume).",
    ),
    "evaluation": (EvaluateConfig, "Ranking batch size, the champion comparison and the latency measurement."),
    "adaptation": (
        AdaptConfig,
        "How an adapt run remembers: replay set size and rule (herding or random), distillation towards the "
        "champion and its weight.",
    ),
}


class _ParamsBase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="after")
    def _source_is_complete(self) -> _ParamsBase:
        if self.data_source != "synthetic" and not self.data_path:
            raise ValueError(f"data_source {self.data_source!r} needs data_path")
        # The rest of the source's rules (which sources a window applies to) fail here, as one line, not at ingest.
        try:
            self.stage_config(IngestConfig)
        except ValidationError as exc:
            raise ValueError("; ".join(error["msg"].removeprefix("Value error, ") for error in exc.errors())) from None
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
        """Which data set this is, for its drift baseline and event store: a different seed, path or window is a
        different data set (a window's baseline is one period, not the whole source)."""
        key = (
            f"synthetic-{self.synthetic_size}-seed{self.seed}"
            if self.data_source == "synthetic"
            else f"{self.data_source}-{self.data_path}"
        )
        return key if self.data_window == "all" else f"{key}-by-{self.data_window}"

    def stage_config(self, config: type[Config]) -> Config:
        """``config`` with every field a Param sets taken from these Params (nested configs too)."""
        for param, (whole, _) in CONFIG_PARAMS.items():
            if whole is config:
                return getattr(self, param)
        values: dict[str, Any] = {
            field: getattr(self, param)
            for param, targets in PARAM_FIELDS.items()
            for target, field in targets
            if target is config
        }
        values |= {
            field: getattr(self, param)
            for param, (whole, _) in CONFIG_PARAMS.items()
            for field, info in config.model_fields.items()
            if info.annotation is whole
        }
        values |= {
            field: self.stage_config(info.annotation)
            for field, info in config.model_fields.items()
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel) and field not in values
        }
        return config(**values)


def _declared_field(param: str) -> tuple[Any, Any]:
    config, field = PARAM_FIELDS[param][0]
    declared = config.model_fields[field]
    return declared.annotation, declared


PipelineParams = create_model(
    "PipelineParams",
    __base__=_ParamsBase,
    __doc__="Everything a person may set when triggering a run. Defaults are the nightly run's.",
    **{param: _declared_field(param) for param in PARAM_FIELDS},
    **{
        param: (config, Field(default_factory=config, description=description))
        for param, (config, description) in CONFIG_PARAMS.items()
    },
)

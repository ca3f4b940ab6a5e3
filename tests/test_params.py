"""One config tree: every Param is a stage-config field, declared once; the form, the CLI and the stages agree."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from recsys_tasks.airflow_adapter import airflow_params
from recsys_tasks.augmentation.config import AugmentConfig, CleaningConfig
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.errors import ConfigError
from recsys_tasks.evaluation.config import EvaluateConfig
from recsys_tasks.params import CONFIG_PARAMS, PARAM_FIELDS, PipelineParams
from recsys_tasks.registry.config import GateConfig
from recsys_tasks.serving.config import BatchRecommendConfig
from recsys_tasks.training.config import FinetuneConfig, PretrainConfig
from recsys_tasks.validation.config import DriftConfig, ValidationConfig

SCHEMA = PipelineParams.model_json_schema()


def _field_schema(config: type[BaseModel], field: str) -> dict:
    schema = config.model_json_schema()["properties"][field]
    return {key: value for key, value in schema.items() if key != "title"}


@pytest.mark.parametrize("param", sorted(PARAM_FIELDS))
def test_a_param_is_its_stage_fields_schema(param):
    """Same type, default, bounds and description as where it is declared, in every stage it sets."""
    param_schema = {key: value for key, value in SCHEMA["properties"][param].items() if key != "title"}
    for config, field in PARAM_FIELDS[param]:
        assert _field_schema(config, field) == param_schema, f"{param} differs from {config.__name__}.{field}"


@pytest.mark.parametrize(
    ("param", "value", "config", "read"),
    [
        ("seed", 7, FinetuneConfig, lambda c: c.seed),
        ("seed", 7, IngestConfig, lambda c: c.seed),
        ("synthetic_size", "tiny", IngestConfig, lambda c: c.synthetic_size),
        ("data_window", "data_interval", IngestConfig, lambda c: c.window),
        ("user_core", 5, AugmentConfig, lambda c: c.cleaning.user_core),
        ("mask_ratio", 0.5, AugmentConfig, lambda c: c.mask_ratio),
        ("xla", True, PretrainConfig, lambda c: c.accelerator.xla),
        ("mixed_precision", False, FinetuneConfig, lambda c: c.accelerator.mixed_precision),
        ("finetune_refit", True, FinetuneConfig, lambda c: c.refit),
        ("batch_recommendations", True, BatchRecommendConfig, lambda c: c.enabled),
        ("min_lift_over_popularity", 0.5, GateConfig, lambda c: c.min_lift_over_popularity),
        ("drift", {"max_new_item_rate": 0.9}, DriftConfig, lambda c: c.max_new_item_rate),
        ("evaluation", {"latency_calls": 7}, EvaluateConfig, lambda c: c.latency_calls),
    ],
)
def test_a_param_reaches_its_stage_config(param, value, config, read):
    expected = value if not isinstance(value, dict) else next(iter(value.values()))
    assert read(PipelineParams.parse({param: value}).stage_config(config)) == expected
    assert read(PipelineParams().stage_config(config)) == read(config())


def test_every_field_of_a_param_config_is_set_by_no_other_param():
    """A field is either a flat Param or part of a whole-config Param, never both."""
    flat = {(config, field) for targets in PARAM_FIELDS.values() for config, field in targets}
    whole = {config for config, _ in CONFIG_PARAMS.values()}
    assert not {config for config, _ in flat} & whole


def test_defaults_are_the_nightly_run():
    params = PipelineParams.parse({})
    assert params.data_source == "synthetic" and params.synthetic_size == "small" and params.finetune_mode == "full"
    assert params.stage_config(IngestConfig) == IngestConfig()
    assert params.stage_config(CleaningConfig) == CleaningConfig()
    assert params.data_gate == ValidationConfig()


def test_every_problem_is_named_on_one_line():
    with pytest.raises(ConfigError) as raised:
        PipelineParams.parse({"model_size": "huge", "finetune_epochs": -2, "user_core": 2000})
    message = str(raised.value)
    assert "model_size" in message and "finetune_epochs" in message and "user_core" in message
    assert "\n" not in message


def test_a_window_on_a_source_without_a_clock_of_its_own_is_one_line():
    with pytest.raises(ConfigError) as raised:
        PipelineParams.parse({"data_source": "periods", "data_path": "/data/shop", "data_window": "data_interval"})
    message = str(raised.value)
    assert "window 'data_interval' needs a source with a clock of its own" in message and "\n" not in message


def test_a_windowed_source_is_a_data_set_of_its_own():
    """Its drift baseline and event store hold periods, not the whole source."""
    whole = PipelineParams.parse({"data_source": "table", "data_path": "/data/log.csv"})
    windowed = PipelineParams.parse(
        {"data_source": "table", "data_path": "/data/log.csv", "data_window": "data_interval"}
    )
    assert whole.dataset_key() == "table-/data/log.csv"
    assert windowed.dataset_key() == "table-/data/log.csv-by-data_interval"
    assert PipelineParams.parse({"synthetic_size": "drifting"}).dataset_key() == "synthetic-drifting-seed0"


def test_the_airflow_form_is_the_schema():
    params = airflow_params()
    assert set(params) == set(PipelineParams.model_fields)
    defaults = PipelineParams().model_dump(mode="json")
    for name, param in params.items():
        assert param.value == defaults[name], name
        for bound in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "enum"):
            assert param.schema.get(bound) == SCHEMA["properties"][name].get(bound), (name, bound)
    assert params["data_path"].schema["type"] == ["string", "null"]
    assert params["user_core"].schema["maximum"] == 1000
    assert params["drift"].schema["properties"]["max_new_item_rate"]["maximum"] == 1

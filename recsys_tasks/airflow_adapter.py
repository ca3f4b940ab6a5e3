"""Airflow's side of the pipeline: the Params form, the task context, secrets, and what a failure means.

Bad input (``AdaptRecError`` that is not retryable) fails the task at once; an outage is left to the
task's retries; ``StageSkipped`` skips it. Imported when Airflow parses the DAG: light on purpose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import SecretStr

from recsys_tasks.params import PipelineParams
from recsys_tasks.pipeline import run_stage
from recsys_tasks.settings import Settings, get_settings


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


def dag_schedule(settings: Settings):
    """The schedule's cron with whole data intervals (a windowed ingest reads the previous [start, end)), or
    it or the trigger asset's events when ``settings.trigger_asset`` is set."""
    from airflow.sdk import Asset
    from airflow.timetables.assets import AssetOrTimeSchedule
    from airflow.timetables.interval import CronDataIntervalTimetable

    cron = CronDataIntervalTimetable(settings.schedule, timezone="UTC")
    if settings.trigger_asset is None:
        return cron
    return AssetOrTimeSchedule(timetable=cron, assets=Asset(settings.trigger_asset))


def record_ingested_events(asset, result: Mapping[str, Any], context: Mapping[str, Any]) -> None:
    """Attach what ingest read (data set, period, new rows) to the event the task emits for ``asset``."""
    window = result.get("window") or {}
    context["outlet_events"][asset].extra = {
        "dataset": context["params"].get("data_source"),
        "dataset_key": window.get("dataset_key"),
        "period": window.get("period"),
        "new_rows": window.get("new_rows", result.get("rows")),
        "run_dir": result.get("run_dir"),
    }


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


def run_stage_in_airflow(stage: str, context: Mapping[str, Any], upstream: Mapping[str, Any] | None = None) -> dict:
    """Run ``stage`` for the task's run with the run's Params, reading where ``upstream`` (its XCom) wrote."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from recsys_tasks.errors import AdaptRecError, StageSkipped

    # A manually triggered run may have no data interval; only a windowed ingest needs one, and says so.
    start, end = context.get("data_interval_start"), context.get("data_interval_end")
    data_interval = (start, end) if start is not None and end is not None else None
    try:
        return run_stage(
            stage, context["params"], context["run_id"], _settings_with_airflow_secrets(), upstream, data_interval
        )
    except StageSkipped as exc:
        raise AirflowSkipException(f"{stage}: {exc}") from None
    except AdaptRecError as exc:
        if exc.retryable:
            raise
        raise AirflowFailException(f"{stage}: {exc}") from None

"""The registry page of the Airflow UI: versions, aliases, gate decisions and test-metric trends.

Read-only. ``plugins/adaptrec_plugin.py`` calls it from its request handlers and its "MLflow run"
extra link, so MLflow is loaded only when someone opens the page or a task's links.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from jinja2 import Environment, PackageLoader, StrictUndefined
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from recsys_tasks.constants import (
    CHAMPION_ALIAS,
    DAG_ID,
    TAG_AIRFLOW_RUN_ID,
    TAG_FINETUNE_MODE,
    TAG_GATE_REPORT,
    TAG_GATE_STATUS,
    TAG_MANUAL_MOVE,
    TAG_PARENT_VERSION,
    TAG_REPLAY_ROWS,
    TAG_TEST_METRIC_PREFIX,
    TAG_TRAINABLE_PARAMETERS,
    TAG_TRAINING_MODE,
    TAG_WINDOW,
)
from recsys_tasks.contracts.metrics import SHOWN_METRICS
from recsys_tasks.contracts.tracking import connect, mlflow_run_of
from recsys_tasks.errors import RegistryError
from recsys_tasks.settings import Settings

NOT_JUDGED = "not judged"
TREND_METRICS = ("ndcg_at_10", "hr_at_10")
_SERIES_COLOURS = dict(zip(TREND_METRICS, ("#1f6feb", "#d97706")))


class GateCheckSummary(BaseModel):
    name: str
    passed: bool
    skipped: bool = False  # versions gated before checks could be skipped have none
    detail: str


class VersionSummary(BaseModel):
    version: int
    aliases: list[str]
    created: datetime
    gate_status: str
    gate_checks: list[GateCheckSummary]
    test_metrics: dict[str, float]
    airflow_run_id: str | None
    mlflow_run_id: str | None
    finetune_mode: str | None
    trainable_parameters: int | None
    manual_move: str | None
    training_mode: str | None = None
    """retrain or adapt; None for a version registered without lineage tags."""
    parent_version: str | None = None
    window: str | None = None
    replay_rows: int | None = None


class RegistryOverview(BaseModel):
    model_name: str
    aliases: dict[str, int]
    versions: list[VersionSummary]
    """Newest first."""


@contextmanager
def _mlflow_errors_as_registry_errors(action: str) -> Iterator[None]:
    try:
        yield
    except MlflowException as exc:
        raise RegistryError(f"MLflow could not {action}: {exc.message.splitlines()[0]}") from None


def mlflow_run_url(settings: Settings, airflow_run_id: str) -> str:
    """The MLflow UI page of the run that logs ``airflow_run_id``; "" while it has none."""
    client = connect(settings)
    with _mlflow_errors_as_registry_errors(f"look up the MLflow run of {airflow_run_id}"):
        experiment = client.get_experiment_by_name(settings.experiment_name)
        run_id = mlflow_run_of(client, experiment.experiment_id, airflow_run_id) if experiment else None
    if run_id is None:
        return ""
    return f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{experiment.experiment_id}/runs/{run_id}"


def registry_overview(settings: Settings) -> RegistryOverview | None:
    """Every version of the configured registered model, newest first; None while nothing is registered."""
    return overview_of(connect(settings), settings.model_name)


def overview_of(client: MlflowClient, name: str) -> RegistryOverview | None:
    """Every version of the registered model ``name``, newest first; None while nothing is registered."""
    with _mlflow_errors_as_registry_errors(f"read the registered model {name}"):
        try:
            aliases = client.get_registered_model(name).aliases
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        versions = client.search_model_versions(f"name = '{name}'")
    aliases_by_version: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        aliases_by_version.setdefault(int(version), []).append(alias)
    summaries = [_summarise(version, sorted(aliases_by_version.get(int(version.version), []))) for version in versions]
    return RegistryOverview(
        model_name=name,
        aliases={alias: int(version) for alias, version in aliases.items()},
        versions=sorted(summaries, key=lambda summary: summary.version, reverse=True),
    )


def _summarise(version: ModelVersion, aliases: list[str]) -> VersionSummary:
    tags = version.tags
    gate_report = json.loads(tags[TAG_GATE_REPORT]) if TAG_GATE_REPORT in tags else []
    return VersionSummary(
        version=int(version.version),
        aliases=aliases,
        created=datetime.fromtimestamp(version.creation_timestamp / 1000, UTC),
        gate_status=tags.get(TAG_GATE_STATUS, NOT_JUDGED),
        gate_checks=[GateCheckSummary.model_validate(check) for check in gate_report],
        test_metrics={
            key.removeprefix(TAG_TEST_METRIC_PREFIX): float(value)
            for key, value in tags.items()
            if key.startswith(TAG_TEST_METRIC_PREFIX)
        },
        airflow_run_id=tags.get(TAG_AIRFLOW_RUN_ID),
        mlflow_run_id=version.run_id,
        finetune_mode=tags.get(TAG_FINETUNE_MODE),
        trainable_parameters=int(tags[TAG_TRAINABLE_PARAMETERS]) if TAG_TRAINABLE_PARAMETERS in tags else None,
        manual_move=tags.get(TAG_MANUAL_MOVE),
        training_mode=tags.get(TAG_TRAINING_MODE),
        parent_version=tags.get(TAG_PARENT_VERSION),
        window=tags.get(TAG_WINDOW),
        replay_rows=int(tags[TAG_REPLAY_ROWS]) if TAG_REPLAY_ROWS in tags else None,
    )


_TEMPLATES = Environment(
    loader=PackageLoader("recsys_tasks.registry", "templates"),
    autoescape=True,
    trim_blocks=True,
    lstrip_blocks=True,
    undefined=StrictUndefined,
)


def render_page(model_name: str, overview: RegistryOverview | None, mlflow_ui_url: str) -> str:
    """The whole page as HTML; every value from MLflow is escaped."""
    held = overview.aliases.items() if overview else []
    aliases = sorted(held, key=lambda item: (item[0] != CHAMPION_ALIAS, item[0]))
    return _TEMPLATES.get_template("registry.html.j2").render(
        model_name=model_name,
        overview=overview,
        mlflow_ui_url=mlflow_ui_url.rstrip("/"),
        dag_id=DAG_ID,
        champion=CHAMPION_ALIAS,
        aliases=aliases,
        chart=trend_chart(overview.versions) if overview else "",
        metrics=TREND_METRICS,
        metric_labels=[SHOWN_METRICS[metric] for metric in TREND_METRICS],
    )


def render_error_page(message: str) -> str:
    return _TEMPLATES.get_template("error.html.j2").render(message=message)


_WIDTH, _HEIGHT = 760, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 36, 32


def trend_chart(versions: list[VersionSummary]) -> str:
    """An inline SVG line chart of the trend metrics by version, oldest left.

    A filled dot passed the gate, a hollow one did not (or was not judged); the champion is marked.
    """
    ordered = sorted(versions, key=lambda summary: summary.version)
    values = [summary.test_metrics[m] for summary in ordered for m in TREND_METRICS if m in summary.test_metrics]
    template = _TEMPLATES.get_template("trend_chart.svg.j2")
    if not values:
        return template.render(series=[])
    # The axis starts at 0, so a drop looks as large as it is.
    ticks, decimals = _axis_ticks(max(values))
    plot_width, plot_height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x(index: int) -> float:
        return _LEFT + plot_width * (index + 0.5) / len(ordered)

    def y(value: float) -> float:
        return _TOP + plot_height * (1 - value / ticks[-1])

    label_every = math.ceil(len(ordered) / 20)
    columns = [
        {"x": x(i), "version": v.version, "labelled": i % label_every == 0, "champion": CHAMPION_ALIAS in v.aliases}
        for i, v in enumerate(ordered)
    ]
    series = [
        {
            "colour": _SERIES_COLOURS[metric],
            "label": SHOWN_METRICS[metric],
            "legend_x": _LEFT + 110 * position,
            "dots": [
                {
                    "x": x(i),
                    "y": y(v.test_metrics[metric]),
                    "value": v.test_metrics[metric],
                    "version": v.version,
                    "passed": v.gate_status == "passed",
                    "gate_status": v.gate_status,
                }
                for i, v in enumerate(ordered)
                if metric in v.test_metrics
            ],
        }
        for position, metric in enumerate(TREND_METRICS)
    ]
    return template.render(
        width=_WIDTH,
        height=_HEIGHT,
        left=_LEFT,
        right=_WIDTH - _RIGHT,
        top=_TOP,
        bottom=_TOP + plot_height,
        description=" and ".join(SHOWN_METRICS[metric] for metric in TREND_METRICS),
        ticks=[{"y": y(value), "label": f"{value:.{decimals}f}"} for value in ticks],
        columns=columns,
        champion=CHAMPION_ALIAS,
        series=series,
    )


def _axis_ticks(largest: float, most_ticks: int = 5) -> tuple[list[float], int]:
    """Ticks from 0 to the first at or above ``largest``, 1, 2 or 5 times a power of ten apart; their decimals."""
    rough_step = max(largest, 0.01) / most_ticks
    magnitude = 10 ** math.floor(math.log10(rough_step))
    step = next(multiple * magnitude for multiple in (1, 2, 5, 10) if multiple * magnitude >= rough_step)
    decimals = max(0, -math.floor(math.log10(step)))
    # The tolerance keeps a value that sits on a tick (0.8 with steps of 0.2) from adding one more.
    count = max(1, math.ceil(largest / step - 1e-9))
    return [round(index * step, decimals) for index in range(count + 1)], decimals

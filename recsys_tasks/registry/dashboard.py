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
from html import escape
from urllib.parse import quote

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
    TAG_TEST_METRIC_PREFIX,
    TAG_TRAINABLE_PARAMETERS,
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
    )


_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px; color: #1f2328; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 16px; margin: 24px 0 8px; }
code { background: #f6f8fa; padding: 1px 4px; border-radius: 4px; }
table { border-collapse: collapse; width: 100%; }
th, td { border-bottom: 1px solid #d0d7de; padding: 6px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
ul.checks { margin: 0; padding-left: 0; list-style: none; }
.badge { display: inline-block; padding: 0 8px; border-radius: 10px; font-size: 12px; margin: 0 4px 2px 0; }
.alias { background: #ddf4ff; color: #0969da; }
.pass { color: #1a7f37; } .fail { color: #cf222e; }
.gate-passed { background: #dafbe1; color: #1a7f37; } .gate-rejected { background: #ffebe9; color: #cf222e; }
.gate-not-judged { background: #eaeef2; color: #6e7781; }
.note, .muted { color: #6e7781; font-size: 12px; } .nowrap { white-space: nowrap; }
"""


def render_page(model_name: str, overview: RegistryOverview | None, mlflow_ui_url: str) -> str:
    """The whole page as HTML; every value from MLflow is escaped."""
    if overview is None:
        body = (
            f"<p>No version of <code>{escape(model_name)}</code> is registered yet: the <code>register</code> "
            f"task of <code>{DAG_ID}</code> creates version 1 on its first run.</p>"
        )
    else:
        body = (
            _aliases_line(overview)
            + "<h2>Test metrics by version</h2>"
            + trend_chart(overview.versions)
            + "<h2>Versions</h2>"
            + _versions_table(overview, mlflow_ui_url.rstrip("/"))
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>AdaptRec registry</title>'
        f"<style>{_STYLE}</style></head><body><h1>AdaptRec model registry</h1>{body}</body></html>"
    )


def render_error_page(message: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>AdaptRec registry</title></head>'
        f"<body><p>{escape(message)}</p></body></html>"
    )


def _aliases_line(overview: RegistryOverview) -> str:
    held = ", ".join(
        f"<code>{escape(alias)}</code> → v{version}"
        for alias, version in sorted(overview.aliases.items(), key=lambda item: (item[0] != CHAMPION_ALIAS, item[0]))
    )
    name = escape(overview.model_name)
    return (
        f"<p>Registered model <code>{name}</code>; consumers load <code>models:/{name}@{CHAMPION_ALIAS}</code>. "
        f"Aliases: {held or 'none yet'}.</p>"
    )


def _versions_table(overview: RegistryOverview, mlflow_ui_url: str) -> str:
    metric_headers = "".join(f"<th>{SHOWN_METRICS[metric]}</th>" for metric in TREND_METRICS)
    header = (
        "<tr><th>Version</th><th>Aliases</th><th>Created (UTC)</th><th>Gate</th><th>Gate checks</th>"
        f"{metric_headers}<th>Fine-tuning</th><th>Airflow run</th></tr>"
    )
    rows = "".join(_version_row(overview.model_name, version, mlflow_ui_url) for version in overview.versions)
    return f"<table><thead>{header}</thead><tbody>{rows}</tbody></table>"


def _version_row(model_name: str, version: VersionSummary, mlflow_ui_url: str) -> str:
    page = f"{mlflow_ui_url}/#/models/{quote(model_name)}/versions/{version.version}"
    aliases = "".join(f'<span class="badge alias">{escape(alias)}</span>' for alias in version.aliases)
    if version.manual_move:
        aliases += f'<div class="note">{escape(version.manual_move)}</div>'
    gate_class = "gate-" + escape(version.gate_status.replace(" ", "-"))
    checks = "".join(
        f'<li class="{"pass" if check.passed else "fail"}">{"✓" if check.passed else "✗"} '
        f"{escape(check.name)}: {escape(check.detail)}</li>"
        for check in version.gate_checks
    )
    metrics = "".join(
        f'<td class="number">{version.test_metrics[metric]:.4f}</td>'
        if metric in version.test_metrics
        else "<td>–</td>"
        for metric in TREND_METRICS
    )
    finetuning = escape(version.finetune_mode or "–")
    if version.trainable_parameters is not None:
        finetuning += f'<div class="note">{version.trainable_parameters:,} trainable parameters</div>'
    return (
        f'<tr><td><a href="{escape(page)}" target="_blank" rel="noopener">v{version.version}</a></td>'
        f'<td>{aliases}</td><td class="nowrap">{version.created:%Y-%m-%d %H:%M}</td>'
        f'<td><span class="badge {gate_class}">{escape(version.gate_status)}</span></td>'
        f'<td><ul class="checks">{checks}</ul></td>{metrics}<td>{finetuning}</td>'
        f"<td><code>{escape(version.airflow_run_id or '–')}</code></td></tr>"
    )


_WIDTH, _HEIGHT = 760, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 16, 36, 32


def trend_chart(versions: list[VersionSummary]) -> str:
    """An inline SVG line chart of the trend metrics by version, oldest left.

    A filled dot passed the gate, a hollow one did not (or was not judged); the champion is marked.
    """
    ordered = sorted(versions, key=lambda summary: summary.version)
    values = [summary.test_metrics[m] for summary in ordered for m in TREND_METRICS if m in summary.test_metrics]
    if not values:
        return '<p class="muted">No test metrics recorded on any version yet.</p>'
    # The axis starts at 0, so a drop looks as large as it is.
    ticks, decimals = _axis_ticks(max(values))
    y_max = ticks[-1]
    plot_width, plot_height = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x(index: int) -> float:
        return _LEFT + plot_width * (index + 0.5) / len(ordered)

    def y(value: float) -> float:
        return _TOP + plot_height * (1 - value / y_max)

    parts = []
    for value in ticks:
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eaeef2"/>'
            f'<text x="{_LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">{value:.{decimals}f}</text>'
        )
    label_every = math.ceil(len(ordered) / 20)
    for index, summary in enumerate(ordered):
        if index % label_every == 0:
            parts.append(f'<text x="{x(index):.1f}" y="{_HEIGHT - 10}" text-anchor="middle">v{summary.version}</text>')
        if CHAMPION_ALIAS in summary.aliases:
            parts.append(
                f'<line x1="{x(index):.1f}" x2="{x(index):.1f}" y1="{_TOP}" y2="{_TOP + plot_height}" '
                f'stroke="#1a7f37" stroke-dasharray="4 3"/>'
                f'<text x="{x(index):.1f}" y="{_TOP - 6}" text-anchor="middle" fill="#1a7f37">{CHAMPION_ALIAS}</text>'
            )
    for series, metric in enumerate(TREND_METRICS):
        colour, label = _SERIES_COLOURS[metric], SHOWN_METRICS[metric]
        points = [(index, summary) for index, summary in enumerate(ordered) if metric in summary.test_metrics]
        path = " ".join(f"{x(index):.1f},{y(summary.test_metrics[metric]):.1f}" for index, summary in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for index, summary in points:
            value = summary.test_metrics[metric]
            fill = colour if summary.gate_status == "passed" else "#ffffff"
            parts.append(
                f'<circle cx="{x(index):.1f}" cy="{y(value):.1f}" r="4" fill="{fill}" stroke="{colour}" '
                f'stroke-width="2"><title>v{summary.version} {label} {value:.4f} '
                f"(gate {escape(summary.gate_status)})</title></circle>"
            )
        legend_x = _LEFT + 110 * series
        parts.append(
            f'<rect x="{legend_x}" y="6" width="12" height="12" fill="{colour}"/>'
            f'<text x="{legend_x + 16}" y="16">{label}</text>'
        )
    parts.append(f'<text x="{_WIDTH - _RIGHT}" y="16" text-anchor="end" fill="#6e7781">hollow: gate not passed</text>')
    description = " and ".join(SHOWN_METRICS[metric] for metric in TREND_METRICS)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-size="12" role="img" aria-label="Test {description} by version">'
        f"{''.join(parts)}</svg>"
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

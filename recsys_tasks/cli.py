"""``recsys``: run any pipeline stage, the whole pipeline, or ask the champion for recommendations.

Every stage takes the same Params as the Airflow DAG (``--conf`` JSON and/or ``--set key=value``)
and a run id, so a stage can be re-run alone, e.g. in a GPU container.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.table import Table

from recsys_tasks.contracts.layout import RUN_SUMMARY_FILE
from recsys_tasks.errors import AdaptRecError, ConfigError, StageSkipped
from recsys_tasks.pipeline import STAGES, run_pipeline, run_stage
from recsys_tasks.settings import get_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
console = Console()
errors = Console(stderr=True)

RunIdOption = Annotated[str, typer.Option("--run-id", help="Run id; the same id shares one run directory.")]
ConfOption = Annotated[str, typer.Option("--conf", help="Params as a JSON object, as in 'airflow dags trigger -c'.")]
SetOption = Annotated[list[str], typer.Option("--set", help="One Param as key=value (JSON value or plain text).")]
IntervalStartOption = Annotated[
    str | None,
    typer.Option(
        "--data-interval-start",
        help="The run's data interval starts here (ISO-8601, UTC without a zone); with "
        "data_window=data_interval, ingest takes the events from here to the end.",
    ),
]
IntervalEndOption = Annotated[
    str | None, typer.Option("--data-interval-end", help="The run's data interval ends here (exclusive).")
]


def _params(conf: str, assignments: list[str]) -> dict[str, Any]:
    try:
        params = json.loads(conf)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--conf is not valid JSON: {exc}") from None
    if not isinstance(params, dict):
        raise ConfigError("--conf must be a JSON object")
    for assignment in assignments:
        key, separator, value = assignment.partition("=")
        if not separator:
            raise ConfigError(f"--set {assignment!r} is not key=value")
        try:
            params[key] = json.loads(value)
        except json.JSONDecodeError:
            params[key] = value
    return params


def _data_interval(start: str | None, end: str | None) -> tuple[datetime, datetime] | None:
    if start is None and end is None:
        return None
    if start is None or end is None:
        raise ConfigError("give both --data-interval-start and --data-interval-end, or neither")
    try:
        return datetime.fromisoformat(start), datetime.fromisoformat(end)
    except ValueError as exc:
        raise ConfigError(f"the data interval is not ISO-8601: {exc}") from None


def _run_or_skip(
    stage: str, params: dict, run_id: str, data_interval: tuple[datetime, datetime] | None = None
) -> dict | None:
    """The stage's summary, or None when it had nothing to do in this run (said in one line)."""
    try:
        return run_stage(stage, params, run_id, data_interval=data_interval)
    except StageSkipped as exc:
        console.print(f"[yellow]{stage} skipped:[/] {exc}")
        return None


def _stage_command(stage: str):
    def command(
        run_id: RunIdOption,
        conf: ConfOption = "{}",
        assignments: SetOption = [],  # noqa: B006
        interval_start: IntervalStartOption = None,
        interval_end: IntervalEndOption = None,
    ) -> None:
        result = _run_or_skip(stage, _params(conf, assignments), run_id, _data_interval(interval_start, interval_end))
        if result is not None:
            console.print_json(json.dumps(result, default=str))

    command.__doc__ = f"Run the {stage} stage of one pipeline run."
    return command


for _stage in STAGES:
    app.command(name=_stage)(_stage_command(_stage))


data_app = typer.Typer(help="Public data sets (needs internet access; the loaders themselves never do).")
app.add_typer(data_app, name="data")


@data_app.command("download")
def download_data(
    name: Annotated[str, typer.Argument(help="movielens-100k, movielens-1m or movielens-25m")],
    to: Annotated[Path, typer.Option("--to", help="Folder to unpack into.")] = Path("data"),
    base_url: Annotated[str, typer.Option(help="Where the archives are (a mirror).")] = "",
) -> None:
    """Download an official archive, check its published MD5, unpack it; print the data_path to use."""
    from recsys_tasks.data.download import GROUPLENS_URL, download

    folder = download(name, to, base_url or GROUPLENS_URL)
    console.print(f"{name} is in {folder}: run with --set data_source={name} --set data_path={folder}")


registry_app = typer.Typer(help="The registered model's versions and its champion alias.")
app.add_typer(registry_app, name="registry")
VersionArgument = Annotated[str, typer.Argument(help="Model version number.")]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded on the version.")]


@registry_app.command("status")
def registry_status() -> None:
    """Versions with aliases, gate results, test NDCG@10 and lineage, newest first; then the champion's lineage."""
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.registry.operations import champion_lineage, status

    settings = get_settings()
    client = connect(settings)
    rows = status(client, settings.model_name)
    table = Table(title=f"{settings.model_name} in {settings.resolved_tracking_uri}", title_justify="left")
    for column in rows[0] if rows else ["version"]:
        # Only the free-text column wraps: run ids, dates and versions broken mid-word are misread.
        table.add_column(column.replace("_", " "), no_wrap=column != "manual_move")
    for row in rows:
        table.add_row(*(", ".join(value) if isinstance(value, list) else str(value) for value in row.values()))
    # Wider than a pipe's 80 characters, which cannot hold eleven columns.
    Console(width=max(console.width, 180)).print(table)
    console.print(champion_lineage(client, settings.model_name), highlight=False)


def _move_champion(version: str, reason: str, rollback: bool) -> None:
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.registry.operations import move_champion

    settings = get_settings()
    before = move_champion(connect(settings), settings.model_name, version, reason, rollback)
    console.print(f"champion of {settings.model_name}: {before or '(none)'} → {version}")


@registry_app.command("promote")
def registry_promote(version: VersionArgument, reason: ReasonOption) -> None:
    """Make VERSION the champion by hand (an operator's decision, bypassing the gate)."""
    _move_champion(version, reason, rollback=False)


@registry_app.command("rollback")
def registry_rollback(version: VersionArgument, reason: ReasonOption) -> None:
    """Move the champion back to an earlier VERSION."""
    _move_champion(version, reason, rollback=True)


@registry_app.command("compare")
def registry_compare(
    versions: Annotated[list[str], typer.Argument(help="Version numbers to rank.")],
    run_id: Annotated[str, typer.Option("--run-id", help="Rank the test split of this run.")],
) -> None:
    """Rank the same test split with each version, by the evaluate stage's protocol."""
    from recsys_tasks.contracts.tracking import connect
    from recsys_tasks.pipeline import run_dir
    from recsys_tasks.registry.operations import compare
    from recsys_tasks.reporting import metrics_table

    settings = get_settings()
    results = compare(connect(settings), settings.model_name, versions, run_dir(run_id, settings))
    console.print(metrics_table({f"version {version}": values for version, values in results.items()}))


@app.command()
def pipeline(
    run_id: Annotated[str | None, typer.Option(help="Run id (default: a new cli__<time> id).")] = None,
    conf: ConfOption = "{}",
    assignments: SetOption = [],  # noqa: B006
    interval_start: IntervalStartOption = None,
    interval_end: IntervalEndOption = None,
) -> None:
    """Run every stage in order, without Airflow (for debugging or a single container)."""
    run_id = run_id or f"cli__{datetime.now(UTC):%Y-%m-%dT%H-%M-%S}"
    params = _params(conf, assignments)
    data_interval = _data_interval(interval_start, interval_end)
    run_pipeline(
        params,
        run_id,
        data_interval=data_interval,
        on_stage=console.rule,
        on_skip=lambda stage, why: console.print(f"[yellow]{stage} skipped:[/] {why}"),
    )


@app.command()
def report(run_id: Annotated[str | None, typer.Option(help="Run id (default: the newest run).")] = None) -> None:
    """Print the summary of a finished run: metrics, gate decision, registered version, where to look."""
    from recsys_tasks.reporting import render_summary
    from recsys_tasks.storage import RunDir

    settings = get_settings()
    if run_id is None:
        runs = RunDir(settings.resolved_runs_uri)
        finished = runs.fs.glob(runs.path(f"*/{RUN_SUMMARY_FILE}"))
        if not finished:
            raise ConfigError(f"no finished run under {runs.uri}: run the pipeline first (make run)")
        summary = json.loads(runs.fs.read_text(max(finished, key=runs.fs.modified)))
    else:
        from recsys_tasks.pipeline import run_dir

        summary = run_dir(run_id, settings).read_json(RUN_SUMMARY_FILE)
    console.out(render_summary(summary, width=max(console.width, 110)), highlight=False)


@contextmanager
def _native_stderr_shown_on_failure():
    """Send file descriptor 2 to a temporary file during the block; write what it caught only if the block fails.

    TensorFlow and LiteRT log from C++ straight to the descriptor when they load (partly before absl's logging
    is set up, which no environment variable silences); a one-off answer needs none of it unless it fails.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        except AdaptRecError:  # a message of ours, complete in itself
            raise
        except BaseException:
            sys.stderr.flush()
            os.dup2(saved, 2)
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


@app.command()
def recommend(
    history: Annotated[str, typer.Option(help="Item ids the user interacted with, oldest first: 12,7,33")],
    k: Annotated[int, typer.Option(min=1, help="How many items to recommend.")] = 10,
    alias: Annotated[str, typer.Option(help="Registry alias to load.")] = "champion",
    variant: Annotated[
        Literal["float32", "int8"],
        typer.Option(help="float32 runs the TensorFlow SavedModel; int8 runs LiteRT and starts without TensorFlow."),
    ] = "float32",
) -> None:
    """Load models:/<name>@champion from MLflow and print the top-k items for a history."""
    from recsys_tasks.serving.recommend import recommend as recommend_items

    try:
        items = [int(token) for token in history.split(",") if token.strip()]
    except ValueError:
        raise ConfigError(f"--history must be comma-separated integer item ids, got {history!r}") from None
    settings = get_settings()
    table = Table(title=f"{settings.model_name}@{alias}: top {k} for history {items}", title_justify="left")
    for column in ("rank", "item_id", "score", "because you viewed"):
        table.add_column(column, justify="right")
    with _native_stderr_shown_on_failure():
        answer = recommend_items(settings, items, k, alias, variant)
    for row in answer.itertuples(index=False):
        table.add_row(str(row.rank), str(row.item_id), f"{row.score:.4f}", str(row.because))
    console.print(table)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    alias: Annotated[str, typer.Option(envvar="ADAPTREC_SERVING_ALIAS", help="Registry alias to serve.")] = "champion",
    poll_seconds: Annotated[
        float, typer.Option(envvar="ADAPTREC_SERVING_POLL_SECONDS", help="How often to check whether the alias moved.")
    ] = 10.0,
    workers: Annotated[
        int | None,
        typer.Option(min=1, max=256, help="Worker processes, each with its own model [default: the CPU cores]."),
    ] = None,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Connections at once beyond which requests get 503 (per worker).")
    ] = 1024,
) -> None:
    """Serve recommendations over HTTP from the version holding ALIAS, switching versions when it moves.

    Clients send Authorization: Bearer $ADAPTREC_SERVING_TOKEN; see recsys_tasks/serving/app.py.
    """
    from recsys_tasks.serving.server import run

    # Every worker process reads its options from the environment.
    os.environ["ADAPTREC_SERVING_ALIAS"], os.environ["ADAPTREC_SERVING_POLL_SECONDS"] = alias, str(poll_seconds)
    run(host, port, workers or os.cpu_count() or 1, max_connections)


def main() -> None:
    # MLflow's database-migration chatter would bury a one-line error; its warnings still show.
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    log_console = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
    logging.basicConfig(
        level=logging.INFO, format="%(message)s", handlers=[RichHandler(console=log_console, show_path=False)]
    )
    try:
        app()
    except AdaptRecError as exc:
        errors.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()

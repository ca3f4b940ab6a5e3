"""The data gate: Great Expectations suites over the canonical tables of one run.

The suites run through Great Expectations checkpoints, one per table because a checkpoint hands the same
in-memory dataframe to all of its validation definitions:

- ``interactions``: exact schema, types, nulls, value ranges, duplicate events, size and cardinality;
- ``user_activity``: one row per user derived from the interactions, so that every user has enough history for a
  leave-one-out split and no single user (a bot) holds too large a share;
- ``item_activity``: one row per item, with a minimum number of interactions and no item holding too large a share;
- ``statistics``: one row of whole-table statistics: concentration of item popularity (Gini), the share of events
  at the busiest second and of users whose events all share one second (their order would be lost), and the share
  of rows that ingest found likely swapped (the item id is a user active at that moment, the user is not);
- ``drift``: today's data against the data set's last accepted snapshot (see ``drift.py``), when there is one;
- ``items``: schema and a unique, non-null item id;
- with feedback in the run (``data/impressions.parquet``, see ``data.feedback``): ``impressions``, every shown item's
  propensity in (0, 1]; ``feedback_events``, known event kinds, each joining an item its slate showed;
  ``feedback_statistics``, the share of slates with a click or a purchase in a plausible range (a click-through of
  0 over many slates is a feedback client that never reports; a very high one, a bot or a replayed log).

Every expectation is evaluated even when others fail. The full result goes to ``validation/result.json`` and the
HTML Data Docs to ``validation/data_docs/``; a failure raises one ``DataValidationError`` line that names the broken
expectations and points at the report.

An incremental run (one with ``data/window.json``) is judged on its new period alone (``data/new_events.parquet``),
not on the history it joins: the earlier periods were judged when they arrived. Every suite applies to a period as to
a whole data set (schema, ranges, duplicates; size and cardinality, where a period too small is a broken feed; the
shares of the busiest user, item and second; concentration; swapped rows; drift, against the last accepted period,
since the snapshot is taken from the period) except the fewest events per user: a returning user adds a few events
to a history of earlier periods, and the augment stage's k-core drops users too short for leave-one-out. On a pass
the period is accepted in the data set's event store and is history for the runs after; on a failure it stays
unaccepted and no later history holds it. A run whose source had nothing new is skipped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import polars as pl
import pyarrow.compute as pc

from recsys_tasks.constants import ITEM_COL, RATING_COL, TIME_COL, USER_COL
from recsys_tasks.contracts.event_store import EventStore
from recsys_tasks.contracts.layout import (
    DATA_DOCS_FOLDER,
    FEEDBACK_EVENTS_FILE,
    IMPRESSIONS_FILE,
    INTERACTIONS_FILE,
    ITEMS_FILE,
    NEW_EVENTS_FILE,
    USERS_FILE,
    VALIDATION_RESULT_FILE,
    WINDOW_FILE,
)
from recsys_tasks.contracts.reports import IngestWindow, ValidationSummary
from recsys_tasks.contracts.tables import CHANCE_SWAPPED_ROWS_COL, LIKELY_SWAPPED_ROWS_COL
from recsys_tasks.errors import ConfigError, DataValidationError, StageSkipped
from recsys_tasks.storage import RunDir
from recsys_tasks.validation.config import DriftConfig, ValidationConfig
from recsys_tasks.validation.drift import SnapshotStore, drift_statistics, take_snapshot

# Great Expectations takes seconds to import; it is imported inside the functions that run it so that importing
# ValidationConfig (Airflow DAG parsing, the CLI) stays fast.
if TYPE_CHECKING:
    from great_expectations.core import ExpectationSuiteValidationResult, ExpectationValidationResult
    from great_expectations.data_context import AbstractDataContext
    from great_expectations.expectations import Expectation

log = logging.getLogger(__name__)

ACTIVITY_COUNT_COL = "n_interactions"
SHARE_COL = "share_of_interactions"
ONE_SECOND_COL = "all_events_at_one_second"
INTERACTION_COLUMNS = [USER_COL, ITEM_COL, TIME_COL, RATING_COL]
ITEM_COLUMNS = [ITEM_COL, "title", "attributes"]

_DOCS_SITE_NAME = "adaptrec"
_LISTED_FAILURES = 5
_LISTED_EXAMPLES = 3
# Names as numpy spells them: GE compares them with the dtype of the pandas column.
_INTEGER_TYPES = ["int8", "int16", "int32", "int64"]
_FLOAT_TYPES = ["float32", "float64"]


@dataclass(frozen=True)
class DriftCheck:
    """Compare with, and on success replace, the accepted snapshot of one data set."""

    store: SnapshotStore
    dataset_key: str
    run_id: str
    config: DriftConfig = DriftConfig()


@dataclass(frozen=True)
class _Table:
    name: str
    frame: pd.DataFrame
    expectations: list[Expectation]


def validate(
    run: RunDir,
    config: ValidationConfig,
    drift_check: DriftCheck | None = None,
    library_log_level: str = "WARNING",
    events: EventStore | None = None,
) -> ValidationSummary:
    """Validate the canonical tables of ``run``; raise DataValidationError when any expectation fails.

    With a ``drift_check``, today's data is also compared with the data set's accepted snapshot, and
    on success its own statistics become the accepted snapshot. An incremental run is judged on its new
    period, which is accepted in ``events`` (the data set's event store) on success. Great Expectations
    logs at ``library_log_level`` (its INFO lines run to hundreds per validation).
    """
    window = IngestWindow(**run.read_json(WINDOW_FILE)) if run.exists(WINDOW_FILE) else None
    if window is not None and window.period is None:
        raise StageSkipped(window.note)
    if window is not None and (events is None or events.dataset_key != window.dataset_key):
        raise ConfigError(
            f"{run.uri} holds period {window.period} of {window.dataset_key}: judging it needs that data set's event"
            " store"
        )
    with _great_expectations_logging(library_log_level):
        summary = _validate(run, config, drift_check, window)
    if window is not None:
        # After the snapshot: a validation killed in between is repeated, and accepts the period then.
        summary.accepted_period = events.accept(window.period).period
    return summary


def _validate(
    run: RunDir, config: ValidationConfig, drift_check: DriftCheck | None, window: IngestWindow | None
) -> ValidationSummary:
    interactions_table = run.read_parquet(INTERACTIONS_FILE if window is None else NEW_EVENTS_FILE)
    interactions = interactions_table.to_pandas()
    items = run.read_parquet(ITEMS_FILE).to_pandas()
    user_activity = _user_activity(interactions)
    item_activity = _activity(interactions, ITEM_COL)
    tables = [
        _Table("interactions", interactions, _interaction_expectations(config, now=int(time.time()))),
        _Table("user_activity", user_activity, _user_activity_expectations(config, whole_history=window is None)),
        _Table("item_activity", item_activity, _item_activity_expectations(config)),
        _Table("items", items, _item_expectations()),
    ]
    tables += _feedback_tables(run, config)
    if _has_schema(interactions):
        statistics = _statistics(interactions, user_activity, item_activity, _likely_swapped_rows(run))
        tables.append(_Table("statistics", statistics, _statistics_expectations(config)))
    baseline = drift_check.store.load(drift_check.dataset_key) if drift_check else None
    drift, drift_baseline = None, "no drift check configured"
    if drift_check and baseline is None:
        drift_baseline = f"no accepted snapshot of {drift_check.dataset_key} yet: nothing to compare with"
        log.info("drift: %s", drift_baseline)
    elif drift_check and baseline is not None and _has_schema(interactions):
        drift = drift_statistics(pl.from_arrow(interactions_table), *baseline)
        drift_baseline = f"accepted snapshot of {drift_check.dataset_key} from run {baseline[0].run_id}"
        tables.append(_Table("drift", pd.DataFrame([drift]), _drift_expectations(drift_check.config)))
    with run.writing_folder(DATA_DOCS_FOLDER) as docs_dir:
        results = _run_checkpoints(tables, docs_dir, run_name=run.uri.rsplit("/", 1)[-1])

    result_uri = run.write_json(
        VALIDATION_RESULT_FILE,
        {
            "success": all(result.success for result in results.values()),
            "suites": {name: result.to_json_dict() for name, result in results.items()},
        },
    )
    failed = [
        f"{table.name}: {_describe_failure(expectation_result, set(table.frame.columns))}"
        for table in tables
        for expectation_result in results[table.name].results
        if not expectation_result.success
    ]
    summary = ValidationSummary(
        success=not failed,
        evaluated=sum(len(result.results) for result in results.values()),
        failed=failed,
        result_uri=result_uri,
        data_docs_uri=run.uri_of(f"{DATA_DOCS_FOLDER}/index.html"),
        drift=drift,
        drift_baseline=drift_baseline,
        snapshot_uri=None,
    )
    if failed:
        listed = "; ".join(failed[:_LISTED_FAILURES]) + ("; ..." if len(failed) > _LISTED_FAILURES else "")
        raise DataValidationError(
            f"data validation failed: {len(failed)} of {summary.evaluated} expectations failed: {listed}"
            f" (report: {summary.data_docs_uri})"
        )
    if drift_check:
        # Only data that passed every expectation becomes the baseline of the next run.
        snapshot, snapshot_items = take_snapshot(
            pl.from_arrow(interactions_table), drift_check.run_id, drift_check.config.top_items
        )
        summary.snapshot_uri = drift_check.store.save(drift_check.dataset_key, snapshot, snapshot_items)
    return summary


def _feedback_tables(run: RunDir, config: ValidationConfig) -> list[_Table]:
    """The feedback suites, when the run read a serving log with at least one slate in it."""
    if not run.exists(IMPRESSIONS_FILE):
        return []
    impressions = run.read_parquet(IMPRESSIONS_FILE).to_pandas()
    if impressions.empty:
        return []
    events = run.read_parquet(FEEDBACK_EVENTS_FILE).to_pandas()
    shown = impressions[["request_id", ITEM_COL]].drop_duplicates().assign(joins_impression=True)
    events = events.merge(shown, on=["request_id", ITEM_COL], how="left").fillna({"joins_impression": False})
    slates = impressions.groupby("request_id")["positive"].any()
    statistics = pd.DataFrame([{"click_through": float(slates.mean()), "slates": len(slates)}])
    return [
        _Table("impressions", impressions, _impression_expectations()),
        _Table("feedback_events", events, _feedback_event_expectations()),
        _Table("feedback_statistics", statistics, _feedback_statistics_expectations(config)),
    ]


def _has_schema(interactions: pd.DataFrame) -> bool:
    """Drift is only measured on data whose columns are there; the schema expectation reports the rest."""
    return {USER_COL, ITEM_COL, TIME_COL} <= set(interactions.columns)


def _activity(interactions: pd.DataFrame, key: str) -> pd.DataFrame:
    """Interactions per user (or item) and their share of all interactions.

    Empty when the key column is missing or its values cannot be grouped (e.g. lists): the
    interactions suite reports that problem.
    """
    empty = pd.DataFrame(
        {
            key: pd.Series(dtype="str"),
            ACTIVITY_COUNT_COL: pd.Series(dtype="int64"),
            SHARE_COL: pd.Series(dtype="float64"),
        }
    )
    if key not in interactions.columns:
        return empty
    try:
        counts = interactions.groupby(key).size().rename(ACTIVITY_COUNT_COL).reset_index()
    except TypeError:
        return empty
    return counts.assign(**{SHARE_COL: counts[ACTIVITY_COUNT_COL] / max(len(interactions), 1)})


def _likely_swapped_rows(run: RunDir) -> int:
    """Rows that ingest found likely swapped (user and item exchanged) beyond what chance gives; 0 for runs
    ingested before it counted them."""
    if not run.exists(USERS_FILE):
        return 0
    users = run.read_parquet(USERS_FILE)
    observed, by_chance = (
        pc.sum(users[name]).as_py() or 0 for name in (LIKELY_SWAPPED_ROWS_COL, CHANCE_SWAPPED_ROWS_COL)
    )
    return max(0, observed - by_chance)


def _user_activity(interactions: pd.DataFrame) -> pd.DataFrame:
    """Per user: interactions, their share, and whether several events all share one second."""
    activity = _activity(interactions, USER_COL)
    one_second = pd.Series(False, index=activity.index)
    if TIME_COL in interactions.columns and not activity.empty:
        try:
            seconds = activity[USER_COL].map(interactions.groupby(USER_COL)[TIME_COL].nunique())
            one_second = (activity[ACTIVITY_COUNT_COL] > 1) & (seconds == 1)
        except TypeError:  # timestamps of a wrong type: the interactions suite names them
            pass
    return activity.assign(**{ONE_SECOND_COL: one_second})


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts: 0 when all are equal, towards 1 when one holds everything."""
    ordered = np.sort(np.asarray(counts, dtype=np.float64))
    if ordered.size == 0 or ordered.sum() == 0:
        return 0.0
    ranks = np.arange(1, ordered.size + 1)
    return float((2 * ranks - ordered.size - 1) @ ordered / (ordered.size * ordered.sum()))


def _statistics(
    interactions: pd.DataFrame, user_activity: pd.DataFrame, item_activity: pd.DataFrame, likely_swapped_rows: int
) -> pd.DataFrame:
    """One row of whole-table statistics, each bounded by one expectation."""
    rows = max(len(interactions), 1)
    busiest_second = interactions[TIME_COL].value_counts().max() if len(interactions) else 0
    single_second_users = float(user_activity[ONE_SECOND_COL].mean()) if len(user_activity) else 0.0
    return pd.DataFrame(
        [
            {
                "item_popularity_gini": gini(item_activity[ACTIVITY_COUNT_COL].to_numpy()),
                "top_timestamp_share": busiest_second / rows,
                "single_timestamp_user_share": single_second_users,
                "likely_swapped_row_share": likely_swapped_rows / rows,
            }
        ]
    )


def _interaction_expectations(config: ValidationConfig, now: int) -> list[Expectation]:
    import great_expectations as gx

    # Schema first: when a column is missing, the failures listed in the error start with the cause.
    return [
        gx.expectations.ExpectTableColumnsToMatchSet(column_set=INTERACTION_COLUMNS, exact_match=True),
        gx.expectations.ExpectColumnValuesToBeOfType(column=USER_COL, type_="str"),
        gx.expectations.ExpectColumnValuesToBeInTypeList(column=ITEM_COL, type_list=_INTEGER_TYPES),
        gx.expectations.ExpectColumnValuesToBeInTypeList(column=TIME_COL, type_list=_INTEGER_TYPES),
        gx.expectations.ExpectColumnValuesToBeInTypeList(column=RATING_COL, type_list=_FLOAT_TYPES),
        *[gx.expectations.ExpectColumnValuesToNotBeNull(column=column) for column in INTERACTION_COLUMNS],
        gx.expectations.ExpectColumnValuesToBeBetween(column=ITEM_COL, min_value=0),
        gx.expectations.ExpectColumnValuesToBeBetween(
            column=RATING_COL, min_value=config.min_rating, max_value=config.max_rating
        ),
        gx.expectations.ExpectColumnValuesToBeBetween(
            column=TIME_COL, min_value=config.min_timestamp, max_value=now + config.max_future_seconds
        ),
        gx.expectations.ExpectCompoundColumnsToBeUnique(
            column_list=[USER_COL, ITEM_COL, TIME_COL], mostly=1.0 - config.max_duplicate_rate
        ),
        gx.expectations.ExpectTableRowCountToBeBetween(min_value=config.min_rows, max_value=config.max_rows),
        gx.expectations.ExpectColumnUniqueValueCountToBeBetween(
            column=USER_COL, min_value=config.min_users, max_value=config.max_users
        ),
        gx.expectations.ExpectColumnUniqueValueCountToBeBetween(
            column=ITEM_COL, min_value=config.min_items, max_value=config.max_items
        ),
    ]


def _user_activity_expectations(config: ValidationConfig, whole_history: bool) -> list[Expectation]:
    """Fewest events per user (on a whole history only) and the largest share of one user."""
    import great_expectations as gx

    fewest = gx.expectations.ExpectColumnValuesToBeBetween(
        column=ACTIVITY_COUNT_COL, min_value=config.min_interactions_per_user
    )
    return [
        *([fewest] if whole_history else []),
        gx.expectations.ExpectColumnMaxToBeBetween(
            column=SHARE_COL,
            max_value=config.max_top_user_share,
            description="one user holds too large a share of all interactions (a bot?)",
        ),
    ]


def _item_activity_expectations(config: ValidationConfig) -> list[Expectation]:
    import great_expectations as gx

    return [
        gx.expectations.ExpectColumnValuesToBeBetween(
            column=ACTIVITY_COUNT_COL, min_value=config.min_interactions_per_item
        ),
        gx.expectations.ExpectColumnMaxToBeBetween(
            column=SHARE_COL,
            max_value=config.max_top_item_share,
            description="one item holds too large a share of all interactions",
        ),
    ]


def _statistics_expectations(config: ValidationConfig) -> list[Expectation]:
    import great_expectations as gx

    limits = {
        "item_popularity_gini": (config.max_item_popularity_gini, "interactions concentrate on a few items"),
        "top_timestamp_share": (
            config.max_top_timestamp_share,
            "too many events share one timestamp (no spread: their order would come from tie-breaks)",
        ),
        "single_timestamp_user_share": (
            config.max_single_timestamp_user_share,
            "too many users have all their events at one timestamp (their order would be lost)",
        ),
        "likely_swapped_row_share": (
            config.max_likely_swapped_row_share,
            "user and item look swapped in some rows: their item id is a user active at that moment, their user is not",
        ),
    }
    return [
        gx.expectations.ExpectColumnMaxToBeBetween(column=name, max_value=limit, description=description)
        for name, (limit, description) in limits.items()
    ]


def _impression_expectations() -> list[Expectation]:
    import great_expectations as gx

    return [
        *[gx.expectations.ExpectColumnValuesToNotBeNull(column=column) for column in ("request_id", ITEM_COL)],
        gx.expectations.ExpectColumnValuesToBeBetween(
            column="propensity",
            min_value=0.0,
            max_value=1.0,
            strict_min=True,
            description="a propensity must be in (0, 1]: the serving policy logged an impossible probability",
        ),
    ]


def _feedback_event_expectations() -> list[Expectation]:
    import great_expectations as gx

    from recsys_tasks.contracts.feedback_store import FEEDBACK_EVENTS

    return [
        gx.expectations.ExpectColumnValuesToBeInSet(column="event", value_set=list(FEEDBACK_EVENTS)),
        gx.expectations.ExpectColumnValuesToBeInSet(
            column="joins_impression",
            value_set=[True],
            description="a feedback event names an item its slate did not show",
        ),
    ]


def _feedback_statistics_expectations(config: ValidationConfig) -> list[Expectation]:
    import great_expectations as gx

    return [
        gx.expectations.ExpectColumnValuesToBeBetween(
            column="click_through",
            min_value=config.min_click_through,
            max_value=config.max_click_through,
            description="share of slates with a click or a purchase outside the plausible range",
        )
    ]


def _drift_expectations(config: DriftConfig) -> list[Expectation]:
    import great_expectations as gx

    limits = {
        "item_popularity_psi": config.max_item_popularity_psi,
        "history_length_psi": config.max_history_length_psi,
        "new_item_rate": config.max_new_item_rate,
        "daily_volume_ratio": config.max_daily_volume_ratio,
    }
    return [gx.expectations.ExpectColumnMaxToBeBetween(column=name, max_value=limit) for name, limit in limits.items()]


def _item_expectations() -> list[Expectation]:
    import great_expectations as gx

    return [
        gx.expectations.ExpectTableColumnsToMatchSet(column_set=ITEM_COLUMNS, exact_match=True),
        gx.expectations.ExpectColumnValuesToNotBeNull(column=ITEM_COL),
        gx.expectations.ExpectColumnValuesToBeUnique(column=ITEM_COL),
    ]


def _run_checkpoints(
    tables: list[_Table], docs_dir: Path, run_name: str
) -> dict[str, ExpectationSuiteValidationResult]:
    """Validate every table; results keep the order of the suites' expectations."""
    import great_expectations as gx

    context = _ephemeral_context(docs_dir)
    source = context.data_sources.add_pandas("adaptrec")
    # One run id for all checkpoints groups their results as one run in the Data Docs.
    run_id = gx.RunIdentifier(run_name=run_name)
    results: dict[str, ExpectationSuiteValidationResult] = {}
    for table in tables:
        batch = source.add_dataframe_asset(table.name).add_batch_definition_whole_dataframe(table.name)
        suite = context.suites.add(gx.ExpectationSuite(name=table.name, expectations=table.expectations))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=table.name, data=batch, suite=suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=table.name,
                validation_definitions=[definition],
                result_format="SUMMARY",
            )
        )
        (result,) = checkpoint.run(batch_parameters={"dataframe": table.frame}, run_id=run_id).run_results.values()
        suite_order = {expectation.id: index for index, expectation in enumerate(suite.expectations)}
        result.results.sort(key=lambda expectation_result: suite_order[expectation_result.expectation_config.id])
        results[table.name] = result
    # Once for all tables: an UpdateDataDocsAction per checkpoint re-renders the whole site each time.
    context.build_data_docs(site_names=[_DOCS_SITE_NAME])
    return results


def _ephemeral_context(docs_dir: Path) -> AbstractDataContext:
    import great_expectations as gx
    from great_expectations.data_context.types.base import (
        DataContextConfig,
        InMemoryStoreBackendDefaults,
        ProgressBarsConfig,
    )

    # Without init_temp_docs_sites the context has no default site writing into a stray temporary folder.
    project_config = DataContextConfig(
        store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
        progress_bars=ProgressBarsConfig(globally=False),
    )
    context = gx.get_context(mode="ephemeral", project_config=project_config)
    context.add_data_docs_site(
        _DOCS_SITE_NAME,
        {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        },
    )
    return context


@contextmanager
def _great_expectations_logging(level: str) -> Iterator[None]:
    """GE's own loggers at ``level`` while it is imported and run (WARNING keeps its info chatter out)."""
    logger = logging.getLogger("great_expectations")
    previous_level = logger.level
    logger.setLevel(level)
    try:
        yield
    finally:
        logger.setLevel(previous_level)


def _describe_failure(result: ExpectationValidationResult, table_columns: set[str]) -> str:
    """One line: the expectation, its columns and what was observed."""
    kwargs = result.expectation_config.kwargs
    columns = [kwargs["column"]] if "column" in kwargs else list(kwargs.get("column_list", []))
    expectation = result.expectation_config.type + (f"({','.join(columns)})" if columns else "")
    # GE reports a missing column as an internal error (e.g. "list index out of range"); name the cause instead.
    missing_columns = [column for column in columns if column not in table_columns]
    if missing_columns:
        return f"{expectation} — missing column {', '.join(missing_columns)}"
    described = f"{expectation} — {_describe_problem(result)}"
    return (
        f"{result.expectation_config.description}: {described}" if result.expectation_config.description else described
    )


def _describe_problem(result: ExpectationValidationResult) -> str:
    kwargs = result.expectation_config.kwargs
    observed: dict[str, Any] = result.result
    exception_message = _exception_message(result.exception_info)
    if exception_message:
        return f"could not be evaluated: {exception_message}"
    if "unexpected_count" in observed:
        rows = f"{observed['unexpected_count']} of {observed['element_count']} rows {_unexpected_rows(result)}"
        examples = [_format(value) for value in observed.get("partial_unexpected_list", []) if not _is_missing(value)]
        if examples:
            rows += f" (e.g. {', '.join(list(dict.fromkeys(examples))[:_LISTED_EXAMPLES])})"
        return rows
    if "details" in observed and "mismatched" in observed["details"]:
        mismatched = observed["details"]["mismatched"]
        return ", ".join(f"{kind} columns {sorted(names)}" for kind, names in mismatched.items() if names)
    if "observed_value" in observed:
        return f"observed {_format(observed['observed_value'])}, expected {_expected(kwargs)}"
    return "failed"


def _unexpected_rows(result: ExpectationValidationResult) -> str:
    kwargs = result.expectation_config.kwargs
    expectation_type = result.expectation_config.type
    if expectation_type == "expect_column_values_to_not_be_null":
        return "null"
    if expectation_type == "expect_column_values_to_be_between":
        return f"outside {_range(kwargs)}"
    if expectation_type in ("expect_compound_columns_to_be_unique", "expect_column_values_to_be_unique"):
        tolerated = 1.0 - kwargs.get("mostly", 1.0)
        return f"repeated (tolerated: {tolerated:.1%})"
    return f"not matching {_expected(kwargs)}"


def _expected(kwargs: dict[str, Any]) -> str:
    if "type_" in kwargs:
        return kwargs["type_"]
    if "type_list" in kwargs:
        return "one of " + ", ".join(kwargs["type_list"])
    return _range(kwargs)


def _range(kwargs: dict[str, Any]) -> str:
    low, high = kwargs.get("min_value"), kwargs.get("max_value")
    return f"[{'-inf' if low is None else _format(low)}, {'inf' if high is None else _format(high)}]"


def _format(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"  # a share or a statistic: four digits say it
    return str(value)


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _exception_message(exception_info: dict[str, Any]) -> str | None:
    """The first exception message; GE nests exception info per metric when several metrics failed."""
    if exception_info.get("raised_exception"):
        return str(exception_info.get("exception_message")).splitlines()[0]
    for nested in exception_info.values():
        if isinstance(nested, dict) and (message := _exception_message(nested)):
            return message
    return None

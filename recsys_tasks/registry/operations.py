"""Registry operations for people: see the versions, move ``champion`` by hand, compare two versions.

Every manual move is recorded on the versions involved (who asked why, and when), so the registry
itself tells the story of the champion alias.
"""

from __future__ import annotations

import getpass
from datetime import UTC, datetime

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from recsys_tasks.constants import (
    CHAMPION_ALIAS,
    TAG_MANUAL_MOVE,
)
from recsys_tasks.contracts.metrics import PRIMARY_METRIC, evaluate_scores
from recsys_tasks.contracts.registry import version_uri, version_with_alias
from recsys_tasks.contracts.scoring import item_ids_of, recommender_scorer
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.errors import RegistryError
from recsys_tasks.registry.dashboard import RegistryOverview, VersionSummary, overview_of
from recsys_tasks.storage import RunDir


def _overview(client: MlflowClient, model_name: str) -> RegistryOverview:
    overview = overview_of(client, model_name)
    if overview is None:
        raise RegistryError(f"no registered model {model_name!r} in the registry yet: run the pipeline (make run)")
    return overview


def status(client: MlflowClient, model_name: str) -> list[dict]:
    """Every version, newest first, with its aliases, gate result, test NDCG@10 (the registry page's rows) and
    lineage: training mode, parent version, window and replay rows ("" where a version has no such tag)."""
    overview = _overview(client, model_name)
    return [
        {
            "version": str(version.version),
            "aliases": version.aliases,
            "gate": version.gate_status,
            "ndcg_at_10": f"{version.test_metrics[PRIMARY_METRIC]:.5f}"
            if PRIMARY_METRIC in version.test_metrics
            else "",
            "mode": version.training_mode or "",
            "parent": f"v{version.parent_version}" if version.parent_version else "",
            "window": version.window or "",
            "replay_rows": f"{version.replay_rows:,}" if version.replay_rows is not None else "",
            "airflow_run_id": version.airflow_run_id or "",
            "created": f"{version.created:%Y-%m-%d %H:%M}",
            "manual_move": version.manual_move or "",
        }
        for version in overview.versions
    ]


def lineage(versions: list[VersionSummary], version: str) -> str:
    """``version`` and the parents it was adapted from, by their tags, newest first: "v5 adapt ← v4 adapt ←
    v3 retrain". The chain ends at a version without a parent, or at a parent the registry no longer holds."""
    by_version = {str(summary.version): summary for summary in versions}
    links: list[str] = []
    seen: set[str] = set()
    current = version
    while current is not None:
        summary = by_version.get(current)
        if current in seen:  # a hand-edited tag could point back down the chain
            links.append(f"v{current} (again: the parent tags go in a circle)")
            break
        if summary is None:
            links.append(f"v{current} (not in the registry)")
            break
        seen.add(current)
        links.append(f"v{current} {summary.training_mode or '(no lineage)'}")
        current = summary.parent_version
    return " ← ".join(links)


def champion_lineage(client: MlflowClient, model_name: str) -> str:
    """One line: the champion's lineage chain (``lineage``), or that no version holds the alias."""
    overview = _overview(client, model_name)
    champion = overview.aliases.get(CHAMPION_ALIAS)
    if champion is None:
        return f"no version holds {CHAMPION_ALIAS} yet"
    return f"lineage of {CHAMPION_ALIAS}: {lineage(overview.versions, str(champion))}"


def move_champion(client: MlflowClient, model_name: str, version: str, reason: str, rollback: bool) -> str | None:
    """Point ``champion`` at ``version``; return the version it pointed at before.

    A rollback must go to an older version than the current champion. Nothing changes on refusal.
    """
    if not reason.strip():
        raise RegistryError("a manual champion move needs a --reason, recorded on the version")
    try:
        client.get_model_version(model_name, version)
    except MlflowException:
        raise RegistryError(f"{model_name} has no version {version}") from None
    current = version_with_alias(client, model_name)
    before = str(current.version) if current else None
    if before == str(version):
        raise RegistryError(f"version {version} of {model_name} already holds {CHAMPION_ALIAS}")
    if rollback and (before is None or int(version) >= int(before)):
        raise RegistryError(f"rollback goes to an older version than the champion ({before}); use promote instead")
    record = f"{'rollback' if rollback else 'promote'} from {before} by {getpass.getuser()} at "
    record += f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%SZ}: {reason.strip()}"
    client.set_model_version_tag(model_name, version, TAG_MANUAL_MOVE, record)
    client.set_registered_model_alias(model_name, CHAMPION_ALIAS, version)
    return before


def compare(client: MlflowClient, model_name: str, versions: list[str], run: RunDir) -> dict[str, dict[str, float]]:
    """Rank the test split of ``run`` with each version, by the evaluate stage's protocol."""
    splits = LeaveOneOutSplits.load(run)
    _, seen, targets = splits.holdout("test")
    item_ids = item_ids_of(run, splits.n_items)
    results = {}
    for version in versions:
        try:
            model = mlflow.pyfunc.load_model(version_uri(model_name, version)).unwrap_python_model()
        except MlflowException:
            raise RegistryError(f"{model_name} has no loadable version {version}") from None
        results[version] = evaluate_scores(recommender_scorer(model, item_ids), seen, seen, targets, splits.n_items)
    return results

"""Plan stage: does this run continue the champion (adapt) or train afresh (retrain), and why.

``auto`` adapts when all of these hold, and otherwise retrains, saying which failed:
1. a champion exists and carries a training state (registered by a run that knows how to continue it);
2. it was trained on this data set, in the shape this run would train (size, window, full fine-tuning,
   no ranking head); its item vocabulary is extended, never renumbered, so new items are always welcome;
3. the data gate's item-popularity drift is at most ``max_drift_to_adapt``;
4. fewer than ``retrain_every`` adapt runs have passed since the last retrain.
``adapt`` insists (an incompatible champion is a one-line error); ``retrain`` never looks.
An adapt run with no event after the champion's watermark has nothing to learn: the stage is skipped
and the champion stays. When adapting, the champion's training state is copied into the run
(``CHAMPION_STATE_DIR``) for the augment and adapt stages.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.compute as pc
from mlflow.tracking import MlflowClient
from pydantic import BaseModel

from recsys_tasks.constants import TIME_COL
from recsys_tasks.contracts.exported_model import ARTIFACT_FILES, TRAINING_STATE
from recsys_tasks.contracts.layout import CHAMPION_STATE_DIR, INTERACTIONS_FILE, TRAINING_PLAN_FILE
from recsys_tasks.contracts.registry import version_with_alias
from recsys_tasks.contracts.reports import IngestWindow, TrainingPlan, ValidationSummary
from recsys_tasks.contracts.training_state import TrainingState, has_state, read_state
from recsys_tasks.errors import ConfigError, StageSkipped
from recsys_tasks.registry.config import TrainingPlanConfig
from recsys_tasks.storage import RunDir

log = logging.getLogger(__name__)

# The encoder fields that make two models the same shape (dropout and the filter's share may differ).
SHAPE_FIELDS = ("d_model", "n_layers", "n_heads", "ffn_multiplier", "max_length", "filter_frequencies")


class ModelShape(BaseModel):
    """What this run would train, to compare with the champion's training state."""

    encoder: dict
    finetune_mode: str
    ranking_weight: float


def _incompatibility(state: TrainingState, version: str, dataset_key: str, shape: ModelShape) -> str | None:
    """Why the champion cannot be continued by this run, or None."""
    if state.dataset_key != dataset_key:
        return f"champion v{version} was trained on {state.dataset_key}, this run reads {dataset_key}"
    for field in SHAPE_FIELDS:
        if state.encoder.get(field) != shape.encoder.get(field):
            return (
                f"champion v{version} has {field}={state.encoder.get(field)}, this run trains "
                f"{field}={shape.encoder.get(field)}"
            )
    if shape.finetune_mode != "full" or state.finetune_mode != "full":
        return f"adapting continues full fine-tuning only (champion: {state.finetune_mode}, run: {shape.finetune_mode})"
    if shape.ranking_weight or state.ranking_weight:
        return "adapting trains retrieval only; a ranking head (ranking_weight > 0) is retrained"
    return None


def download_training_state(
    client: MlflowClient, model_name: str, version: str, folder: Path
) -> tuple[TrainingState, Path] | None:
    """The version's training state and its folder, downloaded under ``folder``; None when it has none.

    Only the state's folder is fetched, not the SavedModel and int8 variant beside it: a plan runs
    every night and reads nothing else."""
    import mlflow

    # The version's artifact location, resolved through this client's registry (a models:/ URI would be
    # resolved through mlflow's process-wide registry URI instead).
    artifacts = f"{client.get_model_version_download_uri(model_name, version)}/artifacts"
    state_name = ARTIFACT_FILES[TRAINING_STATE]
    listed = mlflow.artifacts.list_artifacts(artifact_uri=artifacts, tracking_uri=client.tracking_uri)
    if not any(entry.is_dir and Path(entry.path).name == state_name for entry in listed):
        return None
    local = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=f"{artifacts}/{state_name}", dst_path=str(folder), tracking_uri=client.tracking_uri
        )
    )
    return (read_state(local), local) if has_state(local) else None


def _watermark_text(watermark: int | None) -> str:
    return "none" if watermark is None else datetime.fromtimestamp(watermark, UTC).isoformat(timespec="seconds")


def plan_training(
    run: RunDir,
    client: MlflowClient,
    model_name: str,
    config: TrainingPlanConfig,
    dataset_key: str,
    shape: ModelShape,
    validation: ValidationSummary,
    window: IngestWindow | None,
) -> TrainingPlan:
    requested = config.training_mode
    plan = {"requested": requested, "dataset_key": dataset_key, "window": window.label if window else None}
    if requested == "retrain":
        return _write(run, TrainingPlan(**plan, mode="retrain", reason="training_mode=retrain"))
    champion = version_with_alias(client, model_name)
    with tempfile.TemporaryDirectory(prefix="champion-") as scratch:
        downloaded = (
            download_training_state(client, model_name, str(champion.version), Path(scratch)) if champion else None
        )
        reason = _reason_to_retrain(config, champion, downloaded, dataset_key, shape, validation)
        if reason and requested == "auto":
            return _write(run, TrainingPlan(**plan, mode="retrain", reason=reason))
        if reason and not reason.startswith(("drift", "retrain_every")):
            raise ConfigError(f"training_mode=adapt cannot continue the champion: {reason}")
        state, state_folder = downloaded
        version = str(champion.version)
        newest = pc.max(run.read_parquet(INTERACTIONS_FILE)[TIME_COL]).as_py()
        if state.watermark is not None and (newest is None or newest <= state.watermark):
            reason = (
                f"no event after champion v{version}'s watermark ({_watermark_text(state.watermark)}): "
                "nothing to adapt to, the champion stays"
            )
            _write(run, TrainingPlan(**plan, mode="skip", reason=reason, champion_version=version))
            raise StageSkipped(reason)
        with run.writing_folder(CHAMPION_STATE_DIR) as folder:
            shutil.copytree(state_folder, folder, dirs_exist_ok=True)
    continues = f"continues champion v{version} on the events after {_watermark_text(state.watermark)}"
    return _write(
        run,
        TrainingPlan(
            **plan,
            mode="adapt",
            reason=f"training_mode=adapt although {reason}; {continues}" if reason else continues,
            champion_version=version,
            watermark=state.watermark,
            adapt_runs_since_retrain=state.adapt_runs_since_retrain + 1,
        ),
    )


def _reason_to_retrain(
    config: TrainingPlanConfig,
    champion,
    downloaded: tuple[TrainingState, Path] | None,
    dataset_key: str,
    shape: ModelShape,
    validation: ValidationSummary,
) -> str | None:
    """Why this run should not adapt (the first reason found), or None."""
    if champion is None:
        return "no champion to continue from"
    if downloaded is None:
        return f"champion v{champion.version} carries no training state (registered before adaptation)"
    state = downloaded[0]
    if incompatible := _incompatibility(state, str(champion.version), dataset_key, shape):
        return incompatible
    drift = (validation.drift or {}).get("item_popularity_psi")
    if drift is not None and drift > config.max_drift_to_adapt:
        return f"drift: item-popularity PSI {drift:.3f} over max_drift_to_adapt {config.max_drift_to_adapt:.3f}"
    if state.adapt_runs_since_retrain >= config.retrain_every:
        return (
            f"retrain_every={config.retrain_every} reached: {state.adapt_runs_since_retrain} adapt runs since a retrain"
        )
    return None


def _write(run: RunDir, plan: TrainingPlan) -> TrainingPlan:
    log.info("training plan: %s (%s)", plan.mode, plan.reason)
    run.write_json(TRAINING_PLAN_FILE, plan.model_dump())
    return plan

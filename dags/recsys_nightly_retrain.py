"""
### recsys_nightly_retrain

Keeps the transformer recommender adapted to fresh behaviour, every night or on demand:

`ingest → validate → plan_training → augment → training_path`, then one of two paths:
`retrain: pretrain → finetune` or `adapt`, then `evaluate → register → promote → report`,
and `promote → batch_recommend` (on with the `batch_recommendations` Param).

* **validate** (Great Expectations) stops the run on bad data; nothing downstream runs.
* **plan_training** decides the path (Param `training_mode`): `auto` continues the champion on the
  events after its watermark when it can (same data set and shape, small drift, fewer than
  `retrain_every` adapt runs in a row) and otherwise retrains; the reason is recorded. With nothing
  new since the champion's watermark the run stops there and the champion stays.
* **adapt** grows the champion's item table for new items and trains on the new events plus its
  replay set (distilled towards the champion), keeping memory of the older behaviour.
* **pretrain / finetune / adapt / evaluate** run in the `gpu` pool on the training queue (under the
  KubernetesExecutor: in a GPU pod), with retries and back-off; pre-training resumes from its last checkpoint.
* **promote** moves the `champion` alias only when the metric gates pass; a rejected model is a
  decision recorded on the model version, not a failure.
* **batch_recommend** writes top-k for every known user from the newly crowned champion to
  `batch/recommendations.parquet`; it is skipped when the Param is off or the gate rejected the model.

Each task returns what it wrote (small JSON with the run directory) and the next task reads from there.
Runs nightly (`ADAPTREC_SCHEDULE`) and, with `ADAPTREC_TRIGGER_ASSET` set, whenever an upstream producer
updates that Asset; ingest updates `adaptrec://events` for consumers of fresh data.
Trigger with Params to change the data source, model size, epochs, fine-tune mode or gates.
Artifacts: `$ADAPTREC_HOME/runs/<run id>/`. Consumers load `models:/<name>@champion` from MLflow.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import Asset, dag, task

from recsys_tasks import constants, pipeline
from recsys_tasks.airflow_adapter import (
    airflow_params,
    dag_schedule,
    record_ingested_events,
    run_stage_in_airflow,
    training_executor_config,
)
from recsys_tasks.settings import get_settings

settings = get_settings()

RETRY_WITH_BACKOFF = dict(
    retries=2,
    retry_delay=timedelta(seconds=30),
    retry_exponential_backoff=True,
    max_retry_delay=timedelta(minutes=10),
)
EVENTS = Asset(constants.EVENTS_ASSET_URI, group="adaptrec")
TRAINING = dict(
    pool=constants.TRAINING_POOL,
    queue=settings.training_queue,
    executor_config=training_executor_config(settings),
    **RETRY_WITH_BACKOFF,
)


@task(retries=1, outlets=[EVENTS])
def ingest(**context) -> dict:
    """Read the data source into the canonical tables, users pseudonymised; an event of the events Asset says what
    was new (incremental sources add a period to the data set's event store)."""
    result = run_stage_in_airflow("ingest", context)
    record_ingested_events(EVENTS, result, context)
    return result


@task
def validate(tables: dict, **context) -> dict:
    """The data gate: Great Expectations suites and drift against the accepted snapshot."""
    return run_stage_in_airflow("validate", context, tables)


@task(**RETRY_WITH_BACKOFF)
def plan_training(validated: dict, **context) -> dict:
    """Adapt from the champion or retrain from scratch, and why; fetches the champion's training state."""
    return run_stage_in_airflow("plan_training", context, validated)


@task(retries=1)
def augment(plan: dict, **context) -> dict:
    """Clean, index and split the log (keeping the champion's item indices when adapting); augmented views."""
    return run_stage_in_airflow("augment", context, plan)


@task.branch
def training_path(plan: dict, sequences: dict) -> str:
    """The first task of the plan's path: pretrain (retrain) or adapt."""
    return pipeline.training_path(plan)[0]


@task(**TRAINING)
def pretrain(sequences: dict, **context) -> dict:
    """Self-supervised pre-training of the transformer encoder."""
    return run_stage_in_airflow("pretrain", context, sequences)


@task(**TRAINING)
def finetune(encoder: dict, **context) -> dict:
    """Fine-tune for next-item retrieval (TFRS) and export the float32 and int8 model."""
    return run_stage_in_airflow("finetune", context, encoder)


@task(**TRAINING)
def adapt(sequences: dict, **context) -> dict:
    """Continue the champion on the new events plus its replay set, and export like finetune."""
    return run_stage_in_airflow("adapt", context, sequences)


@task(**TRAINING, trigger_rule="none_failed_min_one_success")
def evaluate(model: dict | None, adapted: dict | None, **context) -> dict:
    """Rank the test split with the new model, popularity and the current champion (adapted: also the fresh
    and stability holdouts)."""
    return run_stage_in_airflow("evaluate", context, model or adapted)


@task(**RETRY_WITH_BACKOFF)
def register(evaluation: dict, **context) -> dict:
    """Register the model as a new MLflow version (alias challenger) with its model card."""
    return run_stage_in_airflow("register", context, evaluation)


@task(**RETRY_WITH_BACKOFF)
def promote(version: dict, **context) -> dict:
    """The metric gate; moves `champion` to the new version only when it passes."""
    return run_stage_in_airflow("promote", context, version)


@task(**RETRY_WITH_BACKOFF)
def batch_recommend(decision: dict, **context) -> dict:
    """Top-k for every known user from the newly crowned champion."""
    return run_stage_in_airflow("batch_recommend", context, decision)


@task(trigger_rule="none_failed")
def report(decision: dict | None, **context) -> dict:
    """The run's summary: metrics table, gate verdict, where to look; or why nothing was trained."""
    return run_stage_in_airflow("report", context, decision)


@dag(
    dag_id=constants.DAG_ID,
    schedule=dag_schedule(settings),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=airflow_params(),
    tags=["adaptrec", "recommender", "training"],
    doc_md=__doc__,
    default_args={"owner": "adaptrec", "retries": 0},
)
def recsys_nightly_retrain():
    tables = ingest()
    plan = plan_training(validate(tables))
    sequences = augment(plan)
    encoder, adapted = pretrain(sequences), adapt(sequences)
    training_path(plan, sequences) >> [encoder, adapted]
    model = finetune(encoder)
    decision = promote(register(evaluate(model, adapted)))
    report(decision)
    batch_recommend(decision)


recsys_nightly_retrain()

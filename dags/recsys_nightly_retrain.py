"""
### recsys_nightly_retrain

Keeps the transformer recommender adapted to fresh behaviour, every night or on demand:

`ingest → validate → augment → pretrain → finetune → evaluate → register → promote → report`,
and `promote → batch_recommend` (on with the `batch_recommendations` Param).

* **validate** (Great Expectations) stops the run on bad data; nothing downstream runs.
* **pretrain / finetune / evaluate** run in the `gpu` pool on the training queue, with retries and
  back-off; pre-training resumes from its last checkpoint.
* **promote** moves the `champion` alias only when the metric gates pass; a rejected model is a
  decision recorded on the model version, not a failure.
* **batch_recommend** writes top-k for every known user from the newly crowned champion to
  `batch/recommendations.parquet`; it is skipped when the Param is off or the gate rejected the model.

Trigger with Params to change the data source, model size, epochs, fine-tune mode or gates.
Artifacts: `$ADAPTREC_HOME/runs/<run id>/`. Consumers load `models:/<name>@champion` from MLflow.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import chain, dag, task

from recsys_tasks import constants
from recsys_tasks.pipeline import airflow_params, run_stage_in_airflow
from recsys_tasks.settings import get_settings

settings = get_settings()

RETRY_WITH_BACKOFF = dict(
    retries=2,
    retry_delay=timedelta(seconds=30),
    retry_exponential_backoff=True,
    max_retry_delay=timedelta(minutes=10),
)
TRAINING = dict(pool=constants.TRAINING_POOL, queue=settings.training_queue, **RETRY_WITH_BACKOFF)


def stage(name: str, **task_arguments):
    @task(task_id=name, **task_arguments)
    def run(**context) -> dict:
        return run_stage_in_airflow(name, context)

    return run()


@dag(
    dag_id=constants.DAG_ID,
    schedule=settings.schedule,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=airflow_params(),
    tags=["adaptrec", "recommender", "training"],
    doc_md=__doc__,
    default_args={"owner": "adaptrec", "retries": 0},
)
def recsys_nightly_retrain():
    promote = stage("promote", **RETRY_WITH_BACKOFF)
    chain(
        stage("ingest", retries=1),
        stage("validate"),
        stage("augment", retries=1),
        stage("pretrain", **TRAINING),
        stage("finetune", **TRAINING),
        stage("evaluate", **TRAINING),
        stage("register", **RETRY_WITH_BACKOFF),
        promote,
        stage("report"),
    )
    promote >> stage("batch_recommend", **RETRY_WITH_BACKOFF)


recsys_nightly_retrain()

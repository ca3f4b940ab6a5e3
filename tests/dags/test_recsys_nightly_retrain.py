"""DAG integrity: it imports cleanly and cheaply, and its wiring, retries, pools and Params are as designed."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from recsys_tasks import constants
from recsys_tasks.pipeline import STAGES
from tests.conftest import REPO

TRAINING_TASKS = ("pretrain", "finetune", "evaluate")


@pytest.fixture(scope="module")
def dag(airflow_database):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag(constants.DAG_ID)


MAIN_CHAIN = [stage for stage in STAGES if stage != "batch_recommend"]


def test_tasks_run_in_stage_order(dag):
    assert [task.task_id for task in dag.topological_sort() if task.task_id in MAIN_CHAIN] == MAIN_CHAIN
    for upstream, downstream in zip(MAIN_CHAIN, MAIN_CHAIN[1:]):
        expected = {downstream, "batch_recommend"} if upstream == "promote" else {downstream}
        assert dag.get_task(upstream).downstream_task_ids == expected


def test_each_stage_reads_what_the_stage_before_it_returned(dag):
    """The data flow is in the wiring: a task's argument is its upstream task's XCom (the run dir and summary)."""
    for upstream, downstream in [*zip(MAIN_CHAIN, MAIN_CHAIN[1:]), ("promote", "batch_recommend")]:
        (argument,) = dag.get_task(downstream).op_args
        assert argument.operator.task_id == upstream, downstream
    assert not dag.get_task("ingest").op_args


def test_the_batch_consumer_hangs_off_promote_and_blocks_nothing(dag):
    batch = dag.get_task("batch_recommend")
    assert batch.upstream_task_ids == {"promote"} and batch.downstream_task_ids == set()
    assert dag.params["batch_recommendations"] is False


def test_schedule_and_run_policy(dag):
    assert dag.catchup is False
    assert dag.max_active_runs == 1
    assert "adaptrec" in dag.tags
    assert dag.doc_md and "champion" in dag.doc_md


@pytest.mark.parametrize("task_id", TRAINING_TASKS)
def test_training_tasks_use_the_gpu_pool_with_backoff(dag, task_id):
    task = dag.get_task(task_id)
    assert task.pool == constants.TRAINING_POOL
    assert task.retries == 2
    assert task.retry_exponential_backoff


def test_validation_is_not_retried(dag):
    assert dag.get_task("validate").retries == 0


def test_params_offer_the_documented_choices(dag):
    params = dag.params
    assert params["data_source"] == "synthetic"
    assert params.get_param("model_size").schema["enum"] == ["tiny", "small", "base", "large"]
    assert params.get_param("finetune_mode").schema["enum"] == ["full", "frozen", "lora", "head"]
    assert params.get_param("pretrain_epochs").schema["minimum"] == 0


def test_a_malformed_param_is_refused_with_its_name(dag):
    from airflow.sdk.exceptions import ParamValidationError

    with pytest.raises(ParamValidationError, match="param model_size: 'gigantic' is not one of"):
        copy.deepcopy(dag.params)["model_size"] = "gigantic"


def test_parsing_the_dag_imports_no_heavy_library():
    probe = (
        "import runpy, sys, json; runpy.run_path(sys.argv[1]);"
        "heavy = ('tensorflow', 'mlflow', 'great_expectations', 'tensorflow_recommenders', 'pandas');"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, str(REPO / "dags" / "recsys_nightly_retrain.py")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []

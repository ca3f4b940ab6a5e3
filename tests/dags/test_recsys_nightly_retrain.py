"""DAG integrity: it imports cleanly and cheaply, and its wiring, retries, pools and Params are as designed."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest

from recsys_tasks import constants, pipeline
from recsys_tasks.pipeline import STAGES
from tests.conftest import REPO

TRAINING_TASKS = ("pretrain", "finetune", "adapt", "evaluate")

# Each task's XCom arguments: the data flow of one run, in the wiring.
READS = {
    "validate": ["ingest"],
    "plan_training": ["validate"],
    "augment": ["plan_training"],
    "training_path": ["plan_training", "augment"],
    "pretrain": ["augment"],
    "finetune": ["pretrain"],
    "adapt": ["augment"],
    "evaluate": ["finetune", "adapt"],
    "register": ["evaluate"],
    "promote": ["register"],
    "report": ["promote"],
    "batch_recommend": ["promote"],
}


@pytest.fixture(scope="module")
def dag(airflow_database):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    assert bag.import_errors == {}
    return bag.get_dag(constants.DAG_ID)


def test_every_stage_is_a_task_and_runs_after_what_it_reads(dag):
    assert set(STAGES) | {"training_path"} == {task.task_id for task in dag.tasks}
    for task_id, upstreams in READS.items():
        assert dag.get_task(task_id).upstream_task_ids >= set(upstreams), task_id
    order = [task.task_id for task in dag.topological_sort()]
    assert all(order.index(upstream) < order.index(task) for task, ups in READS.items() for upstream in ups)


def test_each_stage_reads_what_the_stages_before_it_returned(dag):
    """The data flow is in the wiring: a task's arguments are its upstream tasks' XComs (run dir and summary)."""
    for task_id, upstreams in READS.items():
        assert [argument.operator.task_id for argument in dag.get_task(task_id).op_args] == upstreams, task_id
    assert not dag.get_task("ingest").op_args


def test_the_branch_takes_one_training_path_and_evaluate_follows_either(dag):
    assert dag.get_task("training_path").downstream_task_ids == {"pretrain", "adapt"}
    assert pipeline.training_path({"mode": "retrain"})[0] == "pretrain"
    assert pipeline.training_path({"mode": "adapt"}) == ("adapt",)
    assert dag.get_task("evaluate").trigger_rule == "none_failed_min_one_success"


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


def in_a_fresh_process(expression: str, setup: str = "", env: dict[str, str] | None = None):
    """``expression``'s value (JSON) in a new interpreter that has run the DAG file (namespace ``dag_file``), then
    the statements ``setup``."""
    code = "\n".join(
        ("import json, runpy, sys", "dag_file = runpy.run_path(sys.argv[1])", setup, f"print(json.dumps({expression}))")
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "dags" / "recsys_nightly_retrain.py")],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_parsing_the_dag_imports_no_heavy_library():
    heavy = ("tensorflow", "mlflow", "great_expectations", "tensorflow_recommenders", "pandas")
    assert in_a_fresh_process(f"sorted(m for m in {heavy!r} if m in sys.modules)") == []


def test_under_kubernetes_only_the_training_tasks_get_a_pod_and_the_dag_still_serialises():
    serialised = (
        "from airflow.serialization.serialized_objects import DagSerialization\n"
        "dag = DagSerialization.from_dict(DagSerialization.to_dict(dag_file['recsys_nightly_retrain']()))"
    )
    pods = in_a_fresh_process(
        "sorted(t.task_id for t in dag.tasks if 'pod_override' in t.executor_config)",
        serialised,
        {"ADAPTREC_EXECUTOR": "kubernetes"},
    )
    assert pods == sorted(TRAINING_TASKS)

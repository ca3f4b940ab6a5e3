"""Data-parallel training with TensorFlow's own strategies, chosen by the ``distribution`` setting.

- ``none``: one device, TensorFlow's default strategy;
- ``mirrored``: ``MirroredStrategy`` over the GPUs of one worker (one replica on a CPU-only worker);
- ``multi_worker``: ``MultiWorkerMirroredStrategy`` over the workers ``TF_CONFIG`` names. Every worker runs the
  same stage command on the same run folder and trains in lockstep; only the chief writes artifacts and logs
  to MLflow, and the others keep their checkpoints in folders of their own (saving reads variables that are
  reduced across workers, so every worker must save).

A global batch is what one process would train on: ``fit_epoch`` cuts each into one contiguous part per
replica, and each model's loss is its replica's mean divided by the number of replicas
(``models.losses.replica_share``), because optimizers sum the replicas' gradients.
"""

from __future__ import annotations

import json
import os
from functools import cache
from typing import Literal

import numpy as np

from recsys_tasks.contracts.splits import NextItemRows
from recsys_tasks.errors import ConfigError
from recsys_tasks.training.datasets import PaddedArrays, batches_dataset, length_bucketed_batches, length_bucketed_rows

DistributionKind = Literal["none", "mirrored", "multi_worker"]


@cache
def training_strategy(kind: DistributionKind):
    """The process's strategy of ``kind``; made once, since collective ops are configured once per process."""
    import tensorflow as tf

    if kind == "none":
        return tf.distribute.get_strategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    if kind == "multi_worker":
        if not os.environ.get("TF_CONFIG"):
            raise ConfigError("distribution multi_worker needs TF_CONFIG naming the cluster and this worker's task")
        _check_tf_config(os.environ["TF_CONFIG"])
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ConfigError(f"unknown distribution {kind!r}: choose none, mirrored or multi_worker")


def _check_tf_config(raw: str) -> None:
    try:
        tf_config = json.loads(raw)
        tf_config["cluster"]["worker"]  # noqa: B018  (a cluster without workers is malformed)
        task = tf_config["task"]
        task_type, index = task["type"], int(task["index"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f'TF_CONFIG is not {{"cluster": {{"worker": [...]}}, "task": {{"type": ..., "index": ...}}}}: {exc}'
        ) from exc
    members = tf_config["cluster"].get(task_type, [])
    if not 0 <= index < len(members):
        raise ConfigError(
            f"TF_CONFIG's task {task_type} {index} is not in its cluster ({len(members)} {task_type} tasks)"
        )


def is_chief(strategy) -> bool:
    """Whether this process writes the stage's artifacts: always, but for the non-chief workers of a cluster."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if "chief" in resolver.cluster_spec().jobs:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


def worker_folder_name(name: str, strategy) -> str:
    """``name`` for the chief; ``name`` suffixed with the worker's task for the others."""
    if is_chief(strategy):
        return name
    resolver = strategy.cluster_resolver
    return f"{name}-{resolver.task_type}-{resolver.task_id}"


def fit_epoch(model, source: NextItemRows | PaddedArrays, batch_size: int, rng: np.random.Generator) -> None:
    """One ``fit`` of the compiled ``model`` over an epoch of ``source``'s length-bucketed batches.

    Under a strategy of several replicas each batch is a global batch: every replica trains on one contiguous
    part of it, each worker's input pipeline yields its own replicas' parts, and a batch with fewer rows than
    replicas (at most the epoch's last) is left out.
    """
    strategy = model.distribute_strategy
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        model.fit(length_bucketed_batches(source, batch_size, rng), verbose=0)
        return
    batches = [rows for rows in length_bucketed_rows(source.lengths, batch_size, rng) if len(rows) >= replicas]

    def worker_pipeline(context):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local
        return batches_dataset(source, batches, range(first, first + local), replicas)

    model.fit(strategy.distribute_datasets_from_function(worker_pipeline), steps_per_epoch=len(batches), verbose=0)

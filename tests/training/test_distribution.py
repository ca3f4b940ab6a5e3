"""MultiWorkerMirroredStrategy for real: two worker processes on loopback against one process, same global batch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import recsys_tasks  # noqa: F401  (switches TensorFlow to tf-keras before it loads)

# isort: split
import pytest

from recsys_tasks.augmentation.augment import augment
from recsys_tasks.augmentation.config import AugmentConfig
from recsys_tasks.contracts.layout import EXPORTED_MODEL_DIR, PRETRAIN_CHECKPOINTS, PRETRAINED_ENCODER_DIR
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.ingest import ingest
from recsys_tasks.errors import ConfigError
from recsys_tasks.storage import RunDir
from recsys_tasks.training.config import FinetuneConfig, PretrainConfig
from recsys_tasks.training.distribution import is_chief, training_strategy
from recsys_tasks.training.finetune import finetune
from recsys_tasks.training.pretrain import pretrain
from tests.conftest import free_port

PRETRAIN = PretrainConfig(model_size="tiny", batch_size=64, epochs=1, dropout=0.0)
# Two epochs of 64-row global batches; each worker trains 32 rows of each.
FINETUNE = FinetuneConfig(batch_size=64, epochs=2, patience=2, seed=0)
# Each replica's loss is the mean over its half of a batch; half-means average to the batch mean when both
# halves hold as many targets (one per row here), so the two runs differ only by floating-point order and
# batches of an odd number of rows; that keeps them within a tenth of a percent over the first epochs.
LOSS_TOLERANCE = 0.005

WORKER = """
import json, sys
import recsys_tasks
from recsys_tasks.storage import RunDir
from recsys_tasks.training.config import FinetuneConfig, PretrainConfig
stage, run, config, out = sys.argv[1:5]
if stage == "pretrain":
    from recsys_tasks.training.pretrain import pretrain
    summary = pretrain(RunDir(run), PretrainConfig.model_validate_json(config), None, "multi_worker")
else:
    from recsys_tasks.training.finetune import finetune
    summary = finetune(RunDir(run), FinetuneConfig.model_validate_json(config), None, None, None, "multi_worker")
open(out, "w").write(summary.model_dump_json())
"""


@pytest.fixture(scope="module")
def pretrained_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    run = RunDir(str(tmp_path_factory.mktemp("distribution") / "pretrained"))
    ingest(run, IngestConfig(source="synthetic", synthetic_size="tiny", seed=0), b"test-key")
    augment(run, AugmentConfig(max_length=20, seed=0))
    pretrain(run, PRETRAIN)
    return run


def run_two_workers(stage: str, source: RunDir, config, folder: Path) -> list[tuple[Path, dict]]:
    """Runs ``stage`` in two MultiWorkerMirroredStrategy workers on loopback, each on its own copy of ``source``
    (so that what each one writes shows); each worker's (run folder, summary)."""
    ports = [free_port(), free_port()]
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    processes, results = [], []
    for index in range(2):
        run = folder / f"worker-{index}"
        shutil.copytree(source.uri, run)
        out = folder / f"worker-{index}.json"
        env = os.environ | {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "TF_USE_LEGACY_KERAS": "1",
        }
        command = [sys.executable, "-c", WORKER, stage, str(run), config.model_dump_json(), str(out)]
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        results.append((run, out))
    try:
        for process in processes:
            output, _ = process.communicate(timeout=300)
            assert process.returncode == 0, output.decode()[-3000:]
    finally:
        for process in processes:
            process.kill()
    return [(run, json.loads(out.read_text())) for run, out in results]


def test_two_workers_fine_tune_as_one_process_does_on_the_same_global_batches(pretrained_run, tmp_path):
    alone = RunDir(str(tmp_path / "alone"))
    shutil.copytree(pretrained_run.uri, alone.uri)
    single = finetune(alone, FINETUNE)
    (chief_run, chief), (other_run, other) = run_two_workers("finetune", pretrained_run, FINETUNE, tmp_path)

    assert chief["training_losses"] == other["training_losses"]  # in lockstep: one model
    assert len(chief["training_losses"]) == len(single.training_losses) == FINETUNE.epochs
    for together, by_itself in zip(chief["training_losses"], single.training_losses, strict=True):
        assert together == pytest.approx(by_itself, rel=LOSS_TOLERANCE)
    assert chief["training_losses"][-1] < chief["training_losses"][0]
    assert chief["validation"]["ndcg_at_10"] == pytest.approx(single.validation["ndcg_at_10"], abs=0.02)
    assert (chief_run / EXPORTED_MODEL_DIR).is_dir()
    assert not (other_run / EXPORTED_MODEL_DIR).exists()  # only the chief writes artifacts


def test_two_workers_pre_train_in_lockstep_and_only_the_chief_exports(pretrained_run, tmp_path):
    source = RunDir(str(tmp_path / "augmented"))
    shutil.copytree(pretrained_run.uri, source.uri, ignore=shutil.ignore_patterns("pretrain*"))
    (chief_run, chief), (other_run, other) = run_two_workers("pretrain", source, PRETRAIN, tmp_path)

    assert chief["losses"] == other["losses"]
    assert (chief_run / PRETRAINED_ENCODER_DIR).is_dir()
    assert not (other_run / PRETRAINED_ENCODER_DIR).exists()
    # Saving reads variables reduced across workers, so each saves; the others into folders of their own.
    assert list((chief_run / PRETRAIN_CHECKPOINTS).glob("ckpt-1.index"))
    assert list((other_run / f"{PRETRAIN_CHECKPOINTS}-worker-1").glob("ckpt-1.index"))


def test_a_process_alone_is_the_chief_of_the_default_strategy():
    assert training_strategy("none").num_replicas_in_sync == 1
    assert is_chief(training_strategy("none"))


@pytest.mark.parametrize(
    ("tf_config", "problem"),
    [
        (None, "needs TF_CONFIG"),
        ("{not json", "TF_CONFIG is not"),
        (
            '{"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "worker", "index": 3}}',
            "worker 3 is not in its cluster",
        ),
    ],
)
def test_multi_worker_training_without_a_usable_tf_config_is_refused_in_one_line(monkeypatch, tf_config, problem):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=problem) as refused:
        training_strategy("multi_worker")
    assert "\n" not in str(refused.value)

"""Baselines: EASE (the closed form, λ chosen on validation only, beating popularity on planted structure),
and popularity reproducing the published protocol check on Amazon Beauty exactly.

Leave-one-out, every item ranked, the user's history excluded, popularity counted over training
and validation items only: HR@10 0.0137 and NDCG@10 0.0061 on the S3-Rec files. A different number
there means the protocol differs, and no other benchmark number should be believed.
"""

from __future__ import annotations

import numpy as np
import pytest

from recsys_tasks.augmentation.augment import augment
from recsys_tasks.augmentation.config import AugmentConfig
from recsys_tasks.contracts.metrics import evaluate_scores
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.data.config import IngestConfig
from recsys_tasks.data.ingest import ingest
from recsys_tasks.evaluation.baselines import EASE, popularity_scorer, tuned_ease
from recsys_tasks.pipeline import run_dir, run_stage
from recsys_tasks.settings import Settings
from recsys_tasks.storage import RunDir
from tests.conftest import AMAZON_BEAUTY


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> LeaveOneOutSplits:
    run = RunDir(str(tmp_path_factory.mktemp("baselines") / "run"))
    ingest(run, IngestConfig(source="synthetic", synthetic_size="tiny", seed=0), b"test-key")
    augment(run, AugmentConfig(max_length=20, seed=0))
    return LeaveOneOutSplits.load(run)


def test_ease_solves_its_closed_form() -> None:
    histories = [[1, 2], [2, 3], [1, 2, 3], [3, 4], [4]]
    l2 = 0.5

    model = EASE.fit(histories, n_items=4, l2=l2)

    X = np.zeros((len(histories), 5))
    for row, history in enumerate(histories):
        X[row, history] = 1
    gram = X.T @ X + l2 * np.eye(5)
    # The EASE optimality condition: (XᵀX + λI) B = XᵀX - diag(μ) for some μ, with diag(B) = 0.
    residual = gram @ model.weights - X.T @ X
    off_diagonal = residual - np.diag(np.diag(residual))
    np.testing.assert_allclose(off_diagonal, 0, atol=1e-5)
    np.testing.assert_array_equal(np.diag(model.weights), 0)


def test_ease_scores_items_from_the_whole_history() -> None:
    model = EASE.fit([[1, 2], [1, 2], [3, 4], [3, 4]], n_items=4, l2=0.1)

    scores = model.scorer()(np.array([[0, 1], [0, 3]]))

    assert scores[0, 2] > scores[0, 4] and scores[1, 4] > scores[1, 2]


def test_tuned_ease_beats_popularity_and_tunes_on_validation_only(synthetic: LeaveOneOutSplits) -> None:
    grid = (1.0, 10.0, 100.0)

    model, validation = tuned_ease(synthetic, grid)

    assert set(validation) == set(grid) and model.l2 == max(validation, key=validation.get)
    _, seen, targets = synthetic.holdout("test")
    ease = evaluate_scores(model.scorer(), seen, seen, targets, synthetic.n_items)
    popularity = evaluate_scores(popularity_scorer(synthetic), seen, seen, targets, synthetic.n_items)
    assert ease["ndcg_at_10"] > 1.5 * popularity["ndcg_at_10"], (ease, popularity)


@pytest.mark.skipif(not AMAZON_BEAUTY.exists(), reason="Amazon Beauty is not in ../shared/data")
def test_popularity_on_amazon_beauty_matches_the_published_protocol_check(tmp_path):
    settings = Settings(home=tmp_path)
    for stage in ("ingest", "validate", "augment"):
        run_stage(stage, {"data_source": "sequence", "data_path": str(AMAZON_BEAUTY)}, "beauty", settings)
    splits = LeaveOneOutSplits.load(run_dir("beauty", settings))
    inputs, seen, targets = splits.holdout("test")

    metrics = evaluate_scores(popularity_scorer(splits), inputs, seen, targets, splits.n_items)

    assert len(targets) == 22_363
    assert round(metrics["hr_at_10"], 4) == 0.0137
    assert round(metrics["ndcg_at_10"], 4) == 0.0061

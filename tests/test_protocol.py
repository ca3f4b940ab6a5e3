"""The evaluation protocol reproduces the published popularity check on Amazon Beauty exactly.

Leave-one-out, every item ranked, the user's history excluded, popularity counted over training
and validation items only: HR@10 0.0137 and NDCG@10 0.0061 on the S3-Rec files. A different number
here means the protocol differs, and no other benchmark number should be believed.
"""

from __future__ import annotations

import pytest

from recsys_tasks.contracts.metrics import evaluate_scores
from recsys_tasks.contracts.splits import LeaveOneOutSplits
from recsys_tasks.evaluation.baselines import popularity_scorer
from recsys_tasks.pipeline import run_dir, run_stage
from recsys_tasks.settings import Settings
from tests.test_sources import AMAZON_BEAUTY


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

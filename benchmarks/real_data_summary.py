"""Ingest, validate and clean the public data sets in ../shared/data; write what each step kept.

.venv/bin/python -m benchmarks.real_data_summary   (from the repository root)
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from recsys_tasks.contracts.layout import AUGMENT_SUMMARY_FILE
from recsys_tasks.pipeline import run_dir, run_stage
from recsys_tasks.settings import Settings

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
RESULT = Path(__file__).parent / "results" / "real_data_summary.md"
DATASETS = {
    "MovieLens-100K, every rating a positive": {"data_source": "movielens-100k", "data_path": "ml-100k"},
    "MovieLens-100K, rating ≥ 4, 5-core": {
        "data_source": "movielens-100k",
        "data_path": "ml-100k",
        "positive_min_rating": 4,
        "user_core": 5,
        "item_core": 5,
    },
    "Amazon Beauty (S3-Rec files), 5-core": {
        "data_source": "sequence",
        "data_path": "amazon-beauty/Beauty.txt",
        "user_core": 5,
        "item_core": 5,
    },
}


def main() -> None:
    lines = ["| data set | step | rows | users | items | rows removed |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as home:
        settings = Settings(home=Path(home))
        for number, (name, params) in enumerate(DATASETS.items()):
            params = {**params, "data_path": str(SHARED_DATA / params["data_path"])}
            for stage in ("ingest", "validate", "augment"):
                run_stage(stage, params, f"summary-{number}", settings)
            for step in run_dir(f"summary-{number}", settings).read_json(AUGMENT_SUMMARY_FILE)["cleaning"]:
                lines.append(
                    f"| {name} | {step['step']} | {step['rows']:,} | {step['users']:,} | {step['items']:,} "
                    f"| {step['rows_removed']:,} |"
                )
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""Pipeline-wide constants and defaults. Constants only: no logic, no imports of heavy libraries."""

DAG_ID = "recsys_nightly_retrain"
REGISTERED_MODEL_NAME = "adaptrec-sequential-retrieval"
EXPERIMENT_NAME = "adaptrec-nightly-retrain"
CHAMPION_ALIAS = "champion"
CHALLENGER_ALIAS = "challenger"

# Canonical interaction table columns (see recsys_tasks.contracts.tables).
USER_COL = "user_id"
ITEM_COL = "item_id"
TIME_COL = "timestamp"
RATING_COL = "rating"

# Item index 0 pads sequences; item indices 1..n_items are real items; n_items + 1 is the [MASK] token.
PAD_INDEX = 0

# MLflow tags written on runs and model versions.
TAG_AIRFLOW_RUN_ID = "adaptrec.airflow_run_id"
TAG_GATE_STATUS = "adaptrec.gate.status"
TAG_GATE_REASONS = "adaptrec.gate.reasons"
TAG_GATE_REPORT = "adaptrec.gate.report"
TAG_TEST_METRIC_PREFIX = "adaptrec.test."
TAG_FINETUNE_MODE = "adaptrec.finetune_mode"
TAG_TRAINABLE_PARAMETERS = "adaptrec.trainable_parameters"
TAG_MANUAL_MOVE = "adaptrec.champion.manual_move"
TAG_MODEL_CARD = "adaptrec.model_card"
# Lineage of a version: how it was trained, from which parent, on which window of which data set.
TAG_DATASET = "adaptrec.dataset"
TAG_TRAINING_MODE = "adaptrec.training.mode"
TAG_TRAINING_REASON = "adaptrec.training.reason"
TAG_PARENT_VERSION = "adaptrec.lineage.parent_version"
TAG_WINDOW = "adaptrec.lineage.window"
TAG_WATERMARK = "adaptrec.lineage.watermark"
TAG_REPLAY_ROWS = "adaptrec.lineage.replay_rows"
TAG_NEW_ROWS = "adaptrec.lineage.new_rows"
TAG_ADAPT_RUNS = "adaptrec.lineage.adapt_runs_since_retrain"

TRAINING_POOL = "gpu"
# The Airflow Asset the ingest task updates when it has read a source: its events carry the data set, the period
# and how many rows were new, for consumers that act on fresh data.
EVENTS_ASSET_URI = "adaptrec://events"

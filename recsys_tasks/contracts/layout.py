"""Every path inside a run directory (``$ADAPTREC_HOME/runs/<run key>/``), named once.

Stages read and write through ``recsys_tasks.storage.RunDir`` with these names; a file's owner is the
stage in its first path segment.
"""

# ingest
INTERACTIONS_FILE = "data/interactions.parquet"
ITEMS_FILE = "data/items.parquet"
USERS_FILE = "data/users.parquet"
# ingest of an incremental source (contracts.event_store): the new period alone, and what it added
NEW_EVENTS_FILE = "data/new_events.parquet"
WINDOW_FILE = "data/window.json"
# ingest with feedback (data.feedback): every item the logged slates of the window showed, and the events against them
IMPRESSIONS_FILE = "data/impressions.parquet"
FEEDBACK_EVENTS_FILE = "data/feedback_events.parquet"
# validate
VALIDATION_RESULT_FILE = "validation/result.json"
VALIDATION_SUMMARY_FILE = "validation/summary.json"
DATA_DOCS_FOLDER = "validation/data_docs"
# plan_training: the mode of this run and, when adapting, the champion's training state it continues from
TRAINING_PLAN_FILE = "plan/plan.json"
CHAMPION_STATE_DIR = "plan/champion_state"
# augment
SEQUENCES_FILE = "augment/sequences.parquet"
VOCAB_FILE = "augment/item_vocab.parquet"
VIEWS_FILE = "augment/views.parquet"
AUGMENT_SUMMARY_FILE = "augment/summary.json"
# pretrain: a TF checkpoint of the encoder and its config; checkpoints of unfinished epochs are scratch
PRETRAINED_ENCODER_DIR = "pretrain/encoder"
PRETRAIN_CHECKPOINTS = "pretrain/checkpoints"
# finetune or adapt: the exported model (files: recsys_tasks.contracts.exported_model.ARTIFACT_FILES), with the
# training state the next run continues from (recsys_tasks.contracts.training_state)
EXPORTED_MODEL_DIR = "finetune/model"
# evaluate
REPORT_FILE = "evaluate/report.json"
PLOT_FILE = "evaluate/comparison.png"
# TFRS protocol check (evaluation.tfrs_protocol): the held-out ratings of the rating task
TEST_RATINGS_FILE = "protocol2/test_ratings.parquet"
# register / promote
REGISTRATION_FILE = "register/registration.json"
DECISION_FILE = "promote/decision.json"
# batch_recommend
RECOMMENDATIONS_FILE = "batch/recommendations.parquet"
# report
RUN_SUMMARY_FILE = "summary.json"

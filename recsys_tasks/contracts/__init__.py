"""The artifact contract: what one stage leaves for the next, and where.

Stages never import each other; they meet here. ``layout`` names every path of a run directory,
``tables`` the canonical tables, ``reports`` the typed JSON artifacts (summaries, evaluation report,
registration, gate decision, training plan), ``splits`` the leave-one-out view of the augmented sequences,
``exported_model`` / ``int8_variant`` the exported-model format, ``training_state`` what a version
carries for the next run to continue training it, ``metrics`` the ranking protocol
every comparison uses, ``registry`` the registered-model naming, ``tracking`` the MLflow run of
an Airflow run and ``event_store`` the periods of an incremental data set. Only ``layout``,
``tables`` and ``reports`` are light enough for DAG parsing.
"""

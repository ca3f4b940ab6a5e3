"""Alembic migrations of the feedback store (``recsys_tasks.contracts.feedback_store``)."""

"""Slates served, the items shown with their propensities, and user feedback.

Revision ID: 0001
Revises:
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "slates",
        sa.Column("request_id", sa.String(36), primary_key=True),
        sa.Column("served_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("user_pseudonym", sa.String(64), nullable=True),
        sa.Column("model_name", sa.String(256), nullable=False),
        sa.Column("model_version", sa.String(32), nullable=False),
        sa.Column("variant", sa.String(16), nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("exploration", sa.Float, nullable=False),
        sa.Column("candidates", sa.Integer, nullable=False),
        sa.Column("history", sa.JSON, nullable=False),
        sa.Column("exclude", sa.JSON, nullable=False),
        sa.Column("k", sa.Integer, nullable=False),
    )
    op.create_index("ix_slates_served_at", "slates", ["served_at"])
    op.create_index("ix_slates_user_pseudonym", "slates", ["user_pseudonym"])
    op.create_table(
        "slate_items",
        sa.Column(
            "request_id",
            sa.String(36),
            sa.ForeignKey("slates.request_id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("position", sa.Integer, primary_key=True),
        sa.Column("item_id", sa.BigInteger, nullable=False),
        sa.Column("score", sa.Float, nullable=False),
        sa.Column("propensity", sa.Float, nullable=False),
    )
    op.create_table(
        "feedback",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.String(36), sa.ForeignKey("slates.request_id", ondelete="CASCADE"), nullable=False),
        sa.Column("item_id", sa.BigInteger, nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_feedback_request_id", "feedback", ["request_id"])
    op.create_index("ix_feedback_occurred_at", "feedback", ["occurred_at"])


def downgrade() -> None:
    op.drop_table("feedback")
    op.drop_table("slate_items")
    op.drop_table("slates")

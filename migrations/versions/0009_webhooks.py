"""Webhooks: a URL and signing secret per user, the outbox of events and the delivery log.

Revision ID: 0009_webhooks
Revises: 0008_job_queue
"""
import sqlalchemy as sa
from alembic import op

revision = "0009_webhooks"
down_revision = "0008_job_queue"
branch_labels = None
depends_on = None

PENDING = "status = 'pending'"


def upgrade():
    op.create_table(
        "webhooks",
        sa.Column("user_id", sa.Integer,
                  sa.ForeignKey("users.id", name="fk_webhooks_user_id_users", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("user_id", name="pk_webhooks"),
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer, sa.ForeignKey(
            "users.id", name="fk_webhook_deliveries_user_id_users", ondelete="CASCADE"),
            nullable=False),
        sa.Column("transcription_id", sa.Uuid),
        sa.Column("event", sa.String(64), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer, server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True)),
        sa.Column("last_status_code", sa.Integer),
        sa.Column("last_error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_deliveries"),
    )
    op.create_index("ix_webhook_deliveries_user_id_created_at", "webhook_deliveries",
                    ["user_id", "created_at"])
    op.create_index("ix_webhook_deliveries_created_at", "webhook_deliveries", ["created_at"])
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries", ["next_attempt_at"],
                    postgresql_where=sa.text(PENDING), sqlite_where=sa.text(PENDING))
    op.create_table(
        "webhook_attempts",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("delivery_id", sa.Integer, sa.ForeignKey(
            "webhook_deliveries.id", name="fk_webhook_attempts_delivery_id_webhook_deliveries",
            ondelete="CASCADE"), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("status_code", sa.Integer),
        sa.Column("error", sa.Text),
        sa.Column("duration_ms", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now(),
                  nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_webhook_attempts"),
    )
    op.create_index("ix_webhook_attempts_delivery_id", "webhook_attempts", ["delivery_id"])


def downgrade():
    op.drop_table("webhook_attempts")
    op.drop_table("webhook_deliveries")
    op.drop_table("webhooks")

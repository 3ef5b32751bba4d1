"""The pipeline's durable state: progress, lease, finished chunks, replaceable assets.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("transcriptions") as batch:
        batch.add_column(sa.Column("progress_step", sa.String(32)))
        batch.add_column(sa.Column("progress_done", sa.BigInteger))
        batch.add_column(sa.Column("progress_total", sa.BigInteger))
        batch.add_column(sa.Column("engine", sa.String(16)))
        batch.add_column(sa.Column("proofread_note", sa.Text))
        batch.add_column(sa.Column("lease_owner", sa.String(128)))
        batch.add_column(sa.Column("lease_expires_at", sa.DateTime(timezone=True)))
        batch.add_column(sa.Column("attempts", sa.Integer, nullable=False,
                                   server_default=sa.text("0")))
        batch.add_column(sa.Column("cancel_requested", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.create_table(
        "job_chunks",
        sa.Column("transcription_id", sa.Uuid, nullable=False),
        sa.Column("stage", sa.String(16), nullable=False),
        sa.Column("index", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.ForeignKeyConstraint(["transcription_id"], ["transcriptions.id"],
                                name="fk_job_chunks_transcription_id_transcriptions",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("transcription_id", "stage", "index", name="pk_job_chunks"),
    )
    op.create_table(
        "app_assets",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.PrimaryKeyConstraint("name", name="pk_app_assets"),
    )


def downgrade():
    op.drop_table("app_assets")
    op.drop_table("job_chunks")
    with op.batch_alter_table("transcriptions") as batch:
        for column in ("cancel_requested", "attempts", "lease_expires_at", "lease_owner",
                       "proofread_note", "engine", "progress_total", "progress_done",
                       "progress_step"):
            batch.drop_column(column)

"""The job queue: request ids on jobs and error logs, an index of unfinished jobs to claim.

Revision ID: 0008_job_queue
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0008_job_queue"
down_revision = "0006_local_whisper"
branch_labels = None
depends_on = None

UNFINISHED = "status NOT IN ('completed', 'error', 'cancelled')"


def upgrade():
    with op.batch_alter_table("transcriptions") as batch:
        batch.add_column(sa.Column("request_id", sa.String(128)))
    with op.batch_alter_table("error_logs") as batch:
        batch.add_column(sa.Column("request_id", sa.String(128)))
    op.create_index("ix_transcriptions_unfinished", "transcriptions", ["created_at"],
                    postgresql_where=sa.text(UNFINISHED), sqlite_where=sa.text(UNFINISHED))


def downgrade():
    op.drop_index("ix_transcriptions_unfinished", table_name="transcriptions")
    with op.batch_alter_table("error_logs") as batch:
        batch.drop_column("request_id")
    with op.batch_alter_table("transcriptions") as batch:
        batch.drop_column("request_id")

"""The language a job is transcribed in (POST /process `language`, or the admin setting).

Revision ID: 0006_local_whisper
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0006_local_whisper"
down_revision = "0005_hardening"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("transcriptions") as batch:
        batch.add_column(sa.Column("language", sa.String(16)))


def downgrade():
    with op.batch_alter_table("transcriptions") as batch:
        batch.drop_column("language")

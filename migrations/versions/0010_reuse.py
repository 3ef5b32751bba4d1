"""Reuse of finished work: a source key per job (indexed), what was transcribed and
proofread with, LLM token usage, and what a reusing job took from which job.

Revision ID: 0010_reuse
Revises: 0009_webhooks
"""
import sqlalchemy as sa
from alembic import op

revision = "0010_reuse"
down_revision = "0009_webhooks"
branch_labels = None
depends_on = None

COLUMNS = (
    ("source_key", sa.String(200)),
    ("transcribe_model", sa.String(200)),
    ("audio_seconds", sa.Float),
    ("proofread_model", sa.String(200)),
    ("proofread_tokens", sa.BigInteger),
    ("reused_from", sa.Uuid),
    ("reused_audio_seconds", sa.Float),
    ("reused_tokens", sa.BigInteger),
)


def upgrade():
    with op.batch_alter_table("transcriptions") as batch:
        for name, type_ in COLUMNS:
            batch.add_column(sa.Column(name, type_))
    op.create_index("ix_transcriptions_source_key", "transcriptions", ["source_key"])


def downgrade():
    op.drop_index("ix_transcriptions_source_key", table_name="transcriptions")
    with op.batch_alter_table("transcriptions") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)

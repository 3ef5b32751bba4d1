"""Partial indexes for GET /admin/stats: the sums of what reuse saved and of LLM tokens read
only the rows that have a value, not the whole transcriptions table.

Revision ID: 0011_stats_indexes
Revises: 0010_reuse
"""
import sqlalchemy as sa
from alembic import op

revision = "0011_stats_indexes"
down_revision = "0010_reuse"
branch_labels = None
depends_on = None

INDEXES = (("ix_transcriptions_reused_from", "reused_from"),
           ("ix_transcriptions_proofread_tokens", "proofread_tokens"))


def upgrade():
    for name, column in INDEXES:
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "transcriptions", [column], postgresql_where=where,
                        sqlite_where=where)


def downgrade():
    for name, _ in reversed(INDEXES):
        op.drop_index(name, table_name="transcriptions")

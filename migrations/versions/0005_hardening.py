"""Hardening (issue 8): login throttling per (account, address); legacy rows get their names.

- `login_throttles.window_started_at` becomes `last_failure_at`; the rows of the old
  per-account and per-address scheme are dropped (their keys mean nothing now).
- Legacy rows (written by the earlier backend) get `audio_file_name`, the stem of the last
  segment of their `audio_file_path`, else of a document path: the name the earlier backend
  showed and used for downloads. Ezra rows whose `audio_file_path` recorded a server path
  (`.../jobs/<id>/source.upload`) get the display name instead; no server path is kept.

Revision ID: 0005_hardening
Revises: 0004
"""
import re

import sqlalchemy as sa
from alembic import op

revision = "0005_hardening"
down_revision = "0004"
branch_labels = None
depends_on = None

transcriptions = sa.table(
    "transcriptions", sa.column("id", sa.Uuid), sa.column("audio_file_path", sa.Text),
    sa.column("audio_file_name", sa.Text), sa.column("source_type", sa.String),
    sa.column("txt_document_path", sa.Text), sa.column("md_document_path", sa.Text),
    sa.column("word_document_path", sa.Text))


def last_segment(path: str | None) -> str:
    return re.split(r"[\\/]", path.strip())[-1].strip() if path else ""


def stem(path: str | None) -> str:
    name = last_segment(path)
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def upgrade():
    op.execute("DELETE FROM login_throttles")
    with op.batch_alter_table("login_throttles") as batch:
        batch.alter_column("window_started_at", new_column_name="last_failure_at")

    conn = op.get_bind()
    rows = conn.execute(sa.select(
        transcriptions.c.id, transcriptions.c.audio_file_path, transcriptions.c.audio_file_name,
        transcriptions.c.source_type, transcriptions.c.word_document_path,
        transcriptions.c.md_document_path, transcriptions.c.txt_document_path).where(
        sa.or_(sa.and_(transcriptions.c.source_type.is_(None),
                       transcriptions.c.audio_file_name.is_(None)),
               sa.and_(transcriptions.c.source_type.is_not(None),
                       transcriptions.c.audio_file_path.is_not(None))))).all()
    for job_id, audio_path, name, source_type, *document_paths in rows:
        if source_type is None:  # a legacy row
            name = next((stem(p) for p in (audio_path, *document_paths) if stem(p)), None)
            if name:
                conn.execute(sa.update(transcriptions).where(transcriptions.c.id == job_id)
                             .values(audio_file_name=name[:200]))
        elif "/" in audio_path or "\\" in audio_path:  # an Ezra row with a server path
            conn.execute(sa.update(transcriptions).where(transcriptions.c.id == job_id)
                         .values(audio_file_path=name))


def downgrade():
    with op.batch_alter_table("login_throttles") as batch:
        batch.alter_column("last_failure_at", new_column_name="window_started_at")

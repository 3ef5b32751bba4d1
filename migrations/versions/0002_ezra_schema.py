"""Ezra's schema on top of the legacy one: cascading deletes, named constraints, new job
columns, documents stored in the database. Additive: no existing row is lost or changed
(except NULL `is_admin`, which always meant false and becomes false).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _fk_names(table, column):
    return [fk["name"] for fk in sa.inspect(op.get_bind()).get_foreign_keys(table)
            if fk["constrained_columns"] == [column] and fk["name"]]


def _single_column_indexes(table, column):
    return [ix["name"] for ix in sa.inspect(op.get_bind()).get_indexes(table)
            if ix["column_names"] == [column] and not ix.get("unique")]


def _cascade_fk(table, column, referred):
    """Replace whatever foreign key the column has with a named ON DELETE CASCADE one."""
    name = f"fk_{table}_{column}_{referred}"
    with op.batch_alter_table(table, naming_convention=NAMING) as batch:
        for old in _fk_names(table, column):
            batch.drop_constraint(old, type_="foreignkey")
        batch.create_foreign_key(name, referred, [column], ["id"], ondelete="CASCADE")


def _rename_unique(table, column):
    """Legacy PostgreSQL names (users_username_key) become the naming convention's."""
    bind = op.get_bind()
    wanted = f"uq_{table}_{column}"
    for uq in sa.inspect(bind).get_unique_constraints(table):
        if uq["column_names"] == [column] and uq["name"] != wanted:
            op.execute(sa.text(f'ALTER TABLE {table} RENAME CONSTRAINT "{uq["name"]}" TO {wanted}'))


def _drop_legacy_triggers(table):
    # The ORM keeps updated_at current; the hand-made trigger would only duplicate it.
    rows = op.get_bind().execute(sa.text(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = CAST(:t AS regclass) AND NOT tgisinternal"),
        {"t": table}).scalars().all()
    for name in rows:
        op.execute(sa.text(f'DROP TRIGGER IF EXISTS "{name}" ON {table}'))


def upgrade():
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"

    # users
    op.execute(sa.text("UPDATE users SET is_admin = false WHERE is_admin IS NULL"))
    with op.batch_alter_table("users", naming_convention=NAMING) as batch:
        batch.add_column(sa.Column("token_version", sa.Integer, nullable=False,
                                   server_default=sa.text("0")))
        batch.alter_column("is_admin", existing_type=sa.Boolean, nullable=False,
                           existing_server_default=sa.false())
    if postgres:
        _rename_unique("users", "username")
        _rename_unique("system_settings", "setting_key")
        for table in ("transcriptions", "system_settings"):
            _drop_legacy_triggers(table)

    # transcriptions
    with op.batch_alter_table("transcriptions", naming_convention=NAMING) as batch:
        batch.add_column(sa.Column("audio_file_name", sa.Text))
        batch.add_column(sa.Column("source_type", sa.String(16)))
        batch.add_column(sa.Column("start_seconds", sa.Float))
        batch.add_column(sa.Column("end_seconds", sa.Float))
        batch.add_column(sa.Column("error_message", sa.Text))
        batch.alter_column("status", existing_type=sa.Text, server_default="submitted")
    _cascade_fk("transcriptions", "user_id", "users")
    for name in _single_column_indexes("transcriptions", "user_id"):
        op.drop_index(name, table_name="transcriptions")
    op.create_index("ix_transcriptions_user_id_created_at", "transcriptions",
                    ["user_id", "created_at"])
    op.create_index("ix_transcriptions_created_at", "transcriptions", ["created_at"])

    # error_logs
    with op.batch_alter_table("error_logs", naming_convention=NAMING) as batch:
        batch.add_column(sa.Column("step", sa.String(32)))
    _cascade_fk("error_logs", "user_id", "users")
    _cascade_fk("error_logs", "transcription_id", "transcriptions")
    for name in _single_column_indexes("error_logs", "user_id"):
        op.drop_index(name, table_name="error_logs")
    op.create_index("ix_error_logs_user_id", "error_logs", ["user_id"])
    op.create_index("ix_error_logs_transcription_id", "error_logs", ["transcription_id"])
    op.create_index("ix_error_logs_created_at", "error_logs", ["created_at"])

    op.create_table(
        "documents",
        sa.Column("transcription_id", sa.Uuid, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("content", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False,
                  server_default=sa.func.now()),
        sa.ForeignKeyConstraint(["transcription_id"], ["transcriptions.id"],
                                name="fk_documents_transcription_id_transcriptions",
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("transcription_id", "kind", name="pk_documents"),
    )


def downgrade():
    op.drop_table("documents")
    for name in ("ix_error_logs_created_at", "ix_error_logs_transcription_id",
                 "ix_error_logs_user_id"):
        op.drop_index(name, table_name="error_logs")
    with op.batch_alter_table("error_logs") as batch:
        batch.drop_column("step")
    op.drop_index("ix_transcriptions_created_at", table_name="transcriptions")
    op.drop_index("ix_transcriptions_user_id_created_at", table_name="transcriptions")
    op.create_index("idx_transcriptions_user_id", "transcriptions", ["user_id"])
    op.create_index("idx_error_logs_user_id", "error_logs", ["user_id"])
    with op.batch_alter_table("transcriptions") as batch:
        for column in ("error_message", "end_seconds", "start_seconds", "source_type",
                       "audio_file_name"):
            batch.drop_column(column)
    with op.batch_alter_table("users") as batch:
        batch.drop_column("token_version")

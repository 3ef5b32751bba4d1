"""The schema of the earlier implementation, as deployments already have it.

Existing databases (created by hand-made SQL scripts) already hold these tables, so this
revision creates them only on an empty database; either way 0002 then upgrades the same
starting point, and every fresh install exercises the upgrade path real deployments take.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _timestamps(*names):
    return [sa.Column(n, sa.DateTime(timezone=True), server_default=sa.func.now())
            for n in names]


def upgrade():
    if sa.inspect(op.get_bind()).has_table("users"):
        return  # a legacy deployment: its tables are the baseline

    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.Text, nullable=False),
        sa.Column("password", sa.Text, nullable=False),
        sa.Column("is_admin", sa.Boolean, server_default=sa.false()),
        *_timestamps("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "transcriptions",
        sa.Column("id", sa.Uuid, nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("audio_file_path", sa.Text),
        sa.Column("google_drive_url", sa.Text),
        sa.Column("txt_document_path", sa.Text),
        sa.Column("md_document_path", sa.Text),
        sa.Column("word_document_path", sa.Text),
        sa.Column("status", sa.Text, server_default="uploading"),
        sa.Column("transcribe_prompt", sa.Text),
        sa.Column("proofread_prompt", sa.Text),
        sa.Column("inference_duration", sa.Integer),
        *_timestamps("created_at", "updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_transcriptions"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_transcriptions_user_id_users"),
    )
    op.create_index("idx_transcriptions_user_id", "transcriptions", ["user_id"])
    op.create_table(
        "error_logs",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("user_id", sa.Integer),
        sa.Column("transcription_id", sa.Uuid),
        sa.Column("error_message", sa.Text),
        sa.Column("stack_trace", sa.Text),
        sa.Column("inference", sa.Boolean, server_default=sa.false()),
        *_timestamps("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_error_logs"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name="fk_error_logs_user_id_users"),
        sa.ForeignKeyConstraint(["transcription_id"], ["transcriptions.id"],
                                name="fk_error_logs_transcription_id_transcriptions"),
    )
    op.create_index("idx_error_logs_user_id", "error_logs", ["user_id"])
    for table in ("transcribe_prompts", "proofread_prompts"):
        op.create_table(
            table,
            sa.Column("id", sa.Integer, nullable=False),
            sa.Column("version", sa.Text, nullable=False),
            sa.Column("prompt", sa.Text, nullable=False),
            *_timestamps("created_at"),
            sa.PrimaryKeyConstraint("id", name=f"pk_{table}"),
        )
    op.create_table(
        "system_settings",
        sa.Column("id", sa.Integer, nullable=False),
        sa.Column("setting_key", sa.Text, nullable=False),
        sa.Column("setting_value", sa.Text),
        sa.Column("description", sa.Text),
        *_timestamps("created_at", "updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_system_settings"),
        sa.UniqueConstraint("setting_key", name="uq_system_settings_setting_key"),
    )

    # The rows the old scripts seeded (the admin user is made with `flask create-admin`).
    for table in ("transcribe_prompts", "proofread_prompts"):
        prompts = sa.table(table, sa.column("version"), sa.column("prompt"))
        op.bulk_insert(prompts, [{"version": "EMPTY", "prompt": ""}])
    settings = sa.table("system_settings", sa.column("setting_key"), sa.column("setting_value"),
                        sa.column("description"))
    op.bulk_insert(settings, [
        {"setting_key": "active_transcribe_prompt_id", "setting_value": "1",
         "description": "The transcribe prompt sent with new jobs"},
        {"setting_key": "active_proofread_prompt_id", "setting_value": "1",
         "description": "The proofread prompt sent with new jobs"},
        {"setting_key": "transcribing_allowed", "setting_value": "true",
         "description": "false stops accepting new transcriptions"},
    ])


def downgrade():
    for table in ("system_settings", "proofread_prompts", "transcribe_prompts", "error_logs",
                  "transcriptions", "users"):
        op.drop_table(table)

"""The earlier implementation's hand-made schema (shared/legacy-schema.md) and the columns of
each of its tables: shared by the migration test and bench/compare_refs.py."""
from pathlib import Path

LEGACY_SCHEMA_SQL = (Path(__file__).parent / "legacy_schema.sql").read_text()

LEGACY_COLUMNS = {
    "users": ["id", "username", "password", "is_admin", "created_at"],
    "transcriptions": ["id", "user_id", "audio_file_path", "google_drive_url",
                       "txt_document_path", "md_document_path", "word_document_path", "status",
                       "transcribe_prompt", "proofread_prompt", "inference_duration",
                       "created_at", "updated_at"],
    "error_logs": ["id", "user_id", "transcription_id", "error_message", "stack_trace",
                   "inference", "created_at"],
    "transcribe_prompts": ["id", "version", "prompt", "created_at"],
    "proofread_prompts": ["id", "version", "prompt", "created_at"],
    "system_settings": ["id", "setting_key", "setting_value", "description", "created_at",
                        "updated_at"],
    "migrations": ["id", "version", "description", "applied_at", "checksum"],
}

"""ORM models and the status vocabulary. No I/O here.

Column names and nullability follow the schema that existing deployments already have
(shared/legacy-schema.md) so that upgrading them changes no row; new columns are additive.
"""
from __future__ import annotations

import uuid
from datetime import datetime, timezone
from enum import StrEnum

from sqlalchemy import (BigInteger, Boolean, DateTime, Float, ForeignKey, Index, Integer, LargeBinary,
                        String, Text, Uuid, false, func, text)
from sqlalchemy.orm import Mapped, mapped_column

from database import db
from logging_setup import current_request_id

class JobStatus(StrEnum):
    """The contract's status words, in pipeline order; the one vocabulary for them. A `str`
    enum: the database column and the JSON hold these same strings. The frontend maps each
    to a label."""
    SUBMITTED = "submitted"
    UPLOADING = "uploading"
    TRIMMING = "trimming"
    WAITING = "waiting"
    TRANSCRIBING = "transcribing"
    WAITING_FOR_PROOFREADING = "waiting_for_proofreading"
    PROOFREADING = "proofreading"
    CONVERTING = "converting"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"  # new: a job the user stopped


# A tuple, so the partial index's SQL below keeps its order (migrations created it so).
FINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.ERROR, JobStatus.CANCELLED)
_UNFINISHED_SQL = "status NOT IN ({})".format(", ".join(f"'{s}'" for s in FINAL_STATUSES))
DOCUMENT_KINDS = ("txt", "md", "docx")
# The transcript's timed segments (JSON [[start, end, text], ...], seconds into the job's
# audio) for engines that give them; SRT and VTT are made from it on download.
SEGMENTS_KIND = "segments"
_REUSED_SQL = "reused_from IS NOT NULL"
_TOKENS_SQL = "proofread_tokens IS NOT NULL"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(value: datetime) -> datetime:
    """A stored timestamp with its zone: SQLite drops it, and everything is stored in UTC."""
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _created_at() -> Mapped[datetime | None]:
    return mapped_column(DateTime(timezone=True), default=utcnow, server_default=func.now())


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(Text, unique=True)
    # The legacy column is called `password`; it always held a hash, never the password.
    password_hash: Mapped[str] = mapped_column("password", Text)
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime | None] = _created_at()
    # Bumped on password reset: tokens carry it, so older tokens stop working.
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))


class Transcription(db.Model):
    __tablename__ = "transcriptions"
    __table_args__ = (
        Index("ix_transcriptions_user_id_created_at", "user_id", "created_at"),
        Index("ix_transcriptions_created_at", "created_at"),
        # What runners claim from: only unfinished rows, oldest first (jobs.py).
        Index("ix_transcriptions_unfinished", "created_at",
              postgresql_where=text(_UNFINISHED_SQL), sqlite_where=text(_UNFINISHED_SQL)),
        # What GET /admin/stats sums (reuse.py): only the few rows that have a value, so the
        # dashboard reads no whole-table scan (a scan of 20,000 jobs made it 4x slower).
        Index("ix_transcriptions_reused_from", "reused_from",
              postgresql_where=text(_REUSED_SQL), sqlite_where=text(_REUSED_SQL)),
        Index("ix_transcriptions_proofread_tokens", "proofread_tokens",
              postgresql_where=text(_TOKENS_SQL), sqlite_where=text(_TOKENS_SQL)),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    audio_file_path: Mapped[str | None] = mapped_column(Text)
    # The submitted link (YouTube or Drive); the legacy name stays for the contract.
    google_drive_url: Mapped[str | None] = mapped_column(Text)
    # Disk paths of documents written by the earlier implementation (legacy rows only).
    txt_document_path: Mapped[str | None] = mapped_column(Text)
    md_document_path: Mapped[str | None] = mapped_column(Text)
    word_document_path: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(Text, default=JobStatus.SUBMITTED,
                                               server_default=JobStatus.SUBMITTED.value)
    transcribe_prompt: Mapped[str | None] = mapped_column(Text)
    proofread_prompt: Mapped[str | None] = mapped_column(Text)
    inference_duration: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=func.now())

    # New in Ezra
    audio_file_name: Mapped[str | None] = mapped_column(Text)
    source_type: Mapped[str | None] = mapped_column(String(16))  # youtube | drive | upload
    start_seconds: Mapped[float | None] = mapped_column(Float)
    end_seconds: Mapped[float | None] = mapped_column(Float)
    error_message: Mapped[str | None] = mapped_column(Text)

    # The pipeline's durable state (see pipeline.py)
    progress_step: Mapped[str | None] = mapped_column(String(32))
    progress_done: Mapped[int | None] = mapped_column(BigInteger)
    progress_total: Mapped[int | None] = mapped_column(BigInteger)
    engine: Mapped[str | None] = mapped_column(String(16))
    proofread_note: Mapped[str | None] = mapped_column(Text)  # why the Markdown is unproofread
    language: Mapped[str | None] = mapped_column(String(16))  # Whisper language code; None = detect
    lease_owner: Mapped[str | None] = mapped_column(String(128))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False,
                                                   server_default=false())
    # The X-Request-ID of the request that submitted the job: its runner logs under it.
    request_id: Mapped[str | None] = mapped_column(String(128), default=current_request_id)

    # Reuse (reuse.py): what was transcribed, so a later job of the same talk can take it.
    # youtube:<video id> | drive:<file id> | upload:sha256:<hex>
    source_key: Mapped[str | None] = mapped_column(String(200), index=True)
    transcribe_model: Mapped[str | None] = mapped_column(String(200))
    audio_seconds: Mapped[float | None] = mapped_column(Float)  # length transcribed
    proofread_model: Mapped[str | None] = mapped_column(String(200))
    proofread_tokens: Mapped[int | None] = mapped_column(BigInteger)  # LLM usage, all slices
    reused_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)  # the job whose work it took
    reused_audio_seconds: Mapped[float | None] = mapped_column(Float)
    reused_tokens: Mapped[int | None] = mapped_column(BigInteger)


class ErrorLog(db.Model):
    __tablename__ = "error_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), index=True)
    transcription_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("transcriptions.id", ondelete="CASCADE"), index=True)
    error_message: Mapped[str | None] = mapped_column(Text)
    stack_trace: Mapped[str | None] = mapped_column(Text)
    inference: Mapped[bool | None] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), index=True)
    step: Mapped[str | None] = mapped_column(String(32))  # new: where the job failed
    request_id: Mapped[str | None] = mapped_column(String(128), default=current_request_id)


class _PromptColumns:
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(Text)
    prompt: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime | None] = _created_at()


class TranscribePrompt(_PromptColumns, db.Model):
    __tablename__ = "transcribe_prompts"


class ProofreadPrompt(_PromptColumns, db.Model):
    __tablename__ = "proofread_prompts"


class SystemSetting(db.Model):
    __tablename__ = "system_settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    setting_key: Mapped[str] = mapped_column(Text, unique=True)
    setting_value: Mapped[str | None] = mapped_column(Text)
    description: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime | None] = _created_at()
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=func.now())


class Document(db.Model):
    """A finished document (txt, md or docx), kept in the database so that every worker and
    every machine can serve it and a database backup holds it."""
    __tablename__ = "documents"

    transcription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("transcriptions.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8), primary_key=True)  # one of DOCUMENT_KINDS
    content: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now())


class JobChunk(db.Model):
    """One finished piece of a job's paid work (a transcribed audio chunk, a proofread
    slice): a resumed job skips what is here, so nothing is paid for twice."""
    __tablename__ = "job_chunks"

    transcription_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("transcriptions.id", ondelete="CASCADE"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(16), primary_key=True)  # transcribe | proofread
    index: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now())


# The AppAsset names: the Word reference document pandoc styles the docx with.
REFERENCE_DOCX_ASSET = "reference.docx"


class AppAsset(db.Model):
    """Files admins can replace, shared by every worker: the Word reference document."""
    __tablename__ = "app_assets"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    content: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=func.now())


class RevokedToken(db.Model):
    """Tokens signed out with POST /logout; kept until they would have expired anyway."""
    __tablename__ = "revoked_tokens"

    jti: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class LoginThrottle(db.Model):
    """Failed sign-ins of one account from one address (see login_throttle.py)."""
    __tablename__ = "login_throttles"

    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Webhook(db.Model):
    """A user's webhook: where job events go, and the secret that signs them (webhooks.py)."""
    __tablename__ = "webhooks"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         primary_key=True)
    url: Mapped[str] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, onupdate=utcnow, server_default=func.now())


class WebhookDelivery(db.Model):
    """One event for one webhook: the durable outbox row (written in the transaction that
    finishes the job) and the state of its delivery."""
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_user_id_created_at", "user_id", "created_at"),
        # What senders claim from: only pending rows, by when they are due.
        Index("ix_webhook_deliveries_due", "next_attempt_at",
              postgresql_where=text("status = 'pending'"),
              sqlite_where=text("status = 'pending'")),
    )

    id: Mapped[int] = mapped_column(Integer,
                                    primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    transcription_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    event: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    payload: Mapped[str] = mapped_column(Text)  # the exact body, the same on every attempt
    status: Mapped[str] = mapped_column(String(16), default="pending",
                                        server_default="pending")  # pending|delivered|failed
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now(), index=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class WebhookAttempt(db.Model):
    """The delivery log: one row per attempt."""
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer,
                                    primary_key=True)
    delivery_id: Mapped[int] = mapped_column(
        ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True)
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=utcnow, server_default=func.now())


# Setting keys the service itself reads.
SETTING_TRANSCRIBING_ALLOWED = "transcribing_allowed"
SETTING_ACTIVE_TRANSCRIBE_PROMPT = "active_transcribe_prompt_id"
SETTING_ACTIVE_PROOFREAD_PROMPT = "active_proofread_prompt_id"

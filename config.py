"""Configuration: embedded defaults, then the environment (and `.env`), then a test dict.

Every variable is parsed strictly; a bad value stops start-up with a message that names it.
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Callable

from dotenv import load_dotenv

BASE_DIR = Path(__file__).resolve().parent


class ConfigError(RuntimeError):
    """Start-up configuration is missing or wrong; the message says which variable."""


def _parse_bool(name: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _parse_number(name: str, raw: str, convert: Callable[[str], Any], what: str,
                  minimum: float | None) -> Any:
    try:
        value = convert(raw.strip())
    except ValueError:
        raise ConfigError(f"{name} must be {what}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}")
    return value


def _parse_int(name: str, raw: str, minimum: int | None = None) -> int:
    return _parse_number(name, raw, int, "a whole number", minimum)


def _parse_float(name: str, raw: str, minimum: float | None = None) -> float:
    return _parse_number(name, raw, float, "a number", minimum)


def _parse_list(name: str, raw: str) -> list[str]:
    return [item.strip().lower() for item in raw.split(",") if item.strip()]


# name -> (default, parser). Strings use `str`. The README's table mirrors this list.
_VARIABLES: dict[str, tuple[Any, Callable[[str, str], Any]]] = {
    "EZRA_ENV": ("development", lambda n, v: v.strip().lower()),
    "DATABASE_URL": (None, lambda n, v: v.strip()),
    # Hot reads are planned once per connection (database.PreparedRead); false behind a
    # pooler in transaction mode (PgBouncer), which may run EXECUTE on another connection.
    "DATABASE_PREPARED_STATEMENTS": (True, _parse_bool),
    "JWT_SECRET_KEY": (None, lambda n, v: v),
    "JWT_ACCESS_TOKEN_HOURS": (12, lambda n, v: _parse_int(n, v, 1)),
    "JWT_REFRESH_TOKEN_DAYS": (30, lambda n, v: _parse_int(n, v, 1)),
    "STORAGE_DIR": (str(BASE_DIR / "instance" / "storage"), lambda n, v: v.strip()),
    "LEGACY_FILES_DIR": (str(BASE_DIR / "user-files"), lambda n, v: v.strip()),
    "MAX_UPLOAD_MB": (500, lambda n, v: _parse_int(n, v, 1)),
    "MAX_JSON_KB": (1024, lambda n, v: _parse_int(n, v, 16)),
    "PASSWORD_MIN_LENGTH": (8, lambda n, v: _parse_int(n, v, 8)),
    # OWASP's Argon2id row m=19 MiB, t=2, p=1; also the floor (password.py).
    "ARGON2_MEMORY_KIB": (19456, lambda n, v: _parse_int(n, v, 19456)),
    "ARGON2_TIME_COST": (2, lambda n, v: _parse_int(n, v, 2)),
    "ARGON2_MAX_CONCURRENT": (2, lambda n, v: _parse_int(n, v, 1)),
    "LOGIN_MAX_FAILURES_PER_ACCOUNT": (5, lambda n, v: _parse_int(n, v, 1)),
    "LOGIN_WINDOW_SECONDS": (900, lambda n, v: _parse_int(n, v, 1)),
    "LOGIN_LOCKOUT_SECONDS": (900, lambda n, v: _parse_int(n, v, 1)),
    "TRUSTED_PROXY_COUNT": (0, lambda n, v: _parse_int(n, v, 0)),
    "LIST_MAX_LIMIT": (1000, lambda n, v: _parse_int(n, v, 1)),
    # Runner slots per process; 0 = a web-only process (jobs run in `flask worker` processes).
    "EXECUTOR_MAX_WORKERS": (2, lambda n, v: _parse_int(n, v, 0)),
    "MAX_UNFINISHED_JOBS_PER_USER": (3, lambda n, v: _parse_int(n, v, 1)),
    "MAX_SCRATCH_MB_PER_USER": (2048, lambda n, v: _parse_int(n, v, 1)),
    "JOB_LEASE_SECONDS": (30, lambda n, v: _parse_int(n, v, 10)),
    "JOB_POLL_SECONDS": (2.0, lambda n, v: _parse_float(n, v, 0.1)),
    # local: runner slots in this service's processes; celery: `celery -A celery_app worker`
    "JOB_QUEUE": ("local", lambda n, v: v.strip().lower()),
    "CELERY_BROKER_URL": ("redis://127.0.0.1:6379/0", lambda n, v: v.strip()),
    "JOB_RECOVERY_INTERVAL_SECONDS": (30, lambda n, v: _parse_int(n, v, 0)),
    "JOB_MAX_ATTEMPTS": (3, lambda n, v: _parse_int(n, v, 1)),
    # Operations
    "LOG_FORMAT": ("text", lambda n, v: v.strip().lower()),
    # prometheus-client reads it itself; gunicorn.conf.py sets one when unset.
    "PROMETHEUS_MULTIPROC_DIR": (None, lambda n, v: v.strip()),
    # Fetching
    "ALLOWED_LINK_HOSTS": (None, _parse_list),
    "ALLOW_PRIVATE_ADDRESSES": (False, _parse_bool),
    # Where Drive files are downloaded from; tests point it at a local stand-in.
    "DRIVE_BASE_URL": ("https://drive.google.com", lambda n, v: v.strip().rstrip("/")),
    "MAX_AUDIO_SECONDS": (6 * 3600, lambda n, v: _parse_int(n, v, 1)),
    "MAX_DOWNLOAD_MB": (1024, lambda n, v: _parse_int(n, v, 1)),
    # POST /process reads a link's title and length for at most this long (0: not at all).
    "LINK_METADATA_TIMEOUT_SECONDS": (8.0, lambda n, v: _parse_float(n, v, 0)),
    # Transcription
    # Unset: remote or openai when configured, else the embedded local engine (see below).
    "TRANSCRIBE_ENGINE": (None, lambda n, v: v.strip().lower()),
    "TRANSCRIBE_API_URL": (None, lambda n, v: v.strip()),
    "GET_RESULT_TRANSCRIBE_API_URL": (None, lambda n, v: v.strip()),
    "TRANSCRIBE_API_KEY": (None, lambda n, v: v),
    "TRANSCRIBE_TIMEOUT_SECONDS": (3 * 3600, lambda n, v: _parse_int(n, v, 1)),
    "TRANSCRIBE_POLL_MAX_SECONDS": (30.0, lambda n, v: _parse_float(n, v, 0.01)),
    # The remote service answers 404 both while a job is not ready and after forgetting it:
    # only 404s for longer than FACTOR x the audio's length + MARGIN mean "forgotten".
    "TRANSCRIBE_FORGOTTEN_FACTOR": (1.0, lambda n, v: _parse_float(n, v, 0.0)),
    "TRANSCRIBE_FORGOTTEN_MARGIN_SECONDS": (600.0, lambda n, v: _parse_float(n, v, 0.1)),
    "OPENAI_TRANSCRIBE_BASE_URL": (None, lambda n, v: v.strip()),
    "OPENAI_TRANSCRIBE_API_KEY": (None, lambda n, v: v),
    "OPENAI_TRANSCRIBE_MODEL": ("whisper-1", lambda n, v: v.strip()),
    "TRANSCRIBE_CHUNK_SECONDS": (1200, lambda n, v: _parse_int(n, v, 10)),
    "TRANSCRIBE_CONCURRENCY": (4, lambda n, v: _parse_int(n, v, 1)),
    # Unset: Whisper base (multilingual) from the packages in requirements.txt.
    "LOCAL_WHISPER_MODEL": ("", lambda n, v: v.strip()),
    "LOCAL_WHISPER_DEVICE": ("cpu", lambda n, v: v.strip().lower()),
    "LOCAL_WHISPER_COMPUTE_TYPE": ("", lambda n, v: v.strip().lower()),  # "": int8 on cpu
    "LOCAL_WHISPER_THREADS": (0, lambda n, v: _parse_int(n, v, 0)),  # 0: cores / runner slots
    "LOCAL_WHISPER_VAD": (True, _parse_bool),
    "LOCAL_WHISPER_BATCH_SIZE": (0, lambda n, v: _parse_int(n, v, 0)),  # 0: sequential
    # chunks of one job transcribed at once (0: one); more is faster and takes more memory
    "LOCAL_WHISPER_PARALLEL_CHUNKS": (0, lambda n, v: _parse_int(n, v, 0)),
    "LOCAL_WHISPER_CACHE_DIR": (str(BASE_DIR / "instance" / "models"), lambda n, v: v.strip()),
    # Proofreading
    "DEEPSEEK_BASE_URL": (None, lambda n, v: v.strip()),
    "DEEPSEEK_API_KEY": (None, lambda n, v: v),
    "PROOFREAD_MODEL": ("deepseek-chat", lambda n, v: v.strip()),
    "PROOFREAD_SLICE_CHARS": (6000, lambda n, v: _parse_int(n, v, 200)),
    "PROOFREAD_CONCURRENCY": (4, lambda n, v: _parse_int(n, v, 1)),
    "PROOFREAD_TIMEOUT_SECONDS": (300.0, lambda n, v: _parse_float(n, v, 0.1)),
    "PROOFREAD_MAX_RETRIES": (5, lambda n, v: _parse_int(n, v, 0)),
    # A job of a talk transcribed before takes that work (reuse.py); false: every job pays.
    "REUSE_FINISHED_WORK": (True, _parse_bool),
    # Webhooks (webhooks.py)
    "WEBHOOK_MAX_ATTEMPTS": (6, lambda n, v: _parse_int(n, v, 1)),
    "WEBHOOK_BACKOFF_SECONDS": (30.0, lambda n, v: _parse_float(n, v, 0.01)),
    "WEBHOOK_TIMEOUT_SECONDS": (10.0, lambda n, v: _parse_float(n, v, 0.1)),
    "WEBHOOK_POLL_SECONDS": (5.0, lambda n, v: _parse_float(n, v, 0.05)),
    # Prefix of the document links in webhook events (e.g. https://ezra.example.org);
    # unset: the links are paths, as in the job lists.
    "PUBLIC_BASE_URL": (None, lambda n, v: v.strip().rstrip("/")),
}


def _instance_secret(instance_dir: Path) -> str:
    """Development only: one JWT secret generated once and shared by every worker."""
    instance_dir.mkdir(parents=True, exist_ok=True)
    path = instance_dir / "jwt-secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def normalize_database_url(url: str) -> str:
    """`postgres://` (Heroku style) and bare `postgresql://` mean psycopg2, the driver
    installed; SQLAlchemy 2.1 would otherwise look for psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def default_engine(config: dict[str, Any]) -> str:
    """The engine when TRANSCRIBE_ENGINE is unset: the remote service or the OpenAI-compatible
    one if its settings are there, else the embedded local engine (which needs nothing)."""
    if config["TRANSCRIBE_API_URL"] and config["GET_RESULT_TRANSCRIBE_API_URL"]:
        return "remote"
    if config["OPENAI_TRANSCRIBE_BASE_URL"] or config["OPENAI_TRANSCRIBE_API_KEY"]:
        return "openai"
    return "local"


def load_config(test_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the settings dict for Flask's `app.config`."""
    load_dotenv(BASE_DIR / ".env", override=False)
    config: dict[str, Any] = {}
    for name, (default, parse) in _VARIABLES.items():
        raw = os.environ.get(name)
        config[name] = parse(name, raw) if raw not in (None, "") else default
    if test_config:
        config.update(test_config)

    env = config["EZRA_ENV"]
    if env not in ("development", "production"):
        raise ConfigError(f"EZRA_ENV must be development or production, got {env!r}")
    instance_dir = BASE_DIR / "instance"

    if not config["DATABASE_URL"]:
        if env == "production":
            raise ConfigError("DATABASE_URL is required when EZRA_ENV=production")
        instance_dir.mkdir(parents=True, exist_ok=True)
        config["DATABASE_URL"] = f"sqlite:///{instance_dir / 'ezra.sqlite3'}"
        config["EMBEDDED_DATABASE"] = True
    else:
        config.setdefault("EMBEDDED_DATABASE", False)
    config["DATABASE_URL"] = normalize_database_url(config["DATABASE_URL"])

    secret = config["JWT_SECRET_KEY"]
    if not secret:
        if env == "production":
            raise ConfigError("JWT_SECRET_KEY is required when EZRA_ENV=production "
                              "(at least 32 bytes, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)")
        secret = _instance_secret(instance_dir)
    if len(secret.encode()) < 32 and env == "production":
        raise ConfigError("JWT_SECRET_KEY must be at least 32 bytes long in production")
    config["JWT_SECRET_KEY"] = secret

    if not config["TRANSCRIBE_ENGINE"]:
        config["TRANSCRIBE_ENGINE"] = default_engine(config)
    if config["TRANSCRIBE_ENGINE"] not in ("remote", "openai", "local"):
        raise ConfigError("TRANSCRIBE_ENGINE must be remote, openai or local, "
                          f"got {config['TRANSCRIBE_ENGINE']!r}")
    if config["LOCAL_WHISPER_DEVICE"] not in ("cpu", "cuda", "auto"):
        raise ConfigError("LOCAL_WHISPER_DEVICE must be cpu, cuda or auto, "
                          f"got {config['LOCAL_WHISPER_DEVICE']!r}")

    if config["JOB_QUEUE"] not in ("local", "celery"):
        raise ConfigError(f"JOB_QUEUE must be local or celery, got {config['JOB_QUEUE']!r}")
    if config["LOG_FORMAT"] not in ("text", "json"):
        raise ConfigError(f"LOG_FORMAT must be text or json, got {config['LOG_FORMAT']!r}")

    config["SQLALCHEMY_DATABASE_URI"] = config["DATABASE_URL"]
    # No pool_pre_ping (a SELECT 1 round trip per checkout): database.py drops connections
    # the server closed by polling their socket instead.
    config["SQLALCHEMY_ENGINE_OPTIONS"] = {}
    # The request body cap and the upload streaming cap are one number.
    config["MAX_CONTENT_LENGTH"] = config["MAX_UPLOAD_MB"] * 1024 * 1024 + 64 * 1024
    # The admin's Word reference document (10 MB) and its multipart framing.
    config["MAX_REFERENCE_DOCX_BODY"] = 10 * 1024 * 1024 + 64 * 1024
    return config

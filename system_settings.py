"""Reading the admin-managed settings the service itself obeys."""
from __future__ import annotations

import re

from sqlalchemy import select

from database import db, reader
from i18n import LANGUAGES, SETTING_DEFAULT_LANGUAGE
from languages import WHISPER_LANGUAGES, normalize_language, unknown_language_hint
from limits import MAX_INT_ID
from scratch import MAX_RETENTION_HOURS, SETTING_SCRATCH_RETENTION_HOURS, parse_retention_hours
from models import (SETTING_ACTIVE_PROOFREAD_PROMPT, SETTING_ACTIVE_TRANSCRIBE_PROMPT,
                    SETTING_TRANSCRIBING_ALLOWED, ProofreadPrompt, SystemSetting,
                    TranscribePrompt)

SETTING_PROOFREADING_ENABLED = "proofreading_enabled"
SETTING_PROOFREAD_MODEL = "proofread_model"
SETTING_TRANSCRIBE_LANGUAGE = "transcribe_language"  # Whisper code; unset or "" = detect

# Settings whose values the service parses: key -> check returning an error text or None.
BOOLEAN_SETTINGS = (SETTING_TRANSCRIBING_ALLOWED, SETTING_PROOFREADING_ENABLED)
PROMPT_SETTINGS = {SETTING_ACTIVE_TRANSCRIBE_PROMPT: TranscribePrompt,
                   SETTING_ACTIVE_PROOFREAD_PROMPT: ProofreadPrompt}


def get_setting(key: str) -> str | None:
    return reader().execute(
        select(SystemSetting.setting_value).where(SystemSetting.setting_key == key)
    ).scalar_one_or_none()


def get_flag(key: str, default: bool = True) -> bool:
    value = get_setting(key)
    if value is None:
        return default
    return value.strip().lower() == "true"


def transcribing_allowed() -> bool:
    return get_flag(SETTING_TRANSCRIBING_ALLOWED, default=True)


def active_prompt(model: type[TranscribePrompt] | type[ProofreadPrompt]):
    key = next(k for k, m in PROMPT_SETTINGS.items() if m is model)
    prompt_id = _prompt_id(get_setting(key))
    return None if prompt_id is None else db.session.get(model, prompt_id)


def _prompt_id(value: str | None) -> int | None:
    """ASCII digits in the id range only: `str.isdigit` accepts "²", and int() refuses
    thousands of digits."""
    if value is None or not re.fullmatch(r"[0-9]{1,10}", value.strip()):
        return None
    number = int(value.strip())
    return number if 1 <= number <= MAX_INT_ID else None


def set_setting(key: str, value: str, description: str | None = None) -> SystemSetting:
    setting = db.session.execute(
        select(SystemSetting).where(SystemSetting.setting_key == key)).scalar_one_or_none()
    if setting is None:
        setting = SystemSetting(setting_key=key, setting_value=value, description=description)
        db.session.add(setting)
    else:
        setting.setting_value = value
    return setting


def validate_setting_value(key: str, value: str | None) -> str | None:
    """An error text when `value` is not acceptable for a key the service reads."""
    if key in BOOLEAN_SETTINGS and value not in ("true", "false"):
        return f"'{key}' must be \"true\" or \"false\""
    if key in PROMPT_SETTINGS:
        prompt_id = _prompt_id(value)
        if prompt_id is None or db.session.get(PROMPT_SETTINGS[key], prompt_id) is None:
            return f"'{key}' must be the id of an existing prompt"
    if key == SETTING_SCRATCH_RETENTION_HOURS and parse_retention_hours(value) is None:
        return f"'{key}' must be a whole number of hours from 0 to {MAX_RETENTION_HOURS}"
    if key == SETTING_PROOFREAD_MODEL and not (value or "").strip():
        return f"'{key}' must name a model"
    if key == SETTING_DEFAULT_LANGUAGE and value not in LANGUAGES:
        return f"'{key}' must be \"en\" (English) or \"id\" (Indonesian)"
    if key == SETTING_TRANSCRIBE_LANGUAGE:
        language = normalize_language(value)
        if language is not None and language not in WHISPER_LANGUAGES:
            return f"'{key}' {unknown_language_hint(language)}"
    return None


def default_language() -> str | None:
    """The admins' transcription language (`transcribe_language`); None = detect it."""
    language = normalize_language(get_setting(SETTING_TRANSCRIBE_LANGUAGE))
    return language if language in WHISPER_LANGUAGES else None

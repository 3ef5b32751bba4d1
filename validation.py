"""Strict parsing of request input. Each helper returns a clean value or raises APIError(400)."""
from __future__ import annotations

import math
import re
import uuid
from typing import Any

from flask import current_app, request

from body_limits import refuse_if_cut
from errors import APIError
from limits import MAX_INT_ID
from serializers import FILE_TYPES
from subtitles import SUBTITLE_FORMATS



def json_body() -> dict[str, Any]:
    """The request's JSON object; a clear 400 for a missing, malformed or non-object body."""
    if not request.data:
        raise APIError(400, "The request body must be a JSON object")
    refuse_if_cut()
    try:
        data = request.get_json(silent=True, force=True)
    except RecursionError:  # `[[[[...` a hundred thousand deep
        raise APIError(400, "The JSON body is nested too deeply") from None
    if data is None:
        raise APIError(400, "The request body is not valid JSON")
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object")
    return data


def optional_json_body() -> dict[str, Any]:
    """Like json_body, for routes whose body is optional: no body is an empty object; a form
    body is an error, not silently nothing."""
    if request.form or request.files:
        raise APIError(400, "The request body must be a JSON object")
    return json_body() if request.data else {}


def string_field(data: dict[str, Any], name: str, *, max_length: int, required: bool = True,
                 min_length: int = 1, allow_null: bool = False, strip: bool = True) -> str | None:
    if name not in data or (data[name] is None and not required):
        if required:
            raise APIError(400, f"'{name}' is required")
        return None
    value = data[name]
    if value is None and allow_null:
        return None
    if not isinstance(value, str):
        raise APIError(400, f"'{name}' must be a string")
    if not is_storable_text(value):
        raise APIError(400, f"'{name}' contains a NUL character or invalid Unicode")
    if strip:
        value = value.strip()
    if len(value) < min_length:
        raise APIError(400, f"'{name}' must not be empty" if min_length == 1
                       else f"'{name}' must be at least {min_length} characters")
    if len(value) > max_length:
        raise APIError(400, f"'{name}' must be at most {max_length} characters")
    return value


def is_storable_text(value: str) -> bool:
    """PostgreSQL text holds neither NUL nor lone surrogates (JSON can carry both)."""
    if "\x00" in value:
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def storable_text(value: str) -> str:
    """Text from an outside service made storable: NULs dropped, invalid Unicode replaced."""
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def source_names(title: str, suffix: str) -> tuple[str, str] | None:
    """(audio_file_name, audio_file_path) of a job whose source is titled `title`. Clients
    show audio_file_path's last segment without its extension: the title plus the media's
    extension (`suffix`, "" when unknown, as for a Drive file). None for an empty title."""
    name = storable_text(title)[:200].strip()
    if not name:
        return None
    return name, name.replace("/", "-").replace("\\", "-") + suffix


def display_text(value: str, max_length: int) -> str:
    """A user-supplied label (an upload's file name) made safe to store and show."""
    cleaned = "".join(ch for ch in value if ch.isprintable())
    return cleaned.encode("utf-8", "ignore").decode("utf-8")[:max_length]


def bool_field(data: dict[str, Any], name: str, *, default: bool | None = None) -> bool:
    """A JSON true/false only: "yes", 1 and null are errors, never an admin by accident."""
    if name not in data:
        if default is None:
            raise APIError(400, f"'{name}' is required")
        return default
    value = data[name]
    if not isinstance(value, bool):
        raise APIError(400, f"'{name}' must be true or false")
    return value


def int_id(value: Any, what: str) -> int:
    """An integer id from a URL part or a JSON value; numeric strings are accepted
    because the frontend sends ids from select boxes as strings."""
    if isinstance(value, bool):
        raise APIError(400, f"{what} must be a whole number")
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,10}\s*", value):
        number = int(value)
    else:
        raise APIError(400, f"{what} must be a whole number")
    if not 1 <= number <= MAX_INT_ID:
        raise APIError(400, f"{what} is out of range")
    return number


def document_kind(file_type: str) -> str:
    """The document a download URL's file type names: txt, md, docx, srt or vtt."""
    if file_type in SUBTITLE_FORMATS:
        return file_type
    if file_type not in FILE_TYPES:
        raise APIError(400, "Unknown file type; use txt, md, word, docx, srt or vtt")
    return FILE_TYPES[file_type]


def uuid_id(value: str, what: str = "transcription id") -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except (ValueError, TypeError, AttributeError):
        raise APIError(400, f"The {what} must be a UUID, got {value[:40]!r}") from None


def pagination(default: int | None = None) -> tuple[int, int]:
    """`limit` and `offset` query parameters. Without `limit` a page holds `default` rows
    (the cap when None, as before); `limit` may go up to the cap."""
    cap = current_app.config["LIST_MAX_LIMIT"]
    limit = _query_int("limit", default=cap if default is None else min(default, cap), minimum=1)
    offset = _query_int("offset", default=0, minimum=0)
    if limit > cap:
        raise APIError(400, f"'limit' must be at most {cap}")
    return limit, offset


def _query_int(name: str, *, default: int, minimum: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise APIError(400, f"'{name}' must be a whole number")
    value = int(raw)
    if value < minimum:
        raise APIError(400, f"'{name}' must be at least {minimum}")
    return value


_TIME_PART = re.compile(r"^[0-9]{1,4}$")
_SECONDS_PART = re.compile(r"^[0-9]{1,6}(?:\.[0-9]{1,3})?$")


def parse_timestamp(raw: str | None, name: str) -> float | None:
    """`"hh:mm:ss"`, `"mm:ss"` or `"ss"` (seconds may carry a fraction) → seconds.
    A leading part may exceed 59 (`"75:00"` is 75 minutes); inner parts may not."""
    if raw is None or raw.strip() == "":
        return None
    text = raw.strip()
    parts = text.split(":")
    if (len(parts) > 3 or not _SECONDS_PART.match(parts[-1])
            or not all(_TIME_PART.match(p) for p in parts[:-1])):
        raise APIError(400, f"'{name}' must look like hh:mm:ss, mm:ss or ss, got {text[:20]!r}")
    numbers = [int(p) for p in parts[:-1]] + [float(parts[-1])]
    if len(numbers) > 1 and numbers[-1] >= 60 or len(numbers) == 3 and numbers[1] >= 60:
        raise APIError(400, f"'{name}' has minutes or seconds of 60 or more: {text!r}")
    seconds = 0.0
    for number in numbers:
        seconds = seconds * 60 + number
    return seconds


def format_hms(seconds: float, *, round_up: bool = False, short: bool = False,
               pad_hours: bool = True) -> str:
    """Seconds as h:m:s for messages, the inverse of parse_timestamp: `01:10:00` (whole
    seconds, rounded down). `round_up` counts a started second as a whole one (a length
    against a limit); `short` drops zero hours (`58:12`); `pad_hours=False` gives `1:10:00`."""
    total = max(math.ceil(seconds) if round_up else int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if short and not hours:
        return f"{minutes:02d}:{secs:02d}"
    return f"{hours:02d}:{minutes:02d}:{secs:02d}" if pad_hours else \
        f"{hours}:{minutes:02d}:{secs:02d}"

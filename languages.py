"""The languages Whisper transcribes, checked without importing the engine (web processes
never load it). tests/test_local_whisper.py checks this list against faster-whisper's."""
from __future__ import annotations

WHISPER_LANGUAGES = frozenset((
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha "
    "haw he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr "
    "ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg "
    "th tk tl tr tt uk ur uz vi yi yo zh yue").split())


def unknown_language_hint(value: str) -> str:
    """The end of a message about a code Whisper does not know: what the valid ones are."""
    return (f"is not a language Whisper knows ({value[:20]!r}): use an ISO 639-1 code such as "
            f"'en' or 'id', or leave it out to detect the language. Valid codes: "
            f"{', '.join(sorted(WHISPER_LANGUAGES))}")


def normalize_language(value: str | None) -> str | None:
    """A request's or a setting's language code, lower-cased; None when absent or empty."""
    value = (value or "").strip().lower()
    return value or None

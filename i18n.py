"""Messages in the reader's language: English (the msgids, kept byte for byte) or Indonesian.

Messages stay English in the code. They are translated at the edge: the JSON error answer
(`errors.error_response`), login's `msg`, a success answer's `message` (after_request), and the
stored `error_message` / `proofread_note` of a job when it is rendered (so old rows follow the
reader too). The catalog is gettext
(`translations/id/LC_MESSAGES/messages.po`, compiled to the committed `.mo`); a message built
with values has a msgid with named placeholders (`The link is longer than {limit} characters`),
matched as a pattern when the exact lookup misses. `scripts/i18n_messages.py` lists the messages
of the code and compiles the catalog; tests/test_i18n.py fails on a message without translation.
"""
from __future__ import annotations

import functools
import logging
import re
import time

from flask import Flask, current_app, g, has_request_context, request
from babel.support import Translations
from flask_babel import Babel
from werkzeug.datastructures import LanguageAccept

from config import BASE_DIR

log = logging.getLogger("ezra.i18n")

LANGUAGES = ("en", "id")
DEFAULT_LANGUAGE = "en"
SETTING_DEFAULT_LANGUAGE = "default_language"
TRANSLATIONS_DIR = BASE_DIR / "translations"
# How long a worker trusts the `default_language` it read; a change made through this worker's
# settings route applies at once (see forget_default_language).
_SETTING_TTL_SECONDS = 10.0

_SETTINGS_WRITES = {"admin.create_setting", "admin.update_setting", "admin.delete_setting"}
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")

babel = Babel()


def init_app(app: Flask) -> None:
    babel.init_app(app, default_locale=DEFAULT_LANGUAGE,
                   default_translation_directories=str(TRANSLATIONS_DIR),
                   locale_selector=select_language)
    app.extensions["ezra_default_language"] = [None, 0.0]  # [value, read at (monotonic)]

    @app.after_request
    def _settings_changed(response):
        if request.endpoint in _SETTINGS_WRITES and response.status_code < 400:
            forget_default_language()
        return response

    @app.after_request
    def _translate_success_message(response):
        # A success answer's `message` ("Setting created"): errors are translated where they
        # are made (errors.error_response). English answers are left as they are, byte for byte.
        if response.status_code >= 400 or not response.is_json or response.direct_passthrough:
            return response
        data = response.get_data()
        # Only an object has a top-level message: a list answer (up to 1000 rows) is not
        # scanned for one.
        if data[:1] != b"{" or b'"message":' not in data:
            return response
        body = response.get_json(silent=True)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            translated = translate_message(body["message"])
            if translated != body["message"]:
                response.set_data(app.json.response(body | {"message": translated}).get_data())
        return response


def select_language() -> str:
    """The best of `Accept-Language` among en/id, else the admins' `default_language`.
    Evaluated lazily by Flask-Babel: only a request that shows a message pays for it."""
    return preferred_language(request.accept_languages) or default_language()


def preferred_language(accepted: LanguageAccept) -> str | None:
    """The reader's first language among en/id by quality, on the primary tag (en-GB is
    English): werkzeug's best_match would prefer an exact "id;q=0.8" over "en-GB" (q=1)."""
    for value, quality in accepted:
        primary = "en" if value == "*" else value.replace("_", "-").split("-")[0].lower()
        if quality > 0 and primary in LANGUAGES:
            return primary
    return None


def default_language() -> str:
    """`default_language` from the settings, read on the request's own connection (no second
    one from the pool) at most every few seconds. When the database is the problem being
    answered, or the read fails: the last value read, or en."""
    cached = current_app.extensions["ezra_default_language"]
    now = time.monotonic()
    if cached[0] is not None and now - cached[1] < _SETTING_TTL_SECONDS:
        return cached[0]
    if g.get("ezra_database_trouble"):
        return cached[0] or DEFAULT_LANGUAGE
    from system_settings import get_setting
    try:
        value = get_setting(SETTING_DEFAULT_LANGUAGE)
    except Exception:
        log.warning("default_language could not be read; using %s",
                    cached[0] or DEFAULT_LANGUAGE, exc_info=True)
        return cached[0] or DEFAULT_LANGUAGE
    return remember_default_language(current_app, value)


def remember_default_language(app: Flask, value: str | None) -> str:
    """Keep the `default_language` setting's value just read (by `default_language`, or by
    a download with its token check) for the next few seconds; the language it names."""
    language = (value or "").strip().lower()
    language = language if language in LANGUAGES else DEFAULT_LANGUAGE
    app.extensions["ezra_default_language"][:] = [language, time.monotonic()]
    return language


def forget_default_language() -> None:
    """The settings route changed `default_language`: read it again on the next message."""
    current_app.extensions["ezra_default_language"][:] = [None, 0.0]


def validate_language(value: str | None) -> bool:
    return value in LANGUAGES


def translate_message(text: str | None) -> str | None:
    """`text` in this request's language; unchanged outside a request, in English, or when
    the catalog does not know it."""
    if not text or not has_request_context():
        return text
    catalog = g.get("ezra_catalog")
    if catalog is None:  # once per request: a job list translates many rows
        # select_language is what Flask-Babel's get_locale would call; asked directly, an
        # English answer skips building a babel Locale (a tenth of a small 404's CPU).
        catalog = g.ezra_catalog = message_catalog(select_language()) or False
    return catalog.translate(text) if catalog else text


def message_catalog(language: str) -> _Catalog | None:
    """The catalog of `language`; None for English (the messages are English)."""
    return None if language == DEFAULT_LANGUAGE else _catalog(language)


class _Catalog:
    """One language's messages: exact msgids in a dict, placeholder msgids as patterns tried
    (longest literal text first) only when the exact lookup misses."""

    def __init__(self, messages: dict[str, str]):
        self.exact = {msgid: msgstr for msgid, msgstr in messages.items()
                      if msgstr and "{" not in msgid}
        patterns = [(msgid, msgstr) for msgid, msgstr in messages.items()
                    if msgstr and _PLACEHOLDER.search(msgid)]
        patterns.sort(key=lambda item: -len(_PLACEHOLDER.sub("", item[0])))
        self.patterns = [(message_pattern(msgid), msgstr) for msgid, msgstr in patterns]
        self.translate = functools.lru_cache(maxsize=4096)(self._translate)

    def _translate(self, text: str, depth: int = 0) -> str:
        found = self.exact.get(text)
        if found is not None:
            return found
        for pattern, msgstr in self.patterns:
            match = pattern.fullmatch(text)
            if match:
                # A value may itself be a message (a hint inside a sentence): translate it too.
                values = {name: (self._translate(value, depth + 1) if depth < 2 else value)
                          for name, value in match.groupdict().items()}
                return _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), msgstr)
        return text


def message_pattern(msgid: str) -> re.Pattern:
    """`The audio is {minutes} minutes long` -> a regex capturing `minutes` (any text)."""
    parts, last, seen = [], 0, set()
    for placeholder in _PLACEHOLDER.finditer(msgid):
        parts.append(re.escape(msgid[last:placeholder.start()]))
        name = placeholder.group(1)
        parts.append(f"(?P={name})" if name in seen else f"(?P<{name}>.+?)")
        seen.add(name)
        last = placeholder.end()
    parts.append(re.escape(msgid[last:]))
    return re.compile("".join(parts), re.DOTALL)


@functools.lru_cache(maxsize=len(LANGUAGES))
def _catalog(language: str) -> _Catalog:
    """Built once per language from the compiled catalog, as Flask-Babel loads it (which
    needs a request to know the language; the download lane has none)."""
    translations = Translations.load(str(TRANSLATIONS_DIR), [language], "messages")
    return _Catalog({msgid: msgstr for msgid, msgstr in
                     getattr(translations, "_catalog", {}).items()
                     if isinstance(msgid, str) and msgid})

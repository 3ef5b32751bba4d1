"""Input limits, each defined once: the views enforce them, openapi.py documents them.
Limits an operator tunes (upload size, list pages, jobs per user) are config.py's."""
from __future__ import annotations

MAX_INT_ID = 2**31 - 1  # ids are PostgreSQL `integer`

# Accounts. Sign-in accepts any name up to MAX_USERNAME_LENGTH, so that users of the earlier
# backend (a `text` column, no limit) can still sign in; names created here are stricter.
MAX_USERNAME_LENGTH = 150
MAX_NEW_USERNAME = 64
USERNAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._@-")
MAX_PASSWORD_LENGTH = 1024

# Submissions
MAX_FILENAME_LENGTH = 255

# Admin: prompts, settings, the Word reference document
MAX_VERSION_LENGTH = 100
MAX_PROMPT_LENGTH = 100_000
MAX_SETTING_KEY = 100
MAX_SETTING_VALUE = 10_000
MAX_DESCRIPTION = 1_000
MAX_REFERENCE_DOCX = 10 * 1024 * 1024
MAX_REFERENCE_DOCX_ENTRIES = 500
MAX_REFERENCE_DOCX_UNPACKED = 50 * 1024 * 1024
# The earlier backend's page of newest transcriptions and logs; the dashboard loads both
# before it renders anything.
ADMIN_PAGE_DEFAULT = 100

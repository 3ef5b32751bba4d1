"""What translating a message costs (i18n.py): per call, through a request context, for an
exact msgid, a msgid with placeholders (pattern), an unknown text, and English (no lookup).

    .venv/bin/python bench/bench_i18n.py

Uses the embedded defaults (no database is read: every case names its language).
"""
from __future__ import annotations

import sys
import tempfile
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app import create_app  # noqa: E402

CASES = (("exact", "This YouTube video is private"),
         ("pattern", "The audio is 95 minutes long; the limit is 90 minutes"),
         ("unknown", "Some upstream text no catalog knows"))
CALLS = 20000


def main() -> None:
    app = create_app({"TESTING": True, "STORAGE_DIR": tempfile.mkdtemp(),
                      "DATABASE_URL": "sqlite://", "JWT_SECRET_KEY": "x" * 40})
    from i18n import message_catalog, translate_message
    for language in ("id", "en"):
        with app.test_request_context(headers={"Accept-Language": language}):
            catalog = message_catalog(language)
            for label, text in CASES:
                warm = timeit.timeit(lambda: translate_message(text), number=CALLS) / CALLS
                line = f"{language} {label:8} {warm * 1e6:6.2f} us/call (cached)"
                if catalog:
                    cold = timeit.timeit(lambda: (catalog.translate.cache_clear(),
                                                  catalog.translate(text)), number=2000) / 2000
                    line += f", {cold * 1e6:6.2f} us/call uncached"
                print(line)
            if catalog:
                print(f"catalog: {len(catalog.exact)} exact msgids, "
                      f"{len(catalog.patterns)} patterns")


if __name__ == "__main__":
    main()

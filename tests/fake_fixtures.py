"""pytest fixtures for the fake outside services (see tests/fakes.py).

Import them into a conftest.py or a test module, e.g.::

    from tests.fake_fixtures import fake_whisper, fake_openai, fake_openai_factory  # noqa: F401

Each fixture is function-scoped: a fresh, started server per test, stopped at
teardown.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

try:  # imported as part of a ``tests`` package
    from .fakes import FakeOpenAI, FakeWhisperService
except ImportError:  # rootdir-relative import (tests/ on sys.path, no package)
    from fakes import FakeOpenAI, FakeWhisperService  # type: ignore[no-redef]

WHISPER_TEST_KEY = "whisper-test-key"
OPENAI_TEST_KEY = "sk-test"

__all__ = [
    "OPENAI_TEST_KEY",
    "WHISPER_TEST_KEY",
    "fake_openai",
    "fake_openai_factory",
    "fake_whisper",
]


@pytest.fixture
def fake_whisper() -> Iterator[FakeWhisperService]:
    """A started FakeWhisperService (api_key ``whisper-test-key``); use
    ``.submit_url`` / ``.result_url``."""
    fake = FakeWhisperService(api_key=WHISPER_TEST_KEY)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A started FakeOpenAI (api_key ``sk-test``); use ``.base_url``."""
    fake = FakeOpenAI(api_key=OPENAI_TEST_KEY)
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture
def fake_openai_factory() -> Iterator[Callable[..., FakeOpenAI]]:
    """Make extra started FakeOpenAI servers (e.g. one per provider: Groq,
    DeepSeek...): ``make(api_key="gsk-x", known_models={"whisper-large-v3"})``.
    All are stopped at teardown."""
    made: list[FakeOpenAI] = []

    def make(**kwargs: Any) -> FakeOpenAI:
        kwargs.setdefault("api_key", OPENAI_TEST_KEY)
        fake = FakeOpenAI(**kwargs)
        fake.start()
        made.append(fake)
        return fake

    try:
        yield make
    finally:
        for fake in made:
            fake.stop()

"""pytest fixtures for the fake outside services (tests/fakes.py): a fresh, started server per
test on 127.0.0.1, stopped at teardown, where a fault in the fake itself fails the test."""
from __future__ import annotations

from typing import Iterator

import pytest

from fakes import FakeOpenAI, FakeService, FakeWhisperService

WHISPER_TEST_KEY = "whisper-test-key"
OPENAI_TEST_KEY = "sk-test"


def served(fake: FakeService) -> Iterator[FakeService]:
    """Start `fake`, hand it to the test, stop it; its own handlers must not have failed."""
    with fake:
        yield fake
    assert fake.errors == [], f"the fake {type(fake).__name__} failed: {fake.errors}"


@pytest.fixture
def fake_whisper() -> Iterator[FakeWhisperService]:
    """The remote Whisper service (key ``whisper-test-key``): ``.submit_url``, ``.result_url``."""
    yield from served(FakeWhisperService(api_key=WHISPER_TEST_KEY))


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """An OpenAI-compatible API (key ``sk-test``): ``.base_url``."""
    yield from served(FakeOpenAI(api_key=OPENAI_TEST_KEY))

"""Slicing a transcript for the proofreader, and the proofreader against the fake LLM."""
from __future__ import annotations

import random

import pytest

from proofreading_service import Proofreader, split_into_slices


class MemoryStore:
    def __init__(self, done=None):
        self.saved = dict(done or {})
        self.progress_calls = []

    def done(self):
        return dict(self.saved)

    def save(self, index, text):
        self.saved[index] = text

    def progress(self, done, total):
        self.progress_calls.append((done, total))

    def should_stop(self):
        return False


@pytest.mark.parametrize("seed", range(20))
def test_slices_keep_every_word_in_order_and_respect_the_limit(seed):
    rng = random.Random(seed)
    words = [rng.choice(["amen", "grace", "Ezra", "and", "the", "word", "x" * rng.randint(1, 40)])
             + rng.choice(["", "", ".", "!", "?", ",", "\n\n"]) for _ in range(rng.randint(1, 800))]
    text = " ".join(words)
    limit = rng.randint(50, 600)
    slices = split_into_slices(text, limit)
    assert all(0 < len(s) <= limit for s in slices)
    assert " ".join(" ".join(slices).split()) == " ".join(text.split())


def test_slices_cut_at_paragraphs_then_sentences():
    text = "First paragraph one. Still first.\n\nSecond paragraph here. And more of it."
    assert split_into_slices(text, 40) == ["First paragraph one. Still first.",
                                           "Second paragraph here. And more of it."]
    assert split_into_slices(text, 30) == ["First paragraph one.", "Still first.",
                                           "Second paragraph here.", "And more of it."]
    assert split_into_slices("A. B.\n\nC. D.", 100) == ["A. B.\n\nC. D."]
    assert split_into_slices("Aa aa. Bb bb. Cc cc.\n\nDd.", 13) == ["Aa aa. Bb bb.",
                                                                     "Cc cc.\n\nDd."]
    assert split_into_slices(text, 1000) == [text]
    assert split_into_slices("   \n\n  ", 100) == []


def test_proofreader_resumes_from_saved_slices(fake_openai):
    store = MemoryStore(done={0: "ALREADY DONE"})
    proofreader = Proofreader(fake_openai.base_url, fake_openai.api_key, "deepseek-chat",
                              concurrency=2, timeout_seconds=10, max_retries=0)
    slices = ["zero.", "one two three.", "four five six."]
    result = proofreader.proofread(slices, "Fix it.", store)
    assert result == "ALREADY DONE\n\nPROOFREAD[one two three.]\n\nPROOFREAD[four five six.]"
    assert [r["user"] for r in fake_openai.chat_requests] != []
    assert "zero." not in [r["user"] for r in fake_openai.chat_requests]
    assert all(r["system"] == "Fix it." for r in fake_openai.chat_requests)
    assert store.saved[2] == "PROOFREAD[four five six.]"
    assert store.progress_calls[0] == (1, 3) and store.progress_calls[-1] == (3, 3)


def test_an_answer_cut_at_the_output_limit_is_redone_in_halves(fake_openai):
    fake_openai.enforce_max_tokens = True
    fake_openai.chat_answer = lambda system, user, model: user.upper()
    proofreader = Proofreader(fake_openai.base_url, fake_openai.api_key, "deepseek-chat",
                              concurrency=1, timeout_seconds=10, max_retries=0,
                              max_output_tokens=12)  # ~48 characters
    text = "First sentence is here. Second sentence follows it. Third one ends."
    result = proofreader.proofread([text], "", MemoryStore())
    assert result.replace("\n\n", " ") == text.upper()
    asked = [r["user"] for r in fake_openai.chat_requests]
    assert asked[0] == text  # answered cut short, so it was asked again in smaller pieces
    assert len(asked) > 2 and all(len(piece) <= len(text) // 2 + 1 for piece in asked[1:])


def test_unknown_model_is_an_actionable_error(fake_openai):
    from proofreading_service import ProofreadError
    fake_openai.known_models = {"deepseek-chat"}
    proofreader = Proofreader(fake_openai.base_url, fake_openai.api_key, "deepseek-retired",
                              concurrency=1, timeout_seconds=10, max_retries=0)
    with pytest.raises(ProofreadError, match="proofread_model"):
        proofreader.proofread(["text."], "", MemoryStore())


"""Proofreading with DeepSeek (or any OpenAI-compatible chat API).

The transcript is cut at paragraph, then sentence, boundaries into slices small enough that
each answer fits the model's output limit; slices go out concurrently with a bound; the
`openai` client retries 429s, 5xx and timeouts with exponential backoff (honouring
Retry-After); the answers are joined in order.
"""
from __future__ import annotations

import re
import threading
from typing import Any

from chunk_runner import ChunkStore, run_pending
from errors import ServiceError
from metrics import outside_call
from validation import storable_text

MAX_OUTPUT_TOKENS = 8192  # DeepSeek's chat models answer at most 8K tokens
EMPTY_ANSWER_RETRIES = 2  # an empty answer to a non-empty slice is asked again, then fails
_SENTENCE_END = re.compile(r"(?<=[.!?…。？！])[\"'”’)\]]*\s+")


class ProofreadError(ServiceError):
    """The proofreading service failed; str() is for the user, `detail` for the log."""


def split_into_slices(text: str, max_chars: int) -> list[str]:
    """Greedy packing of paragraphs (then sentences, then words) into slices of at most
    `max_chars` characters. Paragraphs stay separated by a blank line and sentences of one
    paragraph by a space, so the slices joined back read like the transcript."""
    pieces: list[tuple[str, str]] = []  # (text, separator before it inside a slice)
    for paragraph in re.split(r"\n\s*\n", text.strip()):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        parts = [paragraph] if len(paragraph) <= max_chars else [
            part for sentence in _SENTENCE_END.split(paragraph)
            for part in _hard_wrap(sentence.strip(), max_chars)]
        pieces.extend((part, "\n\n" if i == 0 else " ") for i, part in enumerate(parts))
    slices: list[str] = []
    current = ""
    for piece, separator in pieces:
        if current and len(current) + len(separator) + len(piece) > max_chars:
            slices.append(current)
            current = ""
        current = f"{current}{separator}{piece}" if current else piece
    if current:
        slices.append(current)
    return slices


def _hard_wrap(sentence: str, max_chars: int) -> list[str]:
    """A 'sentence' longer than a slice (transcripts without punctuation) cut at spaces."""
    if len(sentence) <= max_chars:
        return [sentence] if sentence else []
    out, current = [], ""
    for word in sentence.split():
        while len(word) > max_chars:  # one absurd token: cut it as it is
            if current:
                out.append(current)
                current = ""
            out.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) > max_chars:
            out.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    if current:
        out.append(current)
    return out


class Proofreader:
    def __init__(self, base_url: str, api_key: str, model: str, concurrency: int,
                 timeout_seconds: float, max_retries: int,
                 max_output_tokens: int = MAX_OUTPUT_TOKENS):
        from openai import OpenAI
        self.client = OpenAI(base_url=base_url, api_key=api_key, timeout=timeout_seconds,
                             max_retries=max_retries)
        self.model = model
        self.concurrency = concurrency
        self.max_output_tokens = max_output_tokens
        # Tokens the answers cost (the responses' `usage`), over every slice and retry.
        self.tokens_used = 0
        self._tokens_lock = threading.Lock()

    def proofread(self, slices: list[str], system_prompt: str, store: ChunkStore) -> str:
        answers = run_pending(len(slices),
                              lambda i: self._answer(i, slices[i], system_prompt),
                              store, self.concurrency, "proofread")
        return "\n\n".join(answers)

    def _answer(self, index: int, text: str, system_prompt: str, depth: int = 0) -> str:
        messages: list[dict[str, Any]] = []
        if system_prompt.strip():
            messages.append({"role": "system", "content": system_prompt})
        messages.append({"role": "user", "content": text})
        for _attempt in range(1 + EMPTY_ANSWER_RETRIES):
            choice = self._complete(index, messages)
            # NUL cannot be stored in PostgreSQL text; the paid answer must be storable.
            answer = storable_text(choice.message.content or "").strip()
            if answer or not text.strip():
                break
        else:
            raise ProofreadError(
                f"The proofreader returned nothing for part {index + 1} of the transcript; "
                "please retry later", f"slice {index}: empty answer "
                                      f"{1 + EMPTY_ANSWER_RETRIES} times")
        if choice.finish_reason == "length" and depth < 2 and len(text) > 20:
            # The answer was cut at the output limit: proofread the slice in two halves.
            halves = split_into_slices(text, len(text) // 2 + 1)
            return "\n\n".join(self._answer(index, half, system_prompt, depth + 1)
                                 for half in halves)
        return answer

    def _complete(self, index: int, messages: list[dict[str, Any]]):
        try:
            with outside_call("proofread"):
                response = self.client.chat.completions.create(
                    model=self.model, messages=messages, max_tokens=self.max_output_tokens,
                    temperature=0.2)
        except Exception as exc:  # openai.APIError, after the client's own retries
            status = getattr(exc, "status_code", None)
            if status == 404 or "model_not_found" in str(exc):
                raise ProofreadError(
                    f"The proofreading model '{self.model}' is not available; an admin can "
                    f"change the 'proofread_model' setting", str(exc)) from exc
            raise ProofreadError("The proofreading service failed", f"slice {index}: {exc}") from exc
        usage = getattr(response, "usage", None)
        tokens = getattr(usage, "total_tokens", None) if usage is not None else None
        if isinstance(tokens, int):
            with self._tokens_lock:
                self.tokens_used += tokens
        return response.choices[0]

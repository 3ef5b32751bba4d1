"""Word error rate as the speech fixtures' README defines it, and a ChunkStore in memory
(tests and bench/bench_local_whisper.py share them)."""
from __future__ import annotations

import re


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Levenshtein distance over words divided by the reference's word count."""
    ref, hyp = words(reference), words(hypothesis)
    previous = list(range(len(hyp) + 1))
    for i, ref_word in enumerate(ref, 1):
        current = [i] + [0] * len(hyp)
        for j, hyp_word in enumerate(hyp, 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1,
                             previous[j - 1] + (ref_word != hyp_word))
        previous = current
    return previous[-1] / max(1, len(ref))


class MemoryStore:
    """A transcription ChunkStore kept in memory, for running an engine without a database."""

    def __init__(self):
        self.chunks: dict[int, str] = {}
        self.progressed: list[tuple[int, int]] = []

    def done(self) -> dict[int, str]:
        return dict(self.chunks)

    def save(self, index: int, text: str) -> None:
        self.chunks[index] = text

    def progress(self, done: int, total: int) -> None:
        self.progressed.append((done, total))

    def should_stop(self) -> bool:
        return False

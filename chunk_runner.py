"""Running a job's paid pieces (transcription chunks, proofreading slices) concurrently and
resumably: finished pieces live in a `ChunkStore`, so a resumed job sends only the rest.
Used by the OpenAI-compatible transcription engine and the proofreader; the other engines
use `Cancelled`, `ChunkStore` and `check_stop`."""
from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, Protocol, Sequence


class Cancelled(Exception):
    """The job was cancelled or lost its lease while the engine worked."""


class ChunkStore(Protocol):
    def done(self) -> dict[int, str]: ...
    def save(self, index: int, text: str) -> None: ...
    def progress(self, done: int, total: int) -> None: ...
    def should_stop(self) -> bool: ...


def run_pending(count: int, work: Callable[[int], str], store: ChunkStore,
                concurrency: int, name: str,
                sizes: Sequence[float] | None = None) -> list[str]:
    """Run `work(i)` for every index the store has not finished, `concurrency` at a time,
    saving each answer the moment it arrives (so a crash never pays for it twice).
    Progress counts pieces, or the `sizes` of the finished ones (seconds of audio).
    Returns all `count` answers in index order."""
    results = dict(store.done())
    pending = [i for i in range(count) if i not in results]
    total = max(1, int(round(sum(sizes)))) if sizes is not None else count

    def report() -> None:
        if sizes is None:
            store.progress(len(results), count)
            return
        finished = [i for i in results if 0 <= i < count]  # a store may hold marker indexes
        store.progress(total if len(finished) == count
                       else min(total, int(sum(sizes[i] for i in finished))), total)

    report()
    stop = threading.Event()

    def guarded(index: int) -> tuple[int, str]:
        if stop.is_set():
            raise Cancelled()
        return index, work(index)

    with ThreadPoolExecutor(concurrency, thread_name_prefix=name) as pool:
        futures = {pool.submit(guarded, i) for i in pending}
        try:
            while futures:
                # FIRST_COMPLETED, not FIRST_EXCEPTION: the latter returns only on a failure,
                # when all are done or at the timeout, so answers piled up unsaved for up to a
                # second and a killed runner paid for them again.
                finished, futures = wait(futures, timeout=1, return_when=FIRST_COMPLETED)
                failed = [f for f in finished if f.exception() is not None]
                for future in finished:
                    if future not in failed:  # every paid answer is kept, even beside a failure
                        index, text = future.result()
                        store.save(index, text)
                        results[index] = text
                        report()
                if failed:
                    failed[0].result()
                if store.should_stop():
                    raise Cancelled()
        except BaseException:
            stop.set()
            for future in futures:
                future.cancel()
            raise
    return [results[i] for i in range(count)]


def check_stop(store: ChunkStore) -> None:
    if store.should_stop():
        raise Cancelled()

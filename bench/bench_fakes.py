"""How the fake outside services (tests/fakes.py) behave in time, the figures tests no longer
assert: the answer time of a request with a configured delay, and N requests with that delay
sent at once (served in parallel, the wall time stays near one delay; in series it would be
N x delay).

    .venv/bin/python bench/bench_fakes.py            # delay 0.3 s, 8 requests at once
    .venv/bin/python bench/bench_fakes.py --quick    # delay 0.1 s, 4 requests
"""
from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import openai  # noqa: E402

from fakes import FakeOpenAI  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.3)
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="delay 0.1 s, 4 requests")
    args = parser.parse_args()
    if args.quick:
        args.delay, args.requests = 0.1, 4
    with FakeOpenAI(api_key="sk-bench", delay={"chat": args.delay}) as fake:
        client = openai.OpenAI(base_url=fake.base_url, api_key="sk-bench", max_retries=0,
                               timeout=30)

        def chat(i: int) -> float:
            started = time.monotonic()
            client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                  "content": f"{i}"}])
            return time.monotonic() - started
        one = chat(0)
        started = time.monotonic()
        with ThreadPoolExecutor(args.requests) as pool:
            each = list(pool.map(chat, range(args.requests)))
        wall = time.monotonic() - started
    print(f"one request with a {args.delay:.2f} s delay: {one:.3f} s")
    print(f"{args.requests} at once: wall {wall:.3f} s (in series {args.requests * args.delay:.2f} s),"
          f" slowest {max(each):.3f} s, peak in flight {fake.peak_in_flight['chat']}")


if __name__ == "__main__":
    main()

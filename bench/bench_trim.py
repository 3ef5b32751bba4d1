"""Time audio_service on a 2-hour talk: cutting 10 minutes out of it must take well under 2 s.

    .venv/bin/python bench/bench_trim.py          # probe + 10-minute cuts
    .venv/bin/python bench/bench_trim.py --full   # also: whole-file encode, silences, chunk cut

The 2-hour source (mono 44.1 kHz MP3 at 128 kbit/s, like a downloaded talk: a tone plus pink
noise) is generated once, which takes about a minute, and cached in /tmp/ezra_bench.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_service import (  # noqa: E402
    compact_extension,
    cut_segment,
    detect_silences,
    encode_compact,
    ffmpeg_exe,
    plan_chunks,
    require_audio,
)

CACHE = Path("/tmp/ezra_bench")
SOURCE = CACHE / "talk_2h.mp3"
HOURS = 2


def make_source() -> Path:
    if SOURCE.exists():
        return SOURCE
    CACHE.mkdir(parents=True, exist_ok=True)
    seconds = HOURS * 3600
    partial = SOURCE.with_suffix(".mp3.part")
    print(f"generating {SOURCE} ({HOURS} h, once)...", flush=True)
    started = time.perf_counter()
    graph = (f"sine=frequency=220:sample_rate=44100:duration={seconds},volume=0.6[s];"
             f"anoisesrc=color=pink:sample_rate=44100:amplitude=0.05:duration={seconds}[n];"
             f"[s][n]amix=inputs=2:duration=shortest[a]")
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
                    "-filter_complex", graph, "-map", "[a]", "-ac", "1", "-c:a", "libmp3lame",
                    "-b:a", "128k", "-f", "mp3", str(partial)], check=True)
    partial.replace(SOURCE)
    print(f"  generated in {time.perf_counter() - started:.1f} s")
    return SOURCE


def timed(label: str, action: Callable[[], object], runs: int = 1) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    detail = f"  (runs: {', '.join(f'{t:.2f}' for t in times)})" if runs > 1 else ""
    print(f"{label:<58} {statistics.median(times):7.2f} s{detail}", flush=True)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    source = make_source()
    ext = compact_extension()
    print(f"ffmpeg: {ffmpeg_exe()}\ncompact codec: {ext}\nsource: {source} "
          f"({source.stat().st_size / 1e6:.0f} MB)\n")
    with tempfile.TemporaryDirectory(prefix="ezra-bench-") as tmp:
        work = Path(tmp)
        duration = require_audio(source)
        timed("require_audio (probe) on the 2 h file", lambda: require_audio(source), args.runs)
        middle = work / f"middle{ext}"
        figure = timed("encode_compact 10 min from the middle (1:00:00-1:10:00)",
                       lambda: encode_compact(source, middle, 3600.0, 4200.0), args.runs)
        print(f"{'':<58} -> {require_audio(middle):.2f} s of audio, "
              f"{middle.stat().st_size / 1e6:.2f} MB")
        timed("encode_compact 10 min at the end (1:50:00-2:00:00)",
              lambda: encode_compact(source, work / f"end{ext}", duration - 600, duration),
              args.runs)
        if args.full:
            compact = work / f"full{ext}"
            timed("encode_compact the whole 2 h file", lambda: encode_compact(source, compact))
            print(f"{'':<58} -> {compact.stat().st_size / 1e6:.1f} MB")
            silences: list = []
            timed("detect_silences on the 2 h compact file",
                  lambda: silences.extend(detect_silences(compact)))
            plan = plan_chunks(require_audio(compact), silences, 1200)
            print(f"{'':<58} -> {len(silences)} silences, {len(plan)} chunks of <= 20 min")
            timed("cut_segment the last 20-minute chunk (stream copy)",
                  lambda: cut_segment(compact, work / f"chunk{ext}", duration - 1200, duration),
                  args.runs)
    verdict = "OK" if figure < 2.0 else "TOO SLOW"
    print(f"\nbench figure: cutting 10 min out of a 2 h file takes {figure:.2f} s "
          f"(median of {args.runs}; target well under 2 s): {verdict}")


if __name__ == "__main__":
    main()

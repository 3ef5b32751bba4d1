"""audio_service with the real FFmpeg; test audio is generated with lavfi (sine + anullsrc)."""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from audio_service import (  # noqa: E402
    AudioError,
    AudioInfo,
    check_window,
    compact_extension,
    cut_segment,
    detect_silences,
    encode_compact,
    ffmpeg_exe,
    plan_chunks,
    probe_audio,
    require_audio,
)
from validation import format_hms  # noqa: E402

TOL = 0.1
# tone 0-3, silence 3-4.5, tone 4.5-6.5, silence 6.5-7.5, tone 7.5-8.5, silence 8.5-9.5
PATTERN = [("tone", 3.0), ("silence", 1.5), ("tone", 2.0), ("silence", 1.0), ("tone", 1.0),
           ("silence", 1.0)]
TOTAL = sum(length for _, length in PATTERN)
SILENCES = [(3.0, 4.5), (6.5, 7.5), (8.5, 9.5)]


def ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args],
                   check=True, timeout=60)


def stream_line(path: Path) -> str:
    result = subprocess.run([ffmpeg_exe(), "-nostdin", "-hide_banner", "-i", str(path)],
                            capture_output=True, text=True, timeout=60)
    return next(line for line in result.stderr.splitlines() if "Audio:" in line)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Generated once for the module: a patterned MP3, a compact copy, video-only, text."""
    root = tmp_path_factory.mktemp("media")
    inputs: list[str] = []
    for kind, length in PATTERN:
        source = (f"sine=frequency=440:sample_rate=44100:duration={length}" if kind == "tone"
                  else f"anullsrc=r=44100:cl=mono:d={length}")
        inputs += ["-f", "lavfi", "-i", source]
    labels = "".join(f"[{i}]" for i in range(len(PATTERN)))
    talk = root / "talk.mp3"
    ffmpeg(*inputs, "-filter_complex", f"{labels}concat=n={len(PATTERN)}:v=0:a=1",
           "-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k", str(talk))
    video = root / "video-only.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=duration=2:size=64x64:rate=10", "-c:v", "mpeg4",
           str(video))
    text = root / "notes.mp3"  # a text file with an audio name
    text.write_text("These are meeting notes, not audio.\n" * 20)
    concat = root / "playlist.mp3"  # a concat script that would read a sibling file
    concat.write_text("ffconcat version 1.0\nfile talk.mp3\n")
    compact = root / f"compact{compact_extension()}"
    encode_compact(talk, compact)
    return {"talk": talk, "video": video, "text": text, "concat": concat, "compact": compact,
            "root": root}


# --------------------------------------------------------------------------- binary and probing


def test_ffmpeg_exe_is_cached_and_runs():
    exe = ffmpeg_exe()
    assert exe == ffmpeg_exe()
    assert os.access(exe, os.X_OK)


def test_compact_extension_prefers_opus():
    assert compact_extension() in (".ogg", ".mp3")
    encoders = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True,
                              text=True, timeout=60).stdout
    if " libopus " in encoders:
        assert compact_extension() == ".ogg"


def test_probe_audio_reads_duration_and_codec(media):
    info = probe_audio(media["talk"])
    assert isinstance(info, AudioInfo)
    assert info.has_audio and info.codec == "mp3"
    assert info.duration == pytest.approx(TOTAL, abs=TOL)
    assert require_audio(media["talk"]) == pytest.approx(TOTAL, abs=TOL)


def test_probe_audio_video_only(media):
    info = probe_audio(media["video"])
    assert info == AudioInfo(duration=pytest.approx(2.0, abs=TOL), has_audio=False, codec=None)
    with pytest.raises(AudioError, match="^The file contains no audio stream$"):
        require_audio(media["video"])


def test_probe_audio_unreadable_file(media):
    with pytest.raises(AudioError, match="^The file is not a readable audio or video file$"):
        probe_audio(media["text"])


def test_probe_audio_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        probe_audio(tmp_path / "nope.mp3")


def test_concat_script_is_not_followed(media):
    # Security: FFmpeg would otherwise auto-detect the script and read talk.mp3 through it.
    with pytest.raises(AudioError, match="not a readable audio or video file"):
        probe_audio(media["concat"])
    with pytest.raises(AudioError):
        encode_compact(media["concat"], media["root"] / "out-concat.ogg")


def test_odd_file_names_are_not_options_or_protocols(media, tmp_path):
    odd = tmp_path / "-i http:evil #1.mp3"
    odd.write_bytes(media["talk"].read_bytes())
    assert require_audio(odd) == pytest.approx(TOTAL, abs=TOL)


# --------------------------------------------------------------------------- windows


def test_format_time():
    assert format_hms(4200, short=True) == "01:10:00"
    assert format_hms(3492.9, short=True) == "58:12"
    assert format_hms(5, short=True) == "00:05"


def test_check_window_defaults_and_clamp():
    assert check_window(100.0, None, None) == (0.0, 100.0)
    assert check_window(100.0, 10, None) == (10.0, 100.0)
    assert check_window(100.0, None, 40) == (0.0, 40.0)
    assert check_window(100.0, 10, 500) == (10.0, 100.0)  # end past the audio: clamped


def test_check_window_errors():
    with pytest.raises(AudioError) as exc:
        check_window(3492.5, 4200, None)
    assert str(exc.value) == "The start time 01:10:00 is past the end of the audio (58:12)"
    with pytest.raises(AudioError, match="past the end"):
        check_window(60.0, 60.0, None)
    with pytest.raises(AudioError, match="must be before the end time"):
        check_window(100.0, 50, 50)
    with pytest.raises(AudioError, match="must be before the end time"):
        check_window(100.0, 50, 20)
    with pytest.raises(AudioError, match="negative"):
        check_window(100.0, -1, 20)
    with pytest.raises(AudioError, match="numbers"):
        check_window(100.0, float("nan"), 20)


# --------------------------------------------------------------------------- encoding and cutting


def test_encode_compact_whole_file(media):
    info = probe_audio(media["compact"])
    assert info.has_audio and info.codec in ("opus", "mp3")
    assert info.duration == pytest.approx(TOTAL, abs=TOL)
    line = stream_line(media["compact"])
    assert "mono" in line
    if info.codec == "mp3":
        assert "16000 Hz" in line  # Ogg Opus always reports 48 kHz playback


def test_encode_compact_window_is_accurate(media, tmp_path):
    out = tmp_path / f"window{compact_extension()}"
    encode_compact(media["talk"], out, 2.0, 6.8)
    assert require_audio(out) == pytest.approx(4.8, abs=TOL)
    # The 3.0-4.5 silence must now sit at 1.0-2.5: the cut starts where asked.
    found = detect_silences(out)
    assert found[0][0] == pytest.approx(1.0, abs=TOL)
    assert found[0][1] == pytest.approx(2.5, abs=TOL)


def test_encode_compact_open_ended_windows(media, tmp_path):
    head = tmp_path / f"head{compact_extension()}"
    encode_compact(media["talk"], head, None, 3.5)
    assert require_audio(head) == pytest.approx(3.5, abs=TOL)
    tail = tmp_path / f"tail{compact_extension()}"
    encode_compact(media["talk"], tail, 6.0)
    assert require_audio(tail) == pytest.approx(TOTAL - 6.0, abs=TOL)


def test_encode_compact_errors(media, tmp_path):
    out = tmp_path / f"out{compact_extension()}"
    with pytest.raises(AudioError, match="^The file contains no audio stream$"):
        encode_compact(media["video"], out)
    assert not out.exists()
    with pytest.raises(AudioError, match="^The file is not a readable audio or video file$"):
        encode_compact(media["text"], out)
    with pytest.raises(AudioError, match="empty"):
        encode_compact(media["talk"], out, 30.0, 40.0)  # entirely past the end
    assert not out.exists()
    with pytest.raises(AudioError, match="before the end"):
        encode_compact(media["talk"], out, 5.0, 5.0)
    with pytest.raises(AudioError, match="not found"):
        encode_compact(tmp_path / "missing.mp3", out)


def test_error_messages_hold_no_server_paths(media, tmp_path):
    out = tmp_path / "no-such-dir" / f"out{compact_extension()}"
    with pytest.raises(AudioError) as exc:
        encode_compact(media["talk"], out)
    assert str(exc.value) == "The server could not write the processed audio"
    assert str(tmp_path) not in str(exc.value)


def test_timeout_stops_ffmpeg(media):
    with pytest.raises(AudioError, match="took longer"):
        detect_silences(media["talk"], timeout=0.001)


def test_cut_segment_of_compact_file(media, tmp_path):
    piece = tmp_path / f"piece{compact_extension()}"
    cut_segment(media["compact"], piece, 2.0, 6.8)
    assert require_audio(piece) == pytest.approx(4.8, abs=TOL)
    found = detect_silences(piece)
    assert found[0][0] == pytest.approx(1.0, abs=TOL)
    assert found[0][1] == pytest.approx(2.5, abs=TOL)
    last = tmp_path / f"last{compact_extension()}"
    cut_segment(media["compact"], last, 7.0, TOTAL)
    assert require_audio(last) == pytest.approx(TOTAL - 7.0, abs=TOL)
    with pytest.raises(AudioError):
        cut_segment(media["compact"], last, 3.0, 2.0)


# --------------------------------------------------------------------------- silences


def test_detect_silences_finds_the_made_silences(media):
    found = detect_silences(media["talk"])
    assert len(found) == len(SILENCES)
    for (start, end), (want_start, want_end) in zip(found, SILENCES):
        assert start == pytest.approx(want_start, abs=TOL)
        assert end == pytest.approx(want_end, abs=TOL)


def test_detect_silences_on_compact_file_and_min_length(media):
    found = detect_silences(media["compact"], min_silence=1.2)
    assert len(found) == 1
    assert found[0] == (pytest.approx(3.0, abs=TOL), pytest.approx(4.5, abs=TOL))


def test_detect_silences_threshold(media):
    # lavfi's sine is at 1/8 full scale (-18 dBFS): loud for -35 dB, "silent" for -1 dB.
    found = detect_silences(media["talk"], noise_db=-1.0, min_silence=0.5)
    assert len(found) == 1
    assert found[0][0] == pytest.approx(0.0, abs=TOL)
    assert found[0][1] == pytest.approx(TOTAL, abs=TOL)


def test_detect_silences_bad_arguments(media):
    with pytest.raises(ValueError):
        detect_silences(media["talk"], min_silence=0)
    with pytest.raises(ValueError):
        detect_silences(media["talk"], noise_db=3)


# --------------------------------------------------------------------------- plan_chunks


def assert_plan_invariants(plan, duration, max_seconds):
    assert plan, "a positive duration gives at least one chunk"
    assert plan[0][0] == 0.0
    assert plan[-1][1] == duration
    for (start, end), (next_start, _) in zip(plan, plan[1:]):
        assert end == next_start  # no gap, no overlap
    for start, end in plan:
        assert 0 < end - start <= max_seconds + 1e-9
    for start, end in plan[:-1]:
        assert end - start >= max_seconds / 2 - 1e-9


def test_plan_chunks_short_audio_is_one_chunk():
    assert plan_chunks(50.0, [(10, 12)], 60) == [(0.0, 50.0)]
    assert plan_chunks(60.0, [], 60) == [(0.0, 60.0)]


def test_plan_chunks_without_silences_cuts_at_max():
    assert plan_chunks(250.0, [], 100) == [(0.0, 100.0), (100.0, 200.0), (200.0, 250.0)]


def test_plan_chunks_cuts_in_latest_silence_middle():
    # Silences at 70-74 and 88-92 both in the last half of [0, 100], as long as each other:
    # the later one wins.
    plan = plan_chunks(150.0, [(70, 74), (88, 92)], 100)
    assert plan == [(0.0, 90.0), (90.0, 150.0)]


def test_plan_chunks_prefers_the_longest_silence():
    # A breath at 95 (0.2 s) is later, but the 1.5 s pause at 70 is where the sentence ends.
    plan = plan_chunks(150.0, [(70, 71.5), (88, 88.4), (95, 95.2)], 100)
    assert plan == [(0.0, 70.75), (70.75, 150.0)]


def test_plan_chunks_ignores_silences_in_first_half():
    plan = plan_chunks(150.0, [(20, 30), (45, 48)], 100)
    assert plan == [(0.0, 100.0), (100.0, 150.0)]


def test_plan_chunks_ignores_silence_beyond_limit():
    # Middle 104 would make the chunk too long; 60-62 is the latest that fits.
    plan = plan_chunks(150.0, [(60, 62), (102, 106)], 100)
    assert plan == [(0.0, 61.0), (61.0, 150.0)]


def test_plan_chunks_silence_straddling_the_limit_cuts_at_limit():
    plan = plan_chunks(150.0, [(60, 62), (96, 110)], 100)
    assert plan == [(0.0, 100.0), (100.0, 150.0)]


def test_plan_chunks_unsorted_and_out_of_range_silences():
    plan = plan_chunks(150.0, [(88, 92), (-5, 2), (70, 74), (140, 200), (50, 50)], 100)
    assert plan == [(0.0, 90.0), (90.0, 150.0)]


def test_plan_chunks_edge_cases():
    assert plan_chunks(0.0, [], 100) == []
    with pytest.raises(ValueError):
        plan_chunks(10.0, [], 0)
    with pytest.raises(ValueError):
        plan_chunks(10.0, [], float("nan"))


def test_plan_chunks_invariants_random():
    rng = random.Random(1234)
    for _ in range(300):
        duration = rng.uniform(1, 10_000)
        max_seconds = rng.uniform(5, 1500)
        silences = []
        t = 0.0
        while t < duration:
            t += rng.expovariate(1 / 30)
            length = rng.uniform(0.3, 4)
            silences.append((t, min(t + length, duration)))
            t += length
        plan = plan_chunks(duration, silences, max_seconds)
        assert_plan_invariants(plan, duration, max_seconds)
        mids = {(s + e) / 2 for s, e in silences}
        for (start, end) in plan[:-1]:
            limit = start + max_seconds
            inside = any(s <= end <= e for s, e in silences)
            assert end in mids or end == limit or inside
            # the cut is in the longest silence whose cut point lies in the second half
            candidates = [(e - s, min((s + e) / 2, limit)) for s, e in silences if s < limit]
            candidates = [(length, point) for length, point in candidates
                          if point >= start + max_seconds / 2 and point > start]
            if candidates:
                longest = max(length for length, _ in candidates)
                assert any(abs(length - longest) < 1e-3 and point == end
                           for length, point in candidates)
            else:
                assert end == limit


def test_plan_chunks_on_detected_silences(media):
    duration = require_audio(media["talk"])
    plan = plan_chunks(duration, detect_silences(media["talk"]), 5.0)
    assert_plan_invariants(plan, duration, 5.0)
    assert plan[0][1] == pytest.approx(3.75, abs=TOL)  # middle of the 3.0-4.5 silence

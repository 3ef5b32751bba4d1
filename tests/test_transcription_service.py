"""Planning the chunks the openai engine sends."""
from __future__ import annotations

import pytest


@pytest.mark.parametrize("duration, silences, expected", [
    (2400.4, [], [(0, 1195.0), (1195.0, 2390.0), (2390.0, 2400.4)]),
    (2392.0, [], [(0, 1195.0), (1195.0, 2392.0)]),  # a 2 s tail joins the chunk before it
    (100.0, [], [(0, 100.0)]),
])
def test_chunk_plan_folds_a_sliver_into_the_last_chunk(duration, silences, expected):
    from transcription_service import chunk_plan
    plan = chunk_plan(duration, silences, 1200)
    assert [x for pair in plan for x in pair] == pytest.approx([x for pair in expected for x in pair])
    assert all(end - start <= 1200 for start, end in plan)


def test_local_engine_without_faster_whisper_says_how_to_install_it(monkeypatch, tmp_path):
    import local_whisper
    monkeypatch.setitem(__import__("sys").modules, "faster_whisper", None)  # not installed
    choice = local_whisper.ModelChoice(setting="", device="cpu", compute_type="int8",
                                       threads=1, workers=1, cache_dir=tmp_path)
    with pytest.raises(local_whisper.ModelError) as raised:
        local_whisper.load_model(choice)
    assert "not installed" in str(raised.value)
    assert "pip install -r requirements.txt" in str(raised.value)


def test_remote_engine_needs_its_urls():
    from transcription_service import TranscriptionError, engine_from_config
    with pytest.raises(TranscriptionError, match="not configured"):
        engine_from_config({"TRANSCRIBE_ENGINE": "remote", "TRANSCRIBE_API_URL": None,
                            "GET_RESULT_TRANSCRIBE_API_URL": None})


def _speech(tmp_path, noise_amplitude: float | None):
    """The first 40 s of the English fixture as the pipeline hands it (16 kHz mono FLAC),
    optionally under pink noise (a hum or a hall: the pauses no longer drop to -35 dB)."""
    import subprocess
    from audio_service import ffmpeg_exe
    from conftest import ROOT
    out = tmp_path / f"speech-{noise_amplitude}.flac"
    args = [ffmpeg_exe(), "-loglevel", "error", "-y", "-t", "40",
            "-i", str(ROOT / "bench" / "data" / "en-5min.opus")]
    if noise_amplitude is None:
        args += ["-ar", "16000", "-ac", "1", str(out)]
    else:
        args += ["-f", "lavfi", "-i", f"anoisesrc=color=pink:amplitude={noise_amplitude}:"
                                      "sample_rate=48000:seed=7:duration=40",
                 "-filter_complex", "[0:a][1:a]amix=inputs=2:duration=first:normalize=0",
                 "-ar", "16000", "-ac", "1", str(out)]
    subprocess.run(args, check=True, timeout=60)
    return out


def _in_a_pause(point: float, silences) -> bool:
    return any(start <= point <= end for start, end in silences)


def test_noisy_speech_is_cut_in_its_pauses_at_a_louder_level(tmp_path, monkeypatch):
    import transcription_service
    from audio_service import detect_silences, require_audio
    audio = _speech(tmp_path, 0.05)
    duration = require_audio(audio)
    assert detect_silences(audio, transcription_service.CUT_MIN_SILENCE, -35.0) == []
    # At -35 dB alone every cut falls at a chunk's limit, in the middle of the speech.
    limit_cuts = transcription_service.chunk_plan(duration, [], 12)
    plan = transcription_service.plan_cuts(audio, duration, 12)
    assert len(plan) >= 3
    assert [end for _, end in plan[:-1]] != [end for _, end in limit_cuts[:-1]]
    louder = [detect_silences(audio, transcription_service.CUT_MIN_SILENCE, level)
              for level in transcription_service.CUT_NOISE_LEVELS_DB[1:]]
    assert any(all(_in_a_pause(end, silences) for _, end in plan[:-1]) for silences in louder)
    assert plan[0][0] == 0 and plan[-1][1] == duration
    assert all(a[1] == b[0] for a, b in zip(plan, plan[1:]))


def test_clean_speech_is_cut_at_the_quiet_level_in_one_pass(tmp_path, monkeypatch):
    import transcription_service
    from audio_service import require_audio
    audio = _speech(tmp_path, None)
    levels = []
    detect = transcription_service.detect_silences

    def counting(path, min_silence, noise_db):
        levels.append(noise_db)
        return detect(path, min_silence, noise_db)
    monkeypatch.setattr(transcription_service, "detect_silences", counting)
    plan = transcription_service.plan_cuts(audio, require_audio(audio), 12)
    assert levels == [-35.0]
    silences = detect(audio, transcription_service.CUT_MIN_SILENCE, -35.0)
    assert len(plan) >= 3 and all(_in_a_pause(end, silences) for _, end in plan[:-1])

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

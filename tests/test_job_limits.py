"""Issue 8, items 4-6: the duration limit holds for the decoded audio; NUL bytes from an
engine or the LLM are cleaned, never crash-looping the job or paying twice; empty answers
are retried, then fail with a clear message."""
from __future__ import annotations

import struct
import subprocess
import uuid

import pytest

from audio_service import ffmpeg_exe
from database import db
from models import ErrorLog, Transcription
from test_pipeline import (lease_released, pipeline_config, setup, talk, upload,  # noqa: F401
                           wait_for, wait_until_true)


@pytest.fixture(scope="module")
def lying_mkv(tmp_path_factory):
    """90 s of audio in a Matroska file whose header says 5 s."""
    folder = tmp_path_factory.mktemp("lying")
    honest = folder / "honest.mkv"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "sine=frequency=400:duration=90", "-c:a", "libvorbis", "-ar", "16000",
                    str(honest)], check=True, timeout=120)
    data = honest.read_bytes()
    at = data.index(b"\x44\x89\x88")  # Segment Info > Duration, an 8-byte float in ms
    lying = folder / "lying.mkv"
    lying.write_bytes(data[:at + 3] + struct.pack(">d", 5000.0) + data[at + 11:])
    return lying


def test_a_header_that_understates_the_length_does_not_bypass_the_limit(setup, fake_whisper,
                                                                        lying_mkv):
    from audio_service import require_audio
    assert require_audio(lying_mkv) == pytest.approx(5.0)  # what the header claims
    app, client, headers = setup(MAX_AUDIO_SECONDS=60)
    job = wait_for(client, headers, upload(client, headers, lying_mkv), timeout=60)
    assert job["status"] == "error"
    assert "longer than the limit of 1 minutes" in job["error_message"]
    assert fake_whisper.submits == []


def test_nul_bytes_from_the_engine_and_the_llm_are_cleaned(setup, fake_whisper, fake_openai,
                                                           talk):
    app, client, headers = setup()
    fake_whisper.transcript_for = lambda audio, tid, prompt: "the\x00 transcript"
    fake_openai.chat_answer = lambda system, user, model: "proof\x00read"
    job_id = upload(client, headers, talk)
    job = wait_for(client, headers, job_id, timeout=60)
    assert job["status"] == "completed", job
    assert client.get(f"/download/txt/{job_id}", headers=headers).data == b"the transcript"
    assert client.get(f"/download/md/{job_id}", headers=headers).data == b"proofread"
    assert len(fake_openai.chat_requests) == 1  # paid once
    with app.app_context():
        assert db.session.get(Transcription, uuid.UUID(job_id)).attempts == 1


@pytest.mark.parametrize("answer", ["", "   "])
def test_an_empty_proofreader_answer_is_retried_then_fails(setup, fake_openai, talk, answer):
    app, client, headers = setup()
    fake_openai.chat_answer = lambda system, user, model: answer
    job = wait_for(client, headers, upload(client, headers, talk), timeout=60)
    assert job["status"] == "error"
    assert "proofreader returned nothing" in job["error_message"]
    assert len(fake_openai.chat_requests) == 3  # the first answer and two retries
    assert job["md_document_path"] is None and job["word_document_path"] is None


def test_an_empty_answer_once_is_retried_and_completes(setup, fake_openai, talk):
    app, client, headers = setup()
    answers = iter(["", "Proofread."])
    fake_openai.chat_answer = lambda system, user, model: next(answers)
    job_id = upload(client, headers, talk)
    assert wait_for(client, headers, job_id, timeout=60)["status"] == "completed"
    assert client.get(f"/download/md/{job_id}", headers=headers).data == b"Proofread."


def test_an_empty_transcript_fails_clearly(setup, fake_whisper, fake_openai, talk):
    app, client, headers = setup()
    fake_whisper.transcript_for = lambda audio, tid, prompt: "  \n "
    job_id = upload(client, headers, talk)
    job = wait_for(client, headers, job_id, timeout=60)
    assert job["status"] == "error"
    assert "no speech" in job["error_message"]
    assert job["txt_document_path"] is None and job["word_document_path"] is None
    assert fake_openai.chat_requests == []
    with app.app_context():
        assert db.session.query(ErrorLog).one().step == "transcribe"
    # A retry asks the service again (the empty answer is not kept as the result).
    fake_whisper.transcript_for = lambda audio, tid, prompt: "words at last"
    wait_until_true(lambda: lease_released(app, job_id), 30, "lease release after the failure")
    assert client.post(f"/transcriptions/{job_id}/retry", headers=headers).status_code == 200
    assert wait_for(client, headers, job_id, timeout=60)["status"] == "completed"
    assert client.get(f"/download/txt/{job_id}", headers=headers).data == b"words at last"
    assert len(fake_whisper.submits) == 2

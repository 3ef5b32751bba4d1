"""The fakes speak the protocols as Ezra's clients use them: driven here by the same clients
(``requests`` for the remote Whisper service, the ``openai`` package for OpenAI-compatible
APIs) over real sockets. How long they take (delays, concurrency) is measured by
bench/bench_fakes.py, not asserted here."""
from __future__ import annotations

import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from fake_fixtures import OPENAI_TEST_KEY, WHISPER_TEST_KEY
from fakes import FakeDrive, FakeWhisperService

# Bytes that would trip a naive multipart parser: CRLFs, a fake boundary, NUL and 0xFF.
AUDIO = b"OggS\x00\x02" + bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n\x00\xff"
TRANSCRIPT = (f"Transcript of {len(AUDIO)} bytes of audio "
              f"(sha256 {hashlib.sha256(AUDIO).hexdigest()[:12]}).")


def submit(fake, tid="t-1", prompt="Names: Ezra, Nehemiah", key=WHISPER_TEST_KEY, **parts):
    """As transcription_service.RemoteWhisperEngine._submit sends it."""
    files = parts.pop("files", {"audio": ("t-1.ogg", AUDIO, "audio/ogg")})
    data = {"transcription_id": tid, **({"prompt": prompt} if prompt else {}), **parts}
    return requests.post(fake.submit_url, headers={"Authorization": f"Bearer {key}"},
                         data={k: v for k, v in data.items() if v is not None}, files=files,
                         timeout=10)


def poll(fake, tid="t-1", key=WHISPER_TEST_KEY):
    return requests.post(fake.result_url, headers={"Authorization": f"Bearer {key}"},
                         json={"transcription_id": tid}, timeout=10)


def test_whisper_answers_not_found_then_processing_then_the_transcript(fake_whisper):
    fake_whisper.polls_before_ready, fake_whisper.processing_polls = 2, 2
    assert poll(fake_whisper, "unknown").json() == {"detail": "Transcription file not found"}
    answer = submit(fake_whisper)
    assert answer.status_code == 200 and answer.json() == {"message": "Transcription started"}
    answers = [poll(fake_whisper) for _ in range(6)]
    assert [a.status_code for a in answers] == [404, 404, 200, 200, 200, 200]
    assert [a.json() for a in answers[:4]] == [{"detail": "Transcription file not found"}] * 2 + [
        {"message": "still processing"}] * 2
    assert answers[4].headers["Content-Type"].startswith("text/plain")
    assert answers[4].text == answers[5].text == TRANSCRIPT
    assert fake_whisper.submits == [{
        "transcription_id": "t-1", "prompt": "Names: Ezra, Nehemiah", "filename": "t-1.ogg",
        "content_type": "audio/ogg", "size": len(AUDIO),
        "sha256": hashlib.sha256(AUDIO).hexdigest(), "auth": f"Bearer {WHISPER_TEST_KEY}",
        "status": 200}]
    assert fake_whisper.polls == ["unknown"] + ["t-1"] * 6


def test_whisper_refusals(fake_whisper):
    assert submit(fake_whisper, key="wrong").status_code == 401
    assert poll(fake_whisper, key="wrong").json() == {"error": "Unauthorized"}
    assert fake_whisper.attempts("process") == 1 and fake_whisper.submits == []
    missing_audio = submit(fake_whisper, files={"other": ("x.ogg", AUDIO)})
    assert (missing_audio.status_code, missing_audio.json()) == (
        400, {"error": "No audio file provided"})
    assert submit(fake_whisper, tid="").json() == {"error": "No transcription_id provided"}
    fake_whisper.submit_status = 500
    assert submit(fake_whisper, tid="t-2").status_code == 500
    assert [s["status"] for s in fake_whisper.submits] == [400, 400, 500]
    assert fake_whisper.jobs == {}  # no job for a refused submit
    fake_whisper.submit_status, fake_whisper.never_finish = None, True
    submit(fake_whisper, tid="t-3")
    assert [poll(fake_whisper, "t-3").json() for _ in range(3)] == [
        {"message": "still processing"}] * 3
    fake_whisper.result_failure = 502
    assert poll(fake_whisper, "t-3").status_code == 502
    fake_whisper.reset()
    assert (fake_whisper.submits, fake_whisper.polls, fake_whisper.jobs) == ([], [], {})


def test_a_stopped_fake_is_unreachable_and_comes_back_on_the_same_url():
    fake = FakeWhisperService(api_key=None)
    with fake:
        url = fake.submit_url
        assert submit(fake, key="anything").status_code == 200
    with pytest.raises(requests.ConnectionError):
        submit(fake)
    with fake:
        assert fake.submit_url == url and submit(fake).status_code == 200


def openai_client(fake, **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=fake.base_url, api_key=kwargs.pop("api_key", OPENAI_TEST_KEY),
                         max_retries=0, timeout=10, **kwargs)


def test_openai_transcribes_as_json_and_verbose_json(fake_openai):
    client = openai_client(fake_openai)
    plain = client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", AUDIO),
                                               prompt="Ezra", language="en")
    assert plain.text == TRANSCRIPT
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", AUDIO),
                                                 response_format="verbose_json")
    assert verbose.text == TRANSCRIPT and verbose.duration > 0
    assert [(s.start, s.end, s.text.strip()) for s in verbose.segments] == [
        (0.0, verbose.duration, TRANSCRIPT)]
    assert [{k: r[k] for k in ("model", "prompt", "language", "response_format", "filename",
                               "size", "status")}
            for r in fake_openai.transcription_requests] == [
        {"model": "whisper-1", "prompt": "Ezra", "language": "en", "response_format": "json",
         "filename": "a.ogg", "size": len(AUDIO), "status": 200},
        {"model": "whisper-1", "prompt": None, "language": None,
         "response_format": "verbose_json", "filename": "a.ogg", "size": len(AUDIO),
         "status": 200}]


def test_openai_transcription_refusals(fake_openai):
    client = openai_client(fake_openai)
    fake_openai.RESPONSE_FORMATS = ("json",)  # a provider without timestamps
    with pytest.raises(openai.BadRequestError, match="response_format"):
        client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", AUDIO),
                                           response_format="verbose_json")
    fake_openai.max_upload_bytes = len(AUDIO) - 1
    with pytest.raises(openai.APIStatusError) as too_big:
        client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", AUDIO))
    assert (too_big.value.status_code, too_big.value.code) == (413, "request_too_large")
    fake_openai.max_upload_bytes, fake_openai.known_models = len(AUDIO), {"whisper-large-v3"}
    with pytest.raises(openai.NotFoundError) as unknown:
        client.audio.transcriptions.create(model="whisper-1", file=("a.ogg", AUDIO))
    assert unknown.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        openai_client(fake_openai, api_key="sk-wrong").audio.transcriptions.create(
            model="whisper-large-v3", file=("a.ogg", AUDIO))
    assert [r["status"] for r in fake_openai.transcription_requests] == [400, 413, 404]


def test_openai_chat_completion_and_its_limits(fake_openai):
    client = openai_client(fake_openai)
    messages = [{"role": "system", "content": "Fix punctuation."},
                {"role": "user", "content": "hello world"}]
    answer = client.chat.completions.create(model="deepseek-chat", messages=messages,
                                            max_tokens=100, temperature=0.2)
    assert answer.choices[0].message.content == "PROOFREAD[hello world]"
    assert answer.choices[0].finish_reason == "stop"
    assert answer.usage.completion_tokens == 6
    assert fake_openai.chat_requests == [{
        "model": "deepseek-chat", "system": "Fix punctuation.", "user": "hello world",
        "messages": messages, "max_tokens": 100, "temperature": 0.2, "status": 200}]
    fake_openai.enforce_max_tokens = True
    cut = client.chat.completions.create(model="deepseek-chat", messages=messages, max_tokens=2)
    assert (cut.choices[0].message.content, cut.choices[0].finish_reason) == (
        "PROOFREA", "length")  # 2 tokens, ~4 characters each
    fake_openai.known_models = {"deepseek-chat"}
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        client.chat.completions.create(model="gpt-x", messages=messages)


def test_fail_next_answers_the_error_then_serves_again(fake_openai):
    client = openai_client(fake_openai)
    fake_openai.fail_next("chat", status=429, times=2, retry_after=1.5)
    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as limited:
            client.chat.completions.create(model="m", messages=[{"role": "user",
                                                                 "content": "x"}])
        headers = limited.value.response.headers
        assert (headers["retry-after"], headers["retry-after-ms"]) == ("1.5", "1500")
        assert limited.value.code == "rate_limit_exceeded"
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert fake_openai.attempts("chat") == 3 and len(fake_openai.chat_requests) == 1
    with pytest.raises(ValueError, match="unknown endpoint"):
        fake_openai.fail_next("models")


def test_requests_are_served_at_once_and_counted(fake_openai):
    together = threading.Barrier(4, timeout=30)  # each answer waits for the other three

    def answer(system, user, model):
        together.wait()
        return user
    fake_openai.chat_answer = answer
    client = openai_client(fake_openai)
    with ThreadPoolExecutor(4) as pool:
        texts = list(pool.map(lambda i: client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": f"part {i}"}]
        ).choices[0].message.content, range(4)))
    assert texts == [f"part {i}" for i in range(4)]
    assert fake_openai.peak_in_flight["chat"] == 4 and fake_openai.in_flight["chat"] == 0


def test_drive_serves_its_one_file():
    drive = FakeDrive(AUDIO, "file-id", "Talk.mp3")
    try:
        found = requests.get(f"{drive.url}/uc", params={"id": "file-id"}, timeout=10)
        assert found.content == AUDIO
        assert found.headers["Content-Disposition"] == 'attachment; filename="Talk.mp3"'
        assert requests.get(f"{drive.url}/uc", params={"id": "other"},
                            timeout=10).status_code == 404
    finally:
        drive.stop()

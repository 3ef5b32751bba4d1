"""The fakes speak the real protocols: driven here by the real clients
(``requests`` for the Whisper service, the ``openai`` package for the
OpenAI-compatible API) over real sockets."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

try:
    from .fake_fixtures import fake_openai, fake_openai_factory, fake_whisper  # noqa: F401
    from .fakes import FakeOpenAI, FakeWhisperService, MultipartError, parse_multipart
except ImportError:
    from fake_fixtures import fake_openai, fake_openai_factory, fake_whisper  # type: ignore[no-redef]  # noqa: F401
    from fakes import FakeOpenAI, FakeWhisperService, MultipartError, parse_multipart  # type: ignore[no-redef]

AUDIO = b"OggS\x00\x02" + bytes(range(256)) * 4 + b"\r\n--not-a-boundary\r\n\x00\xff"
WHISPER_KEY = "whisper-test-key"
OPENAI_KEY = "sk-test"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------
# Whisper service via requests
# --------------------------------------------------------------------------


def whisper_submit(fake, tid="t-1", prompt="Names: Ezra, Nehemiah", key=WHISPER_KEY, audio=AUDIO, session=None):
    http = session or requests
    return http.post(
        fake.submit_url,
        headers={"Authorization": f"Bearer {key}"},
        files={"audio": ("talk.ogg", audio, "audio/ogg")},
        data={"transcription_id": tid, **({"prompt": prompt} if prompt is not None else {})},
        timeout=5,
    )


def whisper_poll(fake, tid="t-1", key=WHISPER_KEY, session=None):
    http = session or requests
    return http.post(
        fake.result_url, headers={"Authorization": f"Bearer {key}"}, json={"transcription_id": tid}, timeout=5
    )


def poll_until_text(fake, tid, session, max_polls=20):
    """What the production client does: 404 detail = not ready, JSON 200 with
    a message = still working, non-JSON 200 = the transcript."""
    seen = []
    for _ in range(max_polls):
        r = whisper_poll(fake, tid, session=session)
        if r.status_code == 404:
            assert r.json() == {"detail": "Transcription file not found"}
            seen.append("404")
            continue
        assert r.status_code == 200
        try:
            body = r.json()
        except ValueError:
            seen.append("text")
            return r.text, seen, r
        assert body == {"message": "still processing"}
        seen.append("processing")
    raise AssertionError(f"no transcript after {max_polls} polls: {seen}")


def test_whisper_submit_then_poll_full_protocol(fake_whisper):
    fake_whisper.polls_before_ready = 2
    fake_whisper.processing_polls = 2
    with requests.Session() as session:
        r = whisper_submit(fake_whisper, "abc-123", session=session)
        assert r.status_code == 200
        assert r.json() == {"message": "Transcription started"}
        text, seen, last = poll_until_text(fake_whisper, "abc-123", session)

    assert seen == ["404", "404", "processing", "processing", "text"]
    assert last.headers["Content-Type"].startswith("text/plain")
    assert text == f"Transcript of {len(AUDIO)} bytes of audio (sha256 {sha(AUDIO)[:12]})."
    assert fake_whisper.polls == ["abc-123"] * 5
    [submit] = fake_whisper.submits
    assert submit == {
        "transcription_id": "abc-123",
        "prompt": "Names: Ezra, Nehemiah",
        "filename": "talk.ogg",
        "content_type": "audio/ogg",
        "size": len(AUDIO),
        "sha256": sha(AUDIO),
        "auth": f"Bearer {WHISPER_KEY}",
        "status": 200,
    }
    # keep-alive: the whole session went over one connection
    assert len({entry["client"] for entry in fake_whisper.request_log}) == 1
    # the transcript keeps being served on later polls
    assert whisper_poll(fake_whisper, "abc-123").text == text


def test_whisper_rejections(fake_whisper):
    r = whisper_submit(fake_whisper, key="wrong")
    assert (r.status_code, r.json()) == (401, {"error": "Unauthorized"})
    assert whisper_poll(fake_whisper, key="wrong").status_code == 401

    r = requests.post(
        fake_whisper.submit_url,
        headers={"Authorization": f"Bearer {WHISPER_KEY}"},
        files={"other": ("a.ogg", b"x", "audio/ogg")},
        data={"transcription_id": "t"},
        timeout=5,
    )
    assert r.status_code == 400 and "error" in r.json()

    r = requests.post(
        fake_whisper.submit_url,
        headers={"Authorization": f"Bearer {WHISPER_KEY}"},
        files={"audio": ("a.ogg", b"x", "audio/ogg")},
        timeout=5,
    )
    assert r.status_code == 400 and "error" in r.json()

    r = whisper_poll(fake_whisper, "never-submitted")
    assert (r.status_code, r.json()) == (404, {"detail": "Transcription file not found"})

    fake_whisper.submit_status = 500
    r = whisper_submit(fake_whisper, "t-500")
    assert r.status_code == 500 and "error" in r.json()
    assert whisper_poll(fake_whisper, "t-500").status_code == 404  # no job was created
    assert [s["status"] for s in fake_whisper.submits] == [400, 400, 500]


def test_whisper_configurable_results(fake_whisper):
    calls = []

    def transcript_for(audio, tid, prompt):
        calls.append((audio, tid, prompt))
        return f"custom {tid} / {prompt}"

    fake_whisper.transcript_for = transcript_for
    assert whisper_submit(fake_whisper, "t-2", prompt=None).status_code == 200
    r = whisper_poll(fake_whisper, "t-2")
    assert (r.status_code, r.text) == (200, "custom t-2 / None")
    assert calls == [(AUDIO, "t-2", None)]

    fake_whisper.never_finish = True
    assert whisper_submit(fake_whisper, "t-3").status_code == 200
    for _ in range(3):
        assert whisper_poll(fake_whisper, "t-3").json() == {"message": "still processing"}

    fake_whisper.result_failure = 500
    r = whisper_poll(fake_whisper, "t-3")
    assert r.status_code == 500 and "error" in r.json()

    fake_whisper.result_failure = None
    fake_whisper.never_finish = False
    assert whisper_poll(fake_whisper, "t-3").text.startswith("custom t-3")

    fake_whisper.fail_next("result", status=502, body="<html>Bad gateway</html>")
    r = whisper_poll(fake_whisper, "t-3")
    assert r.status_code == 502 and r.text == "<html>Bad gateway</html>"

    fake_whisper.reset()
    assert fake_whisper.submits == [] and fake_whisper.polls == [] and fake_whisper.request_log == []
    assert whisper_poll(fake_whisper, "t-3").status_code == 404  # jobs forgotten too


def test_whisper_chunked_upload_and_delay(fake_whisper):
    boundary = "XyZ-boundary"
    body = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="transcription_id"\r\n\r\n'
        "chunky\r\n"
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="audio"; filename="v.webm"\r\n'
        "Content-Type: audio/webm\r\n\r\n"
    ).encode() + AUDIO + f"\r\n--{boundary}--\r\n".encode()

    def gen():  # a generator body makes requests use chunked transfer-encoding
        for i in range(0, len(body), 100):
            yield body[i : i + 100]

    fake_whisper.delay = 0.2
    start = time.monotonic()
    r = requests.post(
        fake_whisper.submit_url,
        headers={"Authorization": f"Bearer {WHISPER_KEY}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
        data=gen(),
        timeout=5,
    )
    assert time.monotonic() - start >= 0.2
    assert r.status_code == 200
    assert fake_whisper.request_log[-1]["chunked"] is True
    [submit] = fake_whisper.submits
    assert (submit["transcription_id"], submit["filename"], submit["content_type"]) == ("chunky", "v.webm", "audio/webm")
    assert submit["sha256"] == sha(AUDIO) and submit["prompt"] is None


def test_whisper_stop_and_restart_keeps_url():
    fake = FakeWhisperService(api_key=None)
    with fake:
        url = fake.submit_url
        assert whisper_submit(fake, key="anything").status_code == 200
    assert not fake.running
    with pytest.raises(requests.ConnectionError):
        whisper_submit(fake)
    fake.start()
    try:
        assert fake.submit_url == url
        assert whisper_poll(fake).status_code == 200  # job survived the restart
    finally:
        fake.stop()


def test_parse_multipart_edge_cases():
    body = (
        b"preamble\r\n--b\r\n"
        b'Content-Disposition: form-data; name="f"; filename="na\xc3\xafve.ogg"\r\n'
        b"Content-Type: audio/ogg\r\n\r\n" + AUDIO + b"\r\n--b\r\n"
        b'Content-Disposition: form-data; name="empty"\r\n\r\n'
        b"\r\n--b--\r\nepilogue"
    )
    form = parse_multipart(body, 'multipart/form-data; boundary="b"')
    assert form.file("f").data == AUDIO
    assert form.file("f").filename == "naïve.ogg"
    assert form.value("empty") == ""
    with pytest.raises(MultipartError):
        parse_multipart(body[:-20], "multipart/form-data; boundary=b")
    with pytest.raises(MultipartError):
        parse_multipart(body, "application/json")


# --------------------------------------------------------------------------
# OpenAI-compatible API via the openai package
# --------------------------------------------------------------------------


def client_for(fake, **kwargs) -> openai.OpenAI:
    kwargs.setdefault("api_key", OPENAI_KEY)
    kwargs.setdefault("max_retries", 0)
    kwargs.setdefault("timeout", 5)
    return openai.OpenAI(base_url=fake.base_url, **kwargs)


@pytest.fixture
def audio_file(tmp_path):
    path = tmp_path / "talk.ogg"
    path.write_bytes(AUDIO)
    return path


def test_openai_transcription_formats(fake_openai, audio_file):
    client = client_for(fake_openai)
    with open(audio_file, "rb") as fh:
        result = client.audio.transcriptions.create(model="whisper-1", file=fh, prompt="Ezra, Nehemiah", language="en")
    expected = f"Transcript of {len(AUDIO)} bytes of audio (sha256 {sha(AUDIO)[:12]})."
    assert result.text == expected

    with open(audio_file, "rb") as fh:
        text = client.audio.transcriptions.create(model="whisper-large-v3", file=fh, response_format="text")
    assert isinstance(text, str) and text.strip() == expected

    with open(audio_file, "rb") as fh:
        verbose = client.audio.transcriptions.create(model="whisper-1", file=fh, response_format="verbose_json")
    assert verbose.text == expected and verbose.duration > 0 and verbose.segments[0].text.strip() == expected

    first = fake_openai.transcription_requests[0]
    assert {k: first[k] for k in ("model", "prompt", "filename", "size", "sha256", "language", "response_format")} == {
        "model": "whisper-1",
        "prompt": "Ezra, Nehemiah",
        "filename": "talk.ogg",
        "size": len(AUDIO),
        "sha256": sha(AUDIO),
        "language": "en",
        "response_format": "json",
    }
    assert [r["response_format"] for r in fake_openai.transcription_requests] == ["json", "text", "verbose_json"]
    assert {r["auth"] for r in fake_openai.request_log} == {f"Bearer {OPENAI_KEY}"}


def test_openai_transcription_size_limit(fake_openai):
    fake_openai.max_upload_bytes = 1000
    client = client_for(fake_openai)
    with pytest.raises(openai.APIStatusError) as err:
        client.audio.transcriptions.create(model="whisper-1", file=("big.mp3", b"\x00" * 1001, "audio/mpeg"))
    assert err.value.status_code == 413
    assert err.value.type == "invalid_request_error" and err.value.code == "request_too_large"
    # exactly at the limit is fine
    ok = client.audio.transcriptions.create(model="whisper-1", file=("ok.mp3", b"\x00" * 1000, "audio/mpeg"))
    assert ok.text
    assert FakeOpenAI().max_upload_bytes == 25 * 1024 * 1024


def test_openai_chat_completion(fake_openai):
    client = client_for(fake_openai)
    completion = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "system", "content": "You proofread."}, {"role": "user", "content": "chunk one"}],
        max_tokens=500,
        temperature=0,
    )
    assert completion.object == "chat.completion"
    assert completion.model == "gpt-4o-mini"
    assert completion.choices[0].message.content == "PROOFREAD[chunk one]"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    [req] = fake_openai.chat_requests
    assert (req["model"], req["system"], req["user"], req["max_tokens"], req["temperature"]) == (
        "gpt-4o-mini",
        "You proofread.",
        "chunk one",
        500,
        0,
    )

    fake_openai.chat_answer = lambda system, user, model: f"{model}|{system}|{user.upper()}"
    completion = client.chat.completions.create(
        model="deepseek-chat",
        messages=[{"role": "system", "content": "S"}, {"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    )
    assert completion.choices[0].message.content == "deepseek-chat|S|HI"

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], stream=True)

    fake_openai.enforce_max_tokens = True
    fake_openai.chat_answer = lambda s, u, m: "x" * 100
    cut = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}], max_tokens=5)
    assert cut.choices[0].finish_reason == "length" and len(cut.choices[0].message.content) == 20


def test_openai_auth_models_and_unknown_model(fake_openai):
    with pytest.raises(openai.AuthenticationError) as err:
        client_for(fake_openai, api_key="sk-wrong").chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}]
        )
    assert err.value.code == "invalid_api_key"
    assert fake_openai.chat_requests == []  # rejected before the handler

    client = client_for(fake_openai)
    assert "whisper-1" in [m.id for m in client.models.list()]

    fake_openai.known_models = {"deepseek-chat", "deepseek-reasoner"}
    assert sorted(m.id for m in client.models.list()) == ["deepseek-chat", "deepseek-reasoner"]
    assert client.models.retrieve("deepseek-chat").id == "deepseek-chat"
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="deepseek-coder", messages=[{"role": "user", "content": "x"}])
    assert err.value.code == "model_not_found"


def test_openai_fault_injection(fake_openai, audio_file):
    client = client_for(fake_openai)
    messages = [{"role": "user", "content": "x"}]
    fake_openai.fail_next("chat", status=429, times=2, retry_after=0)
    fake_openai.fail_next("transcriptions", status=500, times=1)
    assert fake_openai.pending_faults() == 3

    for _ in range(2):
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="m", messages=messages)
        assert err.value.response.headers["retry-after"] == "0"
    assert client.chat.completions.create(model="m", messages=messages).choices[0].message.content == "PROOFREAD[x]"

    with pytest.raises(openai.InternalServerError):
        with open(audio_file, "rb") as fh:
            client.audio.transcriptions.create(model="whisper-1", file=fh)
    with open(audio_file, "rb") as fh:
        assert client.audio.transcriptions.create(model="whisper-1", file=fh).text

    fake_openai.disconnect_next("chat")
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=messages)

    assert fake_openai.pending_faults() == 0
    assert len(fake_openai.chat_requests) == 1  # faulted requests are not served
    assert [(r["endpoint"], r["status"], r["fault"]) for r in fake_openai.request_log] == [
        ("chat", 429, "error"),
        ("chat", 429, "error"),
        ("chat", 200, None),
        ("transcriptions", 500, "error"),
        ("transcriptions", 200, None),
        ("chat", None, "disconnect"),
    ]
    with pytest.raises(ValueError):
        fake_openai.fail_next("chat.completion", status=500)


def test_openai_client_retries_through_faults(fake_openai):
    fake_openai.fail_next("chat", status=429, times=2, retry_after=0.01)
    client = client_for(fake_openai, max_retries=2)
    completion = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "again"}])
    assert completion.choices[0].message.content == "PROOFREAD[again]"
    assert fake_openai.attempts("chat") == 3
    assert len(fake_openai.chat_requests) == 1


def test_openai_hang_triggers_client_timeout(fake_openai):
    fake_openai.hang_next("chat", seconds=5)
    client = client_for(fake_openai, timeout=0.3)
    start = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
    assert time.monotonic() - start < 2
    # the server is still usable meanwhile
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "y"}]).choices
    start = time.monotonic()
    fake_openai.stop()  # wakes the hung handler at once
    assert time.monotonic() - start < 2
    assert [r["user"] for r in fake_openai.chat_requests] == ["y"]  # the abandoned request was dropped


def test_openai_concurrent_requests_overlap(fake_openai):
    fake_openai.delay = {"chat": 0.3}
    client = client_for(fake_openai)

    def ask(i):
        r = client.chat.completions.create(model="m", messages=[{"role": "user", "content": f"chunk {i}"}])
        return r.choices[0].message.content

    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(ask, range(8)))
    elapsed = time.monotonic() - start
    assert answers == [f"PROOFREAD[chunk {i}]" for i in range(8)]
    assert fake_openai.peak_in_flight["chat"] > 1
    assert fake_openai.peak_in_flight["transcriptions"] == 0
    assert elapsed < 8 * 0.3 * 0.75  # served concurrently (~2 x 0.3 s)
    assert fake_openai.in_flight["chat"] == 0


def test_openai_max_concurrent_cap(fake_openai):
    fake_openai.delay = 0.3
    fake_openai.max_concurrent = {"chat": 1}
    client = client_for(fake_openai)
    barrier = threading.Barrier(3)

    def ask(_):
        barrier.wait(timeout=30)
        try:
            client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            return "ok"
        except openai.RateLimitError:
            return "429"

    with ThreadPoolExecutor(max_workers=3) as pool:
        outcomes = sorted(pool.map(ask, range(3)))
    assert outcomes == ["429", "429", "ok"]


def test_openai_raw_http_and_factory(fake_openai_factory):
    groq = fake_openai_factory(api_key="gsk-1", known_models={"whisper-large-v3"})
    deepseek = fake_openai_factory(api_key="ds-1")
    assert groq.base_url != deepseek.base_url and groq.base_url.endswith("/v1")
    r = requests.post(
        f"{deepseek.base_url}/chat/completions",
        headers={"Authorization": "Bearer ds-1"},
        data="not json",
        timeout=5,
    )
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = requests.get(f"{groq.base_url}/nope", headers={"Authorization": "Bearer gsk-1"}, timeout=5)
    assert r.status_code == 404 and "error" in r.json()
    r = requests.post(
        f"{groq.base_url}/audio/transcriptions",
        headers={"Authorization": "Bearer gsk-1"},
        files={"file": ("a.flac", b"fLaC", "audio/flac")},
        data={"model": "whisper-large-v3", "response_format": "srt"},
        timeout=5,
    )
    assert r.status_code == 200 and r.text.startswith("1\n00:00:00,000 --> ")
    assert groq.errors == [] and deepseek.errors == []
    assert json.loads(json.dumps(groq.transcription_requests[0]["fields"]))["response_format"] == "srt"

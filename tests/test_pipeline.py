"""The pipeline end to end through the HTTP API: real PostgreSQL, ffmpeg and pandoc; the
transcription service and the LLM are real HTTP servers on 127.0.0.1 (tests/fakes.py)."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import zipfile
from pathlib import Path

import pytest

import pipeline
from audio_service import ffmpeg_exe, probe_audio
from conftest import ROOT, TEST_DATABASE_URL, TEST_SECRET, bearer, login
from database import db
from models import ErrorLog, JobChunk, ProofreadPrompt, SystemSetting, TranscribePrompt, Transcription


def make_audio(path: Path, pattern: list[tuple[str, float]]) -> Path:
    """A file of tones and silences, e.g. [("tone", 5), ("silence", 1), ("tone", 4)]."""
    inputs, labels = [], []
    for i, (kind, seconds) in enumerate(pattern):
        source = (f"sine=frequency={300 + 100 * i}:duration={seconds}" if kind == "tone"
                  else f"anullsrc=r=44100:cl=mono,atrim=duration={seconds}")
        inputs += ["-f", "lavfi", "-i", source]
        labels.append(f"[{i}:a]")
    graph = "".join(labels) + f"concat=n={len(pattern)}:v=0:a=1[out]"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *inputs,
                    "-filter_complex", graph, "-map", "[out]", "-ar", "44100", "-ac", "1",
                    str(path)], check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def talk(tmp_path_factory) -> Path:
    return make_audio(tmp_path_factory.mktemp("audio") / "talk.mp3",
                      [("tone", 8), ("silence", 1), ("tone", 7), ("silence", 1), ("tone", 8)])


@pytest.fixture
def pipeline_config(fake_whisper, fake_openai):
    return dict(
        PIPELINE_ENABLED=True, TRANSCRIBE_ENGINE="remote",
        TRANSCRIBE_API_URL=fake_whisper.submit_url,
        GET_RESULT_TRANSCRIBE_API_URL=fake_whisper.result_url,
        TRANSCRIBE_API_KEY=fake_whisper.api_key,
        TRANSCRIBE_POLL_FIRST_SECONDS=0.05, TRANSCRIBE_POLL_MAX_SECONDS=0.2,
        OPENAI_TRANSCRIBE_BASE_URL=fake_openai.base_url,
        OPENAI_TRANSCRIBE_API_KEY=fake_openai.api_key, OPENAI_TRANSCRIBE_MODEL="whisper-1",
        DEEPSEEK_BASE_URL=fake_openai.base_url, DEEPSEEK_API_KEY=fake_openai.api_key,
        PROOFREAD_MAX_RETRIES=3, JOB_LEASE_SECONDS=3)


@pytest.fixture
def setup(make_app, make_user, pipeline_config):
    """Returns a function building (app, client, headers) with config overrides."""
    def build(**overrides):
        app = make_app(**(pipeline_config | overrides))
        with app.app_context():
            if db.session.get(TranscribePrompt, 1) is None:
                db.session.add(TranscribePrompt(id=1, version="v1", prompt="Names: Ezra, Nehemia"))
                db.session.add(ProofreadPrompt(id=1, version="v1", prompt="Fix punctuation."))
                db.session.add(SystemSetting(setting_key="active_transcribe_prompt_id",
                                             setting_value="1"))
                db.session.add(SystemSetting(setting_key="active_proofread_prompt_id",
                                             setting_value="1"))
                db.session.commit()
        client = app.test_client()
        if not hasattr(build, "user"):
            build.user = make_user("alice")
        return app, client, bearer(login(client, "alice"))
    return build


def upload(client, headers, audio: Path, **fields):
    data = {"file": (io.BytesIO(audio.read_bytes()), "Sunday Talk — Ezra 7.mp3"), **fields}
    response = client.post("/process", headers=headers, data=data,
                           content_type="multipart/form-data")
    assert response.status_code == 200, response.get_json()
    return response.get_json()["transcription_id"]


def wait_until_true(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"no {what} within {timeout:.0f} s"
        time.sleep(0.05)


def lease_released(app, job_id: str) -> bool:
    """The runner records a failure, then hands its lease back; until then a retry is 409."""
    with app.app_context():
        job = db.session.get(Transcription, uuid.UUID(job_id))
        db.session.commit()
        return job.lease_owner is None


def wait_for(client, headers, job_id, statuses=("completed", "error", "cancelled"),
             timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/transcriptions/{job_id}", headers=headers).get_json()
        if job["status"] in statuses:
            return job
        time.sleep(0.1)
    raise AssertionError(f"job stayed {job['status']}: {job}")


def outside_calls(service: str) -> float:
    """How many calls to an outside service this process has timed (/metrics' counter)."""
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("ezra_outside_call_seconds_count",
                                     {"service": service}) or 0.0


def test_upload_job_runs_to_three_documents(setup, fake_whisper, fake_openai, talk):
    app, client, headers = setup()
    remote_calls, proofread_calls = outside_calls("transcribe_remote"), outside_calls("proofread")
    fake_whisper.polls_before_ready = 2
    fake_whisper.transcript_for = lambda audio, tid, prompt: (
        "first paragraph of the talk.\n\nsecond paragraph, with the end.")
    job_id = upload(client, headers, talk)
    job = wait_for(client, headers, job_id)
    assert job["status"] == "completed", job
    assert job["audio_file_name"] == "Sunday Talk — Ezra 7"
    assert job["word_document_path"].endswith("/Sunday Talk — Ezra 7.docx")
    assert job["txt_document_path"] and job["md_document_path"]

    txt = client.get(f"/download/txt/{job_id}", headers=headers)
    assert txt.data.decode() == "first paragraph of the talk.\n\nsecond paragraph, with the end."
    md = client.get(f"/download/md/{job_id}", headers=headers).data.decode()
    assert md == ("PROOFREAD[first paragraph of the talk.\n\nsecond paragraph, with the end.]")
    docx = client.get(f"/download/word/{job_id}", headers=headers)
    assert "Sunday%20Talk" in docx.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(docx.data)) as archive:
        assert "PROOFREAD[first paragraph of the talk." in archive.read(
            "word/document.xml").decode()

    (submit,) = fake_whisper.submits
    assert submit["transcription_id"] == job_id
    # Every call to the outside services is timed for /metrics: one submit and the polls.
    assert outside_calls("transcribe_remote") - remote_calls == 1 + len(fake_whisper.polls)
    assert outside_calls("proofread") - proofread_calls == len(fake_openai.chat_requests)
    assert submit["prompt"] == "Names: Ezra, Nehemia"
    assert submit["auth"] == f"Bearer {fake_whisper.api_key}"
    assert fake_openai.chat_requests[0]["system"] == "Fix punctuation."
    with app.app_context():
        row = db.session.get(Transcription, uuid.UUID(job_id))
        assert row.transcribe_prompt == "Names: Ezra, Nehemia"
        assert row.proofread_prompt == "Fix punctuation."
        assert row.inference_duration is not None and row.engine == "remote"
        assert row.lease_owner is None
        from storage import job_dir
        assert not job_dir(row.id).exists()  # scratch audio gone once the transcript is safe


def test_trim_window_sends_only_the_window(setup, fake_whisper, talk, tmp_path, monkeypatch):
    app, client, headers = setup()
    received = []
    steps = []  # every status the runner commits, in order (polling could miss a quick one)
    commit_status = pipeline.JobRun.set_status

    def record_status(run, status, **values):
        steps.append(status)
        commit_status(run, status, **values)
    monkeypatch.setattr(pipeline.JobRun, "set_status", record_status)

    def keep_audio(audio, tid, prompt):
        path = tmp_path / f"received-{len(received)}.ogg"
        path.write_bytes(audio)
        received.append(path)
        return "window text"
    fake_whisper.transcript_for = keep_audio
    job_id = upload(client, headers, talk, start_time="00:03", end_time="0:10.5")
    assert wait_for(client, headers, job_id, timeout=30)["status"] == "completed"
    assert steps == ["trimming", "waiting", "transcribing", "waiting_for_proofreading",
                     "proofreading", "converting", "completed"]  # an upload has no uploading
    assert probe_audio(received[0]).duration == pytest.approx(7.5, abs=0.1)


def test_window_outside_the_audio_is_a_clear_error(setup, talk):
    app, client, headers = setup()
    job_id = upload(client, headers, talk, start_time="10:00", end_time="11:00")
    job = wait_for(client, headers, job_id)
    assert job["status"] == "error"
    assert "past the end of the audio" in job["error_message"]
    with app.app_context():
        (log,) = db.session.query(ErrorLog).all()
        assert log.step == "trim" and log.inference is False


def test_openai_engine_chunks_at_silences_in_order(setup, fake_openai, talk, tmp_path):
    from audio_service import detect_silences, require_audio
    from transcription_service import chunk_plan
    app, client, headers = setup(TRANSCRIBE_ENGINE="openai", TRANSCRIBE_CHUNK_SECONDS=10,
                                 TRANSCRIBE_CONCURRENCY=3)

    def by_duration(audio, model, prompt):
        with tempfile.NamedTemporaryFile(suffix=".ogg", dir=tmp_path, delete=False) as fh:
            fh.write(audio)
        return f"[{probe_audio(fh.name).duration:.2f}]"
    fake_openai.transcript_for = by_duration
    fake_openai.delay = {"transcriptions": 0.2}
    calls_before = outside_calls("transcribe_openai")
    job_id = upload(client, headers, talk)
    job = wait_for(client, headers, job_id)
    assert job["status"] == "completed", job
    assert outside_calls("transcribe_openai") - calls_before == len(
        fake_openai.transcription_requests)
    with app.app_context():
        from audio_service import encode_compact
        compact = tmp_path / "compact.ogg"
        encode_compact(talk, compact)
        plan = chunk_plan(require_audio(compact), detect_silences(compact), 10)
    assert len(plan) >= 3
    text = client.get(f"/download/txt/{job_id}", headers=headers).data.decode()
    received = [float(part.strip("[]")) for part in text.split("\n\n")]
    assert received == pytest.approx([end - start for start, end in plan], abs=0.15)
    assert len(fake_openai.transcription_requests) == len(plan)
    assert all(r["prompt"] == "Names: Ezra, Nehemia" for r in fake_openai.transcription_requests)
    assert job["progress"]["step"] == "completed"


def test_proofreading_keeps_order_across_many_slices(setup, fake_whisper, fake_openai, talk):
    app, client, headers = setup(PROOFREAD_SLICE_CHARS=200, PROOFREAD_CONCURRENCY=4)
    sentences = [f"Sentence number {i} of the sermon goes here." for i in range(60)]
    fake_whisper.transcript_for = lambda audio, tid, prompt: " ".join(sentences)
    import random
    fake_openai.chat_answer = lambda system, user, model: (
        time.sleep(random.uniform(0, 0.05)) or user.upper())
    job_id = upload(client, headers, talk)
    assert wait_for(client, headers, job_id)["status"] == "completed"
    md = client.get(f"/download/md/{job_id}", headers=headers).data.decode()
    numbers = [int(word) for word in md.replace(".", " ").split() if word.isdigit()]
    assert numbers == list(range(60))
    assert len(fake_openai.chat_requests) >= 10
    assert fake_openai.peak_in_flight["chat"] > 1


def test_proofreader_429_and_500_are_retried(setup, fake_openai, talk):
    app, client, headers = setup()
    fake_openai.fail_next("chat", status=429, times=2, retry_after=0)
    fake_openai.fail_next("chat", status=500, times=1)
    job_id = upload(client, headers, talk)
    assert wait_for(client, headers, job_id)["status"] == "completed"
    assert fake_openai.attempts("chat") == 4


@pytest.mark.parametrize("how", ["setting", "unconfigured"])
def test_without_proofreading_the_markdown_is_the_transcript(setup, fake_openai, talk, how):
    overrides = {"DEEPSEEK_BASE_URL": None} if how == "unconfigured" else {}
    app, client, headers = setup(**overrides)
    if how == "setting":
        with app.app_context():
            db.session.add(SystemSetting(setting_key="proofreading_enabled", setting_value="false"))
            db.session.commit()
    job_id = upload(client, headers, talk)
    job = wait_for(client, headers, job_id)
    assert job["status"] == "completed"
    assert "raw transcript" in job["proofread_note"]
    assert (client.get(f"/download/md/{job_id}", headers=headers).data
            == client.get(f"/download/txt/{job_id}", headers=headers).data)
    assert fake_openai.chat_requests == []


def test_transcription_service_failure_is_logged_with_secrets_redacted(setup, fake_whisper, talk):
    app, client, headers = setup()
    fake_whisper.submit_status = 400
    job_id = upload(client, headers, talk)
    job = wait_for(client, headers, job_id)
    assert job["status"] == "error"
    assert job["error_message"] == "The transcription service refused the audio"
    with app.app_context():
        (log,) = db.session.query(ErrorLog).all()
        assert log.step == "transcribe" and log.inference is True
        assert "400" in log.error_message and log.stack_trace
        assert fake_whisper.api_key not in log.error_message + log.stack_trace


def test_a_service_that_never_finishes_times_out(setup, fake_whisper, talk):
    app, client, headers = setup(TRANSCRIBE_TIMEOUT_SECONDS=1)
    fake_whisper.never_finish = True
    job = wait_for(client, headers, upload(client, headers, talk))
    assert job["status"] == "error"
    assert "did not finish" in job["error_message"]


def test_cancel_then_retry_resumes_without_resubmitting(setup, fake_whisper, talk):
    app, client, headers = setup()
    fake_whisper.never_finish = True
    job_id = upload(client, headers, talk)
    wait_for(client, headers, job_id, statuses=("transcribing",))
    wait_until_true(lambda: fake_whisper.polls, 30, "a first poll")
    response = client.post(f"/transcriptions/{job_id}/cancel", headers=headers)
    assert response.status_code == 202
    job = wait_for(client, headers, job_id)
    assert job["status"] == "cancelled"
    assert client.post(f"/transcriptions/{job_id}/cancel", headers=headers).status_code == 409

    fake_whisper.never_finish = False
    wait_until_true(lambda: lease_released(app, job_id), 10, "the lease handed back")
    retry = client.post(f"/transcriptions/{job_id}/retry", headers=headers)
    assert retry.status_code == 200, retry.get_json()
    assert wait_for(client, headers, job_id)["status"] == "completed"
    assert len(fake_whisper.submits) == 1  # the service already had the audio
    assert client.post(f"/transcriptions/{job_id}/retry", headers=headers).status_code == 409


def test_cancel_of_a_queued_job_is_immediate(setup, talk):
    app, client, headers = setup(PIPELINE_ENABLED=False)
    job_id = upload(client, headers, talk)
    response = client.post(f"/transcriptions/{job_id}/cancel", headers=headers)
    assert response.status_code == 200 and response.get_json()["status"] == "cancelled"


def test_recovery_picks_up_an_orphaned_job(setup, make_app, pipeline_config, talk):
    app, client, headers = setup(PIPELINE_ENABLED=False)
    job_id = upload(client, headers, talk)  # accepted, then the process "died"
    with app.app_context():  # ... long enough ago that nobody is starting it
        from datetime import timedelta
        from models import utcnow
        db.session.get(Transcription, uuid.UUID(job_id)).updated_at = utcnow() - timedelta(
            minutes=5)
        db.session.commit()
    runner = make_app(**pipeline_config)
    with runner.app_context():
        import pipeline
        assert pipeline.recover_jobs() == 1
    assert wait_for(client, headers, job_id)["status"] == "completed"


def test_a_job_interrupted_too_often_fails_clearly(setup, make_app, pipeline_config, talk):
    app, client, headers = setup(PIPELINE_ENABLED=False)
    job_id = upload(client, headers, talk)
    with app.app_context():
        db.session.get(Transcription, uuid.UUID(job_id)).attempts = 3
        db.session.commit()
    runner = make_app(**pipeline_config)
    with runner.app_context():
        import pipeline
        pipeline.run_job(uuid.UUID(job_id))
    job = wait_for(client, headers, job_id)
    assert job["status"] == "error" and "interrupted 3 times" in job["error_message"]


# Killed mid-step, then resumed ---------------------------------------------------------------

RUNNER = """
import sys, uuid
sys.path.insert(0, {root!r})
from app import create_app
import pipeline
app = create_app()
with app.app_context():
    pipeline.run_job(uuid.UUID({job_id!r}))
"""


def _run_in_subprocess(job_id: str, env: dict) -> subprocess.Popen:
    environment = {**os.environ, **{k: str(v) for k, v in env.items()}}
    return subprocess.Popen([sys.executable, "-c", RUNNER.format(root=str(ROOT), job_id=job_id)],
                            env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _chunks(app, job_id: str, stage: str) -> int:
    with app.app_context():
        count = db.session.query(JobChunk).filter_by(transcription_id=uuid.UUID(job_id),
                                                     stage=stage).count()
        db.session.commit()
        return count


def _kill_after_chunks(app, process, job_id, stage, count, timeout=60):
    deadline = time.monotonic() + timeout
    while _chunks(app, job_id, stage) < count:
        assert process.poll() is None, "the runner ended before it was killed"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    with app.app_context():  # the dead runner's lease would expire; skip the wait
        job = db.session.get(Transcription, uuid.UUID(job_id))
        assert job.lease_owner is not None
        job.lease_expires_at = None
        db.session.commit()


def _wait_until_idle(fake, endpoint: str, timeout: float = 30) -> None:
    """The fake still answers (and records) the killed runner's request in flight."""
    deadline = time.monotonic() + timeout
    while fake.in_flight.get(endpoint, 0):
        assert time.monotonic() < deadline, "the fake never finished the dead runner's request"
        time.sleep(0.02)


def _stored_inputs(app, job_id: str, stage: str) -> list[str]:
    """What each stored chunk was asked for: the audio piece's upload name ("chunk-0003"; a
    re-cut piece's bytes may differ, its name does not) or the proofread slice, read back
    from its answer ("PROOFREAD[<slice>]")."""
    with app.app_context():
        rows = db.session.execute(db.select(JobChunk.index, JobChunk.text).filter_by(
            transcription_id=uuid.UUID(job_id), stage=stage)).all()
        db.session.commit()
    if stage == "transcribe":
        return [f"chunk-{index:04d}" for index, _ in rows]
    return [text.removeprefix("PROOFREAD[").removesuffix("]") for _, text in rows]


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["transcribe", "proofread"])
def test_killed_runner_resumes_without_paying_twice(setup, make_app, pipeline_config,
                                                    fake_openai, tmp_path, stage):
    long_talk = make_audio(tmp_path / "long.mp3", [x for i in range(6) for x in
                                                   (("tone", 9), ("silence", 1))])
    app, client, headers = setup(PIPELINE_ENABLED=False, TRANSCRIBE_ENGINE="openai",
                                 TRANSCRIBE_CHUNK_SECONDS=10, TRANSCRIBE_CONCURRENCY=1,
                                 PROOFREAD_SLICE_CHARS=200, PROOFREAD_CONCURRENCY=1)
    import hashlib

    def transcript_for(audio, model, prompt):
        tag = hashlib.sha256(audio).hexdigest()[:8]
        if stage == "transcribe":
            return f"chunk {tag}"
        return " ".join(f"Sentence {i} of chunk {tag} is a line of a long sermon."
                        for i in range(10))
    fake_openai.transcript_for = transcript_for
    fake_openai.chat_answer = lambda system, user, model: f"PROOFREAD[{user}]"
    fake_openai.delay = {"transcriptions": 0.3 if stage == "transcribe" else 0,
                         "chat": 0.3 if stage == "proofread" else 0}
    job_id = upload(client, headers, long_talk)
    env = {"DATABASE_URL": TEST_DATABASE_URL, "JWT_SECRET_KEY": TEST_SECRET,
           "STORAGE_DIR": app.config["STORAGE_DIR"], "JOB_RECOVERY_INTERVAL_SECONDS": 0,
           "TRANSCRIBE_ENGINE": "openai", "OPENAI_TRANSCRIBE_BASE_URL": fake_openai.base_url,
           "OPENAI_TRANSCRIBE_API_KEY": fake_openai.api_key, "TRANSCRIBE_CHUNK_SECONDS": 10,
           "TRANSCRIBE_CONCURRENCY": 1, "DEEPSEEK_BASE_URL": fake_openai.base_url,
           "DEEPSEEK_API_KEY": fake_openai.api_key, "PROOFREAD_SLICE_CHARS": 200,
           "PROOFREAD_CONCURRENCY": 1, "ARGON2_MEMORY_KIB": 19456, "ARGON2_TIME_COST": 2}
    process = _run_in_subprocess(job_id, env)
    _kill_after_chunks(app, process, job_id, stage, 2)
    endpoint = "transcriptions" if stage == "transcribe" else "chat"
    records = (fake_openai.transcription_requests if stage == "transcribe"
               else fake_openai.chat_requests)

    def asked(record: dict) -> str:  # the same identity as _stored_inputs gives
        return Path(record["filename"]).stem if stage == "transcribe" else record["user"]
    _wait_until_idle(fake_openai, endpoint)
    finished_before = set(_stored_inputs(app, job_id, stage))
    sent_before = len(records)
    assert len(finished_before) >= 2

    runner = make_app(**(pipeline_config | {"TRANSCRIBE_ENGINE": "openai",
                                            "TRANSCRIBE_CHUNK_SECONDS": 10,
                                            "TRANSCRIBE_CONCURRENCY": 1,
                                            "PROOFREAD_SLICE_CHARS": 200,
                                            "PROOFREAD_CONCURRENCY": 1}))
    with runner.app_context():
        import pipeline
        pipeline.run_job(uuid.UUID(job_id))
    job = client.get(f"/transcriptions/{job_id}", headers=headers).get_json()
    assert job["status"] == "completed", job
    every_chunk = _stored_inputs(app, job_id, stage)
    assert len(set(every_chunk)) == len(every_chunk)  # chunks are told apart by content
    sent_after = [asked(r) for r in records[sent_before:]]
    # Chunks stored before the kill were not sent again; every other chunk was, once (plus
    # at most the dead runner's request in flight, should the fake record it this late).
    assert not finished_before & set(sent_after)
    assert set(sent_after) == set(every_chunk) - finished_before
    assert len(sent_after) <= len(every_chunk) - len(finished_before) + 1
    if stage == "proofread":  # the slices honour PROOFREAD_SLICE_CHARS
        assert max(len(r["user"]) for r in records) <= 200


# A Google Drive link through gdown ------------------------------------------------------------

@pytest.fixture
def fake_drive(talk):
    from fakes import FakeDrive
    drive = FakeDrive(talk.read_bytes(), "1AbCdEfGhIjKlMnOpQrStUvWxYz012345", "Kebaktian Pagi.mp3")
    yield drive.url
    drive.stop()


def test_drive_link_job_fetches_with_gdown(setup, fake_drive, fake_whisper):
    app, client, headers = setup(DRIVE_BASE_URL=fake_drive, ALLOW_PRIVATE_ADDRESSES=True)
    response = client.post("/process", headers=headers, content_type="multipart/form-data",
                           data={"drive_link": "https://drive.google.com/file/d/"
                                               "1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view"})
    job_id = response.get_json()["transcription_id"]
    job = wait_for(client, headers, job_id)
    assert job["status"] == "completed", job
    assert job["audio_file_name"] == "Kebaktian Pagi"
    assert len(fake_whisper.submits) == 1
    # The admin dashboard shows the last segment of audio_file_path: the title, no server path.
    with app.app_context():
        row = db.session.get(Transcription, uuid.UUID(job_id))
        assert row.audio_file_path == "Kebaktian Pagi"
    assert job["word_document_path"].endswith("/Kebaktian Pagi.docx")


def test_drive_link_to_a_private_address_is_refused(setup, fake_drive, fake_whisper):
    app, client, headers = setup(DRIVE_BASE_URL=fake_drive, ALLOW_PRIVATE_ADDRESSES=False)
    response = client.post("/process", headers=headers, content_type="multipart/form-data",
                           data={"drive_link": "https://drive.google.com/open?id="
                                               "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"})
    job = wait_for(client, headers, response.get_json()["transcription_id"])
    assert job["status"] == "error"
    assert "private or local network address" in job["error_message"]
    assert fake_whisper.submits == []


def test_upload_names_are_labels_only(setup, talk):
    app, client, headers = setup(PIPELINE_ENABLED=False)
    data = {"file": (io.BytesIO(talk.read_bytes()), "../../etc/Ser\x00mon\u202e.mp3")}
    response = client.post("/process", headers=headers, data=data,
                           content_type="multipart/form-data")
    assert response.status_code == 200
    job_id = response.get_json()["transcription_id"]
    job = client.get(f"/transcriptions/{job_id}", headers=headers).get_json()
    assert job["audio_file_name"] == "Sermon"
    with app.app_context():  # the upload's name, never the server path of its copy
        assert db.session.get(Transcription, uuid.UUID(job_id)).audio_file_path == "Sermon.mp3"
    with app.app_context():
        from storage import job_dir
        stored = list(job_dir(uuid.UUID(job_id)).iterdir())
        assert [p.name for p in stored] == ["source.upload"]


def test_an_exiting_worker_hands_its_job_back_at_once(setup, make_app, pipeline_config,
                                                       fake_whisper, talk):
    import threading

    import pipeline
    app, client, headers = setup(PIPELINE_ENABLED=False)
    fake_whisper.never_finish = True
    job_id = upload(client, headers, talk)
    runner = make_app(**pipeline_config)

    def run():
        with runner.app_context():
            pipeline.run_job(uuid.UUID(job_id))
    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(client, headers, job_id, statuses=("transcribing",))
        wait_until_true(lambda: fake_whisper.polls, 30, "a first poll")
        pipeline._drain()  # what interpreter exit does in a recycled gunicorn worker
        thread.join(timeout=10)
        assert not thread.is_alive()
        with app.app_context():
            row = db.session.get(Transcription, uuid.UUID(job_id))
            assert row.status == "transcribing" and row.lease_owner is None
            assert row.attempts == 0  # handing back is not an interruption
            lease_expires_at = row.lease_expires_at
            db.session.commit()
        assert lease_expires_at is not None
    finally:
        pipeline._draining.clear()
    fake_whisper.never_finish = False
    with runner.app_context():
        assert pipeline.recover_jobs() == 1  # claimable at once, not after a lease period
    assert wait_for(client, headers, job_id)["status"] == "completed"
    assert len(fake_whisper.submits) == 1

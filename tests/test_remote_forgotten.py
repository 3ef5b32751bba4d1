"""Issue 8, item 2: a remote Whisper service that forgets a job (it restarted) gets the audio
once more, recorded, with a fresh deadline, or the job fails at once; retry of a failed
remote step starts a fresh submission."""
from __future__ import annotations

import uuid

import pytest

from database import db
from fake_fixtures import WHISPER_TEST_KEY, served
from fakes import FakeWhisperService
from models import JobChunk
from test_pipeline import (lease_released, pipeline_config, setup, talk, upload,  # noqa: F401
                           wait_for, wait_until_true)
from transcription_service import REMOTE_RESUBMITTED


class ForgetfulWhisper(FakeWhisperService):
    """Accepts a submit, then "restarts": the job is gone and every poll answers 404."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.forget_next = 0

    def _handle_process(self, request):
        response = super()._handle_process(request)
        with self._lock:
            if self.forget_next and self.jobs:
                self.forget_next -= 1
                self.jobs.clear()
        return response


@pytest.fixture
def fake_whisper():
    yield from served(ForgetfulWhisper(api_key=WHISPER_TEST_KEY))


FORGET_FAST = dict(TRANSCRIBE_FORGOTTEN_FACTOR=0.0, TRANSCRIBE_FORGOTTEN_MARGIN_SECONDS=0.5)


def test_a_forgotten_job_is_resubmitted_once_and_completes(setup, fake_whisper, talk):
    app, client, headers = setup(**FORGET_FAST)
    fake_whisper.forget_next = 1
    job_id = upload(client, headers, talk)
    job = wait_for(client, headers, job_id, timeout=30)
    assert job["status"] == "completed", job
    assert len(fake_whisper.submits) == 2
    with app.app_context():
        assert db.session.get(JobChunk, (uuid.UUID(job_id), "transcribe",
                                         REMOTE_RESUBMITTED)) is not None


def test_a_job_forgotten_twice_fails_at_once_with_a_clear_message(setup, fake_whisper, talk):
    # The 3-hour timeout would otherwise hold it in `transcribing` for hours.
    app, client, headers = setup(**FORGET_FAST)
    fake_whisper.forget_next = 2
    job = wait_for(client, headers, upload(client, headers, talk), timeout=30)
    assert job["status"] == "error"
    assert "lost this job twice" in job["error_message"]
    assert len(fake_whisper.submits) == 2


def test_retry_of_a_failed_remote_step_submits_afresh(setup, fake_whisper, talk):
    app, client, headers = setup(TRANSCRIBE_TIMEOUT_SECONDS=1)
    fake_whisper.never_finish = True
    job_id = upload(client, headers, talk)
    failed = wait_for(client, headers, job_id, timeout=30)
    assert failed["status"] == "error" and "did not finish" in failed["error_message"]
    fake_whisper.never_finish = False
    wait_until_true(lambda: lease_released(app, job_id), 30, "lease release after the failure")
    assert client.post(f"/transcriptions/{job_id}/retry", headers=headers).status_code == 200
    job = wait_for(client, headers, job_id, timeout=30)
    assert job["status"] == "completed", job  # not the first deadline, long passed
    assert len(fake_whisper.submits) == 2

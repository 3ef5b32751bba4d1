"""Part 3 of issue 12, "same talk, same work": a second job of the same source and window
takes the finished transcript (and the proofreading, when prompt and model are the same)
instead of paying again. Driven through HTTP; the fakes count what was paid for."""
from __future__ import annotations

import uuid

import pytest

from conftest import bearer, login
from database import db
from links import parse_link
from models import Document, ProofreadPrompt, Transcription
from reuse import link_source_key
from test_pipeline import (fake_drive, pipeline_config, setup, talk, upload,  # noqa: F401
                           wait_for)

VIDEO = "dQw4w9WgXcQ"


@pytest.mark.parametrize("link", [
    f"https://www.youtube.com/watch?v={VIDEO}", f"https://youtu.be/{VIDEO}?t=42",
    f"https://m.youtube.com/watch?v={VIDEO}&list=PL123&index=2",
    f"https://www.youtube.com/shorts/{VIDEO}", f"https://music.youtube.com/watch?v={VIDEO}",
    f"https://www.youtube.com/live/{VIDEO}", f"https://www.youtube-nocookie.com/embed/{VIDEO}",
])
def test_every_form_of_a_youtube_link_has_one_source_key(link):
    assert link_source_key(parse_link(link)) == f"youtube:{VIDEO}"


def test_drive_links_key_on_the_file_id():
    file_id = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    keys = {link_source_key(parse_link(link)) for link in (
        f"https://drive.google.com/file/d/{file_id}/view?usp=sharing",
        f"https://drive.google.com/open?id={file_id}",
        f"https://drive.google.com/uc?id={file_id}&export=download",
        f"https://docs.google.com/file/d/{file_id}/edit")}
    assert keys == {f"drive:{file_id}"}


def stats(client, admin_headers) -> dict:
    return client.get("/admin/stats", headers=admin_headers).get_json()


def text_of(client, headers, kind: str, job_id: str) -> str:
    response = client.get(f"/download/{kind}/{job_id}", headers=headers)
    assert response.status_code == 200
    return response.data.decode()


def test_a_second_upload_of_the_same_talk_reuses_transcript_and_proofreading(
        setup, fake_whisper, fake_openai, talk, make_user):
    app, client, headers = setup()
    make_user("root", is_admin=True)
    admin_headers = bearer(login(client, "root"))
    fake_whisper.transcript_for = lambda audio, tid, prompt: "first part.\n\nsecond part."
    first = upload(client, headers, talk)
    assert wait_for(client, headers, first)["status"] == "completed"
    submits, chats = fake_whisper.attempts("process"), fake_openai.attempts("chat")
    assert submits == 1 and chats >= 1
    paid = stats(client, admin_headers)
    assert paid["llm_tokens_used"] > 0 and paid["reused_transcriptions"] == 0

    second = upload(client, headers, talk)
    job = wait_for(client, headers, second)
    assert job["status"] == "completed" and job["proofread_note"] is None
    assert fake_whisper.attempts("process") == submits  # not transcribed again
    assert fake_openai.attempts("chat") == chats  # not proofread again
    for kind in ("txt", "md"):
        assert text_of(client, headers, kind, second) == text_of(client, headers, kind, first)
    assert client.get(f"/download/word/{second}", headers=headers).status_code == 200
    saved = stats(client, admin_headers)
    assert saved["reused_transcriptions"] == 1
    assert saved["reuse_saved_audio_minutes"] == round(25 / 60, 1)  # the 25 s talk
    assert saved["reuse_saved_llm_tokens"] == paid["llm_tokens_used"]
    assert saved["llm_tokens_used"] == paid["llm_tokens_used"]  # nothing new was paid
    assert saved["total_transcriptions"] == 2

    with app.app_context():
        rows = {str(t.id): t for t in db.session.query(Transcription).all()}
        assert rows[second].reused_from == rows[first].id
        assert rows[second].reused_tokens == rows[first].proofread_tokens > 0
        assert rows[second].proofread_tokens is None  # nothing paid
        assert rows[first].source_key == rows[second].source_key
        assert rows[first].source_key.startswith("upload:sha256:")


@pytest.mark.slow
def test_another_proofreading_prompt_reuses_only_the_transcript(
        setup, fake_whisper, fake_openai, talk):
    app, client, headers = setup()
    first = upload(client, headers, talk)
    assert wait_for(client, headers, first)["status"] == "completed"
    chats = fake_openai.attempts("chat")
    with app.app_context():  # the active prompt's text changes (as an admin edit would)
        db.session.get(ProofreadPrompt, 1).prompt = "Fix punctuation and add headings."
        db.session.commit()
    second = upload(client, headers, talk)
    assert wait_for(client, headers, second)["status"] == "completed"
    assert fake_whisper.attempts("process") == 1
    assert fake_openai.attempts("chat") > chats
    assert text_of(client, headers, "txt", second) == text_of(client, headers, "txt", first)
    with app.app_context():
        job = db.session.get(Transcription, uuid.UUID(second))
        assert job.reused_from == uuid.UUID(first) and job.reused_tokens is None
        assert job.proofread_tokens > 0
        assert job.proofread_prompt == "Fix punctuation and add headings."


@pytest.mark.slow
def test_another_window_or_model_is_transcribed_again(setup, fake_whisper, talk):
    app, client, headers = setup()
    first = upload(client, headers, talk, start_time="0", end_time="20")
    assert wait_for(client, headers, first)["status"] == "completed"
    other_window = upload(client, headers, talk, start_time="1", end_time="20")
    assert wait_for(client, headers, other_window)["status"] == "completed"
    assert fake_whisper.attempts("process") == 2
    same_window = upload(client, headers, talk, start_time="0:00", end_time="0:20")
    assert wait_for(client, headers, same_window)["status"] == "completed"
    assert fake_whisper.attempts("process") == 2
    with app.app_context():
        # Pretend the first two were made by another model: nothing matches any more.
        db.session.query(Transcription).update({"transcribe_model": "whisper-large-v3"})
        db.session.commit()
    again = upload(client, headers, talk, start_time="0", end_time="20")
    assert wait_for(client, headers, again)["status"] == "completed"
    assert fake_whisper.attempts("process") == 3


@pytest.mark.slow
def test_drive_links_of_one_file_share_the_work(setup, fake_drive, fake_whisper, fake_openai):
    app, client, headers = setup(DRIVE_BASE_URL=fake_drive, ALLOW_PRIVATE_ADDRESSES=True)
    file_id = "1AbCdEfGhIjKlMnOpQrStUvWxYz012345"
    ids = []
    for link in (f"https://drive.google.com/file/d/{file_id}/view?usp=sharing",
                 f"https://drive.google.com/open?id={file_id}"):
        response = client.post("/process", headers=headers, data={"drive_link": link},
                               content_type="multipart/form-data")
        assert response.status_code == 200, response.get_json()
        ids.append(response.get_json()["transcription_id"])
        assert wait_for(client, headers, ids[-1])["status"] == "completed"
    assert fake_whisper.attempts("process") == 1
    second = client.get(f"/transcriptions/{ids[1]}", headers=headers).get_json()
    assert second["audio_file_name"] == "Kebaktian Pagi"  # the title came with the transcript
    assert second["word_document_path"].endswith("/Kebaktian Pagi.docx")


def test_youtube_links_reuse_without_fetching(setup, fake_whisper, fake_openai):
    """A finished job of the video (made here directly in the database) serves later links
    in any form: nothing is fetched (this machine cannot reach YouTube) or transcribed; a
    different window is fetched, and fails here."""
    app, client, headers = setup(ALLOW_PRIVATE_ADDRESSES=False)
    with app.app_context():
        donor = Transcription(
            id=uuid.uuid4(), user_id=setup.user.id, status="completed",
            google_drive_url=f"https://www.youtube.com/watch?v={VIDEO}", source_type="youtube",
            source_key=f"youtube:{VIDEO}", start_seconds=60.0, end_seconds=None,
            engine="remote", transcribe_model="remote", language=None, audio_seconds=1800.0,
            audio_file_name="Khotbah Minggu", audio_file_path="Khotbah Minggu.webm",
            transcribe_prompt="Names: Ezra, Nehemia")
        db.session.add(donor)
        db.session.flush()  # the documents refer to it
        db.session.add(Document(transcription_id=donor.id, kind="txt",
                                content="Selamat pagi, jemaat.".encode()))
        db.session.add(Document(transcription_id=donor.id, kind="segments",
                                content=b'[[0.0, 2.5, "Selamat pagi, jemaat."]]'))
        db.session.commit()
    for link in (f"https://youtu.be/{VIDEO}", f"https://www.youtube.com/shorts/{VIDEO}"):
        response = client.post("/process", headers=headers,
                               data={"drive_link": link, "start_time": "1:00"},
                               content_type="multipart/form-data")
        job_id = response.get_json()["transcription_id"]
        job = wait_for(client, headers, job_id)
        assert job["status"] == "completed", job
        assert job["audio_file_name"] == "Khotbah Minggu"
        assert text_of(client, headers, "txt", job_id) == "Selamat pagi, jemaat."
        # Subtitles come along, timed against the source (the window's minute added back).
        assert "00:01:00,000 --> 00:01:02,500" in text_of(client, headers, "srt", job_id)
    assert fake_whisper.attempts("process") == 0
    other = client.post("/process", headers=headers,
                        data={"drive_link": f"https://youtu.be/{VIDEO}", "start_time": "2:00"},
                        content_type="multipart/form-data").get_json()["transcription_id"]
    assert wait_for(client, headers, other)["status"] == "error"

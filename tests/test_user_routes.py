"""POST /process validation, the user's job list, one job, and downloads."""
from __future__ import annotations

import io
import uuid
from datetime import datetime, timedelta, timezone

import pytest

from conftest import bearer, login
from database import db
from models import Document, SystemSetting, Transcription

YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
DRIVE = "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345/view?usp=sharing"


def submit(client, headers, **fields):
    data = {k: v for k, v in fields.items() if v is not None}
    return client.post("/process", headers=headers, data=data,
                       content_type="multipart/form-data")


@pytest.mark.parametrize("link, source_type", [
    (YOUTUBE, "youtube"),
    ("https://youtu.be/dQw4w9WgXcQ?t=42", "youtube"),
    ("https://music.youtube.com/watch?v=dQw4w9WgXcQ", "youtube"),
    ("https://m.youtube.com/watch?v=dQw4w9WgXcQ&list=PL1234567890", "youtube"),
    ("https://www.youtube.com/shorts/dQw4w9WgXcQ", "youtube"),
    (DRIVE, "drive"),
    ("https://drive.google.com/open?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345", "drive"),
    ("https://drive.google.com/uc?id=1AbCdEfGhIjKlMnOpQrStUvWxYz012345&export=download", "drive"),
])
def test_process_accepts_youtube_and_drive_links(app, client, user_headers, link, source_type):
    response = submit(client, user_headers, drive_link=link, start_time="1:30", end_time="62:03")
    assert response.status_code == 200
    body = response.get_json()
    assert body["message"] == "Transcription request is submitted"
    with app.app_context():
        job = db.session.get(Transcription, uuid.UUID(body["transcription_id"]))
        assert job.status == "submitted"
        assert job.google_drive_url == link
        assert job.source_type == source_type
        assert (job.start_seconds, job.end_seconds) == (90, 3723)


@pytest.mark.parametrize("fields, message", [
    ({}, "Send exactly one of 'drive_link'"),
    ({"drive_link": "   "}, "Send exactly one of 'drive_link'"),
    ({"drive_link": "https://vimeo.com/123"}, "Only YouTube and Google Drive links are accepted"),
    ({"drive_link": "https://evil.example/www.youtube.com/watch?v=dQw4w9WgXcQ"},
     "Only YouTube and Google Drive links are accepted"),
    ({"drive_link": "https://www.youtube.com.evil.example/watch?v=dQw4w9WgXcQ"},
     "Only YouTube and Google Drive links are accepted"),
    ({"drive_link": "https://www.youtube.com@evil.example/watch?v=dQw4w9WgXcQ"},
     "must not contain a user name"),
    ({"drive_link": "ftp://www.youtube.com/watch?v=dQw4w9WgXcQ"}, "must start with https://"),
    ({"drive_link": "file:///etc/passwd"}, "must start with https://"),
    ({"drive_link": "youtube.com/watch?v=dQw4w9WgXcQ"}, "must start with https://"),
    ({"drive_link": "https://www.youtube.com/playlist?list=PL1234567890"}, "names a playlist"),
    ({"drive_link": "https://www.youtube.com/watch?v=short"}, "does not name a video"),
    ({"drive_link": "https://drive.google.com/drive/folders/1AbCdEfGhIjKlMnOp"},
     "folder links are not supported"),
    ({"drive_link": "https://drive.google.com/file/d/"}, "does not name a file"),
    ({"drive_link": "https://www.youtube.com/watch?v=" + "a" * 3000}, "longer than 2048"),
    ({"drive_link": YOUTUBE, "start_time": "ten"}, "'start_time' must look like hh:mm:ss"),
    ({"drive_link": YOUTUBE, "end_time": "1:75"}, "'end_time' has minutes or seconds of 60"),
    ({"drive_link": YOUTUBE, "end_time": "1:60:00"}, "minutes or seconds of 60 or more"),
    ({"drive_link": YOUTUBE, "end_time": "1:2:3:4"}, "'end_time' must look like"),
    ({"drive_link": YOUTUBE, "end_time": "1::3"}, "'end_time' must look like"),
    ({"drive_link": YOUTUBE, "start_time": "-5"}, "'start_time' must look like"),
    ({"drive_link": YOUTUBE, "start_time": "10:00", "end_time": "05:00"},
     "'start_time' (00:10:00) must be before 'end_time' (00:05:00)"),
    ({"drive_link": YOUTUBE, "start_time": "30", "end_time": "30"}, "must be before"),
], ids=lambda v: str(v)[:60])
def test_process_rejects_bad_input_with_400(app, client, user_headers, fields, message):
    response = submit(client, user_headers, **fields)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    with app.app_context():
        assert db.session.query(Transcription).count() == 0


def test_process_rejects_a_link_and_a_file_together(client, user_headers):
    response = client.post("/process", headers=user_headers, data={
        "drive_link": YOUTUBE, "file": (io.BytesIO(b"abc"), "talk.mp3")},
        content_type="multipart/form-data")
    assert response.status_code == 400
    assert "exactly one" in response.get_json()["error"]


def test_process_needs_a_token(client):
    assert submit(client, {}, drive_link=YOUTUBE).status_code == 401


def test_kill_switch_answers_503_and_stores_nothing(app, client, user_headers):
    with app.app_context():
        db.session.add(SystemSetting(setting_key="transcribing_allowed", setting_value="false"))
        db.session.commit()
    response = submit(client, user_headers, drive_link=YOUTUBE)
    assert response.status_code == 503
    assert "paused" in response.get_json()["error"]
    with app.app_context():
        assert db.session.query(Transcription).count() == 0


def test_per_user_limit_of_unfinished_jobs_is_429(make_app, make_user):
    app = make_app(MAX_UNFINISHED_JOBS_PER_USER=2)
    make_user("carol")
    client = app.test_client()
    headers = bearer(login(client, "carol"))
    assert submit(client, headers, drive_link=YOUTUBE).status_code == 200
    assert submit(client, headers, drive_link=YOUTUBE).status_code == 200
    third = submit(client, headers, drive_link=YOUTUBE)
    assert third.status_code == 429
    assert third.headers["Retry-After"]
    assert "limit 2" in third.get_json()["error"]
    with app.app_context():  # a finished job frees a place
        job = db.session.query(Transcription).first()
        job.status = "completed"
        db.session.commit()
    assert submit(client, headers, drive_link=YOUTUBE).status_code == 200


def _add_job(app, user_id, **values) -> uuid.UUID:
    values.setdefault("id", uuid.uuid4())
    values.setdefault("status", "completed")
    with app.app_context():
        job = Transcription(user_id=user_id, **values)
        db.session.add(job)
        db.session.commit()
        return job.id


def _add_document(app, job_id, kind, content: bytes) -> None:
    with app.app_context():
        db.session.add(Document(transcription_id=job_id, kind=kind, content=content))
        db.session.commit()


def test_list_is_own_jobs_newest_first_with_contract_keys(app, client, user, make_user,
                                                          user_headers):
    other = make_user("mallory")
    now = datetime.now(timezone.utc)
    old = _add_job(app, user.id, google_drive_url=YOUTUBE, created_at=now - timedelta(days=1))
    new = _add_job(app, user.id, audio_file_name="Sunday sermon", created_at=now)
    _add_job(app, other.id, created_at=now)
    _add_document(app, new, "docx", b"PK")

    response = client.get("/transcriptions", headers=user_headers)
    assert response.status_code == 200
    items = response.get_json()
    assert [item["id"] for item in items] == [str(new), str(old)]
    assert {"id", "created_at", "updated_at", "status", "word_document_path",
            "txt_document_path", "audio_file_name"} <= set(items[0])
    # Clients show a document's name as the last segment of its path.
    assert items[0]["word_document_path"] == f"/download/word/{new}/Sunday sermon.docx"
    named = client.get(items[0]["word_document_path"], headers=user_headers)
    assert named.status_code == 200 and named.data == b"PK"
    assert items[0]["txt_document_path"] is None
    assert items[0]["audio_file_name"] == "Sunday sermon"
    assert items[1]["audio_file_name"] == YOUTUBE  # falls back to the link
    assert datetime.fromisoformat(items[0]["created_at"]).tzinfo is not None


def test_list_paging(app, client, user, user_headers):
    now = datetime.now(timezone.utc)
    ids = [_add_job(app, user.id, created_at=now - timedelta(minutes=i)) for i in range(5)]
    page = client.get("/transcriptions?limit=2&offset=1", headers=user_headers).get_json()
    assert [p["id"] for p in page] == [str(ids[1]), str(ids[2])]
    for query, message in (("limit=0", "at least 1"), ("limit=abc", "whole number"),
                           ("limit=100000", "at most 1000"), ("offset=-1", "whole number")):
        response = client.get(f"/transcriptions?{query}", headers=user_headers)
        assert response.status_code == 400
        assert message in response.get_json()["error"]


def test_get_one_transcription(app, client, user, make_user, user_headers):
    job = _add_job(app, user.id, status="transcribing", google_drive_url=YOUTUBE)
    other = _add_job(app, make_user("mallory").id)
    response = client.get(f"/transcriptions/{job}", headers=user_headers)
    assert response.status_code == 200
    assert response.get_json()["status"] == "transcribing"
    assert client.get(f"/transcriptions/{other}", headers=user_headers).status_code == 404
    assert client.get(f"/transcriptions/{uuid.uuid4()}", headers=user_headers).status_code == 404
    bad = client.get("/transcriptions/not-a-uuid", headers=user_headers)
    assert bad.status_code == 400
    assert "must be a UUID" in bad.get_json()["error"]


def test_download_serves_stored_documents_with_utf8_names(app, client, user, user_headers):
    job = _add_job(app, user.id, audio_file_name="Khotbah Minggu — Roma 8")
    _add_document(app, job, "txt", "raw transcript\n".encode())
    _add_document(app, job, "md", b"# Title\n")
    _add_document(app, job, "docx", b"PK\x03\x04docx")

    txt = client.get(f"/download/txt/{job}", headers=user_headers)
    assert txt.status_code == 200
    assert txt.data == b"raw transcript\n"
    assert txt.mimetype == "text/plain"
    disposition = txt.headers["Content-Disposition"]
    assert disposition.startswith("attachment;")
    assert "filename*=UTF-8''Khotbah%20Minggu%20%E2%80%94%20Roma%208.txt" in disposition
    for file_type in ("word", "docx"):
        word = client.get(f"/download/{file_type}/{job}", headers=user_headers)
        assert word.status_code == 200 and word.data == b"PK\x03\x04docx"
        assert word.mimetype.endswith("wordprocessingml.document")
    assert client.get(f"/download/md/{job}", headers=user_headers).data == b"# Title\n"


def test_download_errors(app, client, user, make_user, user_headers):
    pending = _add_job(app, user.id, status="transcribing")
    theirs = _add_job(app, make_user("mallory").id)
    _add_document(app, theirs, "txt", b"secret")
    cases = [
        (f"/download/txt/{pending}", 404, "not ready"),
        (f"/download/txt/{theirs}", 404, "Transcription not found"),
        (f"/download/txt/{uuid.uuid4()}", 404, "Transcription not found"),
        (f"/download/pdf/{pending}", 400, "Unknown file type"),
        ("/download/txt/../../etc/passwd", 404, "Not found"),
        ("/download/txt/..%2F..%2Fetc%2Fpasswd", 404, "Not found"),
        ("/download/txt/..%5C..%5Cwin.ini", 400, "must be a UUID"),
    ]
    for path, status, message in cases:
        response = client.get(path, headers=user_headers)
        assert response.status_code == status, path
        assert message in response.get_json()["error"], path


def test_download_of_a_legacy_row_reads_its_recorded_file(app, client, user, user_headers,
                                                          tmp_path):
    job = uuid.uuid4()
    relative = f"user-files/txt/alice/{job}/talk.txt"
    (tmp_path / relative).parent.mkdir(parents=True)
    (tmp_path / relative).write_bytes(b"legacy transcript")
    _add_job(app, user.id, id=job, txt_document_path=relative,
             word_document_path="/etc/passwd")  # outside the legacy folder: never served
    response = client.get(f"/download/txt/{job}", headers=user_headers)
    assert response.status_code == 200
    assert response.data == b"legacy transcript"
    assert client.get(f"/download/word/{job}", headers=user_headers).status_code == 404


# Issue 8: retry while paused, and concurrent retries ------------------------------------------

def _failed_job(app, user_id):
    import uuid as uuid_module

    from database import db
    from models import Transcription
    with app.app_context():
        job = Transcription(id=uuid_module.uuid4(), user_id=user_id, status="error",
                            source_type="upload", error_message="boom")
        db.session.add(job)
        db.session.commit()
        return str(job.id)


def test_retry_is_refused_while_transcription_is_paused(app, client, user, user_headers):
    from database import db
    from models import SystemSetting, Transcription
    job_id = _failed_job(app, user.id)
    with app.app_context():
        db.session.add(SystemSetting(setting_key="transcribing_allowed", setting_value="false"))
        db.session.commit()
    response = client.post(f"/transcriptions/{job_id}/retry", headers=user_headers)
    assert response.status_code == 503
    assert "paused" in response.get_json()["error"]
    with app.app_context():
        assert db.session.get(Transcription, __import__("uuid").UUID(job_id)).status == "error"


def test_concurrent_retries_of_one_job_are_accepted_once(app, user, user_headers):
    import threading
    job_id = _failed_job(app, user.id)
    statuses = []
    start = threading.Barrier(10)

    def retry():
        client = app.test_client()
        start.wait(timeout=10)
        statuses.append(client.post(f"/transcriptions/{job_id}/retry",
                                    headers=user_headers).status_code)
    threads = [threading.Thread(target=retry) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert sorted(statuses) == [200] + [409] * 9

"""POST /process reads a link's metadata before answering (source_metadata.py).

YouTube: the real yt-dlp runs (options, extract_info, format selection, the limits, the egress
guard) with only its YouTube extractor's network step replaced: `_real_extract` returns what
YouTube would describe, or raises the error YouTube's page gives. Drive: a fake Drive on
127.0.0.1 answering with the headers Drive sends (the probe never reads a file's body).
"""
from __future__ import annotations

import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from conftest import bearer, login
from test_fetch_service import AUDIO, drive_cert, google_drive  # noqa: F401 (fixtures)
from database import db
from fetch_service import DRIVE_NOT_FOUND, DRIVE_NOT_SHARED, LIVE_MESSAGE
from models import Transcription

VIDEO_ID = "dQw4w9WgXcQ"
WATCH = f"https://www.youtube.com/watch?v={VIDEO_ID}"
TITLE = "Khotbah Minggu: Kasih / Pengampunan"


@pytest.fixture
def youtube(monkeypatch):
    """What the YouTube extractor finds for VIDEO_ID: `answer["info"]` (fields merged into
    a playable description) or `answer["error"]` (raised as YouTube's page would make it)."""
    import yt_dlp.utils
    from yt_dlp.extractor.youtube import YoutubeIE

    answer: dict = {"info": {}, "error": None, "wait": None, "calls": 0, "returned": 0}

    def real_extract(self, url):
        answer["calls"] += 1
        if answer["wait"] is not None:
            answer["wait"].wait(10)  # a YouTube that does not answer
        answer["returned"] += 1
        if answer["error"]:
            raise yt_dlp.utils.ExtractorError(answer["error"], expected=True,
                                              video_id=VIDEO_ID, ie="youtube")
        return {"id": VIDEO_ID, "title": TITLE, "duration": 1800.0, "live_status": "not_live",
                "webpage_url": WATCH,
                # Never requested: only metadata is read.
                "formats": [{"format_id": "251", "url": "http://127.0.0.1:9/audio.webm",
                             "ext": "webm", "acodec": "opus", "vcodec": "none",
                             "protocol": "http"}],
                **answer["info"]}

    monkeypatch.setattr(YoutubeIE, "_real_extract", real_extract)
    yield answer
    if answer["wait"] is not None:
        answer["wait"].set()


@pytest.fixture
def setup(make_app, make_user):
    def build(**overrides):
        app = make_app(**({"ALLOW_PRIVATE_ADDRESSES": True, "LINK_METADATA_TIMEOUT_SECONDS": 5,
                           "MAX_AUDIO_SECONDS": 3600} | overrides))
        client = app.test_client()
        if not hasattr(build, "user"):
            build.user = make_user("alice")
        return app, client, bearer(login(client, "alice"))
    return build


def post(client, headers, link, **fields):
    return client.post("/process", headers=headers, content_type="multipart/form-data",
                       data={"drive_link": link, **fields})


def job_rows(app) -> list[Transcription]:
    with app.app_context():
        return list(db.session.query(Transcription))


def test_the_title_shows_from_the_first_list_view(setup, youtube):
    app, client, headers = setup()
    response = post(client, headers, WATCH)
    assert response.status_code == 200, response.get_json()
    job_id = response.get_json()["transcription_id"]
    listed = client.get("/transcriptions", headers=headers).get_json()
    assert [(j["id"], j["audio_file_name"]) for j in listed] == [(job_id, TITLE)]
    with app.app_context():  # the last segment clients show: the title, with the media's type
        row = db.session.get(Transcription, uuid.UUID(job_id))
        assert row.audio_file_path == "Khotbah Minggu: Kasih - Pengampunan.webm"
        assert row.status == "submitted"


# What each link that cannot work gets: a 400 at once, and no job.
REFUSED = [
    ({"error": "Private video. Sign in if you've been granted access to this video"}, {},
     "This YouTube video is private"),
    ({"error": "Video unavailable. This video has been removed by the uploader"}, {},
     "This YouTube video is unavailable (removed or restricted)"),
    ({"info": {"live_status": "is_live", "is_live": True}}, {}, LIVE_MESSAGE),
    ({"error": "This live event will begin in 3 hours."}, {}, LIVE_MESSAGE),
    ({"error": "Join this channel to get access to members-only content like this video"}, {},
     "This YouTube video is for channel members only"),
    ({"info": {"duration": 7200.0}}, {},
     "The video is 2:00:00 long; the limit is 1:00:00"),
    ({"info": {"duration": 7200.0}}, {"start_time": "10:00"},
     "The selected part is 1:50:00 long; the limit is 1:00:00"),
    ({}, {"start_time": "45:00"},
     "The start time 0:45:00 is past the end of the video (0:30:00)"),
    ({}, {"start_time": "30:00", "end_time": "40:00"},
     "The start time 0:30:00 is past the end of the video (0:30:00)"),
]


def test_links_that_cannot_work_are_refused_at_once(setup, youtube):
    app, client, headers = setup()
    for answer, fields, message in REFUSED:
        youtube.update({"info": {}, "error": None} | answer)
        response = post(client, headers, WATCH, **fields)
        assert (response.status_code, response.get_json()) == (400, {"error": message}), answer
    assert job_rows(app) == []
    assert client.get("/transcriptions", headers=headers).get_json() == []


def test_a_window_makes_a_long_video_fit(setup, youtube):
    app, client, headers = setup()
    youtube["info"] = {"duration": 7200.0}
    response = post(client, headers, WATCH, start_time="1:00:00", end_time="1:30:00")
    assert response.status_code == 200, response.get_json()
    assert client.get("/transcriptions", headers=headers).get_json()[0]["audio_file_name"] \
        == TITLE


# Failures that may pass: accepted, with the link as the name until the job knows better.
PASSING = [
    "Unable to download API page: <urlopen error [Errno -3] Temporary failure in name "
    "resolution>",
    "Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser",
    "HTTP Error 429: Too Many Requests",
]


def test_passing_failures_are_accepted_for_the_job_to_explain(setup, youtube):
    app, client, headers = setup()
    for error in PASSING:
        youtube["error"] = error
        response = post(client, headers, WATCH)
        assert response.status_code == 200, (error, response.get_json())
    listed = client.get("/transcriptions", headers=headers).get_json()
    assert [j["audio_file_name"] for j in listed] == [WATCH] * len(PASSING)  # no title known


def test_metadata_that_does_not_come_in_time_is_not_waited_for(setup, youtube):
    app, client, headers = setup(LINK_METADATA_TIMEOUT_SECONDS=0.5)
    youtube["wait"] = threading.Event()
    response = post(client, headers, WATCH)
    assert response.status_code == 200, response.get_json()
    assert (youtube["calls"], youtube["returned"]) == (1, 0)  # answered while it still hangs
    assert client.get("/transcriptions", headers=headers).get_json()[0]["audio_file_name"] \
        == WATCH


def test_zero_turns_the_probe_off(setup, youtube):
    app, client, headers = setup(LINK_METADATA_TIMEOUT_SECONDS=0)
    youtube["error"] = "Private video. Sign in if you've been granted access to this video"
    assert post(client, headers, WATCH).status_code == 200
    assert youtube["calls"] == 0


# Google Drive --------------------------------------------------------------------------------

DRIVE_OK, DRIVE_BIG, DRIVE_PRIVATE, DRIVE_QUOTA_ID = ("1OkOkOkOkOkOk", "1BigBigBigBig",
                                                      "1PrivatePriv", "1QuotaQuotaQ")
QUOTA_PAGE = ("<html><head><title>Google Drive - Quota exceeded</title></head><body>"
              '<p class="uc-error-subcaption">Too many users have viewed or downloaded this '
              "file recently.</p></body></html>")
SIGN_IN_PAGE = ("<html><head><title>Google Drive: Sign-in</title></head><body>"
                '<form action="/signin/v2/challenge"><input name="Email"></form></body></html>')


class FakeDrive(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), DriveHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        self.requests: list[str] = []
        self.body_bytes_sent = 0


class DriveHandler(BaseHTTPRequestHandler):
    server: FakeDrive

    def log_message(self, *args):
        pass

    def answer(self, status: int, content_type: str, body: bytes, length: int | None = None,
               extra: dict | None = None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        try:
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            pass

    def do_GET(self):
        self.server.requests.append(self.path)
        parts = urlsplit(self.path)
        file_id = (parse_qs(parts.query).get("id") or [""])[0]
        named = {"Content-Disposition": 'attachment; filename="Kebaktian Pagi.mp3"'}
        if parts.path == "/uc" and file_id == DRIVE_OK:
            self.answer(200, "audio/mpeg", b"", length=3_000_000, extra=named)
        elif parts.path == "/uc" and file_id == DRIVE_BIG:
            self.answer(200, "audio/mpeg", b"", length=5_000_000, extra=named)
        elif parts.path == "/uc" and file_id == DRIVE_PRIVATE:
            self.send_response(303)
            self.send_header("Location", f"{self.server.url}/ServiceLogin?continue=x")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif parts.path == "/ServiceLogin":
            self.answer(200, "text/html; charset=utf-8", SIGN_IN_PAGE.encode())
        elif parts.path == "/uc" and file_id == DRIVE_QUOTA_ID:
            self.answer(200, "text/html; charset=utf-8", QUOTA_PAGE.encode())
        else:
            self.answer(404, "text/html", b"<html>not found</html>")


@pytest.fixture
def drive():
    server = FakeDrive()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def drive_link(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=sharing"


def test_a_drive_file_is_named_before_queueing(setup, drive):
    app, client, headers = setup(DRIVE_BASE_URL=drive.url, MAX_DOWNLOAD_MB=4)
    response = post(client, headers, drive_link(DRIVE_OK))
    assert response.status_code == 200, response.get_json()
    listed = client.get("/transcriptions", headers=headers).get_json()
    assert [j["audio_file_name"] for j in listed] == ["Kebaktian Pagi"]
    with app.app_context():  # as the pipeline names a Drive source: no extension
        assert job_rows(app)[0].audio_file_path == "Kebaktian Pagi"
    assert drive.requests == [f"/uc?id={DRIVE_OK}"]


def test_drive_files_that_cannot_work_are_refused_at_once(setup, drive):
    app, client, headers = setup(DRIVE_BASE_URL=drive.url, MAX_DOWNLOAD_MB=4)
    for file_id, message in [
            (DRIVE_PRIVATE, DRIVE_NOT_SHARED),
            ("1GoneGoneGone", DRIVE_NOT_FOUND),
            (DRIVE_BIG, "The file is 5.0 MB; the limit is 4.2 MB")]:
        response = post(client, headers, drive_link(file_id))
        assert (response.status_code, response.get_json()) == (400, {"error": message}), file_id
    assert job_rows(app) == []


def test_a_drive_quota_is_accepted_for_the_job_to_explain(setup, drive):
    app, client, headers = setup(DRIVE_BASE_URL=drive.url)
    assert post(client, headers, drive_link(DRIVE_QUOTA_ID)).status_code == 200
    assert [j["audio_file_name"] for j in client.get("/transcriptions", headers=headers)
            .get_json()] == [drive_link(DRIVE_QUOTA_ID)]


def test_the_probe_keeps_to_the_private_address_rule(setup, drive):
    # Without ALLOW_PRIVATE_ADDRESSES a Drive on 127.0.0.1 is never contacted; the job is
    # accepted and fails with the private-address message (tests/test_pipeline.py).
    app, client, headers = setup(DRIVE_BASE_URL=drive.url, ALLOW_PRIVATE_ADDRESSES=False)
    assert post(client, headers, drive_link(DRIVE_PRIVATE)).status_code == 200
    assert drive.requests == []


def test_drives_own_pages_through_the_guard(google_drive):
    """drive.google.com's answers (served over TLS on 127.0.0.1 for Google's host names):
    the redirect to drive.usercontent.google.com, the sign-in page, the quota page."""
    from links import Source
    from source_metadata import LinkRefused, probe_link

    server, base = google_drive
    config = {"LINK_METADATA_TIMEOUT_SECONDS": 5, "ALLOW_PRIVATE_ADDRESSES": True,
              "DRIVE_BASE_URL": base, "MAX_DOWNLOAD_MB": 2, "MAX_AUDIO_SECONDS": 3600}

    def probe(file_id):
        return probe_link(Source("drive", file_id, f"{base}/uc?id={file_id}"), start=None,
                          end=None, config=config)

    found = probe("OK")
    assert (found.title, found.size, found.duration) == ("Sermon 12", len(AUDIO), None)
    assert probe("QUOTA") is None  # may pass: accepted
    for file_id, message in [("PRIVATE", DRIVE_NOT_SHARED),
                             ("BIG", "The file is 3.8 MB; the limit is 2.1 MB")]:
        with pytest.raises(LinkRefused) as caught:
            probe(file_id)
        assert str(caught.value) == message
    assert "drive.usercontent.google.com/download?id=OK&export=download" in server.requests

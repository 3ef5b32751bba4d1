"""Messages in the reader's language: English (the contract, unchanged) or Indonesian, by
Accept-Language, else by the admins' `default_language`; and a catalog that has them all."""
from __future__ import annotations

import re
import sys
import uuid

import pytest

from conftest import ROOT, bearer, login
from database import db
from models import Transcription

sys.path.insert(0, str(ROOT / "scripts"))
import i18n_messages  # noqa: E402

PLAYLIST = "https://www.youtube.com/playlist?list=PL1234567890"
YOUTUBE = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
ID = {"Accept-Language": "id-ID,id;q=0.9,en;q=0.5"}
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def submit(client, headers, **fields):
    return client.post("/process", headers=headers, data=fields,
                       content_type="multipart/form-data")


# -- the catalog --------------------------------------------------------------------------------

def test_every_message_of_the_code_has_an_indonesian_translation():
    missing = i18n_messages.missing_translations()
    assert not missing, ("Messages without an Indonesian translation (run `python "
                         "scripts/i18n_messages.py update`, translate them in "
                         "translations/id/LC_MESSAGES/messages.po, then `compile`):\n  "
                         + "\n  ".join(missing))


def test_the_scan_follows_messages_through_helpers_tables_and_f_strings():
    # So that the completeness test cannot pass by finding nothing.
    messages = i18n_messages.code_messages()
    assert len(messages) > 150
    for expected in (
            "Bad username or password",  # login's `msg`
            "This YouTube video is private",  # a table row a helper returns
            "Proofreading is switched off by an admin; this is the raw transcript",  # a note
            "Cancelled by the user",  # an error_message written by attribute
            "The link is longer than {MAX_LINK_LENGTH} characters",  # an f-string
            "The file is {human_size}; the limit is {human_size_2}",  # one name twice
            "Not found",  # the HTTP table
            "The Google Drive file is empty",  # a helper's parameter, given by its callers
            "Setting {setting_key} deleted",  # a success answer's `message`
    ):
        assert expected in messages, expected


def test_translations_keep_the_placeholders_of_their_message():
    wrong = [(m.id, m.string) for m in i18n_messages.read_catalog() if m.id and m.string
             and set(PLACEHOLDER.findall(m.id)) != set(PLACEHOLDER.findall(m.string))]
    assert not wrong


def test_the_committed_mo_is_the_compiled_po():
    compiled = i18n_messages.compiled(i18n_messages.read_catalog())
    assert i18n_messages.MO_FILE.read_bytes() == compiled, \
        "run `python scripts/i18n_messages.py compile` and commit messages.mo"


def test_patterns_capture_values_and_translate_words_inside_them(app):
    with app.test_request_context(headers=ID):
        from i18n import translate_message
        assert translate_message("The link is longer than 2048 characters") == \
            "Tautan lebih dari 2048 karakter"
        assert translate_message("The video is 2:00:00 long; the limit is 1:30:00") == \
            "Panjang video 2:00:00; batasnya 1:30:00"
        assert translate_message("Some text no catalog knows") == "Some text no catalog knows"
        assert translate_message(None) is None


# -- through HTTP ---------------------------------------------------------------------------------

def test_errors_follow_accept_language_and_english_stays_byte_identical(client, user_headers):
    english = submit(client, user_headers, drive_link=PLAYLIST)
    assert english.status_code == 400
    # The contract's bytes, as before translation existed.
    assert english.data == (b'{"error":"The link names a playlist; open one video of it and '
                            b'send that link"}\n')
    assert submit(client, user_headers | {"Accept-Language": "en-US,en"},
                  drive_link=PLAYLIST).data == english.data
    assert submit(client, user_headers | {"Accept-Language": "fr"},
                  drive_link=PLAYLIST).data == english.data  # no match: default_language (en)

    indonesian = submit(client, user_headers | ID, drive_link=PLAYLIST)
    assert indonesian.status_code == 400
    assert indonesian.get_json() == {"error": "Tautan ini adalah playlist; buka salah satu "
                                              "videonya dan kirim tautan video tersebut"}
    # A message built with values: the values land in the Indonesian sentence.
    window = submit(client, user_headers | ID, drive_link=YOUTUBE, start_time="10:00",
                    end_time="05:00")
    assert window.get_json()["error"] == \
        "'start_time' (00:10:00) harus lebih awal dari 'end_time' (00:05:00)"
    # Errors raised outside the views: the token check, and Werkzeug's 404.
    assert client.get("/transcriptions", headers=ID).get_json() == {
        "error": "Silakan masuk terlebih dahulu: kirim 'Authorization: Bearer <access_token>'"}
    assert client.get("/no-such-route", headers=ID).get_json() == {
        "error": "Tidak ditemukan: tidak ada rute GET /no-such-route"}
    assert client.get("/no-such-route").get_json() == {
        "error": "Not found: no route GET /no-such-route"}


@pytest.mark.parametrize("method, path, kwargs, status, body", [
    ("get", "/transcriptions", {}, 401,
     b'{"error":"Sign in first: send \'Authorization: Bearer <access_token>\'"}\n'),
    ("get", "/transcriptions", {"headers": {"Authorization": "Bearer nope"}}, 401,
     b'{"error":"The access token is invalid; please sign in again"}\n'),
    ("put", "/login", {}, 405, b'{"error":"Method PUT is not allowed here; use POST"}\n'),
    ("post", "/login", {"data": "not json", "content_type": "application/json"}, 400,
     b'{"error":"The request body is not valid JSON"}\n'),
    ("post", "/login", {"json": [1]}, 400, b'{"error":"The request body must be a JSON object"}\n'),
], ids=["no-token", "bad-token", "405", "bad-json", "not-object"])
def test_english_answers_are_the_contracts_bytes_and_indonesian_differs(
        client, method, path, kwargs, status, body):
    headers = kwargs.pop("headers", {})
    for language in (None, "en", "en-US,en;q=0.9,id;q=0.8"):
        extra = {"Accept-Language": language} if language else {}
        response = getattr(client, method)(path, headers=headers | extra, **kwargs)
        assert (response.status_code, response.data) == (status, body)
    indonesian = getattr(client, method)(path, headers=headers | ID, **kwargs)
    assert indonesian.status_code == status
    assert indonesian.data != body and set(indonesian.get_json()) == {"error"}


def test_login_401_msg_in_the_readers_language(client, user):
    wrong = {"username": user.username, "password": "wrong password here"}
    english = client.post("/login", json=wrong)
    assert english.status_code == 401
    assert english.data == b'{"msg":"Bad username or password"}\n'
    indonesian = client.post("/login", json=wrong, headers={"Accept-Language": "id"})
    assert indonesian.status_code == 401
    assert indonesian.get_json() == {"msg": "Nama pengguna atau kata sandi salah"}


def test_default_language_setting_applies_without_a_header(client, admin_headers, user_headers):
    refused = client.post("/admin/settings", headers=admin_headers,
                          json={"setting_key": "default_language", "setting_value": "fr"})
    assert refused.status_code == 400
    assert refused.get_json() == {
        "error": "'default_language' must be \"en\" (English) or \"id\" (Indonesian)"}

    created = client.post("/admin/settings", headers=admin_headers,
                          json={"setting_key": "default_language", "setting_value": "id"})
    assert created.status_code == 201
    assert created.get_json()["message"] == "Setting created"  # answered before it applied
    assert submit(client, user_headers, drive_link=PLAYLIST).get_json()["error"].startswith(
        "Tautan ini adalah playlist")
    # A word the code puts into a sentence is translated too ("User" -> "Pengguna").
    assert client.delete("/admin/users/999999", headers=admin_headers).get_json() == {
        "error": "Pengguna tidak ditemukan"}
    # The reader's header still wins.
    assert submit(client, user_headers | {"Accept-Language": "en"},
                  drive_link=PLAYLIST).get_json()["error"].startswith("The link names a playlist")

    setting_id = created.get_json()["id"]
    # A success answer's `message` too.
    updated = client.put(f"/admin/settings/{setting_id}", headers=admin_headers,
                         json={"setting_value": "en", "description": "Bahasa pesan"})
    assert updated.status_code == 200
    assert updated.get_json()["message"] == "Pengaturan diperbarui"
    assert updated.get_json()["setting_value"] == "en"
    assert submit(client, user_headers, drive_link=PLAYLIST).get_json()["error"].startswith(
        "The link names a playlist")


def test_a_jobs_stored_messages_are_shown_in_the_readers_language(app, client, user,
                                                                   admin_headers):
    with app.app_context():
        failed = Transcription(id=uuid.uuid4(), user_id=user.id, status="error",
                               error_message="The audio is 95 minutes long; the limit is "
                                             "90 minutes")
        raw = Transcription(id=uuid.uuid4(), user_id=user.id, status="completed",
                            proofread_note="No proofreader is configured; this is the raw "
                                           "transcript")
        db.session.add_all([failed, raw])
        db.session.commit()
        failed_id, raw_id = str(failed.id), str(raw.id)
    headers = bearer(login(client, user.username))

    english = client.get(f"/transcriptions/{failed_id}", headers=headers).get_json()
    assert english["error_message"] == "The audio is 95 minutes long; the limit is 90 minutes"
    one = client.get(f"/transcriptions/{failed_id}", headers=headers | ID).get_json()
    assert one["error_message"] == "Panjang audio 95 menit; batasnya 90 menit"
    listed = {job["id"]: job for job in
              client.get("/transcriptions", headers=headers | ID).get_json()}
    assert listed[failed_id]["error_message"] == "Panjang audio 95 menit; batasnya 90 menit"
    assert listed[raw_id]["proofread_note"] == \
        "Belum ada layanan koreksi yang diatur; ini transkrip mentahnya"
    admin_list = client.get("/admin/transcriptions", headers=admin_headers | ID).get_json()
    assert {job["id"]: job["error_message"] for job in admin_list}[failed_id] == \
        "Panjang audio 95 menit; batasnya 90 menit"
    # The row itself keeps the English text (the msgid).
    with app.app_context():
        assert db.session.get(Transcription, uuid.UUID(failed_id)).error_message.startswith(
            "The audio is 95 minutes")


@pytest.mark.parametrize("header, expected", [
    ("id", "id"), ("id-ID", "id"), ("en-GB,id;q=0.8", "en"), ("de, id;q=0.2", "id"),
    ("de", "en"), ("", "en"),
])
def test_accept_language_picks_the_best_of_en_and_id(app, header, expected):
    from flask_babel import get_locale
    with app.test_request_context(headers={"Accept-Language": header} if header else {}):
        assert str(get_locale()) == expected

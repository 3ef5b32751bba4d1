"""A table of hostile inputs and the answer each gets. None is a 5xx, none leaks internals,
none stores anything."""
from __future__ import annotations

import pytest

from database import db
from models import Transcription, User

ONE_MB = "x" * (1024 * 1024)

SSRF_LINKS = [
    "http://127.0.0.1/audio.mp3",
    "http://[::1]/audio.mp3",
    "http://169.254.169.254/latest/meta-data/",
    "http://2130706433/",  # 127.0.0.1 written as one decimal number
    "http://0x7f000001/",
    "http://localhost:5000/admin/users",
    "http://10.0.0.5/internal",
    "file:///etc/passwd",
    "gopher://127.0.0.1:6379/_INFO",
    "ftp://drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "https://evil.example/drive.google.com/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "https://evil.example/?u=https://www.youtube.com/watch?v=dQw4w9WgXcQ",
    "https://drive.google.com@evil.example/file/d/1AbCdEfGhIjKlMnOpQrStUvWxYz012345",
    "https://www.youtube.com:pass@127.0.0.1/watch?v=dQw4w9WgXcQ",
    "https://www.youtube.com.evil.example/watch?v=dQw4w9WgXcQ",
    "https://youtube.com\\@evil.example/watch?v=dQw4w9WgXcQ",
    "https://evilyoutube.com/watch?v=dQw4w9WgXcQ",
    "javascript:alert(1)",
    "//www.youtube.com/watch?v=dQw4w9WgXcQ",
]


@pytest.mark.parametrize("link", SSRF_LINKS)
def test_ssrf_links_are_refused_before_anything_is_fetched(app, client, user_headers, link):
    response = client.post("/process", headers=user_headers, data={"drive_link": link},
                           content_type="multipart/form-data")
    assert response.status_code == 400
    assert set(response.get_json()) == {"error"}
    with app.app_context():
        assert db.session.query(Transcription).count() == 0


@pytest.mark.parametrize("method, path, body, status", [
    ("POST", "/login", {"username": ONE_MB, "password": "x"}, 413),  # over the 16 KB cap
    ("POST", "/login", {"username": {"$ne": None}, "password": "x"}, 400),
    ("POST", "/login", {"username": "' OR 1=1 --", "password": "' OR 1=1 --"}, 401),
    ("POST", "/admin/users", {"username": ONE_MB, "password": "long enough pw"}, 413),
    ("POST", "/admin/users", {"username": "../../etc", "password": "long enough pw"}, 400),
    ("POST", "/admin/users", {"username": "a/b", "password": "long enough pw"}, 400),
    ("POST", "/admin/users", {"username": "ok", "password": ONE_MB}, 413),
    ("POST", "/admin/users", {"username": "ok", "password": "long enough pw", "isAdmin": "true"},
     400),
    ("POST", "/admin/transcribe-prompts", {"version": ONE_MB, "prompt": "p"}, 413),
    ("POST", "/admin/settings", {"setting_key": ONE_MB, "setting_value": "x"}, 413),
    ("POST", "/admin/users", {"username": "x" * 100_000, "password": "long enough pw"}, 400),
    ("POST", "/admin/settings", {"setting_key": "k" * 1000, "setting_value": "x"}, 400),
    ("POST", "/admin/settings", {"setting_key": "k", "setting_value": ["x"]}, 400),
    ("POST", "/admin/settings/active-proofread-prompt", {"proofread_prompt_id": "1; DROP TABLE"},
     400),
    ("POST", "/admin/settings/active-proofread-prompt", {"proofread_prompt_id": -1}, 400),
    ("POST", "/admin/settings/active-proofread-prompt", {"proofread_prompt_id": 10**30}, 400),
    ("POST", "/admin/settings/active-proofread-prompt", {"proofread_prompt_id": 1.5}, 400),
    ("PATCH", "/admin/users/1", {"is_admin": None}, 400),
    ("PATCH", "/admin/users/1", {"is_admin": 1}, 400),
    ("GET", "/admin/users?limit=-1", None, 400),
    ("GET", "/admin/users?offset=99999999999999", None, 400),
    ("GET", "/admin/download/txt/..%2f..%2fetc%2fpasswd", None, 404),
    ("GET", "/admin/download/txt/%2e%2e", None, 400),
    ("DELETE", "/admin/users/..%2F1", None, 404),
    ("DELETE", "/admin/users/1e3", None, 400),
    ("DELETE", "/admin/users/0x10", None, 400),
    ("DELETE", "/admin/transcriptions/00000000-0000-0000-0000-00000000000g", None, 400),
    ("PUT", "/admin/settings/%00", {"setting_value": "x"}, 400),
    ("PATCH", "/admin/users/\u0662", {"is_admin": True}, 400),  # an Arabic-Indic digit
    ("GET", "/admin/users?limit=\u0662", None, 400),
    ("POST", "/admin/settings/active-proofread-prompt", {"proofread_prompt_id": "\uff11"}, 400),
    ("POST", "/login", {"username": "a\u0000b", "password": "x"}, 400),
    ("POST", "/admin/transcribe-prompts", {"version": "v", "prompt": "a\ud800b"}, 400),
    ("OPTIONS", "/admin/users", None, 200),
])
def test_hostile_admin_and_login_inputs(app, client, admin, admin_headers, method, path, body,
                                        status):
    response = client.open(path, method=method, headers=admin_headers, json=body)
    assert response.status_code == status, response.get_data(as_text=True)
    payload = response.get_json(silent=True)
    if method == "OPTIONS":  # Flask's automatic answer: the allowed methods, no data
        assert "GET" in response.headers["Allow"] and not response.data
        return
    assert payload is not None and ("error" in payload or "msg" in payload)
    text = response.get_data(as_text=True)
    for leak in ("Traceback", "SELECT", "argon2", "scrypt", "psycopg2", "sqlalchemy"):
        assert leak not in text
    with app.app_context():
        assert db.session.query(User).count() == 1  # only the admin: nothing was created


@pytest.mark.parametrize("body, content_type", [
    (b"\xff\xfe\x00garbage", "application/json"),
    (b'{"username": "a", "password": "b"' * 300, "application/json"),
    (b'[' * 15_000, "application/json"),  # under the 16 KB cap, too deep
    (b"username=a&password=b", "application/x-www-form-urlencoded"),
])
def test_malformed_bodies_are_400_json(client, body, content_type):
    response = client.post("/login", data=body, content_type=content_type)
    assert response.status_code == 400
    assert "error" in response.get_json()


def test_an_oversized_upload_is_413_before_it_is_stored(make_app, make_user, tmp_path):
    import io

    from conftest import bearer, login
    app = make_app(MAX_UPLOAD_MB=1)
    make_user("alice")
    client = app.test_client()
    response = client.post("/process", headers=bearer(login(client, "alice")),
                           content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"\0" * (2 * 1024 * 1024)), "big.mp3")})
    assert response.status_code == 413
    assert "limit is 1 MB" in response.get_json()["error"]
    with app.app_context():
        assert db.session.query(Transcription).count() == 0


@pytest.mark.parametrize("filename", ["../../../etc/cron.d/x.mp3", "..\\..\\win.ini", "/etc/passwd",
                                      "a" * 300 + ".mp3", "\x00.mp3"])
def test_upload_file_names_never_become_paths(app, client, user_headers, filename, tmp_path):
    import io
    response = client.post("/process", headers=user_headers, content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"not audio at all"), filename)})
    assert response.status_code == 400
    assert not (tmp_path / "etc").exists()
    with app.app_context():
        assert db.session.query(Transcription).count() == 0


# Issue 8: inputs that answered 500 --------------------------------------------------------

@pytest.mark.parametrize("link", [
    "https://[youtube.com]/watch?v=dQw4w9WgXcQ",
    "https://youtube.com\uff0fwatch?v=dQw4w9WgXcQ",  # a fullwidth slash
    "https://www.youtube.com\uff03@evil.example/",
])
def test_malformed_link_hosts_are_400(app, client, user_headers, link):
    response = client.post("/process", headers=user_headers, data={"drive_link": link},
                           content_type="multipart/form-data")
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "error" in response.get_json()
    with app.app_context():
        assert db.session.query(Transcription).count() == 0


@pytest.mark.parametrize("key", ["active_transcribe_prompt_id", "active_proofread_prompt_id"])
@pytest.mark.parametrize("value", ["\u00b2", "1" * 5000, "\u0663", "0", "99999999999"])
def test_odd_numbers_in_prompt_settings_are_400(client, admin_headers, key, value):
    response = client.post("/admin/settings", headers=admin_headers,
                           json={"setting_key": key, "setting_value": value})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "existing prompt" in response.get_json()["error"]


def test_a_stored_odd_prompt_setting_is_ignored_not_a_500(app, client, admin_headers):
    from models import SystemSetting
    with app.app_context():
        db.session.add(SystemSetting(setting_key="active_proofread_prompt_id",
                                     setting_value="\u00b2"))
        db.session.commit()
    response = client.get("/admin/settings/active-proofread-prompt", headers=admin_headers)
    assert response.status_code == 404

"""Every /admin route: the authorization matrix, happy paths and bad input."""
from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone

import pytest

from conftest import bearer, login
from database import db
from models import Document, ErrorLog, ProofreadPrompt, SystemSetting, Transcription, User

SOME_UUID = "00000000-0000-4000-8000-000000000000"
ADMIN_ROUTES = [
    ("GET", "/admin/users"), ("POST", "/admin/users"), ("PATCH", "/admin/users/1"),
    ("DELETE", "/admin/users/1"), ("GET", "/admin/transcriptions"),
    ("DELETE", f"/admin/transcriptions/{SOME_UUID}"), ("GET", f"/admin/download/txt/{SOME_UUID}"),
    ("GET", f"/admin/download/txt/{SOME_UUID}/talk.txt"),
    ("GET", "/admin/logs"), ("GET", "/admin/stats"),
    ("GET", "/admin/transcribe-prompts"), ("POST", "/admin/transcribe-prompts"),
    ("GET", "/admin/proofread-prompts"), ("POST", "/admin/proofread-prompts"),
    ("GET", "/admin/settings/active-transcribe-prompt"),
    ("POST", "/admin/settings/active-transcribe-prompt"),
    ("GET", "/admin/settings/active-proofread-prompt"),
    ("POST", "/admin/settings/active-proofread-prompt"),
    ("GET", "/admin/settings"), ("POST", "/admin/settings"), ("PUT", "/admin/settings/1"),
    ("DELETE", "/admin/settings/1"), ("GET", "/admin/system"),
    ("GET", "/admin/reference-docx"), ("PUT", "/admin/reference-docx"),
    ("DELETE", "/admin/reference-docx"),
    ("GET", "/admin/webhook-deliveries"), ("GET", "/admin/users/1/webhook"),
]


def test_every_admin_route_is_registered_in_the_matrix(app):
    registered = {(method, rule.rule) for rule in app.url_map.iter_rules()
                  if rule.rule.startswith("/admin") for method in rule.methods
                  if method not in ("HEAD", "OPTIONS")}
    assert len(registered) == len(ADMIN_ROUTES)


@pytest.mark.parametrize("method, path", ADMIN_ROUTES)
def test_admin_routes_refuse_normal_users_and_bad_tokens(client, user_headers, method, path):
    as_user = client.open(path, method=method, headers=user_headers, json={})
    assert as_user.status_code == 403
    assert as_user.get_json() == {"error": "Admin access required"}
    for headers in ({}, {"Authorization": "Bearer broken.token.here"}):
        response = client.open(path, method=method, headers=headers, json={})
        assert response.status_code == 401
        assert "error" in response.get_json()


# Users -------------------------------------------------------------------------------------

def test_list_users_with_transcription_counts(app, client, admin, user, admin_headers):
    with app.app_context():
        for _ in range(3):
            db.session.add(Transcription(id=uuid.uuid4(), user_id=user.id, status="completed"))
        db.session.commit()
    response = client.get("/admin/users", headers=admin_headers)
    assert response.status_code == 200
    users = {u["username"]: u for u in response.get_json()}
    assert users["alice"]["transcription_count"] == 3
    assert users[admin.username]["transcription_count"] == 0
    assert users[admin.username]["is_admin"] is True
    assert set(users["alice"]) == {"id", "username", "is_admin", "created_at",
                                   "transcription_count"}


def test_create_user_then_log_in(client, admin_headers):
    response = client.post("/admin/users", headers=admin_headers,
                           json={"username": "dave", "password": "long enough pw", "isAdmin": True})
    assert response.status_code == 201
    assert "message" in response.get_json()
    body = client.post("/login", json={"username": "dave", "password": "long enough pw"}).get_json()
    assert body["is_admin"] is True


@pytest.mark.parametrize("body, message", [
    ({"password": "long enough pw"}, "'username' is required"),
    ({"username": "erin"}, "'password' is required"),
    ({"username": "erin", "password": "short"}, "at least 8 characters"),
    ({"username": "", "password": "long enough pw"}, "must not be empty"),
    ({"username": "x" * 65, "password": "long enough pw"}, "at most 64 characters"),
    ({"username": "../../etc", "password": "long enough pw"}, "may contain only"),
    ({"username": "erin", "password": "long enough pw", "isAdmin": "yes"}, "true or false"),
    ({"username": "erin", "password": "long enough pw", "isAdmin": 1}, "true or false"),
    ({"username": "erin", "password": "long enough pw", "isAdmin": None}, "true or false"),
    ({"username": ["erin"], "password": "long enough pw"}, "must be a string"),
    ({"username": "alice", "password": "long enough pw"}, "already taken"),
])
def test_create_user_bad_input(app, client, user, admin_headers, body, message):
    response = client.post("/admin/users", headers=admin_headers, json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    with app.app_context():
        assert db.session.query(User).filter(User.username != "alice",
                                             User.is_admin.is_(False)).count() == 0


def test_patch_user_toggles_admin_and_guards_the_last_admin(app, client, admin, user,
                                                            admin_headers):
    promote = client.patch(f"/admin/users/{user.id}", headers=admin_headers, json={"is_admin": True})
    assert promote.status_code == 200 and promote.get_json()["is_admin"] is True
    demote_self = client.patch(f"/admin/users/{admin.id}", headers=admin_headers,
                               json={"is_admin": False})
    assert demote_self.status_code == 400
    assert "your own admin rights" in demote_self.get_json()["error"]
    demote = client.patch(f"/admin/users/{user.id}", headers=admin_headers,
                          json={"is_admin": False})
    assert demote.status_code == 200
    for body, message in (({}, "Send 'password'"), ({"is_admin": "no"}, "true or false"),
                          ({"password": "short"}, "at least 8")):
        response = client.patch(f"/admin/users/{user.id}", headers=admin_headers, json=body)
        assert response.status_code == 400 and message in response.get_json()["error"]
    assert client.patch("/admin/users/999", headers=admin_headers,
                        json={"is_admin": True}).status_code == 404
    assert client.patch("/admin/users/abc", headers=admin_headers,
                        json={"is_admin": True}).status_code == 400


def test_last_admin_cannot_be_demoted_by_another_admin(app, client, make_user, admin,
                                                       admin_headers):
    other = make_user("second-admin", is_admin=True)
    other_headers = bearer(login(client, "second-admin"))
    assert client.patch(f"/admin/users/{admin.id}", headers=other_headers,
                        json={"is_admin": False}).status_code == 200
    response = client.patch(f"/admin/users/{other.id}", headers=other_headers,
                            json={"is_admin": False})
    assert response.status_code == 400  # own rights, and the last admin


def test_delete_user_removes_their_rows_and_files(app, client, user, admin, admin_headers,
                                                  tmp_path):
    from storage import job_dir
    job_id = uuid.uuid4()
    with app.app_context():
        db.session.add(Transcription(id=job_id, user_id=user.id, status="completed"))
        db.session.flush()
        db.session.add(Document(transcription_id=job_id, kind="txt", content=b"x"))
        db.session.add(ErrorLog(user_id=user.id, transcription_id=job_id, error_message="boom"))
        db.session.commit()
        scratch = job_dir(job_id, create=True)
        (scratch / "audio.ogg").write_bytes(b"audio")
    response = client.delete(f"/admin/users/{user.id}", headers=admin_headers)
    assert response.status_code == 200
    with app.app_context():
        assert db.session.get(User, user.id) is None
        assert db.session.query(Transcription).count() == 0
        assert db.session.query(Document).count() == 0
        assert db.session.query(ErrorLog).count() == 0
    assert not scratch.exists()


def test_delete_user_refusals(client, admin, admin_headers, make_user):
    make_user("another-admin", is_admin=True)
    assert client.delete(f"/admin/users/{admin.id}", headers=admin_headers).get_json() == {
        "error": "User is admin"}
    assert client.delete("/admin/users/424242", headers=admin_headers).status_code == 404
    assert client.delete("/admin/users/1.5", headers=admin_headers).status_code == 400
    assert client.delete("/admin/users/99999999999", headers=admin_headers).status_code == 400


# Transcriptions, logs, stats ---------------------------------------------------------------

def test_admin_transcriptions_list_delete_and_download(app, client, user, admin_headers):
    now = datetime.now(timezone.utc)
    first, second = uuid.uuid4(), uuid.uuid4()
    with app.app_context():
        db.session.add(Transcription(id=first, user_id=user.id, status="completed",
                                     created_at=now - timedelta(hours=1),
                                     transcribe_prompt="names", inference_duration=12))
        db.session.add(Transcription(id=second, user_id=user.id, status="error", created_at=now))
        db.session.flush()
        db.session.add(Document(transcription_id=first, kind="md", content=b"# md"))
        db.session.add(ErrorLog(user_id=user.id, transcription_id=second, error_message="boom"))
        db.session.commit()
    items = client.get("/admin/transcriptions", headers=admin_headers).get_json()
    assert [i["id"] for i in items] == [str(second), str(first)]
    assert set(items[1]) >= {"id", "user_id", "username", "audio_file_path", "google_drive_url",
                             "txt_document_path", "md_document_path", "word_document_path",
                             "status", "transcribe_prompt", "proofread_prompt",
                             "inference_duration", "created_at", "updated_at"}
    assert items[1]["username"] == "alice" and items[1]["inference_duration"] == 12
    assert items[1]["md_document_path"] == f"/download/md/{first}/transcription-{first}.md"
    download = client.get(f"/admin/download/md/{first}", headers=admin_headers)
    assert download.status_code == 200 and download.data == b"# md"
    named = client.get(f"/admin{items[1]['md_document_path']}", headers=admin_headers)
    assert named.status_code == 200 and named.data == b"# md"
    assert client.get(f"/admin/download/word/{first}", headers=admin_headers).status_code == 404

    assert client.delete(f"/admin/transcriptions/{second}", headers=admin_headers).status_code == 200
    with app.app_context():
        assert db.session.query(ErrorLog).count() == 0
        assert db.session.get(Transcription, second) is None
    assert client.delete(f"/admin/transcriptions/{second}", headers=admin_headers).status_code == 404
    assert client.delete("/admin/transcriptions/123", headers=admin_headers).status_code == 400


def test_logs_newest_first_and_stats(app, client, user, admin_headers):
    now = datetime.now(timezone.utc)
    with app.app_context():
        for i in range(3):
            db.session.add(ErrorLog(user_id=user.id, error_message=f"e{i}", stack_trace="tb",
                                    inference=i == 2, created_at=now + timedelta(seconds=i)))
        db.session.add(Transcription(id=uuid.uuid4(), user_id=user.id))
        db.session.commit()
    logs = client.get("/admin/logs", headers=admin_headers).get_json()
    assert [log["error_message"] for log in logs] == ["e2", "e1", "e0"]
    assert logs[0]["inference"] is True
    assert {"id", "user_id", "transcription_id", "error_message", "stack_trace", "inference",
            "created_at"} <= set(logs[0])
    assert client.get("/admin/logs?limit=1", headers=admin_headers).get_json()[0][
        "error_message"] == "e2"
    stats = client.get("/admin/stats", headers=admin_headers).get_json()
    # The contract's three keys exactly, then what reuse saved (nothing yet).
    assert stats == {"total_users": 2, "total_transcriptions": 1, "total_errors": 3,
                     "reused_transcriptions": 0, "reuse_saved_audio_minutes": 0.0,
                     "reuse_saved_llm_tokens": 0, "llm_tokens_used": 0}
    assert list(stats)[:3] == ["total_users", "total_transcriptions", "total_errors"]


# Prompts and active prompts ----------------------------------------------------------------

@pytest.mark.parametrize("kind", ["transcribe", "proofread"])
def test_prompts_and_active_prompt(client, admin_headers, kind):
    assert client.get(f"/admin/settings/active-{kind}-prompt", headers=admin_headers
                      ).status_code == 404
    created = client.post(f"/admin/{kind}-prompts", headers=admin_headers,
                          json={"version": "v2", "prompt": "Fix punctuation."})
    assert created.status_code == 201
    prompt_id = created.get_json()["id"]
    listed = client.get(f"/admin/{kind}-prompts", headers=admin_headers).get_json()
    assert listed[0] == {k: created.get_json()[k] for k in ("id", "version", "prompt",
                                                             "created_at")}
    field = f"{kind}_prompt_id"
    # The frontend sends ids as strings.
    assert client.post(f"/admin/settings/active-{kind}-prompt", headers=admin_headers,
                       json={field: str(prompt_id)}).status_code == 200
    active = client.get(f"/admin/settings/active-{kind}-prompt", headers=admin_headers)
    assert active.status_code == 200 and active.get_json()["prompt"] == "Fix punctuation."
    for body, status, message in (({field: "abc"}, 400, "whole number"),
                                  ({field: True}, 400, "whole number"),
                                  ({field: 999}, 404, "Prompt not found"),
                                  ({}, 400, f"'{field}' is required")):
        response = client.post(f"/admin/settings/active-{kind}-prompt", headers=admin_headers,
                               json=body)
        assert response.status_code == status and message in response.get_json()["error"]
    for body, message in (({"prompt": "x"}, "'version' is required"),
                          ({"version": "v3"}, "'prompt' is required"),
                          ({"version": "v3", "prompt": 5}, "must be a string"),
                          ({"version": "v", "prompt": "x" * 100_001}, "at most 100000")):
        response = client.post(f"/admin/{kind}-prompts", headers=admin_headers, json=body)
        assert response.status_code == 400 and message in response.get_json()["error"]


# Settings ----------------------------------------------------------------------------------

def test_settings_crud(app, client, admin_headers):
    created = client.post("/admin/settings", headers=admin_headers, json={
        "setting_key": "transcribing_allowed", "setting_value": "false",
        "description": "kill switch"})
    assert created.status_code == 201
    setting = created.get_json()
    assert {"id", "setting_key", "setting_value", "description", "created_at",
            "updated_at"} <= set(setting)
    duplicate = client.post("/admin/settings", headers=admin_headers, json={
        "setting_key": "transcribing_allowed", "setting_value": "true"})
    assert duplicate.status_code == 400 and "already exists" in duplicate.get_json()["error"]
    updated = client.put(f"/admin/settings/{setting['id']}", headers=admin_headers,
                         json={"setting_value": "true"})
    assert updated.status_code == 200 and updated.get_json()["setting_value"] == "true"
    assert [s["setting_key"] for s in client.get("/admin/settings", headers=admin_headers
                                                 ).get_json()] == ["transcribing_allowed"]
    assert client.delete(f"/admin/settings/{setting['id']}", headers=admin_headers
                         ).status_code == 200
    with app.app_context():
        assert db.session.query(SystemSetting).count() == 0
    assert client.delete(f"/admin/settings/{setting['id']}", headers=admin_headers
                         ).status_code == 404


@pytest.mark.parametrize("body, message", [
    ({"setting_value": "x"}, "'setting_key' is required"),
    ({"setting_key": "transcribing_allowed", "setting_value": "maybe"}, '"true" or "false"'),
    ({"setting_key": "transcribing_allowed", "setting_value": True}, "must be a string"),
    ({"setting_key": "active_proofread_prompt_id", "setting_value": "77"}, "existing prompt"),
    ({"setting_key": "k" * 101, "setting_value": "x"}, "at most 100"),
    ({"setting_key": "note", "setting_value": "x" * 10_001}, "at most 10000"),
    ({"setting_key": "note"}, "'setting_value' is required"),
])
def test_settings_bad_input(client, admin_headers, body, message):
    response = client.post("/admin/settings", headers=admin_headers, json=body)
    assert response.status_code == 400
    assert message in response.get_json()["error"]


def test_settings_update_bad_input(app, client, admin_headers):
    with app.app_context():
        db.session.add(ProofreadPrompt(version="v1", prompt="p"))
        item = SystemSetting(setting_key="active_proofread_prompt_id", setting_value="1")
        db.session.add(item)
        db.session.commit()
        setting_id = item.id
    for body, message in (({}, "Send 'setting_value'"),
                          ({"setting_value": "2"}, "existing prompt"),
                          ({"setting_key": "other", "setting_value": "1"}, "cannot be changed")):
        response = client.put(f"/admin/settings/{setting_id}", headers=admin_headers, json=body)
        assert response.status_code == 400 and message in response.get_json()["error"]
    assert client.put("/admin/settings/x", headers=admin_headers,
                      json={"setting_value": "1"}).status_code == 400
    assert client.put("/admin/settings/999", headers=admin_headers,
                      json={"setting_value": "1"}).status_code == 404


def test_system_info_shows_the_engine_without_secrets(make_app, make_user):
    app = make_app(TRANSCRIBE_ENGINE="openai", DEEPSEEK_BASE_URL="http://127.0.0.1:9/v1",
                   DEEPSEEK_API_KEY="sk-secret-value")
    make_user("boss", is_admin=True)
    client = app.test_client()
    response = client.get("/admin/system", headers=bearer(login(client, "boss")))
    assert response.status_code == 200
    body = response.get_json()
    assert body["transcribe_engine"] == "openai" and body["proofreader_configured"] is True
    assert "sk-secret-value" not in response.get_data(as_text=True)


def test_reference_docx_can_be_replaced_and_reset(client, admin_headers):
    import io
    from pandoc_service import DEFAULT_REFERENCE_DOCX
    default = client.get("/admin/reference-docx", headers=admin_headers)
    assert default.status_code == 200 and default.data == DEFAULT_REFERENCE_DOCX.read_bytes()
    bad = client.put("/admin/reference-docx", headers=admin_headers, content_type="multipart/form-data",
                     data={"file": (io.BytesIO(b"not a docx"), "x.docx")})
    assert bad.status_code == 400 and "not a Word" in bad.get_json()["error"]
    assert client.put("/admin/reference-docx", headers=admin_headers, json={}).status_code == 400
    custom = DEFAULT_REFERENCE_DOCX.read_bytes() + b""  # a valid docx: the default itself
    ok = client.put("/admin/reference-docx", headers=admin_headers, content_type="multipart/form-data",
                    data={"file": (io.BytesIO(custom), "brand.docx")})
    assert ok.status_code == 200
    assert client.get("/admin/system", headers=admin_headers).get_json()["custom_reference_docx"]
    assert client.delete("/admin/reference-docx", headers=admin_headers).status_code == 200
    assert not client.get("/admin/system", headers=admin_headers).get_json()["custom_reference_docx"]


def test_admin_lists_default_to_the_newest_100_as_before(make_app, make_user):
    # The dashboard renders nothing until these answer; the earlier backend sent 100 of each.
    from conftest import bearer, login
    app = make_app(LIST_MAX_LIMIT=1000)
    owner = make_user("alice")
    make_user("boss", is_admin=True)
    now = datetime.now(timezone.utc)
    with app.app_context():
        for i in range(130):
            job_id = uuid.uuid4()
            db.session.add(Transcription(id=job_id, user_id=owner.id, status="error",
                                         created_at=now - timedelta(minutes=i)))
            db.session.add(ErrorLog(user_id=owner.id, error_message=f"e{i}"))
        db.session.commit()
    client = app.test_client()
    headers = bearer(login(client, "boss"))
    for path in ("/admin/transcriptions", "/admin/logs"):
        assert len(client.get(path, headers=headers).get_json()) == 100, path
        assert len(client.get(f"{path}?limit=130", headers=headers).get_json()) == 130, path
        assert client.get(f"{path}?limit=1001", headers=headers).status_code == 400, path
    assert len(client.get("/admin/users", headers=headers).get_json()) == 2


def _zip(parts: dict[str, bytes]) -> bytes:
    import io
    import zipfile
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _docx_with(extra: dict[str, bytes]) -> bytes:
    import io
    import zipfile
    from pandoc_service import DEFAULT_REFERENCE_DOCX
    with zipfile.ZipFile(io.BytesIO(DEFAULT_REFERENCE_DOCX.read_bytes())) as archive:
        parts = {name: archive.read(name) for name in archive.namelist()}
    return _zip(parts | extra)


@pytest.mark.parametrize("content, message", [
    (lambda: _zip({"word/document.xml": b"garbage, not XML"}), "cannot be made"),
    (lambda: _docx_with({"word/document.xml": b"<w:document"}), "cannot be made"),
    (lambda: _docx_with({"word/media/bomb.bin": b"\0" * (60 * 1024 * 1024)}), "unpacks to more"),
    (lambda: _docx_with({f"word/media/p{i}.bin": b"x" for i in range(600)}), "parts"),
])
def test_a_broken_or_bomb_reference_docx_is_refused(app, client, admin_headers, content,
                                                    message):
    import io
    from models import AppAsset
    data = content()
    assert len(data) < 10 * 1024 * 1024  # small enough to pass the size check
    response = client.put("/admin/reference-docx", headers=admin_headers,
                          content_type="multipart/form-data",
                          data={"file": (io.BytesIO(data), "brand.docx")})
    assert response.status_code == 400, response.get_json()
    assert message in response.get_json()["error"]
    with app.app_context():
        assert db.session.query(AppAsset).count() == 0  # later jobs keep the default

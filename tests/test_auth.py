"""POST /login, tokens, and what every token problem answers."""
from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt as pyjwt
import pytest
from werkzeug.security import generate_password_hash

from conftest import TEST_PASSWORD, TEST_SECRET, bearer, login
from database import db
from models import User


def test_login_returns_token_and_admin_flag(client, user, admin):
    response = client.post("/login", json={"username": "alice", "password": TEST_PASSWORD})
    assert response.status_code == 200
    body = response.get_json()
    assert body["is_admin"] is False
    assert body["access_token"] and body["refresh_token"]
    assert client.post("/login", json={"username": admin.username, "password": TEST_PASSWORD}
                       ).get_json()["is_admin"] is True


@pytest.mark.parametrize("username, password", [
    ("alice", "wrong password"),
    ("nobody", TEST_PASSWORD),
    ("ALICE", TEST_PASSWORD),
])
def test_bad_credentials_keep_the_contract_shape(client, user, username, password):
    response = client.post("/login", json={"username": username, "password": password})
    assert response.status_code == 401
    assert response.get_json() == {"msg": "Bad username or password"}


@pytest.mark.parametrize("body, message", [
    (None, "The request body must be a JSON object"),
    ("not json{", "The request body is not valid JSON"),
    ([1, 2], "The request body must be a JSON object"),
    ({"password": "x"}, "'username' is required"),
    ({"username": "alice"}, "'password' is required"),
    ({"username": 5, "password": "x"}, "'username' must be a string"),
    ({"username": "alice", "password": None}, "'password' must be a string"),
    ({"username": "a" * 151, "password": "x"}, "'username' must be at most 150 characters"),
    ({"username": "alice", "password": "p" * 2000}, "'password' must be at most 1024 characters"),
])
def test_malformed_login_bodies_get_400(client, user, body, message):
    if body is None:
        response = client.post("/login")
    elif isinstance(body, str):
        response = client.post("/login", data=body, content_type="application/json")
    else:
        response = client.post("/login", json=body)
    assert response.status_code == 400
    assert response.get_json() == {"error": message}


def test_legacy_werkzeug_hashes_log_in_and_are_upgraded(app, client):
    with app.app_context():
        for name, method in (("old-scrypt", "scrypt:32768:8:1"), ("old-pbkdf2", "pbkdf2:sha256")):
            db.session.add(User(username=name, password_hash=generate_password_hash(
                "legacy-pass", method=method)))
        db.session.commit()
    for name in ("old-scrypt", "old-pbkdf2"):
        login(client, name, "legacy-pass")
        with app.app_context():
            stored = db.session.query(User).filter_by(username=name).one().password_hash
        assert stored.startswith("$argon2id$")
        login(client, name, "legacy-pass")  # the upgraded hash verifies too
        assert client.post("/login", json={"username": name, "password": "nope"}
                           ).status_code == 401


def _forge(payload: dict, secret: str = TEST_SECRET, alg: str = "HS256") -> str:
    return pyjwt.encode(payload, secret, algorithm=alg)


def _claims(user_id: int, **extra) -> dict:
    import time
    now = int(time.time())
    claims = {"sub": str(user_id), "iat": now, "nbf": now, "exp": now + 600, "type": "access",
              "fresh": False, "jti": "x", "tv": 0}
    claims.update(extra)
    return claims


def _alg_none(payload: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


@pytest.mark.parametrize("make_header", [
    lambda u: {},
    lambda u: {"Authorization": "Bearer"},
    lambda u: {"Authorization": "Basic YWxpY2U6cGFzcw=="},
    lambda u: {"Authorization": "Bearer not-a-jwt"},
    lambda u: bearer(_forge(_claims(u.id), secret="another-secret-that-is-long-enough-000")),
    lambda u: bearer(_forge(_claims(u.id, exp=1, iat=0, nbf=0))),
    lambda u: bearer(_alg_none(_claims(u.id))),
    lambda u: bearer(_forge(_claims(999999))),
    lambda u: bearer(_forge(_claims(u.id, sub="../../etc/passwd"))),
    lambda u: bearer(_forge(_claims(u.id, tv=7))),
    lambda u: bearer(_forge(_claims(u.id, type="refresh"))),
], ids=["none", "empty-bearer", "basic", "garbage", "wrong-secret", "expired", "alg-none",
        "unknown-user", "traversal-sub", "stale-token-version", "refresh-as-access"])
def test_every_token_problem_is_a_401_json(client, user, make_header):
    response = client.get("/transcriptions", headers=make_header(user))
    assert response.status_code == 401
    assert set(response.get_json()) == {"error"}


def test_a_deleted_users_token_stops_working(client, user, user_headers, admin_headers):
    assert client.get("/transcriptions", headers=user_headers).status_code == 200
    assert client.delete(f"/admin/users/{user.id}", headers=admin_headers).status_code == 200
    response = client.get("/transcriptions", headers=user_headers)
    assert response.status_code == 401
    assert "sign in again" in response.get_json()["error"]


def test_password_reset_signs_the_user_out(client, user, user_headers, admin_headers):
    response = client.patch(f"/admin/users/{user.id}", headers=admin_headers,
                            json={"password": "a brand new password"})
    assert response.status_code == 200
    assert client.get("/transcriptions", headers=user_headers).status_code == 401
    login(client, "alice", "a brand new password")


def test_refresh_token_gives_a_new_access_token(client, user):
    body = client.post("/login", json={"username": "alice", "password": TEST_PASSWORD}).get_json()
    refreshed = client.post("/refresh", headers=bearer(body["refresh_token"]))
    assert refreshed.status_code == 200
    assert client.get("/transcriptions", headers=bearer(refreshed.get_json()["access_token"])
                      ).status_code == 200
    # An access token is not a refresh token.
    assert client.post("/refresh", headers=bearer(body["access_token"])).status_code == 401


def test_access_token_lifetime_is_configurable(make_app, make_user):
    app = make_app(JWT_ACCESS_TOKEN_HOURS=2)
    assert app.config["JWT_ACCESS_TOKEN_EXPIRES"] == timedelta(hours=2)
    make_user("bob")
    token = login(app.test_client(), "bob")
    claims = pyjwt.decode(token, TEST_SECRET, algorithms=["HS256"])
    assert claims["exp"] - claims["iat"] == 2 * 3600


def test_logout_revokes_tokens_and_survives_a_restart(make_app, client, user):
    body = client.post("/login", json={"username": "alice", "password": TEST_PASSWORD}).get_json()
    access, refresh_token = body["access_token"], body["refresh_token"]
    response = client.post("/logout", headers=bearer(access), json={"refresh_token": refresh_token})
    assert response.status_code == 200
    assert client.get("/transcriptions", headers=bearer(access)).status_code == 401
    restarted = make_app().test_client()  # a new process sees the same revocations
    revoked = restarted.get("/transcriptions", headers=bearer(access))
    assert revoked.status_code == 401 and "revoked" in revoked.get_json()["error"]
    assert restarted.post("/refresh", headers=bearer(refresh_token)).status_code == 401
    # Another session of the same user is untouched.
    assert restarted.get("/transcriptions", headers=bearer(login(restarted, "alice"))
                         ).status_code == 200


def test_logout_without_the_refresh_token_ends_the_whole_sign_in(client, user):
    # The frontend never sends its refresh token to /logout.
    body = client.post("/login", json={"username": "alice", "password": TEST_PASSWORD}).get_json()
    access, refresh_token = body["access_token"], body["refresh_token"]
    refreshed = client.post("/refresh", headers=bearer(refresh_token)).get_json()["access_token"]
    assert client.post("/logout", headers=bearer(access)).status_code == 200
    assert client.post("/refresh", headers=bearer(refresh_token)).status_code == 401
    assert client.get("/transcriptions", headers=bearer(refreshed)).status_code == 401
    other = bearer(login(client, "alice"))  # another sign-in is untouched
    assert client.get("/transcriptions", headers=other).status_code == 200


@pytest.mark.parametrize("refresh_token, message", [
    (5, "must be a token string"), ("garbage", "not a valid token"),
    (None, "must be a token string"), ("", "not a valid token"),
    ("access", "not a refresh token")])
def test_logout_with_a_bad_refresh_token_is_400(client, user, refresh_token, message):
    access = login(client, "alice")
    if refresh_token == "access":
        refresh_token = access
    response = client.post("/logout", headers=bearer(access), json={"refresh_token": refresh_token})
    assert response.status_code == 400 and message in response.get_json()["error"]
    # Nothing was signed out by the refused request.
    assert client.get("/transcriptions", headers=bearer(access)).status_code == 200


def test_logout_with_a_form_body_is_400(client, user):
    access = login(client, "alice")
    response = client.post("/logout", headers=bearer(access), data={"refresh_token": "x"})
    assert response.status_code == 400


def test_login_is_rate_limited_per_account_and_address(make_app, make_user):
    app = make_app(LOGIN_MAX_FAILURES_PER_ACCOUNT=3, LOGIN_LOCKOUT_SECONDS=600)
    make_user("bob")
    client = app.test_client()
    for _ in range(3):
        assert client.post("/login", json={"username": "bob", "password": "wrong"}
                           ).status_code == 401
    waiting = client.post("/login", json={"username": "bob", "password": TEST_PASSWORD})
    assert waiting.status_code == 429
    assert waiting.headers["Retry-After"] == "1"  # the first delay is one second
    assert "Too many failed sign-ins" in waiting.get_json()["error"]
    # Unknown usernames are delayed the same way: the limit reveals nothing.
    for _ in range(3):
        client.post("/login", json={"username": "ghost", "password": "wrong"})
    assert client.post("/login", json={"username": "ghost", "password": "x"}).status_code == 429


def test_a_successful_login_clears_the_account_count(make_app, make_user):
    app = make_app(LOGIN_MAX_FAILURES_PER_ACCOUNT=3)
    make_user("dan")
    client = app.test_client()
    for _ in range(2):
        client.post("/login", json={"username": "dan", "password": "wrong"})
    login(client, "dan")
    for _ in range(2):
        client.post("/login", json={"username": "dan", "password": "wrong"})
    login(client, "dan")

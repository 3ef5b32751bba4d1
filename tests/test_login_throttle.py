"""Issue 8, item 7: login throttling delays one account from one address, with growing
waits, counted atomically; it never holds back a correct password because of other
accounts' failures or a shared address, and an admin's password reset clears it."""
from __future__ import annotations

import threading
from datetime import timedelta

from conftest import TEST_PASSWORD, bearer, login
from database import db
from models import LoginThrottle, utcnow

FRONTEND = {"REMOTE_ADDR": "10.0.0.2"}  # the frontend's server signs everyone in
ELSEWHERE = {"REMOTE_ADDR": "198.51.100.9"}


def attempt(client, username, password="wrong", where=FRONTEND):
    return client.post("/login", json={"username": username, "password": password},
                       environ_base=where)


def hold_the_waits(app) -> None:
    """Stretch the current waits to minutes: the first is 1 s, which a busy machine can spend
    between two requests, and the test would then see the wait over instead of the 429."""
    with app.app_context():
        db.session.query(LoginThrottle).filter(LoginThrottle.locked_until.isnot(None)).update(
            {"locked_until": utcnow() + timedelta(minutes=5)})
        db.session.commit()


def test_failures_under_other_names_from_a_shared_address_never_refuse_a_user(app, client,
                                                                               make_user):
    make_user("admin", is_admin=True)
    for i in range(20):
        attempt(client, f"made-up-{i}")
    assert attempt(client, "admin", TEST_PASSWORD).status_code == 200


def test_failures_from_one_address_never_refuse_the_account_elsewhere(make_app, make_user):
    app = make_app(LOGIN_MAX_FAILURES_PER_ACCOUNT=5)
    make_user("alice")
    client = app.test_client()
    for _ in range(5):
        assert attempt(client, "alice", where=ELSEWHERE).status_code == 401
    assert attempt(client, "alice", TEST_PASSWORD, where=ELSEWHERE).status_code == 429
    assert attempt(client, "alice", TEST_PASSWORD, where=FRONTEND).status_code == 200


def test_delays_grow_instead_of_a_fixed_lockout(make_app, make_user):
    app = make_app(LOGIN_MAX_FAILURES_PER_ACCOUNT=2, LOGIN_LOCKOUT_SECONDS=900)
    make_user("alice")
    client = app.test_client()
    waits = []
    for _ in range(6):
        response = attempt(client, "alice")
        if response.status_code == 429:
            waits.append(int(response.headers["Retry-After"]))
            with app.app_context():  # let the wait pass without sleeping
                db.session.query(LoginThrottle).update(
                    {"locked_until": utcnow() - timedelta(seconds=1)})
                db.session.commit()
            assert attempt(client, "alice").status_code == 401
    assert waits == [1, 2, 4, 8]


def test_usernames_are_throttled_case_insensitively(make_app, make_user):
    app = make_app(LOGIN_MAX_FAILURES_PER_ACCOUNT=3)
    make_user("alice")
    client = app.test_client()
    for name in ("ALICE", "Alice", "aLiCe"):
        assert attempt(client, name, where=ELSEWHERE).status_code == 401
    hold_the_waits(app)
    # Varying the case buys the guesser nothing from their address ...
    assert attempt(client, "alice", TEST_PASSWORD, where=ELSEWHERE).status_code == 429
    # ... and failures for ALICE elsewhere never hold back alice from her own address.
    assert attempt(client, "alice", TEST_PASSWORD, where=FRONTEND).status_code == 200


def test_an_admin_password_reset_clears_the_account(make_app, make_user):
    app = make_app(LOGIN_MAX_FAILURES_PER_ACCOUNT=3)
    make_user("alice")
    make_user("boss", is_admin=True)
    client = app.test_client()
    admin = bearer(login(client, "boss"))
    for _ in range(3):
        attempt(client, "alice")
    hold_the_waits(app)
    assert attempt(client, "alice", TEST_PASSWORD).status_code == 429
    reset = client.patch("/admin/users/1", headers=admin, json={"password": "a new password"})
    assert reset.status_code == 200
    assert attempt(client, "alice", "a new password").status_code == 200


def test_parallel_guesses_get_exactly_the_allowed_checks(make_app, make_user):
    app = make_app(LOGIN_MAX_FAILURES_PER_ACCOUNT=5, LOGIN_LOCKOUT_SECONDS=900)
    make_user("alice")
    statuses = []
    start = threading.Barrier(12)

    def guess():
        client = app.test_client()
        start.wait(timeout=10)
        statuses.append(attempt(client, "alice").status_code)
    threads = [threading.Thread(target=guess) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(statuses) == [401] * 5 + [429] * 7

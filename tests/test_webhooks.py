"""Part 4 of issue 12, "tell me when it is done": the per-user webhook through HTTP, with a
real receiver on 127.0.0.1 that checks nothing itself and records what arrives."""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import ROOT, bearer, login
from test_pipeline import pipeline_config, setup, talk, upload, wait_for  # noqa: F401

FAST_WEBHOOKS = dict(WEBHOOK_BACKOFF_SECONDS=0.05, WEBHOOK_POLL_SECONDS=0.05,
                     WEBHOOK_TIMEOUT_SECONDS=5, WEBHOOK_MAX_ATTEMPTS=3)


class Receiver:
    """An HTTP server on 127.0.0.1 that answers the next status of `answers` (the last one
    repeats) and records every request's headers and body."""

    def __init__(self, answers: list[int]):
        self.answers = list(answers)
        self.received: list[tuple[dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.answers.pop(0) if len(receiver.answers) > 1 else receiver.answers[0]
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/ezra?team=1"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()

    def wait_for_requests(self, count: int, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"{len(self.received)} of {count} requests arrived"
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver_factory():
    made: list[Receiver] = []

    def make(answers: list[int]) -> Receiver:
        made.append(Receiver(answers))
        return made[-1]
    yield make
    for receiver in made:
        receiver.stop()


def readme_verify():
    """The receiver's check exactly as README.md prints it."""
    readme = (ROOT / "README.md").read_text()
    code = readme.split("verify it on the raw body:\n\n```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - our own README
    return namespace["verify"]


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    return readme_verify()(secret, headers["x-ezra-signature"], body)


def wait_for_delivery(client, headers, status: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        deliveries = client.get("/webhook/deliveries", headers=headers).get_json()
        if deliveries and deliveries[0]["status"] == status:
            return deliveries[0]
        assert time.monotonic() < deadline, deliveries
        time.sleep(0.05)


def test_setting_the_webhook_checks_the_address_and_shows_the_secret_once(
        make_app, make_user, admin_headers):
    app = make_app(ALLOW_PRIVATE_ADDRESSES=False)
    client = app.test_client()
    make_user("bob")
    headers = bearer(login(client, "bob"))
    assert client.get("/webhook", headers=headers).status_code == 404

    private = client.put("/webhook", headers=headers, json={"url": "http://127.0.0.1:8080/x"})
    assert private.status_code == 400
    assert private.get_json() == {"error": "The webhook URL points to a private or local "
                                           "network address; use a public address"}
    for url in ("http://10.0.0.7/hook", "http://[::1]/hook", "http://169.254.169.254/latest"):
        assert client.put("/webhook", headers=headers, json={"url": url}).status_code == 400
    for body, message in [({"url": "ftp://93.184.215.14/x"}, "http:// or https://"),
                          ({"url": "https://user:pw@93.184.215.14/x"}, "user name or password"),
                          ({"url": "https://no-such-host.invalid/x"}, "could not be found"),
                          ({"url": 5}, "must be a string"), ({}, "'url' is required"),
                          ({"url": "https://93.184.215.14/", "rotate_secret": "yes"},
                           "true or false")]:
        answer = client.put("/webhook", headers=headers, json=body)
        assert answer.status_code == 400 and message in answer.get_json()["error"], body
    assert client.get("/webhook", headers=headers).status_code == 404  # nothing was saved

    created = client.put("/webhook", headers=headers, json={"url": "https://93.184.215.14/ezra"})
    assert created.status_code == 201
    secret = created.get_json()["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    changed = client.put("/webhook", headers=headers, json={"url": "https://93.184.215.14/new"})
    assert changed.status_code == 200 and changed.get_json()["secret"] is None
    rotated = client.put("/webhook", headers=headers,
                         json={"url": "https://93.184.215.14/new", "rotate_secret": True})
    assert rotated.get_json()["secret"] not in (None, secret)
    shown = client.get("/webhook", headers=headers).get_json()
    assert shown["url"] == "https://93.184.215.14/new" and "secret" not in shown

    bob_id = next(u["id"] for u in client.get("/admin/users", headers=admin_headers).get_json()
                  if u["username"] == "bob")
    as_admin = client.get(f"/admin/users/{bob_id}/webhook", headers=admin_headers)
    assert as_admin.status_code == 200
    assert as_admin.get_json()["url"] == "https://93.184.215.14/new"
    assert "secret" not in as_admin.get_json()
    assert client.get(f"/admin/users/{bob_id}/webhook", headers=headers).status_code == 403
    assert client.delete("/webhook", headers=headers).status_code == 200
    assert client.get("/webhook", headers=headers).status_code == 404
    assert client.get(f"/admin/users/{bob_id}/webhook", headers=admin_headers).status_code == 404


def test_completed_job_event_is_signed_and_retried_after_a_500(
        setup, talk, receiver_factory, admin_headers):
    app, client, headers = setup(ALLOW_PRIVATE_ADDRESSES=True, **FAST_WEBHOOKS)
    receiver = receiver_factory([500, 200])
    created = client.put("/webhook", headers=headers, json={"url": receiver.url})
    assert created.status_code == 201, created.get_json()
    secret = created.get_json()["secret"]

    job_id = upload(client, headers, talk)
    assert wait_for(client, headers, job_id)["status"] == "completed"
    receiver.wait_for_requests(2)
    delivery = wait_for_delivery(client, headers, "delivered")

    (first_headers, first_body), (second_headers, second_body) = receiver.received
    assert first_body == second_body  # the same event, re-signed per attempt
    for request_headers, body in receiver.received:
        assert verify(secret, request_headers, body)
        assert not verify("whsec_wrong", request_headers, body)
        assert request_headers["x-ezra-event"] == "transcription.completed"
        assert request_headers["content-type"] == "application/json"
        assert request_headers["host"] == receiver.url.split("/")[2]
    event = json.loads(first_body)
    assert event["event"] == "transcription.completed"
    assert event["transcription_id"] == job_id and event["status"] == "completed"
    assert event["file_name"] == "Sunday Talk — Ezra 7" and event["error_message"] is None
    assert event["documents"]["word"] == (f"/download/word/{job_id}/Sunday Talk — Ezra 7.docx")
    assert event["documents"]["txt"] and event["documents"]["md"]
    assert event["timestamp"].endswith("+00:00")

    assert delivery["attempts"] == 2 and delivery["transcription_id"] == job_id
    assert [(a["attempt"], a["status_code"], a["error"]) for a in delivery["log"]] == [
        (1, 500, "HTTP 500"), (2, 200, None)]
    assert all(a["duration_ms"] >= 0 for a in delivery["log"])
    everyone = client.get("/admin/webhook-deliveries", headers=admin_headers).get_json()
    assert [d["id"] for d in everyone] == [delivery["id"]]
    assert everyone[0]["log"] == delivery["log"]


def test_failed_job_event_gives_up_after_the_last_attempt(setup, talk, receiver_factory,
                                                          admin_headers):
    app, client, headers = setup(ALLOW_PRIVATE_ADDRESSES=True, **FAST_WEBHOOKS)
    receiver = receiver_factory([500])
    secret = client.put("/webhook", headers=headers,
                        json={"url": receiver.url}).get_json()["secret"]
    job_id = upload(client, headers, talk, start_time="10:00", end_time="11:00")
    assert wait_for(client, headers, job_id)["status"] == "error"
    delivery = wait_for_delivery(client, headers, "failed")
    assert len(receiver.received) == 3  # WEBHOOK_MAX_ATTEMPTS, then no more
    assert delivery["attempts"] == 3 and delivery["last_status_code"] == 500
    assert [a["status_code"] for a in delivery["log"]] == [500, 500, 500]
    event = json.loads(receiver.received[0][1])
    assert event["event"] == "transcription.failed" and event["status"] == "error"
    assert "past the end of the audio" in event["error_message"]
    assert verify(secret, *receiver.received[-1])
    time.sleep(0.3)  # several backoff periods: still no fourth attempt
    assert len(receiver.received) == 3
    listed = client.get(f"/admin/webhook-deliveries?user_id={delivery['user_id']}",
                        headers=admin_headers).get_json()
    assert [d["status"] for d in listed] == ["failed"]
    assert client.get("/admin/webhook-deliveries?user_id=x",
                      headers=admin_headers).status_code == 400


def test_delivery_rechecks_the_address_and_never_connects_to_a_private_one(
        setup, talk, receiver_factory):
    """A URL accepted earlier (here: while private addresses were allowed) is checked again
    at delivery; the sender refuses without connecting."""
    app, client, headers = setup(ALLOW_PRIVATE_ADDRESSES=True, **FAST_WEBHOOKS)
    receiver = receiver_factory([200])
    assert client.put("/webhook", headers=headers,
                      json={"url": receiver.url}).status_code == 201
    app, client, headers = setup(ALLOW_PRIVATE_ADDRESSES=False,
                                 **(FAST_WEBHOOKS | {"WEBHOOK_MAX_ATTEMPTS": 1}))
    job_id = upload(client, headers, talk, start_time="10:00", end_time="11:00")
    assert wait_for(client, headers, job_id)["status"] == "error"
    delivery = wait_for_delivery(client, headers, "failed")
    assert receiver.received == []
    assert delivery["last_status_code"] is None
    assert "refused" in delivery["last_error"] and "127.0.0.1" in delivery["last_error"]


def test_a_receiver_that_never_answers_is_cut_off():
    """One attempt is bounded in all (WEBHOOK_TIMEOUT_SECONDS), even when the receiver
    accepts the connection and then says nothing."""
    import socket

    from webhooks import DeliveryError, post
    silent = socket.create_server(("127.0.0.1", 0))
    try:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/hook"
        with pytest.raises(DeliveryError, match="no answer within 0.3 s"):
            post(url, b"{}", {"Content-Type": "application/json"}, timeout=0.3,
                 allow_private=True)
        with pytest.raises(DeliveryError, match="refused: 127.0.0.1 resolves to the private"):
            post(url, b"{}", {}, timeout=0.3, allow_private=False)
    finally:
        silent.close()

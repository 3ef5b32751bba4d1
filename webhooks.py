"""Tell me when it is done: a signed JSON event to the user's webhook when a job finishes.

- The URL passes the same egress rules as links (fetch_service): http(s) only, and every
  address its host resolves to must be public unless ALLOW_PRIVATE_ADDRESSES. Checked when
  the user sets it, and again at every delivery: the sender resolves the host once, checks
  those addresses and connects to exactly them (the Host header and TLS name stay the URL's
  host), so a DNS answer that changes after the check cannot reach the internal network.
- Durable outbox: the event row is written in the same transaction that records the job as
  completed or failed (`add_event`), so no finished job loses its event and nothing is sent
  for a status that was not committed. Runner processes deliver it (`send_loop`, one thread
  beside the runner slots), so delivery never blocks a job.
- Each attempt is time-bounded (WEBHOOK_TIMEOUT_SECONDS in all), logged in
  `webhook_attempts` (status code, error, duration), and a failure is retried after
  WEBHOOK_BACKOFF_SECONDS x 2^(attempt-1) (at most an hour) until WEBHOOK_MAX_ATTEMPTS.
- Signature: `X-Ezra-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`
  with the user's secret (shown once when set or rotated). Receivers check it and that `t` is
  recent (README).
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import secrets
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, current_app
from sqlalchemy import select, update

import models as m
from database import db
from egress import is_public_ip, resolve
from fetch_service import PRIVATE_MESSAGE, FetchError, check_public_host
from models import Transcription, Webhook, WebhookAttempt, WebhookDelivery, utcnow
from serializers import iso, transcription_page, user_transcription

log = logging.getLogger("ezra.webhooks")

EVENTS = {m.JobStatus.COMPLETED: "transcription.completed", m.JobStatus.ERROR: "transcription.failed"}
PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
MAX_URL_LENGTH = 2048
MAX_BACKOFF_SECONDS = 3600.0
USER_AGENT = "Ezra-Webhook/1"
_WAKE_KEY = "ezra_webhook_wake"


# The URL and the secret ------------------------------------------------------------------------

class WebhookURLError(ValueError):
    """The URL cannot be used; the message says why, for the user."""


def check_url(url: str, *, allow_private: bool) -> str:
    """The URL, stripped, if a webhook may point there; else WebhookURLError."""
    url = url.strip()
    if not url:
        raise WebhookURLError("'url' must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookURLError(f"'url' is longer than {MAX_URL_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in url):
        raise WebhookURLError("'url' must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise WebhookURLError("'url' is malformed") from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise WebhookURLError("'url' must be an http:// or https:// address with a host name")
    if parts.username or parts.password:
        raise WebhookURLError("'url' must not contain a user name or password")
    try:
        check_public_host(url, allow_private=allow_private)
    except FetchError as exc:
        if exc.message == PRIVATE_MESSAGE:
            raise WebhookURLError("The webhook URL points to a private or local network "
                                  "address; use a public address") from None
        raise WebhookURLError("The webhook URL's server could not be found; check the "
                              "address") from None
    return url


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Ezra-Signature header value."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body,
                      hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


# The outbox ------------------------------------------------------------------------------------

def add_event(job_id: Any) -> None:
    """Add the finished job's event to the session (its caller commits), if its user has a
    webhook. Reads the job as the current transaction sees it. In a savepoint: whatever goes
    wrong here must not stop the job's own status from being recorded."""
    try:
        with db.session.begin_nested():
            _add_event(job_id)
    except Exception:
        log.exception("job=%s the webhook event could not be recorded", job_id)


def _add_event(job_id: Any) -> None:
    webhook = db.session.execute(
        select(Webhook.url, Webhook.user_id).join(Transcription,
                                                  Transcription.user_id == Webhook.user_id)
        .where(Transcription.id == job_id)).first()
    if webhook is None:
        return
    user_id = webhook.user_id
    row = db.session.execute(transcription_page("own"), {
        "job_id": job_id, "user_id": user_id, "limit": 1, "offset": 0}).first()
    event = EVENTS.get(row.status)
    if event is None:
        return
    job = user_transcription(row)
    base = (current_app.config.get("PUBLIC_BASE_URL") or "").rstrip("/")
    documents = {kind: (base + link if link else None) for kind, link in (
        ("txt", job["txt_document_path"]), ("md", job["md_document_path"]),
        ("word", job["word_document_path"]))}
    payload = {
        "event": event,
        "transcription_id": job["id"],
        "status": row.status,
        "file_name": job["audio_file_name"],
        "error_message": row.error_message,
        "documents": documents,
        "timestamp": iso(utcnow()),
    }
    db.session.add(WebhookDelivery(
        user_id=user_id, transcription_id=row.id, event=event, url=webhook.url,
        payload=json.dumps(payload, ensure_ascii=False, separators=(",", ":")),
        status=PENDING, attempts=0, next_attempt_at=utcnow()))


def wake() -> None:
    """A new event is committed: this process's sender looks at once."""
    event = current_app.extensions.get(_WAKE_KEY)
    if event is not None:
        event.set()


def cancel_pending(user_id: int, reason: str) -> None:
    db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.user_id == user_id, WebhookDelivery.status == PENDING)
        .values(status=FAILED, last_error=reason, finished_at=utcnow(), next_attempt_at=None)
        .execution_options(synchronize_session=False))


# Sending ---------------------------------------------------------------------------------------

class DeliveryError(Exception):
    """No HTTP answer (refused address, DNS, connect, TLS, timeout); str() goes to the log."""


@dataclass(frozen=True)
class Outcome:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def post(url: str, body: bytes, headers: dict[str, str], *, timeout: float,
         allow_private: bool) -> int:
    """POST body to url, connecting only to the addresses that were checked; the status
    code. The whole exchange is cut after `timeout` seconds."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    https = parts.scheme.lower() == "https"
    port = parts.port or (443 if https else 80)
    try:
        addresses = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise DeliveryError(f"{host} could not be resolved: {exc}") from None
    if not addresses:
        raise DeliveryError(f"{host} has no addresses")
    if not allow_private:
        for address, _ in addresses:
            if not is_public_ip(address):
                raise DeliveryError(f"refused: {host} resolves to the private address {address}")
    deadline = time.monotonic() + timeout
    sock: socket.socket | None = None
    error: OSError | None = None
    for address, address_port in addresses:  # connect to exactly what was checked
        try:
            sock = socket.create_connection((address, address_port),
                                            timeout=max(deadline - time.monotonic(), 0.01))
            break
        except OSError as exc:
            error = exc
    if sock is None:
        raise DeliveryError(f"could not connect to {host}:{port}: {error}")
    # One timer bounds everything after the connect (TLS, sending, a slowly dripped answer).
    timer = threading.Timer(max(deadline - time.monotonic(), 0.01), _cut, args=(sock,))
    timer.start()
    try:
        if https:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection.sock = sock  # http.client sends Host: <host>[:port] from the URL
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        response.read(4096)  # the answer's body is not used; a little is read politely
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        if time.monotonic() >= deadline:
            raise DeliveryError(f"no answer within {timeout:g} s") from None
        raise DeliveryError(f"{type(exc).__name__}: {exc}") from None
    finally:
        timer.cancel()
        try:
            sock.close()
        except OSError:
            pass


def _cut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv/send at once
    except OSError:
        pass


def backoff_seconds(config: Any, attempt: int) -> float:
    return min(config["WEBHOOK_BACKOFF_SECONDS"] * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS)


def _claim_due() -> tuple | None:
    """Take one due delivery for this process: its `next_attempt_at` moves past the attempt's
    longest time, so another sender takes it only if this one dies."""
    config = current_app.config
    now = utcnow()
    due = (select(WebhookDelivery.id)
           .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
           .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(1)
           .with_for_update(skip_locked=True).scalar_subquery())
    row = db.session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == due, WebhookDelivery.status == PENDING)
        .values(attempts=WebhookDelivery.attempts + 1,
                next_attempt_at=now + timedelta(seconds=config["WEBHOOK_TIMEOUT_SECONDS"] + 60))
        .returning(WebhookDelivery.id, WebhookDelivery.user_id, WebhookDelivery.event,
                   WebhookDelivery.payload, WebhookDelivery.attempts)
        .execution_options(synchronize_session=False)).first()
    db.session.commit()
    return row


def send_one() -> bool:
    """Deliver one due event (one attempt); False when none is due."""
    claimed = _claim_due()
    if claimed is None:
        return False
    delivery_id, user_id, event, payload, attempt = claimed
    config = current_app.config
    # The user's current URL and secret: a corrected URL or a rotated secret applies to retries.
    webhook = db.session.execute(select(Webhook.url, Webhook.secret).where(
        Webhook.user_id == user_id)).first()
    db.session.commit()  # no transaction stays open across the request
    body = payload.encode()
    started = time.monotonic()
    status_code, error = None, None
    if webhook is None:
        error = "the user removed the webhook"
    else:
        timestamp = int(time.time())
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT,
                   "X-Ezra-Event": event, "X-Ezra-Delivery": str(delivery_id),
                   "X-Ezra-Signature": sign(webhook.secret, timestamp, body)}
        try:
            status_code = post(webhook.url, body, headers,
                               timeout=config["WEBHOOK_TIMEOUT_SECONDS"],
                               allow_private=config["ALLOW_PRIVATE_ADDRESSES"])
            if not 200 <= status_code < 300:
                error = f"HTTP {status_code}"
        except DeliveryError as exc:
            error = str(exc)
    outcome = Outcome(status_code, error, int((time.monotonic() - started) * 1000))
    _record(delivery_id, attempt, webhook.url if webhook else None, outcome,
            give_up=webhook is None or attempt >= config["WEBHOOK_MAX_ATTEMPTS"])
    return True


def _record(delivery_id: int, attempt: int, url: str | None, outcome: Outcome,
            give_up: bool) -> None:
    now = utcnow()
    values: dict[str, Any] = {"last_status_code": outcome.status_code,
                              "last_error": outcome.error}
    if url:
        values["url"] = url
    if outcome.ok:
        values.update(status=DELIVERED, finished_at=now, next_attempt_at=None)
    elif give_up:
        values.update(status=FAILED, finished_at=now, next_attempt_at=None)
    else:
        values["next_attempt_at"] = now + timedelta(
            seconds=backoff_seconds(current_app.config, attempt))
    db.session.add(WebhookAttempt(delivery_id=delivery_id, attempt=attempt,
                                  status_code=outcome.status_code, error=outcome.error,
                                  duration_ms=outcome.duration_ms))
    db.session.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                       .values(**values).execution_options(synchronize_session=False))
    db.session.commit()
    log.info("webhook delivery=%s attempt=%d status_code=%s ok=%s duration_ms=%d%s",
             delivery_id, attempt, outcome.status_code, outcome.ok, outcome.duration_ms,
             f" error={outcome.error!r}" if outcome.error else "")


def send_loop(app: Flask, stopped: threading.Event) -> None:
    """The sender thread of a runner process (jobs.Runner starts it beside the slots): sends
    due events one by one; looks again when woken or every WEBHOOK_POLL_SECONDS."""
    wake_event = app.extensions.setdefault(_WAKE_KEY, threading.Event())
    poll = app.config["WEBHOOK_POLL_SECONDS"]
    while not stopped.is_set():
        try:
            with app.app_context():
                while not stopped.is_set() and send_one():
                    pass
        except Exception:  # the database may be restarting; the outbox keeps the events
            log.warning("sending webhooks failed; trying again", exc_info=True)
        waited = 0.0
        while waited < poll and not stopped.is_set():  # short slices: a stop is seen soon
            if wake_event.wait(min(0.2, poll)):
                break
            waited += 0.2
        wake_event.clear()

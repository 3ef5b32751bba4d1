"""Webhook routes: a user sets, reads and removes their webhook and reads its delivery log;
admins read anyone's webhook (never its secret) and every delivery.

They join the user and admin blueprints (so the admin guard covers them); app.py imports
this module before it registers those blueprints."""
from __future__ import annotations

from typing import Any

from flask import current_app, jsonify, request
from flask_jwt_extended import current_user, jwt_required
from sqlalchemy import select

import webhooks
from admin_routes import bp as admin_bp
from database import db
from errors import APIError
from limits import ADMIN_PAGE_DEFAULT
from models import User, Webhook, WebhookAttempt, WebhookDelivery, utcnow
from openapi import array, boolean, documented, json_response, obj, ref, string
from serializers import iso
from user_routes import bp
from validation import bool_field, int_id, json_body, pagination, string_field


def webhook_answer(hook: Webhook, **extra: Any) -> dict[str, Any]:
    return {"url": hook.url, "created_at": iso(hook.created_at),
            "updated_at": iso(hook.updated_at), **extra}


def _own_webhook() -> Webhook:
    hook = db.session.get(Webhook, current_user.id)
    if hook is None:
        raise APIError(404, "No webhook is set; PUT /webhook with {\"url\": ...} sets one")
    return hook


@bp.get("/webhook")
@documented("The caller's webhook (never its secret)", errors=(404,),
            response=json_response(ref("Webhook")))
@jwt_required()
def get_webhook():
    return jsonify(webhook_answer(_own_webhook()))


@bp.put("/webhook")
@documented(
    "Set or change the caller's webhook", ok=201,
    description=(
        "A signed JSON event is POSTed there when a job completes or fails. The URL "
        "must be http(s) on a public address (400 otherwise, e.g. a private or local "
        "network address). Creating answers 201 with the signing secret, shown only "
        "then; `rotate_secret: true` makes and shows a new one. Each event carries "
        "`X-Ezra-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + \".\" + "
        "body)>`."),
    body=obj({"url": string(minLength=1, maxLength=2048,
                            example="https://hooks.example.org/ezra"),
              "rotate_secret": boolean(default=False)},
             required=["url"], closed=False),
    extra_responses={200: json_response(ref("WebhookSet"), "Updated")},
    response=json_response(ref("WebhookSet"), "Created"))
@jwt_required()
def set_webhook():
    """Set or change the URL. The signing secret is answered once: when the webhook is
    created, or when `rotate_secret` is true; otherwise `secret` is null (unchanged)."""
    data = json_body()
    url = string_field(data, "url", max_length=webhooks.MAX_URL_LENGTH)
    rotate = bool_field(data, "rotate_secret", default=False)
    try:
        url = webhooks.check_url(url, allow_private=current_app.config["ALLOW_PRIVATE_ADDRESSES"])
    except webhooks.WebhookURLError as exc:
        raise APIError(400, str(exc)) from None
    # The user's row lock makes concurrent first PUTs of one user create one webhook.
    db.session.execute(select(User.id).where(User.id == current_user.id).with_for_update())
    hook = db.session.get(Webhook, current_user.id)
    created = hook is None
    secret = webhooks.new_secret() if created or rotate else None
    if created:
        hook = Webhook(user_id=current_user.id, url=url, secret=secret)
        db.session.add(hook)
    else:
        hook.url = url
        hook.updated_at = utcnow()
        if secret:
            hook.secret = secret
    db.session.commit()
    message = ("Webhook created; keep the secret, it is shown only now" if created else
               "Webhook updated; keep the new secret, it is shown only now" if secret else
               "Webhook updated; the secret is unchanged")
    return jsonify(webhook_answer(hook, secret=secret, message=message)), 201 if created else 200


@bp.delete("/webhook")
@documented("Remove the caller's webhook", errors=(404,),
            description="Events not delivered yet are dropped (marked failed).",
            response=json_response(ref("Message")))
@jwt_required()
def delete_webhook():
    hook = _own_webhook()
    db.session.delete(hook)
    webhooks.cancel_pending(current_user.id, "the user removed the webhook")
    db.session.commit()
    return jsonify(message="Webhook removed; events not delivered yet are dropped")


@bp.get("/webhook/deliveries")
@documented("The caller's webhook deliveries with their attempts, newest first",
            paginated=ADMIN_PAGE_DEFAULT,
            response=json_response(array(ref("WebhookDelivery"))))
@jwt_required()
def own_webhook_deliveries():
    limit, offset = pagination(default=ADMIN_PAGE_DEFAULT)
    return jsonify(delivery_page(limit, offset, user_id=current_user.id))


@admin_bp.get("/webhook-deliveries")
@documented("Every webhook delivery with its attempts (status code, error, duration), "
            "newest first", paginated=ADMIN_PAGE_DEFAULT, errors=(400,),
            description="`user_id` narrows the list to one user.",
            response=json_response(array(ref("WebhookDelivery"))))
def all_webhook_deliveries():
    limit, offset = pagination(default=ADMIN_PAGE_DEFAULT)
    user_id = request.args.get("user_id")
    return jsonify(delivery_page(limit, offset, user_id=None if user_id in (None, "") else
                                 int_id(user_id, "user_id")))


@admin_bp.get("/users/<user_id>/webhook")
@documented("A user's webhook (never its secret)", errors=(400, 404),
            response=json_response(ref("AdminWebhook")))
def user_webhook(user_id: str):
    user_id_int = int_id(user_id, "user id")
    row = db.session.execute(select(User.id, Webhook).outerjoin(
        Webhook, Webhook.user_id == User.id).where(User.id == user_id_int)).first()
    if row is None:
        raise APIError(404, "User not found")
    if row[1] is None:
        raise APIError(404, "This user has no webhook")
    return jsonify(webhook_answer(row[1], user_id=user_id_int))


def delivery_page(limit: int, offset: int, user_id: int | None) -> list[dict[str, Any]]:
    """Deliveries, newest first, each with its attempts (two statements whatever the page)."""
    query = select(WebhookDelivery).order_by(WebhookDelivery.created_at.desc(),
                                             WebhookDelivery.id.desc())
    if user_id is not None:
        query = query.where(WebhookDelivery.user_id == user_id)
    deliveries = db.session.execute(query.limit(limit).offset(offset)).scalars().all()
    attempts: dict[int, list[dict[str, Any]]] = {d.id: [] for d in deliveries}
    if deliveries:
        for attempt in db.session.execute(
                select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt,
                          WebhookAttempt.id)).scalars():
            attempts[attempt.delivery_id].append({
                "attempt": attempt.attempt, "status_code": attempt.status_code,
                "error": attempt.error, "duration_ms": attempt.duration_ms,
                "created_at": iso(attempt.created_at)})
    return [{
        "id": d.id,
        "user_id": d.user_id,
        "transcription_id": None if d.transcription_id is None else str(d.transcription_id),
        "event": d.event,
        "url": d.url,
        "status": d.status,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at),
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "created_at": iso(d.created_at),
        "finished_at": iso(d.finished_at),
        "log": attempts[d.id],
    } for d in deliveries]

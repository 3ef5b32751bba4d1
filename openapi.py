"""The OpenAPI 3 description of the API, generated from the registered routes.

`GET /openapi.json` walks `current_app.url_map`: every rule becomes a path (`<name>` ->
`{name}`), every method an operation tagged with its blueprint. What a route takes and
answers comes from OPERATIONS below, keyed by endpoint name ("user.process",
"admin.list_users"): a route missing there still appears (marked `x-undocumented`) and
tests/test_openapi.py fails, so a new route cannot be forgotten. `GET /docs` is a small
self-contained page (no CDN: the servers have no internet) that renders the description and
can send requests with a token.

The shapes mirror serializers.py exactly (`additionalProperties: false`), so the schemathesis
run in the tests notices a response key that is added without being described here.
"""
from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.routing import Rule

from limits import (ADMIN_PAGE_DEFAULT, MAX_DESCRIPTION, MAX_FILENAME_LENGTH, MAX_INT_ID,
                    MAX_NEW_USERNAME, MAX_PASSWORD_LENGTH, MAX_PROMPT_LENGTH, MAX_REFERENCE_DOCX,
                    MAX_SETTING_KEY, MAX_SETTING_VALUE, MAX_USERNAME_LENGTH, MAX_VERSION_LENGTH)
from models import FINAL_STATUSES, JobStatus

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0"

# Endpoints that exist but are not part of the API: Flask's static files (when a folder
# exists) and the web page at `/` with its files (web_page.py).
EXCLUDED_ENDPOINTS = frozenset({"static", "web.page", "web.asset"})
# Methods Werkzeug adds to every rule by itself.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})

JSON = "application/json"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


# Schema helpers ------------------------------------------------------------------------------

def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def string(**extra) -> dict:
    return {"type": "string", **extra}


def integer(**extra) -> dict:
    return {"type": "integer", **extra}


def boolean(**extra) -> dict:
    return {"type": "boolean", **extra}


def number(**extra) -> dict:
    return {"type": "number", **extra}


def null(schema: dict) -> dict:
    """OpenAPI 3.0 spelling of `T | null` (only on inline schemas, never beside a $ref)."""
    return {**schema, "nullable": True}


def array(items: dict) -> dict:
    return {"type": "array", "items": items}


def obj(properties: dict, required: list[str] | None = None, *, closed: bool = True,
        **extra) -> dict:
    """An object; by default every property is required (the serializers always write every
    key, null or not) and no other key is allowed."""
    schema = {"type": "object", "properties": properties,
              "required": list(properties) if required is None else required}
    if not schema["required"]:
        del schema["required"]
    if closed:
        schema["additionalProperties"] = False
    schema.update(extra)
    return schema


TIMESTAMP = null(string(format="date-time", description=(
    "ISO 8601 with a timezone; null on rows the earlier implementation left without one")))
UUID = string(format="uuid")
INT_ID = integer(minimum=1, maximum=MAX_INT_ID)
DIGITS_ID = string(pattern=r"^\s*\d{1,10}\s*$",
                   description="a numeric string, as select boxes send")
STATUS_WORDS = tuple(status.value for status in JobStatus)
STATUS = null(string(description="one of: " + ", ".join(STATUS_WORDS) +
                     " (null only on legacy rows)"))
PROGRESS = null(obj({
    "step": string(description="the running step, e.g. uploading, transcribing, proofreading"),
    "done": null(integer()),
    "total": null(integer()),
    "unit": null(string(enum=["bytes", "chunks", "seconds", "slices"])),
}, description="how far the current step is; null before the first step reports"))
DOCUMENT_LINK = null(string(description=(
    "the download route once the document exists (truthy), else null; its last segment is "
    "the document's file name")))


def component_schemas() -> dict:
    return {
        "Error": obj({"error": string()}),
        "LoginFailure": obj({"msg": string()}),
        "Message": obj({"message": string()}),
        "Health": obj({"status": string(enum=["ok"])}),
        "Readiness": obj({
            "status": string(enum=["ready", "not ready"]),
            "checks": {"type": "object", "additionalProperties": obj({
                "ok": boolean(), "detail": string()})},
        }),
        "Tokens": obj({"access_token": string(), "refresh_token": string(),
                       "is_admin": boolean()}),
        "AccessToken": obj({"access_token": string()}),
        "Submitted": obj({"message": string(), "transcription_id": UUID}),
        "UserTranscription": obj({
            "id": UUID,
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
            "status": STATUS,
            "word_document_path": DOCUMENT_LINK,
            "txt_document_path": DOCUMENT_LINK,
            "md_document_path": DOCUMENT_LINK,
            "audio_file_name": null(string(description="the audio's title once known, "
                                                       "else the submitted link")),
            "google_drive_url": null(string(description="the submitted link")),
            "start_seconds": null(number()),
            "end_seconds": null(number()),
            "error_message": null(string()),
            "proofread_note": null(string(description="why the Markdown is not proofread")),
            "progress": PROGRESS,
        }),
        "CancelResult": obj({"message": string(), "status": string(enum=[JobStatus.CANCELLED.value] + [
            s for s in STATUS_WORDS if s not in FINAL_STATUSES])}),
        "RetryResult": obj({"message": string(), "transcription_id": UUID, "status": string()}),
        "AdminTranscription": obj({
            "id": UUID,
            "user_id": null(integer()),
            "username": null(string()),
            "audio_file_path": null(string()),
            "audio_file_name": null(string()),
            "google_drive_url": null(string()),
            "txt_document_path": DOCUMENT_LINK,
            "md_document_path": DOCUMENT_LINK,
            "word_document_path": DOCUMENT_LINK,
            "status": STATUS,
            "error_message": null(string()),
            "progress": PROGRESS,
            "engine": null(string()),
            "transcribe_prompt": null(string()),
            "proofread_prompt": null(string()),
            "inference_duration": null(integer()),
            "created_at": TIMESTAMP,
            "updated_at": TIMESTAMP,
        }),
        "UserSummary": obj({"id": integer(), "username": string(), "is_admin": boolean(),
                            "created_at": TIMESTAMP, "transcription_count": integer(minimum=0)}),
        "UserUpdated": obj({"message": string(), "is_admin": boolean()}),
        "ErrorLog": obj({
            "id": integer(),
            "user_id": null(integer()),
            "transcription_id": null(UUID),
            "error_message": null(string()),
            "stack_trace": null(string()),
            "inference": boolean(),
            "step": null(string()),
            "created_at": TIMESTAMP,
        }),
        "Stats": obj({"total_users": integer(minimum=0),
                      "total_transcriptions": integer(minimum=0),
                      "total_errors": integer(minimum=0)}),
        "Prompt": obj({"id": integer(), "version": string(), "prompt": string(),
                       "created_at": TIMESTAMP}),
        "PromptCreated": obj({"id": integer(), "version": string(), "prompt": string(),
                              "created_at": TIMESTAMP, "message": string()}),
        "ActivePromptSet": obj({"message": string(), "prompt": ref("Prompt")}),
        "Setting": obj({"id": integer(), "setting_key": string(),
                        "setting_value": null(string()), "description": null(string()),
                        "created_at": TIMESTAMP, "updated_at": TIMESTAMP}),
        "SettingChanged": obj({"id": integer(), "setting_key": string(),
                               "setting_value": null(string()), "description": null(string()),
                               "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
                               "message": string()}),
        "SystemInfo": obj({
            "transcribe_engine": string(description="remote, openai or local"),
            "transcribe_model": obj({
                "model": null(string(description="e.g. whisper-base (multilingual), whisper-1")),
                "model_source": string(description="where the model comes from"),
                "device": null(string(description="local: cpu, cuda or auto")),
                "compute_type": null(string(description="local: e.g. int8, float16")),
                "threads": null(integer(description="local: CPU threads per transcription")),
                "loaded": null(boolean(description="local: this process has loaded the model "
                                                   "(it loads on the first job)")),
            }),
            "proofreader_configured": boolean(),
            "proofreading_enabled": boolean(),
            "proofread_model": string(),
            "transcribing_allowed": boolean(),
            "custom_reference_docx": boolean(),
        }),
    }


# Responses -----------------------------------------------------------------------------------

ERROR_TEXTS = {
    400: "Bad input: the message says what to change",
    401: "Missing, invalid or expired token, or the user is gone or signed out",
    403: "The token's user is not an admin",
    404: "Not found",
    409: "The transcription is not in a state that allows this",
    413: "The request body is over this route's cap (16 KB for sign-in, MAX_JSON_KB for JSON, "
         "MAX_UPLOAD_MB for uploads), or the upload would pass the user's scratch cap",
    415: "A form upload sent to a route that takes a JSON body",
    429: "Too many at once (unfinished transcriptions, failed sign-ins): see Retry-After",
    500: "Internal server error (never expected; always this JSON, never a traceback)",
    503: "The database is unavailable for a moment",
    507: "The server cannot store the upload right now",
}
RETRY_AFTER = {"description": "seconds to wait before trying again",
               "schema": string(pattern=r"^\d+$")}


def error_response(status: int) -> dict:
    response = {"description": ERROR_TEXTS[status],
                "content": {JSON: {"schema": ref("Error")}}}
    if status in (429, 503):
        # 429 always carries it; 503 does when the database is down (not when jobs are paused).
        response["headers"] = {"Retry-After": {**RETRY_AFTER, "required": status == 429}}
    return response


def json_response(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def attachment(*media_types: str, description: str) -> dict:
    return {"description": description,
            "headers": {"Content-Disposition": {
                "description": "attachment; filename=...; filename*=UTF-8''... (RFC 6266)",
                "required": True, "schema": string(pattern="^attachment")}},
            "content": {m: {"schema": string(format="binary")} for m in media_types}}


# Parameters ----------------------------------------------------------------------------------

# Path parameters by name, as the views parse them.
PATH_PARAMETERS = {
    "transcription_id": (UUID, "a transcription id (UUID); anything else is a 400"),
    "user_id": (INT_ID, "a user id; anything but a whole number in range is a 400"),
    "setting_id": (INT_ID, "a setting id; anything but a whole number in range is a 400"),
    "file_type": (string(enum=["txt", "md", "word", "docx", "srt", "vtt"]),
                  "`word` and `docx` are the same Word document; `srt` and `vtt` are subtitles "
                  "timed against the source (a cut window's start is added back), 404 when the "
                  "engine gave no timestamps; anything else is a 400"),
    "file_name": (string(), "any name; the document links end in the document's name "
                            "(clients show that last segment)"),
}


def pagination_parameters(default: int | None = None) -> list[dict]:
    """`default` None means the default is the cap (LIST_MAX_LIMIT)."""
    cap = current_app.config["LIST_MAX_LIMIT"]
    default = cap if default is None else min(default, cap)
    return [
        {"name": "limit", "in": "query", "required": False,
         "description": (f"at most this many rows (default and maximum {cap})" if default == cap
                         else f"at most this many rows (default {default}, maximum {cap})"),
         "schema": integer(minimum=1, maximum=cap, default=default)},
        {"name": "offset", "in": "query", "required": False,
         "description": "skip this many rows (default 0)",
         "schema": integer(minimum=0, maximum=999_999_999)},
    ]


# The per-endpoint table ----------------------------------------------------------------------

def op(summary: str, *, ok: int = 200, response: dict, errors: tuple[int, ...] = (),
       body: dict | None = None, body_required: bool = True, form: dict | None = None,
       paginated: bool | int = False,
       auth: bool = True, database: bool = True, description: str | None = None,
       extra_responses: dict[int, dict] | None = None) -> dict:
    """One operation. 401 (with auth), 403 (admin blueprint), 400 and 413 (with a body),
    500 and 503 (database) are added by the generator from these facts."""
    return {"summary": summary, "description": description, "ok": ok, "response": response,
            "errors": errors, "body": body, "body_required": body_required, "form": form,
            "paginated": paginated, "auth": auth,
            "database": database, "extra_responses": extra_responses or {}}


def operations() -> dict[str, dict]:
    config = current_app.config
    password_min = config["PASSWORD_MIN_LENGTH"]
    upload_mb = config["MAX_UPLOAD_MB"]

    def time_field(example: str) -> dict:
        return string(pattern=r"^\s*((\d{1,4}:){0,2}\d{1,6}(\.\d{1,3})?)?\s*$",
                      description="hh:mm:ss, mm:ss or ss (seconds may have up to 3 decimals; "
                                  "inner parts below 60); empty = not set",
                      example=example)
    new_password = string(minLength=password_min, maxLength=MAX_PASSWORD_LENGTH,
                          description=f"at least PASSWORD_MIN_LENGTH ({password_min}) characters")
    prompt_body = obj({
        "version": string(minLength=1, maxLength=MAX_VERSION_LENGTH,
                          description="a label; surrounding spaces are trimmed"),
        "prompt": string(maxLength=MAX_PROMPT_LENGTH),
    }, closed=False)
    nullable_text = lambda limit: null(string(maxLength=limit))  # noqa: E731

    def active_prompt_ops(kind: str) -> dict:
        field = f"{kind}_prompt_id"
        return {
            f"admin.list_{kind}_prompts": op(
                f"List {kind} prompts, newest first", paginated=True,
                response=json_response(array(ref("Prompt")))),
            f"admin.create_{kind}_prompt": op(
                f"Create a {kind} prompt", ok=201, body=prompt_body,
                response=json_response(ref("PromptCreated"), "Created")),
            f"admin.get_active_{kind}_prompt": op(
                f"The active {kind} prompt", errors=(404,),
                response=json_response(ref("Prompt"))),
            f"admin.set_active_{kind}_prompt": op(
                f"Make a {kind} prompt the active one", errors=(404,),
                body=obj({field: {"anyOf": [INT_ID, DIGITS_ID]}}, closed=False),
                response=json_response(ref("ActivePromptSet"))),
        }

    download_document = dict(
        description="TXT, Markdown and Word (`/download/txt|md|word|docx/{id}`), or "
                    "subtitles from the transcript's timestamps (`/download/srt/{id}`, "
                    "`/download/vtt/{id}`): 404 when the engine gave none (the remote service).",
        response=attachment("text/plain", "text/markdown", DOCX, "application/x-subrip",
                            "text/vtt", description="the document as an attachment"))

    return {
        # Auth -----------------------------------------------------------------------------
        "auth.login": op(
            "Sign in", auth=False,
            body=obj({"username": string(minLength=1, maxLength=MAX_USERNAME_LENGTH),
                      "password": string(minLength=1, maxLength=MAX_PASSWORD_LENGTH)},
                     closed=False),
            errors=(429,),
            description="After too many failed sign-ins for an account or from an address, "
                        "429 with Retry-After until the lockout ends.",
            response=json_response(ref("Tokens")),
            extra_responses={401: json_response(ref("LoginFailure"),
                                                 "Bad username or password")}),
        "auth.refresh": op(
            "A new access token", description="Send the refresh token (not the access token) "
                                              "as the bearer token.",
            response=json_response(ref("AccessToken"))),
        "auth.logout": op(
            "Sign out: revoke the token sent (access or refresh)",
            description="Every token of the same sign-in is revoked with it. An optional body "
                        "`{\"refresh_token\"}` revokes that refresh token too (400 if it is not "
                        "one of the caller's refresh tokens).",
            body=obj({"refresh_token": string(maxLength=4096)}, required=[], closed=False),
            body_required=False,
            response=json_response(ref("Message"))),
        # User -----------------------------------------------------------------------------
        "user.process": op(
            "Submit a talk for transcription",
            description="Exactly one of `drive_link` and `file`. Returns at once; the job runs "
                        "in the background. A link's title and length are read first (at "
                        "most LINK_METADATA_TIMEOUT_SECONDS): a private, removed, live or too "
                        "long video, or a window past its end, is a 400 without a job.",
            form={"type": "object", "properties": {
                "drive_link": string(maxLength=2048, description=(
                    "a YouTube or Google Drive link"),
                    example="https://www.youtube.com/watch?v=dQw4w9WgXcQ"),
                "file": string(format="binary", description=(
                    f"an audio or video file (file name up to {MAX_FILENAME_LENGTH} "
                    f"characters, at most MAX_UPLOAD_MB = {upload_mb} MB)")),
                "start_time": time_field("00:01:00"),
                "end_time": time_field("01:05:30"),
                "language": string(maxLength=16, example="id", description=(
                    "the spoken language as a Whisper (ISO 639-1) code; absent: the admin "
                    "setting transcribe_language, or detection when unset; an unknown code "
                    "is a 400 that lists the valid ones")),
            }},
            errors=(429, 507),
            extra_responses={503: {**error_response(503), "description": (
                "New transcriptions are paused by the admins (setting transcribing_allowed), "
                "or the database is unavailable")}},
            response=json_response(ref("Submitted"))),
        "user.list_transcriptions": op(
            "The caller's transcriptions, newest first", paginated=True,
            response=json_response(array(ref("UserTranscription")))),
        "user.get_transcription": op(
            "One of the caller's transcriptions", errors=(400, 404),
            response=json_response(ref("UserTranscription"))),
        "user.cancel_transcription": op(
            "Cancel a transcription", errors=(400, 404, 409),
            extra_responses={202: json_response(ref("CancelResult"),
                                                "Cancelling: the running step stops soon")},
            response=json_response(ref("CancelResult"), "Cancelled")),
        "user.retry_transcription": op(
            "Resume a failed or cancelled transcription", errors=(400, 404, 409, 429, 503),
            response=json_response(ref("RetryResult"))),
        "user.download": op(
            "Download a document of the caller's transcription", errors=(400, 404),
            **download_document),
        "user.download_named": op(
            "Download a document of the caller's transcription (the link the lists give)",
            errors=(400, 404), **download_document),
        # Admin: users ---------------------------------------------------------------------
        "admin.list_users": op(
            "Every user with their transcription count", paginated=True,
            response=json_response(array(ref("UserSummary")))),
        "admin.create_user": op(
            "Create a user", ok=201,
            body=obj({
                "username": string(minLength=1, maxLength=MAX_NEW_USERNAME,
                                   pattern=r"^\s*[A-Za-z0-9._@-]+\s*$"),
                "password": new_password,
                "isAdmin": boolean(default=False, description="a JSON boolean only"),
            }, required=["username", "password"], closed=False),
            response=json_response(ref("Message"), "Created")),
        "admin.update_user": op(
            "Reset a password and/or grant or remove admin rights", errors=(404,),
            description="Resetting the password signs the user out everywhere. An admin cannot "
                        "remove their own rights, and the last admin keeps theirs.",
            body=obj({"password": new_password, "is_admin": boolean(),
                      "isAdmin": boolean(description="same as is_admin")},
                     required=[], closed=False,
                     anyOf=[{"required": ["password"]}, {"required": ["is_admin"]},
                            {"required": ["isAdmin"]}]),
            response=json_response(ref("UserUpdated"))),
        "admin.delete_user": op(
            "Delete a user with all their transcriptions, logs and files", errors=(400, 404),
            description="Admins are never deleted: 404 `{\"error\": \"User is admin\"}`.",
            response=json_response(ref("Message"))),
        # Admin: transcriptions, logs, stats ----------------------------------------------
        "admin.list_all_transcriptions": op(
            "Every transcription, newest first", paginated=ADMIN_PAGE_DEFAULT,
            response=json_response(array(ref("AdminTranscription")))),
        "admin.delete_transcription": op(
            "Delete a transcription, its logs and files", errors=(400, 404),
            response=json_response(ref("Message"))),
        "admin.admin_download": op(
            "Download a document of any transcription", errors=(400, 404),
            **download_document),
        "admin.admin_download_named": op(
            "Download a document of any transcription, the name segment ignored",
            errors=(400, 404), **download_document),
        "admin.list_logs": op(
            "Error logs, newest first", paginated=ADMIN_PAGE_DEFAULT,
            response=json_response(array(ref("ErrorLog")))),
        "admin.stats": op("Totals", response=json_response(ref("Stats"))),
        # Admin: prompts -------------------------------------------------------------------
        **active_prompt_ops("transcribe"),
        **active_prompt_ops("proofread"),
        # Admin: settings ------------------------------------------------------------------
        "admin.list_settings": op(
            "Every setting, by key", paginated=True,
            response=json_response(array(ref("Setting")))),
        "admin.create_setting": op(
            "Create a setting", ok=201,
            description="Keys the service reads are checked: transcribing_allowed and "
                        "proofreading_enabled take \"true\"/\"false\", the active prompt keys "
                        "an existing prompt id, proofread_model a model name, "
                        "transcribe_language a Whisper language code (empty: detect), "
                        "default_language en or id (messages without Accept-Language).",
            body=obj({
                "setting_key": string(minLength=1, maxLength=MAX_SETTING_KEY),
                "setting_value": nullable_text(MAX_SETTING_VALUE),
                "description": nullable_text(MAX_DESCRIPTION),
            }, required=["setting_key", "setting_value"], closed=False),
            response=json_response(ref("SettingChanged"), "Created")),
        "admin.update_setting": op(
            "Change a setting's value and/or description", errors=(404,),
            body=obj({
                "setting_key": string(description="may be sent, but must be the current key"),
                "setting_value": nullable_text(MAX_SETTING_VALUE),
                "description": nullable_text(MAX_DESCRIPTION),
            }, required=[], closed=False,
                anyOf=[{"required": ["setting_value"]}, {"required": ["description"]}]),
            response=json_response(ref("SettingChanged"))),
        "admin.delete_setting": op(
            "Delete a setting", errors=(400, 404),
            response=json_response(ref("Message"))),
        # Admin: system and the Word reference document -----------------------------------
        "admin.system_info": op(
            "What this server runs with (no secrets)", response=json_response(ref("SystemInfo"))),
        "admin.get_reference_docx": op(
            "The Word reference document (custom or default)",
            response=attachment(DOCX, description="reference.docx")),
        "admin.replace_reference_docx": op(
            "Replace the Word reference document",
            form={"type": "object", "required": ["file"], "properties": {
                "file": string(format="binary", description=(
                    f"a .docx of at most {MAX_REFERENCE_DOCX // (1024 * 1024)} MB"))}},
            response=json_response(ref("Message"))),
        "admin.reset_reference_docx": op(
            "Go back to the default Word reference document",
            response=json_response(ref("Message"))),
        # Operations (no token: load balancers and Prometheus) -----------------------------
        "ops.healthz": op(
            "Liveness: the process answers (touches nothing, not even the database)",
            auth=False, database=False, response=json_response(ref("Health"))),
        "ops.readyz": op(
            "Readiness: database, storage writable, ffmpeg, pandoc, transcription engine",
            auth=False, database=False,
            description="One entry per check; 503 (same shape) when any check fails.",
            response=json_response(ref("Readiness")),
            extra_responses={503: json_response(ref("Readiness"), "a check failed")}),
        "ops.metrics_text": op(
            "Prometheus metrics of every worker process",
            auth=False,
            response={"description": "Prometheus text exposition format 0.0.4",
                      "content": {"text/plain": {"schema": string()}}}),
        # This blueprint -------------------------------------------------------------------
        "openapi.spec": op(
            "This OpenAPI description", auth=False, database=False,
            response=json_response({"type": "object"})),
        "openapi.docs": op(
            "A page that renders this description", auth=False, database=False,
            response={"description": "HTML page",
                      "content": {"text/html": {"schema": string()}}}),
    }


# The generator -------------------------------------------------------------------------------

_ARGUMENT = re.compile(r"<(?:[a-zA-Z_][a-zA-Z0-9_]*(?:\([^)]*\))?:)?([a-zA-Z_][a-zA-Z0-9_]*)>")


def openapi_path(rule: Rule) -> str:
    """`/download/<file_type>/<transcription_id>` -> `/download/{file_type}/{transcription_id}`."""
    return _ARGUMENT.sub(r"{\1}", rule.rule)


def path_parameter(name: str) -> dict:
    # An unknown name still gets a schema; the tests insist on an entry in PATH_PARAMETERS.
    schema, description = PATH_PARAMETERS.get(name, (string(), None))
    parameter = {"name": name, "in": "path", "required": True, "schema": schema}
    if description:
        parameter["description"] = description
    return parameter


def _operation(rule: Rule, entry: dict | None) -> dict:
    endpoint = rule.endpoint
    blueprint = endpoint.split(".", 1)[0] if "." in endpoint else "app"
    operation: dict[str, Any] = {"operationId": endpoint, "tags": [blueprint]}
    parameters = [path_parameter(name) for name in _ARGUMENT.findall(rule.rule)]
    if entry is None:
        # Still listed, so the description stays complete; the tests refuse this marker.
        operation.update({
            "summary": f"{endpoint} (not described yet)", "x-undocumented": True,
            "responses": {"default": {"description": "undocumented",
                                      "content": {JSON: {"schema": {}}}}}})
        if parameters:
            operation["parameters"] = parameters
        return operation

    operation["summary"] = entry["summary"]
    if entry["description"]:
        operation["description"] = entry["description"]
    if entry["paginated"]:
        # True: the default page is the cap; a number: that default page size.
        default = None if entry["paginated"] is True else entry["paginated"]
        parameters += pagination_parameters(default)
    if parameters:
        operation["parameters"] = parameters
    if not entry["auth"]:
        operation["security"] = []

    codes = set(entry["errors"])
    if entry["auth"]:
        codes.add(401)
    if blueprint == "admin":
        codes.add(403)
    if entry["body"] is not None:
        operation["requestBody"] = {"required": entry["body_required"],
                                    "content": {JSON: {"schema": entry["body"]}}}
        codes |= {400, 413, 415}
    if entry["form"] is not None:
        operation["requestBody"] = {"required": True,
                                    "content": {"multipart/form-data": {"schema": entry["form"]}}}
        codes |= {400, 413}
    if entry["paginated"]:
        codes.add(400)
    if entry["database"]:
        codes |= {500, 503}

    responses: dict[str, dict] = {str(entry["ok"]): entry["response"]}
    for code in sorted(codes):
        responses[str(code)] = error_response(code)
    for code, response in entry["extra_responses"].items():
        responses[str(code)] = response
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def build_spec(app: Flask) -> dict:
    with app.app_context():
        table = operations()
        paths: dict[str, dict] = {}
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
            if rule.endpoint in EXCLUDED_ENDPOINTS:
                continue
            item = paths.setdefault(openapi_path(rule), {})
            for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
                item[method.lower()] = _operation(rule, table.get(rule.endpoint))
        return {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "Ezra API",
                "version": API_VERSION,
                "description": (
                    "Turns a talk into a clean document: submit a YouTube or Google Drive "
                    "link or a file, follow the job, download TXT, Markdown or Word. "
                    "Every error is JSON `{\"error\": \"...\"}` (a failed login keeps "
                    "`{\"msg\": \"...\"}`), in English or Indonesian: the best of "
                    "Accept-Language among en/id, else the admin setting default_language. "
                    "Generated from the registered routes."),
            },
            "tags": [{"name": "auth", "description": "Sign-in and tokens"},
                     {"name": "user", "description": "The signed-in user's jobs"},
                     {"name": "admin", "description": "Admins only (403 for others)"},
                     {"name": "openapi", "description": "This description"},
                     {"name": "ops", "description": "Health, readiness and metrics"}],
            "paths": paths,
            "components": {
                "securitySchemes": {"bearerAuth": {
                    "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                    "description": "the access_token from POST /login (POST /refresh takes "
                                   "the refresh_token)"}},
                "schemas": component_schemas(),
            },
            "security": [{"bearerAuth": []}],
        }


def documented_endpoints() -> frozenset[str]:
    """Endpoint names described in the table (needs an app context)."""
    return frozenset(operations())


def cached_spec(app: Flask) -> dict:
    spec = app.extensions.get("ezra_openapi")
    if spec is None:
        spec = app.extensions["ezra_openapi"] = build_spec(app)
    return spec


# Routes --------------------------------------------------------------------------------------

@bp.get("/openapi.json")
def spec():
    return jsonify(cached_spec(current_app._get_current_object()))


@bp.get("/docs")
def docs():
    response = Response(DOCS_HTML, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


DOCS_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:14px 24px;display:flex;gap:16px;align-items:center;
flex-wrap:wrap}
header h1{font-size:20px;margin:0}header input{flex:1;min-width:260px;padding:6px}
main{max-width:1100px;margin:0 auto;padding:16px 24px}
h2{margin:28px 0 8px;text-transform:capitalize}
details.op{background:#fff;border:1px solid #d8dce3;border-radius:6px;margin:6px 0}
details.op>summary{cursor:pointer;padding:8px 12px;display:flex;gap:12px;align-items:center}
.m{font:bold 12px monospace;color:#fff;border-radius:4px;padding:3px 0;width:64px;
text-align:center}
.get{background:#2f7dd1}.post{background:#2e9e5b}.put{background:#c98a14}
.patch{background:#7b5cc4}.delete{background:#c8413b}
.path{font-family:monospace;font-weight:600}.lock{margin-left:auto;color:#888;font-size:12px}
.body{padding:4px 16px 14px;border-top:1px solid #eef0f3}
pre{background:#f1f3f6;padding:8px;overflow:auto;font-size:12.5px;margin:4px 0}
table{border-collapse:collapse;font-size:13.5px}td,th{border:1px solid #e1e4ea;padding:3px 8px;
text-align:left}
.try label{display:block;margin:4px 0}.try input,.try textarea{font-family:monospace;width:100%;
box-sizing:border-box}
.try textarea{height:90px}.status{font-weight:bold}
"""

DOCS_SCRIPT = r"""
"use strict";
const $ = (tag, attrs, ...kids) => {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") el.className = v; else el.setAttribute(k, v);
  }
  for (const kid of kids) if (kid !== null && kid !== undefined)
    el.append(typeof kid === "string" ? document.createTextNode(kid) : kid);
  return el;
};
let spec = null;
function deref(schema) {
  let s = schema;
  while (s && s.$ref) s = s.$ref.split("/").slice(1).reduce((o, k) => o[k], spec);
  return s;
}
function shape(schema, depth) {
  const s = deref(schema);
  if (!s || depth > 6) return "any";
  const name = schema && schema.$ref ? schema.$ref.split("/").pop() + " " : "";
  const nul = s.nullable ? " | null" : "";
  if (s.anyOf) return s.anyOf.map(x => shape(x, depth + 1)).join(" | ") + nul;
  if (s.type === "array") return "[" + shape(s.items, depth + 1) + "]" + nul;
  if (s.type === "object" && s.properties) {
    const pad = "  ".repeat(depth + 1), req = new Set(s.required || []);
    const rows = Object.entries(s.properties).map(([k, v]) =>
      pad + k + (req.has(k) ? "" : "?") + ": " + shape(v, depth + 1));
    return name + "{\n" + rows.join(",\n") + "\n" + "  ".repeat(depth) + "}" + nul;
  }
  let t = s.type || "any";
  if (s.format) t += " (" + s.format + ")";
  if (s.enum) t += " one of " + s.enum.join("|");
  const lim = [];
  if (s.minLength !== undefined) lim.push("min " + s.minLength);
  if (s.maxLength !== undefined) lim.push("max " + s.maxLength);
  if (s.minimum !== undefined) lim.push(">= " + s.minimum);
  if (s.maximum !== undefined) lim.push("<= " + s.maximum);
  if (lim.length) t += " [" + lim.join(", ") + "]";
  return name + t + nul;
}
function tryForm(path, method, op) {
  const box = $("div", {class: "try"}, $("h4", {}, "Try it"));
  const inputs = {};
  for (const p of op.parameters || []) {
    const input = $("input", {placeholder: shape(p.schema, 0)});
    inputs[p.name] = [p, input];
    box.append($("label", {}, p.in + " " + p.name + (p.required ? " *" : ""), input));
  }
  const content = (op.requestBody || {}).content || {};
  let bodyInput = null, formInputs = null;
  if (content["application/json"]) {
    bodyInput = $("textarea", {}, "{}");
    box.append($("label", {}, "JSON body", bodyInput));
  } else if (content["multipart/form-data"]) {
    formInputs = {};
    const props = deref(content["multipart/form-data"].schema).properties || {};
    for (const [k, v] of Object.entries(props)) {
      const input = v.format === "binary" ? $("input", {type: "file"}) : $("input", {});
      formInputs[k] = input;
      box.append($("label", {}, "form " + k, input));
    }
  }
  const out = $("pre", {}), status = $("div", {class: "status"});
  const send = $("button", {}, "Send " + method.toUpperCase());
  send.addEventListener("click", async () => {
    let url = path;
    const query = new URLSearchParams();
    for (const [name, [p, input]] of Object.entries(inputs)) {
      if (p.in === "path") url = url.replace("{" + name + "}", encodeURIComponent(input.value));
      else if (input.value !== "") query.append(name, input.value);
    }
    if ([...query].length) url += "?" + query;
    const headers = {};
    const token = document.getElementById("token").value.trim();
    if (token) headers.Authorization = "Bearer " + token;
    let body;
    if (bodyInput) { headers["Content-Type"] = "application/json"; body = bodyInput.value; }
    if (formInputs) {
      body = new FormData();
      for (const [k, input] of Object.entries(formInputs)) {
        if (input.type === "file") { if (input.files[0]) body.append(k, input.files[0]); }
        else if (input.value !== "") body.append(k, input.value);
      }
    }
    status.textContent = "...";
    try {
      const r = await fetch(base + url.replace(/^\//, ""),
                            {method: method.toUpperCase(), headers, body});
      status.textContent = r.status + " " + (r.headers.get("Content-Type") || "");
      const type = r.headers.get("Content-Type") || "";
      if (type.includes("json")) out.textContent = JSON.stringify(await r.json(), null, 2);
      else if (type.startsWith("text/")) out.textContent = await r.text();
      else out.textContent = (await r.blob()).size + " bytes (" +
        (r.headers.get("Content-Disposition") || "no file name") + ")";
    } catch (e) { status.textContent = "request failed: " + e; }
  });
  box.append(send, status, out);
  return box;
}
function operation(path, method, op) {
  const secured = !(op.security && op.security.length === 0);
  const body = $("div", {class: "body"});
  if (op.description) body.append($("p", {}, op.description));
  if ((op.parameters || []).length) {
    const t = $("table", {}, $("tr", {}, $("th", {}, "parameter"), $("th", {}, "in"),
                                 $("th", {}, "schema"), $("th", {}, "notes")));
    for (const p of op.parameters)
      t.append($("tr", {}, $("td", {}, p.name + (p.required ? " *" : "")), $("td", {}, p.in),
               $("td", {}, shape(p.schema, 0)), $("td", {}, p.description || "")));
    body.append($("h4", {}, "Parameters"), t);
  }
  for (const [type, media] of Object.entries((op.requestBody || {}).content || {}))
    body.append($("h4", {}, "Request body (" + type + ")"), $("pre", {}, shape(media.schema, 0)));
  body.append($("h4", {}, "Responses"));
  for (const [code, resp0] of Object.entries(op.responses || {})) {
    const resp = deref(resp0);
    body.append($("div", {}, $("b", {}, code), " " + (resp.description || "")));
    for (const [type, media] of Object.entries(resp.content || {}))
      body.append($("pre", {}, type + "\n" + shape(media.schema, 0)));
  }
  body.append(tryForm(path, method, op));
  return $("details", {class: "op"},
    $("summary", {}, $("span", {class: "m " + method}, method.toUpperCase()),
      $("span", {class: "path"}, path), $("span", {}, op.summary || ""),
      $("span", {class: "lock"}, secured ? "bearer token" : "public")),
    body);
}
const base = location.pathname.replace(/docs\/?$/, "");
fetch(base + "openapi.json").then(r => r.json()).then(s => {
  spec = s;
  document.getElementById("title").textContent = s.info.title + " " + s.info.version;
  document.getElementById("about").textContent = s.info.description || "";
  const groups = {};
  for (const [path, item] of Object.entries(s.paths))
    for (const [method, op] of Object.entries(item))
      (groups[(op.tags || ["other"])[0]] ||= []).push([path, method, op]);
  const main = document.getElementById("ops");
  for (const tag of (s.tags || []).map(t => t.name).concat(Object.keys(groups)))
    if (groups[tag]) {
      main.append($("h2", {}, tag));
      for (const [path, method, op] of groups[tag]) main.append(operation(path, method, op));
      delete groups[tag];
    }
}).catch(e => {
  document.getElementById("about").textContent = "Could not load openapi.json: " + e;
});
"""


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


DOCS_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Ezra API</title><style>{DOCS_STYLE}</style></head>
<body><header><h1 id="title">Ezra API</h1>
<input id="token" type="password" autocomplete="off"
 placeholder="access token for 'Try it' (kept in this page only)"></header>
<main><p id="about">Loading openapi.json ...</p><div id="ops"></div></main>
<script>{DOCS_SCRIPT}</script></body></html>
"""

# Only this page's own inline style and script may run; requests go to this server only.
DOCS_CSP = ("default-src 'none'; connect-src 'self'; img-src 'self' data:; "
            f"style-src {_csp_hash(DOCS_STYLE)}; script-src {_csp_hash(DOCS_SCRIPT)}; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

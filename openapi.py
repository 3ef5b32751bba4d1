"""The OpenAPI 3 description of the API, generated from the registered routes.

`GET /openapi.json` walks `current_app.url_map`: every rule becomes a path (`<name>` ->
`{name}`), every method an operation tagged with its blueprint. What a route takes and
answers is written beside its view with `@documented(...)` (user_routes, admin_routes,
auth_routes, ops_routes, this module); a route without one still appears (marked
`x-undocumented`) and tests/test_openapi.py fails, so a new route cannot be forgotten.
This module holds the schema helpers, the shared component schemas and the generator.
`GET /docs` is Swagger UI from the swagger-ui-bundle package, served from this server
(no CDN: the servers have no internet).

The shapes mirror serializers.py exactly (`additionalProperties: false`), so the schemathesis
run in the tests notices a response key that is added without being described here.
"""
from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path
from typing import Any, Callable

import swagger_ui_bundle
from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.routing import Rule

from limits import MAX_INT_ID
from models import FINAL_STATUSES, JobStatus

# Swagger UI's own files (CSS, JavaScript) at /docs/<file>: the page's assets, not the API.
bp = Blueprint("openapi", __name__, static_folder=swagger_ui_bundle.swagger_ui_path,
               static_url_path="/docs")

OPENAPI_VERSION = "3.0.3"
API_VERSION = "1.0"

# Endpoints that exist but are not part of the API: Flask's static files (when a folder
# exists), Swagger UI's files at /docs/<file>, and the web page at `/` with its files
# (web_page.py).
EXCLUDED_ENDPOINTS = frozenset({"static", "openapi.static", "web.page", "web.asset"})
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
                      "total_errors": integer(minimum=0),
                      "reused_transcriptions": integer(minimum=0, description=(
                          "jobs that took an earlier job's transcript or proofreading")),
                      "reuse_saved_audio_minutes": number(minimum=0, description=(
                          "audio not transcribed again thanks to reuse")),
                      "reuse_saved_llm_tokens": integer(minimum=0, description=(
                          "proofreading tokens not paid again thanks to reuse")),
                      "llm_tokens_used": integer(minimum=0, description=(
                          "proofreading tokens paid (the LLM's reported usage)"))}),
        # Webhooks (webhook_routes.py) ---------------------------------------------------
        "Webhook": obj({"url": string(), "created_at": TIMESTAMP, "updated_at": TIMESTAMP}),
        "WebhookSet": obj({
            "url": string(), "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
            "secret": null(string(description=(
                "the signing secret, shown only when the webhook is created or the secret "
                "rotated; null: unchanged"))),
            "message": string()}),
        "AdminWebhook": obj({"url": string(), "created_at": TIMESTAMP,
                             "updated_at": TIMESTAMP, "user_id": integer()}),
        "WebhookDelivery": obj({
            "id": integer(),
            "user_id": integer(),
            "transcription_id": null(UUID),
            "event": string(enum=["transcription.completed", "transcription.failed"]),
            "url": string(description="where the last attempt went"),
            "status": string(enum=["pending", "delivered", "failed"]),
            "attempts": integer(minimum=0),
            "next_attempt_at": TIMESTAMP,
            "last_status_code": null(integer()),
            "last_error": null(string()),
            "created_at": TIMESTAMP,
            "finished_at": TIMESTAMP,
            "log": array(obj({"attempt": integer(minimum=1), "status_code": null(integer()),
                              "error": null(string()), "duration_ms": integer(minimum=0),
                              "created_at": TIMESTAMP})),
        }),
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


# The entry beside each view ------------------------------------------------------------------

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


def documented(summary: str, **facts: Any) -> Callable[[Callable], Callable]:
    """A route's OpenAPI entry, written beside its view: `op()`'s keywords. A fact that depends
    on the app's configuration (a minimum password length, the upload cap) is given as a
    function of `app.config`; it is called when the description is built.

    Put it right under the `@bp.get(...)` line, so it marks the function Flask registers."""
    def attach(view: Callable) -> Callable:
        view.openapi_entry = (summary, facts)  # type: ignore[attr-defined]
        return view
    return attach


def entry_of(view: Callable, config) -> dict | None:
    """The view's operation with its configuration-dependent facts filled in; None when the
    view carries no entry."""
    marked = getattr(view, "openapi_entry", None)
    if marked is None:
        return None
    summary, facts = marked
    return op(summary, **{key: value(config) if callable(value) else value
                          for key, value in facts.items()})


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
        paths: dict[str, dict] = {}
        for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
            if rule.endpoint in EXCLUDED_ENDPOINTS:
                continue
            item = paths.setdefault(openapi_path(rule), {})
            entry = entry_of(app.view_functions[rule.endpoint], app.config)
            for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
                item[method.lower()] = _operation(rule, entry)
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


def documented_endpoints(app: Flask) -> frozenset[str]:
    """Endpoint names whose view carries an entry (`@documented`)."""
    return frozenset(endpoint for endpoint, view in app.view_functions.items()
                     if hasattr(view, "openapi_entry"))


def cached_spec(app: Flask) -> dict:
    spec = app.extensions.get("ezra_openapi")
    if spec is None:
        spec = app.extensions["ezra_openapi"] = build_spec(app)
    return spec


# Routes --------------------------------------------------------------------------------------

@bp.get("/openapi.json")
@documented("This OpenAPI description", auth=False, database=False,
            response=json_response({"type": "object"}))
def spec():
    return jsonify(cached_spec(current_app._get_current_object()))


@bp.get("/docs")
@documented("A page that renders this description", auth=False, database=False,
            response={"description": "HTML page",
                      "content": {"text/html": {"schema": string()}}})
def docs():
    response = Response(DOCS_HTML, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _csp_hash(source: str) -> str:
    digest = hashlib.sha256(source.encode()).digest()
    return "'sha256-" + base64.b64encode(digest).decode() + "'"


# The page is Swagger UI from the swagger-ui-bundle package (no CDN: the servers have no
# internet), its files served by this blueprint under /docs/; the page's one inline script
# starts it on ./openapi.json.
DOCS_HTML = (Path(__file__).resolve().parent / "assets" / "docs.html").read_text()
_DOCS_SCRIPT = re.search(r"<script>(.*?)</script>", DOCS_HTML, re.S).group(1)
# Only the bundle's files and the page's own script may run; requests go to this server only.
DOCS_CSP = ("default-src 'none'; connect-src 'self'; img-src 'self' data:; style-src 'self'; "
            f"script-src 'self' {_csp_hash(_DOCS_SCRIPT)}; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

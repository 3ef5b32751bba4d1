"""Admin routes under /admin. The guard covers the whole blueprint, so no route can forget it."""
from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from flask import Blueprint, current_app, jsonify, request, send_file
from flask_jwt_extended import current_user, verify_jwt_in_request
from sqlalchemy import bindparam, delete, func, select

import accounts
import local_whisper
from database import db, reader, reads_on_request_connection
from errors import APIError
from limits import (ADMIN_PAGE_DEFAULT, MAX_DESCRIPTION, MAX_PROMPT_LENGTH, MAX_REFERENCE_DOCX,
                    MAX_REFERENCE_DOCX_ENTRIES, MAX_REFERENCE_DOCX_UNPACKED, MAX_SETTING_KEY,
                    MAX_SETTING_VALUE, MAX_NEW_USERNAME, MAX_PASSWORD_LENGTH,
                    MAX_VERSION_LENGTH)
from models import (REFERENCE_DOCX_ASSET, SETTING_ACTIVE_PROOFREAD_PROMPT,
                    SETTING_ACTIVE_TRANSCRIBE_PROMPT, SETTING_TRANSCRIBING_ALLOWED, AppAsset,
                    ErrorLog, ProofreadPrompt, SystemSetting, TranscribePrompt, Transcription,
                    User)
from openapi import (DIGITS_ID, DOCX, INT_ID, array, attachment, boolean, documented,
                     json_response, null, obj, ref, string)
from pandoc_service import DEFAULT_REFERENCE_DOCX, PandocError, markdown_to_docx
from serializers import (ERROR_LOG_PAGE, admin_transcription, error_logs, json_with_times, prompt,
                         setting, transcription_page, user_summary)
from storage import remove_job_files, remove_legacy_documents
from system_settings import (SETTING_PROOFREAD_MODEL, SETTING_PROOFREADING_ENABLED, active_prompt,
                             get_flag, get_setting, set_setting, validate_setting_value)
from user_routes import DOWNLOAD_DOCUMENT, MIME_TYPES, document_answer
from validation import (bool_field, document_kind, int_id, json_body, pagination, string_field,
                        uuid_id)

bp = Blueprint("admin", __name__, url_prefix="/admin")


def _password_schema(config) -> dict:
    """A password an admin may set (sign-in accepts any stored one)."""
    minimum = config["PASSWORD_MIN_LENGTH"]
    return string(minLength=minimum, maxLength=MAX_PASSWORD_LENGTH,
                  description=f"at least PASSWORD_MIN_LENGTH ({minimum}) characters")


def _nullable_text(limit: int) -> dict:
    return null(string(maxLength=limit))


@bp.before_request
def require_admin():
    if request.method == "OPTIONS":
        return None  # Flask's automatic answer lists the allowed methods; no data
    verify_jwt_in_request()
    if not current_user.is_admin:
        raise APIError(403, "Admin access required")


# Users -------------------------------------------------------------------------------------

# Only the columns the answer needs (no password hashes), counted per user by index. Built
# once: constructing a statement costs more CPU than running it.
_USER_PAGE = (
    select(User.__table__.c["id", "username", "is_admin", "created_at"],
           select(func.count()).where(Transcription.__table__.c.user_id == User.__table__.c.id)
           .correlate(User.__table__).scalar_subquery().label("transcription_count"))
    .order_by(User.__table__.c.id).limit(bindparam("limit")).offset(bindparam("offset")))


@bp.get("/users")
@documented("Every user with their transcription count", paginated=True,
            response=json_response(array(ref("UserSummary"))))
def list_users():
    limit, offset = pagination()
    rows = reader().execute(_USER_PAGE, {"limit": limit, "offset": offset}).all()
    return json_with_times([user_summary(row) for row in rows])


@bp.post("/users")
@documented(
    "Create a user", ok=201,
    body=lambda config: obj({
        "username": string(minLength=1, maxLength=MAX_NEW_USERNAME,
                           pattern=r"^\s*[A-Za-z0-9._@-]+\s*$"),
        "password": _password_schema(config),
        "isAdmin": boolean(default=False, description="a JSON boolean only"),
    }, required=["username", "password"], closed=False),
    response=json_response(ref("Message"), "Created"))
def create_user():
    data = json_body()
    username = accounts.new_username(data)
    password = accounts.new_password(data)
    is_admin = bool_field(data, "isAdmin", default=False)
    accounts.create_user(username, password, is_admin=is_admin)
    return jsonify(message=f"User {username} created"), 201


@bp.patch("/users/<user_id>")
@documented(
    "Reset a password and/or grant or remove admin rights", errors=(404,),
    description="Resetting the password signs the user out everywhere. An admin cannot "
                "remove their own rights, and the last admin keeps theirs.",
    body=lambda config: obj({"password": _password_schema(config), "is_admin": boolean(),
                             "isAdmin": boolean(description="same as is_admin")},
                            required=[], closed=False,
                            anyOf=[{"required": ["password"]}, {"required": ["is_admin"]},
                                   {"required": ["isAdmin"]}]),
    response=json_response(ref("UserUpdated")))
def update_user(user_id: str):
    user = _get_or_404(User, int_id(user_id, "user id"), "User")
    data = json_body()
    if not data.keys() & {"password", "is_admin", "isAdmin"}:
        raise APIError(400, "Send 'password' and/or 'is_admin'")
    if "password" in data:
        accounts.set_password(user, accounts.new_password(data))
    for key in ("is_admin", "isAdmin"):
        if key in data:
            make_admin = bool_field(data, key)
            if not make_admin and user.is_admin:
                _check_can_lose_admin(user)
            user.is_admin = make_admin
    db.session.commit()
    return jsonify(message=f"User {user.username} updated", is_admin=bool(user.is_admin))


def _check_can_lose_admin(user: User) -> None:
    if user.id == current_user.id:
        raise APIError(400, "You cannot remove your own admin rights")
    admins = db.session.execute(
        select(func.count()).select_from(User).where(User.is_admin.is_(True))).scalar_one()
    if admins <= 1:
        raise APIError(400, "The last admin cannot lose admin rights")


@bp.delete("/users/<user_id>")
@documented("Delete a user with all their transcriptions, logs and files", errors=(400, 404),
            description="Admins are never deleted: 404 `{\"error\": \"User is admin\"}`.",
            response=json_response(ref("Message")))
def delete_user(user_id: str):
    user = _get_or_404(User, int_id(user_id, "user id"), "User")
    if user.is_admin:
        # The contract keeps the original answer; it also protects oneself and the last admin.
        raise APIError(404, "User is admin")
    jobs = db.session.execute(select(
        Transcription.id, Transcription.txt_document_path, Transcription.md_document_path,
        Transcription.word_document_path).where(Transcription.user_id == user.id)).all()
    db.session.delete(user)  # ON DELETE CASCADE takes their jobs, documents and logs
    db.session.commit()
    for job_id, *legacy_paths in jobs:
        remove_job_files(job_id)
        remove_legacy_documents(*legacy_paths)
    return jsonify(message=f"User {user.username} deleted")


# Transcriptions ----------------------------------------------------------------------------

@bp.get("/transcriptions")
@documented("Every transcription, newest first", paginated=ADMIN_PAGE_DEFAULT,
            response=json_response(array(ref("AdminTranscription"))))
def list_all_transcriptions():
    limit, offset = pagination(default=ADMIN_PAGE_DEFAULT)
    rows = reader().execute(transcription_page("all"), {"limit": limit, "offset": offset}).all()
    return json_with_times([admin_transcription(row) for row in rows])


@bp.delete("/transcriptions/<transcription_id>")
@documented("Delete a transcription, its logs and files", errors=(400, 404),
            response=json_response(ref("Message")))
def delete_transcription(transcription_id: str):
    job = _get_or_404(Transcription, uuid_id(transcription_id), "Transcription")
    legacy_paths = (job.txt_document_path, job.md_document_path, job.word_document_path)
    db.session.delete(job)  # ON DELETE CASCADE takes its documents, chunks and logs
    db.session.commit()
    remove_job_files(job.id)
    remove_legacy_documents(*legacy_paths)
    return jsonify(message="Transcription deleted")


@bp.get("/download/<file_type>/<transcription_id>")
@documented("Download a document of any transcription", errors=(400, 404), **DOWNLOAD_DOCUMENT)
def admin_download(file_type: str, transcription_id: str):
    return document_answer(document_kind(file_type), uuid_id(transcription_id))


@bp.get("/download/<file_type>/<transcription_id>/<file_name>")
@documented("Download a document of any transcription, the name segment ignored",
            errors=(400, 404), **DOWNLOAD_DOCUMENT)
def admin_download_named(file_type: str, transcription_id: str, file_name: str):
    return admin_download(file_type, transcription_id)


# Logs and stats ----------------------------------------------------------------------------

@bp.get("/logs")
@documented("Error logs, newest first", paginated=ADMIN_PAGE_DEFAULT,
            response=json_response(array(ref("ErrorLog"))))
def list_logs():
    limit, offset = pagination(default=ADMIN_PAGE_DEFAULT)
    return json_with_times(error_logs(reader().execute(
        ERROR_LOG_PAGE, {"limit": limit, "offset": offset}).all()))


_JOBS = Transcription.__table__.c
# What reuse (reuse.py) saved and the LLM tokens paid: one row, joined to the counts so the
# dashboard's stats stay one statement.
# Each sum reads only the rows its partial index holds (models.Transcription).
_REUSE = select(func.count(_JOBS.reused_from).label("reused"),
                func.sum(_JOBS.reused_audio_seconds).label("saved_seconds"),
                func.sum(_JOBS.reused_tokens).label("saved_tokens")).where(
    _JOBS.reused_from.is_not(None)).subquery("reuse")
_TOKENS = select(func.sum(_JOBS.proofread_tokens)).where(
    _JOBS.proofread_tokens.is_not(None)).scalar_subquery()
_COUNTS = select(*[select(func.count()).select_from(model.__table__).scalar_subquery()
                   for model in (User, Transcription, ErrorLog)],
                 _REUSE.c.reused, _REUSE.c.saved_seconds, _REUSE.c.saved_tokens,
                 _TOKENS).select_from(_REUSE)


@bp.get("/stats")
@documented("Totals, and what reuse of finished work saved", response=json_response(ref("Stats")))
def stats():
    (users, transcriptions, errors, reused, saved_seconds, saved_tokens,
     tokens) = reader().execute(_COUNTS).one()
    return jsonify(total_users=users, total_transcriptions=transcriptions, total_errors=errors,
                   reused_transcriptions=reused,
                   reuse_saved_audio_minutes=round((saved_seconds or 0) / 60, 1),
                   reuse_saved_llm_tokens=int(saved_tokens or 0),
                   llm_tokens_used=int(tokens or 0))


# The dashboard's lists and the downloads read plain rows only: no ORM session for them.
reads_on_request_connection("admin.list_users", "admin.list_all_transcriptions",
                            "admin.list_logs", "admin.stats", "admin.admin_download",
                            "admin.admin_download_named")


# Prompts -----------------------------------------------------------------------------------

def _prompt_routes(path: str, model, setting_key: str, id_field: str) -> None:
    """The four prompt routes, identical for transcribe and proofread prompts."""
    label = model.__tablename__

    def list_prompts():
        limit, offset = pagination()
        rows = db.session.execute(select(model).order_by(model.id.desc())
                                  .limit(limit).offset(offset)).scalars()
        return jsonify([prompt(p) for p in rows])

    def create_prompt():
        data = json_body()
        version = string_field(data, "version", max_length=MAX_VERSION_LENGTH)
        text = string_field(data, "prompt", max_length=MAX_PROMPT_LENGTH, min_length=0,
                            strip=False)
        item = model(version=version, prompt=text)
        db.session.add(item)
        db.session.commit()
        return jsonify(prompt(item) | {"message": "Prompt created"}), 201

    def get_active():
        item = active_prompt(model)
        if item is None:
            raise APIError(404, "No active prompt is set")
        return jsonify(prompt(item))

    def set_active():
        data = json_body()
        if id_field not in data:
            raise APIError(400, f"'{id_field}' is required")
        prompt_id = int_id(data[id_field], f"'{id_field}'")
        item = _get_or_404(model, prompt_id, "Prompt")
        set_setting(setting_key, str(item.id), description=f"Active prompt from {label}")
        db.session.commit()
        return jsonify(message="Active prompt updated", prompt=prompt(item))

    name = label.replace("_prompts", "")
    list_prompts = documented(
        f"List {name} prompts, newest first", paginated=True,
        response=json_response(array(ref("Prompt"))))(list_prompts)
    create_prompt = documented(
        f"Create a {name} prompt", ok=201, body=obj({
            "version": string(minLength=1, maxLength=MAX_VERSION_LENGTH,
                              description="a label; surrounding spaces are trimmed"),
            "prompt": string(maxLength=MAX_PROMPT_LENGTH),
        }, closed=False),
        response=json_response(ref("PromptCreated"), "Created"))(create_prompt)
    get_active = documented(
        f"The active {name} prompt", errors=(404,),
        response=json_response(ref("Prompt")))(get_active)
    set_active = documented(
        f"Make a {name} prompt the active one", errors=(404,),
        body=obj({id_field: {"anyOf": [INT_ID, DIGITS_ID]}}, closed=False),
        response=json_response(ref("ActivePromptSet")))(set_active)
    bp.add_url_rule(f"/{path}", f"list_{name}_prompts", list_prompts, methods=["GET"])
    bp.add_url_rule(f"/{path}", f"create_{name}_prompt", create_prompt, methods=["POST"])
    bp.add_url_rule(f"/settings/active-{name}-prompt", f"get_active_{name}_prompt", get_active,
                    methods=["GET"])
    bp.add_url_rule(f"/settings/active-{name}-prompt", f"set_active_{name}_prompt", set_active,
                    methods=["POST"])


_prompt_routes("transcribe-prompts", TranscribePrompt, SETTING_ACTIVE_TRANSCRIBE_PROMPT,
               "transcribe_prompt_id")
_prompt_routes("proofread-prompts", ProofreadPrompt, SETTING_ACTIVE_PROOFREAD_PROMPT,
               "proofread_prompt_id")


# Settings ----------------------------------------------------------------------------------

@bp.get("/settings")
@documented("Every setting, by key", paginated=True,
            response=json_response(array(ref("Setting"))))
def list_settings():
    limit, offset = pagination()
    rows = db.session.execute(select(SystemSetting).order_by(SystemSetting.setting_key)
                              .limit(limit).offset(offset)).scalars()
    return jsonify([setting(s) for s in rows])


def _setting_value(data: dict, key: str, required: bool) -> str | None:
    value = string_field(data, "setting_value", max_length=MAX_SETTING_VALUE, min_length=0,
                         required=required, allow_null=True)
    problem = validate_setting_value(key, value)
    if problem:
        raise APIError(400, problem)
    return value


@bp.post("/settings")
@documented(
    "Create a setting", ok=201,
    description="Keys the service reads are checked: transcribing_allowed and "
                "proofreading_enabled take \"true\"/\"false\", the active prompt keys "
                "an existing prompt id, proofread_model a model name, "
                "transcribe_language a Whisper language code (empty: detect), "
                "default_language en or id (messages without Accept-Language).",
    body=obj({
        "setting_key": string(minLength=1, maxLength=MAX_SETTING_KEY),
        "setting_value": _nullable_text(MAX_SETTING_VALUE),
        "description": _nullable_text(MAX_DESCRIPTION),
    }, required=["setting_key", "setting_value"], closed=False),
    response=json_response(ref("SettingChanged"), "Created"))
def create_setting():
    data = json_body()
    key = string_field(data, "setting_key", max_length=MAX_SETTING_KEY)
    value = _setting_value(data, key, required=True)
    description = string_field(data, "description", max_length=MAX_DESCRIPTION, required=False,
                               min_length=0, allow_null=True)
    if db.session.execute(select(SystemSetting.id).where(SystemSetting.setting_key == key)).first():
        raise APIError(400, f"The setting {key!r} already exists; use PUT /admin/settings/<id>")
    item = SystemSetting(setting_key=key, setting_value=value, description=description)
    db.session.add(item)
    db.session.commit()
    return jsonify(setting(item) | {"message": "Setting created"}), 201


@bp.put("/settings/<setting_id>")
@documented(
    "Change a setting's value and/or description", errors=(404,),
    body=obj({
        "setting_key": string(description="may be sent, but must be the current key"),
        "setting_value": _nullable_text(MAX_SETTING_VALUE),
        "description": _nullable_text(MAX_DESCRIPTION),
    }, required=[], closed=False,
        anyOf=[{"required": ["setting_value"]}, {"required": ["description"]}]),
    response=json_response(ref("SettingChanged")))
def update_setting(setting_id: str):
    item = _get_or_404(SystemSetting, int_id(setting_id, "setting id"), "Setting")
    data = json_body()
    if not data.keys() & {"setting_value", "description"}:
        raise APIError(400, "Send 'setting_value' and/or 'description'")
    if "setting_key" in data and data["setting_key"] != item.setting_key:
        raise APIError(400, "A setting's key cannot be changed; create a new setting instead")
    if "setting_value" in data:
        item.setting_value = _setting_value(data, item.setting_key, required=True)
    if "description" in data:
        item.description = string_field(data, "description", max_length=MAX_DESCRIPTION,
                                        required=False, min_length=0, allow_null=True)
    db.session.commit()
    return jsonify(setting(item) | {"message": "Setting updated"})


@bp.delete("/settings/<setting_id>")
@documented("Delete a setting", errors=(400, 404), response=json_response(ref("Message")))
def delete_setting(setting_id: str):
    item = _get_or_404(SystemSetting, int_id(setting_id, "setting id"), "Setting")
    db.session.delete(item)
    db.session.commit()
    return jsonify(message=f"Setting {item.setting_key} deleted")


# Engine, proofreader and the Word reference document ---------------------------------------

@bp.get("/system")
@documented("What this server runs with (no secrets)", response=json_response(ref("SystemInfo")))
def system_info():
    """What this server runs with (no secrets): shown to admins."""
    config = current_app.config
    model = get_setting(SETTING_PROOFREAD_MODEL) or config["PROOFREAD_MODEL"]
    return jsonify(
        transcribe_engine=config["TRANSCRIBE_ENGINE"],
        transcribe_model=transcribe_model_info(config),
        proofreader_configured=bool(config["DEEPSEEK_BASE_URL"] and config["DEEPSEEK_API_KEY"]),
        proofreading_enabled=get_flag(SETTING_PROOFREADING_ENABLED, default=True),
        proofread_model=model,
        transcribing_allowed=get_flag(SETTING_TRANSCRIBING_ALLOWED, default=True),
        custom_reference_docx=db.session.get(AppAsset, REFERENCE_DOCX_ASSET) is not None,
    )


def transcribe_model_info(config) -> dict:
    """The model behind the engine, where it comes from, and (local) how it runs; cheap:
    nothing is loaded or joined to answer."""
    engine = config["TRANSCRIBE_ENGINE"]
    if engine == "local":
        return local_whisper.model_choice(config).describe()
    unknown = {"device": None, "compute_type": None, "threads": None, "loaded": None}
    if engine == "openai":
        return {"model": config["OPENAI_TRANSCRIBE_MODEL"],
                "model_source": "OpenAI-compatible service at "
                                + (config["OPENAI_TRANSCRIBE_BASE_URL"] or "api.openai.com"),
                **unknown}
    return {"model": None, "model_source": "the private Whisper service (TRANSCRIBE_API_URL)",
            **unknown}


@bp.get("/reference-docx")
@documented("The Word reference document (custom or default)",
            response=attachment(DOCX, description="reference.docx"))
def get_reference_docx():
    custom = db.session.get(AppAsset, REFERENCE_DOCX_ASSET)
    content = custom.content if custom else DEFAULT_REFERENCE_DOCX.read_bytes()
    return send_file(io.BytesIO(content), mimetype=MIME_TYPES["docx"], as_attachment=True,
                     download_name="reference.docx")


@bp.put("/reference-docx")
@documented(
    "Replace the Word reference document",
    form={"type": "object", "required": ["file"], "properties": {
        "file": string(format="binary", description=(
            f"a .docx of at most {MAX_REFERENCE_DOCX // (1024 * 1024)} MB"))}},
    response=json_response(ref("Message")))
def replace_reference_docx():
    upload = request.files.get("file")
    if upload is None:
        raise APIError(400, "Send the .docx as multipart field 'file'")
    content = upload.read(MAX_REFERENCE_DOCX + 1)
    if len(content) > MAX_REFERENCE_DOCX:
        raise APIError(400, "The reference document must be at most 10 MB")
    if not _is_docx(content):
        raise APIError(400, "The file is not a Word .docx document")
    _check_reference_docx(content)
    db.session.merge(AppAsset(name=REFERENCE_DOCX_ASSET, content=content))
    db.session.commit()
    return jsonify(message="Reference document replaced; new Word documents use it")


@bp.delete("/reference-docx")
@documented("Go back to the default Word reference document",
            response=json_response(ref("Message")))
def reset_reference_docx():
    db.session.execute(delete(AppAsset).where(AppAsset.name == REFERENCE_DOCX_ASSET))
    db.session.commit()
    return jsonify(message="Reference document reset to the default")


def _is_docx(content: bytes) -> bool:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            return "word/document.xml" in archive.namelist()
    except zipfile.BadZipFile:
        return False


def _check_reference_docx(content: bytes) -> None:
    """Every later job converts with this file: refuse one that is a zip bomb, has absurdly
    many parts, or that Pandoc cannot use (tried on a short document)."""
    total = 0
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_REFERENCE_DOCX_ENTRIES:
                raise APIError(400, f"The reference document has {len(entries)} parts; a Word "
                                    f"document has far fewer (limit {MAX_REFERENCE_DOCX_ENTRIES})")
            for entry in entries:
                with archive.open(entry) as part:  # the real bytes, whatever the header says
                    while chunk := part.read(1024 * 1024):
                        total += len(chunk)
                        if total > MAX_REFERENCE_DOCX_UNPACKED:
                            raise APIError(400, "The reference document unpacks to more than "
                                                f"{MAX_REFERENCE_DOCX_UNPACKED // 2**20} MB")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError,
            RuntimeError, OSError):  # a corrupt or encrypted part
        raise APIError(400, "The reference document is damaged (a part cannot be read)") from None
    with tempfile.TemporaryDirectory(prefix="ezra-reference-") as tmp:
        reference = Path(tmp) / "reference.docx"
        reference.write_bytes(content)
        try:
            markdown_to_docx("# Heading\n\nA paragraph with *emphasis*.\n\n- a list\n",
                             reference)
        except PandocError as exc:
            raise APIError(400, "Word documents cannot be made with this reference document; "
                                f"Pandoc says: {str(exc)[:300]}") from None


def _get_or_404(model, ident, label: str):
    item = db.session.get(model, ident)
    if item is None:
        raise APIError(404, f"{label} not found")
    return item

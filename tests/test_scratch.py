"""Issue 8, item 3: scratch of final jobs is swept after the admin-set retention, orphaned
temporary files of killed uploads are swept, and each user's scratch bytes are capped."""
from __future__ import annotations

import io
import os
import time
import uuid
from datetime import timedelta

from conftest import bearer, login
from database import db
from models import SystemSetting, Transcription, utcnow


def _job(app, user_id, status, age_hours, size=1000):
    from storage import job_dir
    with app.app_context():
        job = Transcription(id=uuid.uuid4(), user_id=user_id, status=status,
                            source_type="upload")
        db.session.add(job)
        db.session.commit()
        job.updated_at = utcnow() - timedelta(hours=age_hours)
        db.session.commit()
        folder = job_dir(job.id, create=True)
        (folder / "source.upload").write_bytes(b"\0" * size)
        return folder


def _age(path, hours):
    stamp = time.time() - hours * 3600
    os.utime(path, (stamp, stamp))


def test_sweep_removes_old_final_scratch_orphans_and_dead_uploads(app, user):
    import scratch
    from storage import storage_root, upload_tmp_dir
    old_failed = _job(app, user.id, "error", 25)
    old_cancelled = _job(app, user.id, "cancelled", 30)
    recent_failed = _job(app, user.id, "error", 2)
    old_running = _job(app, user.id, "transcribing", 48)
    with app.app_context():
        orphan = storage_root() / "jobs" / str(uuid.uuid4())
        orphan.mkdir(parents=True)
        (orphan / "source.upload").write_bytes(b"x")
        _age(orphan, 2)
        accepting = storage_root() / "jobs" / str(uuid.uuid4())  # an upload being accepted
        accepting.mkdir()
        dead_upload = upload_tmp_dir() / "upload-dead"
        dead_upload.write_bytes(b"x" * 100)
        _age(dead_upload, 2)
        live_upload = upload_tmp_dir() / "upload-live"
        live_upload.write_bytes(b"x")
        assert scratch.sweep() == {"final": 2, "orphaned": 1, "incoming": 1}
    assert not old_failed.exists() and not old_cancelled.exists() and not orphan.exists()
    assert recent_failed.exists() and old_running.exists() and accepting.exists()
    assert not dead_upload.exists() and live_upload.exists()


def test_admins_set_the_retention(app, client, user, admin_headers):
    import scratch
    failed = _job(app, user.id, "error", 2)
    response = client.post("/admin/settings", headers=admin_headers,
                           json={"setting_key": "scratch_retention_hours", "setting_value": "1"})
    assert response.status_code == 201, response.get_json()
    with app.app_context():
        assert scratch.sweep()["final"] == 1
    assert not failed.exists()
    bad = client.post("/admin/settings", headers=admin_headers,
                      json={"setting_key": "scratch_retention_hours", "setting_value": "soon"})
    assert bad.status_code == 400
    assert "whole number of hours" in bad.get_json()["error"]


def test_the_sweep_command(app, user):
    failed = _job(app, user.id, "cancelled", 100)
    result = app.test_cli_runner().invoke(args=["sweep-scratch"])
    assert result.exit_code == 0 and "final=1" in result.output
    assert not failed.exists()


def test_a_user_cannot_fill_the_disk_with_failed_uploads(make_app, make_user, tmp_path):
    app = make_app(MAX_SCRATCH_MB_PER_USER=1)
    alice = make_user("alice")
    make_user("bob")
    _job(app, alice.id, "error", 0, size=900 * 1024)
    client = app.test_client()
    response = client.post("/process", headers=bearer(login(client, "alice")),
                           content_type="multipart/form-data",
                           data={"file": (io.BytesIO(b"\0" * (200 * 1024)), "talk.mp3")})
    assert response.status_code == 413
    assert "already hold 0 MB of audio" in response.get_json()["error"]
    assert "limit 1 MB" in response.get_json()["error"]
    with app.app_context():
        assert db.session.query(Transcription).count() == 1
        incoming = tmp_path / "storage" / "incoming"
        assert not incoming.exists() or list(incoming.iterdir()) == []  # never read
    # Another user is not affected: their upload is read (and found not to be audio).
    other = client.post("/process", headers=bearer(login(client, "bob")),
                        content_type="multipart/form-data",
                        data={"file": (io.BytesIO(b"\0" * (200 * 1024)), "talk.mp3")})
    assert other.status_code == 400

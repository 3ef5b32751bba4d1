"""gunicorn.conf.py under real gunicorn with two workers: health, request ids in the access
log, and /metrics that adds up both workers (prometheus-client multiprocess mode)."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from conftest import ROOT, TEST_DATABASE_URL, TEST_SECRET

pytestmark = pytest.mark.usefixtures("migrated_database")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def gunicorn_server(tmp_path):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": TEST_DATABASE_URL, "JWT_SECRET_KEY": TEST_SECRET,
           "STORAGE_DIR": str(tmp_path / "storage"), "JOB_RECOVERY_INTERVAL_SECONDS": "0",
           "EXECUTOR_MAX_WORKERS": "1", "LOG_FORMAT": "json",
           "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")}
    log = open(tmp_path / "gunicorn.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "--bind",
         f"127.0.0.1:{port}", "--workers", "2", "--threads", "2", "wsgi:app"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if requests.get(base + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:  # not listening yet, or still loading the app
            time.sleep(0.2)
    else:
        process.kill()
        pytest.fail((tmp_path / "gunicorn.log").read_text()[-3000:])
    yield base, tmp_path / "gunicorn.log"
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    log.close()


def healthz_count(base: str) -> float:
    text = requests.get(base + "/metrics", timeout=5).text
    match = re.search(r'ezra_http_request_seconds_count\{method="GET",route="/healthz",'
                      r'status="200"\} (\d+(?:\.\d+)?)', text)
    assert match, text[:2000]
    assert "ezra_jobs" in text
    return float(match.group(1))


def test_metrics_add_up_every_worker(gunicorn_server, tmp_path):
    base, log_path = gunicorn_server
    before = healthz_count(base)
    sent = 0

    def serving_pids() -> set[str]:
        return set(re.findall(r'"GET /healthz HTTP/1.1" 200 .* pid=<(\d+)> rid=probe-',
                              log_path.read_text()))
    # New connections until both workers have served some (the kernel picks the worker).
    while sent < 400 and (sent % 20 or len(serving_pids()) < 2):
        response = requests.get(base + "/healthz", headers={"X-Request-ID": f"probe-{sent}"},
                                timeout=5)
        assert response.status_code == 200
        assert response.headers["X-Request-ID"] == f"probe-{sent}"
        sent += 1
    assert len(serving_pids()) == 2
    # Whichever worker answers /metrics, it counts the other worker's requests too.
    assert healthz_count(base) == before + sent
    assert healthz_count(base) == before + sent
    assert f"rid=probe-{sent - 1}" in log_path.read_text()  # the access log has the id

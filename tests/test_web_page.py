"""The page at `/` (web_page.py, web/): served with its own content policy, outside the API
description, and driven end to end in headless Chromium (Debian's `chromium` through the
Python `playwright` package, which uses that browser and downloads none): sign in, upload
real speech, watch the job complete on the embedded engine, download the Word file."""
from __future__ import annotations

import re
import shutil
import subprocess
import threading
import zipfile
from pathlib import Path

import pytest

import openapi
from audio_service import ffmpeg_exe
from conftest import TEST_PASSWORD
from test_local_whisper import whisper_config  # noqa: F401 (the model, loaded once)
from web_page import PAGE_CSP

DATA = Path(__file__).resolve().parent / "data"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_the_page_and_its_files_are_served_under_their_own_policy(client):
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.data.decode()
    assert '<script src="web/app.js"' in html and 'href="web/app.css"' in html
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from another site
    assert page.headers["Content-Security-Policy"] == PAGE_CSP
    assert "script-src 'self'" in PAGE_CSP and "unsafe-inline" not in PAGE_CSP
    assert page.headers["X-Frame-Options"] == "DENY"
    assert page.headers["X-Content-Type-Options"] == "nosniff"

    script = client.get("/web/app.js")
    assert script.status_code == 200 and "javascript" in script.mimetype
    assert b"sessionStorage" in script.data and b"innerHTML" not in script.data
    assert client.get("/web/app.css").mimetype == "text/css"
    # The API keeps its policy that loads nothing.
    assert client.get("/openapi.json").headers["Content-Security-Policy"].startswith(
        "default-src 'none'")


@pytest.mark.parametrize("path", ["/web/index.html", "/web/../app.py", "/web/missing.js",
                                  "/web/", "/index.html"])
def test_other_paths_are_json_404s(client, path):
    response = client.get(path)
    assert response.status_code == 404 and "error" in response.get_json()


def test_the_page_is_not_part_of_the_api(client):
    assert client.post("/").status_code == 405 and "error" in client.post("/").get_json()
    spec = client.get("/openapi.json").get_json()
    assert "/" not in spec["paths"] and not any(p.startswith("/web/") for p in spec["paths"])
    assert {"web.page", "web.asset"} <= openapi.EXCLUDED_ENDPOINTS


# In a real browser -------------------------------------------------------------------------

@pytest.fixture
def live_server(make_app, make_user, whisper_config):
    """The app with runner slots and the embedded engine, served over HTTP on 127.0.0.1."""
    from werkzeug.serving import make_server

    app = make_app(PIPELINE_ENABLED=True, JOB_LEASE_SECONDS=10, **whisper_config)
    make_user("pastor", is_admin=True)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture
def browser():
    if CHROMIUM is None:
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; "
                    "scripts/test.sh installs it when run as root)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM,
                                              args=["--no-sandbox"])  # CI runs as root
        try:
            yield chromium
        finally:
            chromium.close()


def docx_text(path: Path) -> str:
    with zipfile.ZipFile(path) as docx:
        xml = docx.read("word/document.xml").decode()
    return " ".join(re.findall(r"<w:t(?: [^>]*)?>([^<]*)</w:t>", xml))


@pytest.mark.slow
def test_sign_in_upload_watch_and_download_word_in_chromium(live_server, browser, tmp_path):
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    problems: list[str] = []  # a CSP violation or a script error shows up here
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto(live_server + "/")
    page.fill("#username", "pastor")
    page.fill("#password", "wrong password")
    page.click("#login-form button[type=submit]")
    # (wait_for_function would evaluate a string, which the page's policy forbids)
    page.wait_for_selector("#login-error:not(:empty)")
    assert page.inner_text("#login-error") == "Bad username or password"
    problems.clear()  # the browser logs the 401 itself

    page.fill("#password", TEST_PASSWORD)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#app-view", state="visible")
    assert page.inner_text("#who") == "pastor (admin)"
    # A window that ends before it starts is refused by the API; the page shows its message.
    page.set_input_files("#file", str(DATA / "en-short.opus"))
    page.fill("#start", "0:05")
    page.fill("#end", "0:02")
    page.click("#submit")
    page.wait_for_selector("#submit-message.error")
    assert "'start_time' (00:00:05) must be before 'end_time' (00:00:02)" == page.inner_text(
        "#submit-message")
    problems.clear()  # the 400 itself

    page.set_input_files("#file", str(DATA / "en-short.opus"))
    page.fill("#start", "")
    page.fill("#end", "")
    page.click("#submit")
    row = page.wait_for_selector("#jobs tbody tr")
    assert row.query_selector(".title").inner_text() == "en-short"
    page.wait_for_selector("#jobs tbody tr[data-status=completed]", timeout=240_000)

    with page.expect_download() as download_info:
        page.click("#jobs tbody tr button[data-type=word]")
    download = download_info.value
    assert download.suggested_filename == "en-short.docx"
    saved = tmp_path / "en-short.docx"
    download.save_as(saved)
    text = docx_text(saved).lower()
    for word in ("morning", "love", "forgiveness", "bless"):
        assert word in text, text

    # A recording without speech fails; the page says why, and the admin sees the job and
    # the error log entry.
    silence = tmp_path / "silence.opus"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
                    "-i", "anullsrc=r=16000:cl=mono,atrim=duration=3", str(silence)],
                   check=True)
    page.set_input_files("#file", str(silence))
    page.click("#submit")
    failed = page.wait_for_selector("#jobs tbody tr[data-status=error]", timeout=120_000)
    assert "no speech was found" in failed.inner_text().lower()
    page.wait_for_selector("#admin-logs tbody tr", timeout=20_000)
    assert "no speech was found" in page.inner_text("#admin-logs tbody").lower()
    admin_rows = page.inner_text("#admin-jobs tbody")
    assert admin_rows.count("pastor") == 2 and "en-short" in admin_rows and "silence" in \
        admin_rows
    page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
    assert problems == []

    page.click("#logout")
    page.wait_for_selector("#login-view", state="visible")
    assert page.evaluate("sessionStorage.getItem('ezra.token')") is None
    context.close()

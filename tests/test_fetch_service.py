"""fetch_service without the app or a database: the address check, Google Drive against fake
Drive servers on 127.0.0.1 (plain HTTP, and HTTPS posing as drive.google.com so gdown's own
Drive code runs), and the real yt-dlp with its download phase fed a local media file."""
from __future__ import annotations

import copy
import os
import shutil
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

import egress
import fetch_service
from fetch_service import (DRIVE_NOT_SHARED, DRIVE_QUOTA, LIVE_MESSAGE, PRIVATE_MESSAGE,
                           FetchError, check_public_host, drive_error_message, fetch_drive,
                           fetch_youtube, youtube_error_message, youtube_options)

MB = 1_000_000


@pytest.fixture(autouse=True)
def no_env_proxy(monkeypatch):
    # An outside proxy variable would route requests around the guard under test.
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy",
                 "https_proxy", "all_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)


# -- check_public_host ----------------------------------------------------------------------

@pytest.mark.parametrize("url", [
    "http://127.0.0.1/",
    "http://[::1]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://100.64.0.1/",
    "http://[fc00::1]/",
    "http://0.0.0.0/",
    "http://2130706433/",  # 127.0.0.1 written as one decimal number
    "http://localhost:8080/",
    "https://[::ffff:127.0.0.1]/",  # IPv4-mapped IPv6
    "http://224.0.0.1/",
    "http://[fe80::1]/",
])
def test_private_addresses_are_refused(url):
    with pytest.raises(FetchError) as caught:
        check_public_host(url)
    assert str(caught.value) == PRIVATE_MESSAGE
    assert caught.value.detail != str(caught.value)  # the resolved address, for the log


@pytest.mark.parametrize("url", ["file:///etc/passwd", "gopher://8.8.8.8/", "ftp://8.8.8.8/"])
def test_other_schemes_are_refused(url):
    with pytest.raises(FetchError, match="https://"):
        check_public_host(url)


def test_public_literal_passes_and_allow_private_admits_loopback():
    check_public_host("https://8.8.8.8/uc?id=x")
    check_public_host("http://[2606:4700:4700::1111]/")
    check_public_host("http://127.0.0.1:5000/uc?id=x", allow_private=True)
    with pytest.raises(FetchError):  # allow_private relaxes addresses, not schemes
        check_public_host("file:///etc/passwd", allow_private=True)


# -- fake servers ---------------------------------------------------------------------------

QUOTA_PAGE = (
    "<html><head><title>Google Drive - Quota exceeded</title></head><body>\n"
    '<p class="uc-error-caption">Sorry, you can\'t view or download this file at this '
    "time.</p>\n"
    '<p class="uc-error-subcaption">Too many users have viewed or downloaded this file '
    "recently. Please try accessing the file again later. If the file you are trying to "
    "access is particularly large or is shared with many people, it may take up to 24 hours "
    "to be able to view or download the file.</p>\n</body></html>")
SIGN_IN_PAGE = ("<html><head><title>Google Drive: Sign-in</title></head><body>"
                "<form action=\"/signin/v2/challenge\"><input name=\"Email\"></form>"
                "</body></html>")
AUDIO = bytes(range(256)) * 5000  # 1.28 MB: several of gdown's 512 KiB chunks


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, host: str, handler):
        super().__init__((host, 0), handler)
        self.requests: list[str] = []
        self.links: dict[str, str] = {}  # where redirects point, per host name
        self.files: dict[str, tuple[bytes, str]] = {}

    def link(self, name: str) -> str:
        return self.links[name]

    def handle_error(self, request, client_address) -> None:
        """A client that hangs up mid-body (the size cap tests stop reading on purpose) is
        not an error of this fake: socketserver would print its traceback into the test log."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, ssl.SSLError)):
            super().handle_error(request, client_address)


class DriveHandler(BaseHTTPRequestHandler):
    """Answers the way drive.google.com does for the cases fetch_drive must tell apart."""

    server: Recorder

    def log_message(self, *args):
        pass

    def send(self, status: int, body: bytes, content_type: str, extra: dict | None = None,
             length: bool = True):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if length:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 200_000):  # in pieces, like a real transfer
            self.wfile.write(body[i:i + 200_000])
            self.wfile.flush()

    def do_GET(self):
        self.server.requests.append(f"{self.headers.get('Host')}{self.path}")
        parts = urlsplit(self.path)
        file_id = (parse_qs(parts.query).get("id") or [""])[0]
        mp3 = {"Content-Disposition": 'attachment; filename="Sermon 12.mp3"'}
        if parts.path == "/uc" and file_id == "OK":
            # Drive today: uc answers with a redirect to drive.usercontent.google.com.
            self.send(303, b"", "text/html", {
                "Location": f"{self.server.link('usercontent')}/download?id=OK&export=download"})
        elif parts.path == "/download" and file_id == "OK":
            self.send(200, AUDIO, "audio/mpeg", mp3)
        elif parts.path == "/uc" and file_id == "BIG":
            self.send(200, AUDIO * 3, "audio/mpeg", mp3)
        elif parts.path == "/uc" and file_id == "BIGNOLENGTH":
            self.send(200, AUDIO * 3, "audio/mpeg", mp3, length=False)  # until close
        elif parts.path == "/uc" and file_id == "PRIVATE":
            self.send(303, b"", "text/html", {
                "Location": f"{self.server.link('accounts')}/ServiceLogin?continue=x"})
        elif parts.path == "/ServiceLogin":
            self.send(200, SIGN_IN_PAGE.encode(), "text/html; charset=utf-8")
        elif parts.path == "/uc" and file_id == "QUOTA":
            self.send(200, QUOTA_PAGE.encode(), "text/html; charset=utf-8")
        elif parts.path == "/uc" and file_id == "SNEAKY":
            self.send(302, b"", "text/html", {"Location": self.server.link("canary")})
        elif parts.path in self.server.files:
            body, content_type = self.server.files[parts.path]
            self.send(200, body, content_type)
        else:
            self.send(404, b"<html>not found</html>", "text/html")


def serve(host: str = "127.0.0.1", tls_files: tuple[Path, Path] | None = None) -> Recorder:
    server = Recorder(host, DriveHandler)
    if tls_files is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*map(str, tls_files))
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                     daemon=True).start()
    return server


@pytest.fixture
def plain_drive():
    server = serve()
    canary = serve("127.0.0.2")
    base = f"http://127.0.0.1:{server.server_address[1]}"
    server.links.update(usercontent=base, accounts=base,
                        canary=f"http://127.0.0.2:{canary.server_address[1]}/steal")
    server.canary = canary
    yield server, base
    for each in (server, canary):
        each.shutdown()
        each.server_close()


GOOGLE_NAMES = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com",
                "accounts.google.com")


@pytest.fixture(scope="module")
def drive_cert(tmp_path_factory) -> tuple[Path, Path]:
    openssl = shutil.which("openssl")
    if not openssl:
        pytest.skip("openssl is needed to pose as drive.google.com")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=fake google drive",
                    "-addext", "subjectAltName=" + ",".join(f"DNS:{n}" for n in GOOGLE_NAMES),
                    "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.fixture
def google_drive(drive_cert, monkeypatch):
    """An HTTPS server that the guard reaches for Google's host names, trusted by requests:
    gdown then runs its real Drive code (it only does for drive.google.com URLs)."""
    server = serve(tls_files=drive_cert)
    port = server.server_address[1]
    server.links.update(usercontent="https://drive.usercontent.google.com",
                        accounts="https://accounts.google.com")
    real_resolve = egress.resolve
    monkeypatch.setattr(egress, "resolve", lambda host, p: (
        [("127.0.0.1", port)] if host in GOOGLE_NAMES else real_resolve(host, p)))
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(drive_cert[0]))
    yield server, "https://drive.google.com"
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["google", "plain"])
def drive(request):
    """Both ways fetch_drive runs: gdown's Drive code, and a base_url of a test server."""
    return request.getfixturevalue("google_drive" if request.param == "google"
                                   else "plain_drive")


# -- Google Drive ---------------------------------------------------------------------------

def test_drive_downloads_with_title_and_progress(drive, tmp_path):
    server, base = drive
    seen: list[tuple[int, int | None]] = []
    result = fetch_drive("OK", tmp_path, base_url=base, max_bytes=2 * MB,
                         progress=lambda done, total: seen.append((done, total)),
                         allow_private=True, timeout=10)
    assert result.path == tmp_path / "source.drive"
    assert result.path.read_bytes() == AUDIO
    assert (result.title, result.windowed, result.size) == ("Sermon 12", False, len(AUDIO))
    assert not (tmp_path / "source.part").exists()
    counts = [done for done, _ in seen]
    assert len(counts) >= 2 and counts == sorted(counts) and counts[-1] == len(AUDIO)
    assert seen[-1][1] == len(AUDIO)
    assert any("/download?id=OK" in line for line in server.requests)  # followed the redirect


@pytest.mark.parametrize("file_id", ["BIG", "BIGNOLENGTH"])
def test_drive_too_large_leaves_nothing(drive, tmp_path, file_id):
    _, base = drive
    with pytest.raises(FetchError) as caught:
        fetch_drive(file_id, tmp_path, base_url=base, max_bytes=2 * MB, allow_private=True,
                    timeout=10)
    assert "the limit is 2.0 MB" in str(caught.value) or "limit of 2.0 MB" in str(caught.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("file_id", "message"), [("PRIVATE", DRIVE_NOT_SHARED),
                                                  ("QUOTA", DRIVE_QUOTA)])
def test_drive_error_pages(drive, tmp_path, file_id, message):
    _, base = drive
    with pytest.raises(FetchError) as caught:
        fetch_drive(file_id, tmp_path, base_url=base, max_bytes=2 * MB, allow_private=True,
                    timeout=10)
    assert str(caught.value) == message
    assert caught.value.detail and caught.value.detail != message  # gdown's text, for the log
    assert list(tmp_path.iterdir()) == []


def test_drive_cancel(drive, tmp_path):
    _, base = drive
    cancel = threading.Event()
    with pytest.raises(FetchError, match=fetch_service.CANCELLED_MESSAGE):
        fetch_drive("OK", tmp_path, base_url=base, max_bytes=2 * MB, allow_private=True,
                    progress=lambda done, total: cancel.set(), cancel=cancel, timeout=10)
    assert list(tmp_path.iterdir()) == []


def test_drive_redirect_to_private_address_is_refused(plain_drive, tmp_path, monkeypatch):
    server, base = plain_drive
    # Treat 127.0.0.1 as the public Internet; 127.0.0.2 stays what it is, a loopback address.
    real = egress.is_public_ip
    monkeypatch.setattr(egress, "is_public_ip", lambda ip: ip == "127.0.0.1" or real(ip))
    with pytest.raises(FetchError) as caught:
        fetch_drive("SNEAKY", tmp_path, base_url=base, max_bytes=2 * MB, timeout=10)
    assert str(caught.value) == PRIVATE_MESSAGE
    assert "127.0.0.2" in caught.value.detail
    assert server.canary.requests == []  # nothing reached the private address
    assert list(tmp_path.iterdir()) == []


def test_drive_refuses_private_base_url_before_any_request(plain_drive, tmp_path):
    server, base = plain_drive
    with pytest.raises(FetchError, match="private or local"):
        fetch_drive("OK", tmp_path, base_url=base, max_bytes=2 * MB)
    assert server.requests == []


def test_drive_error_message_table():
    assert drive_error_message("Failed to retrieve file url:\n\n\tToo many users have "
                               "viewed or\n\tdownloaded this file recently.") == DRIVE_QUOTA
    assert drive_error_message("Cannot retrieve the public link of the file. You may need "
                               "to change the permission to 'Anyone with the link'") == \
        DRIVE_NOT_SHARED


# -- YouTube: options and messages ----------------------------------------------------------

def test_youtube_options(tmp_path):
    import yt_dlp
    import yt_dlp.utils

    options = youtube_options(tmp_path, max_seconds=7200, max_bytes=500 * MB)
    assert options["noplaylist"] is True
    assert options["allowed_extractors"] == ["youtube"]
    assert options["format"] == "bestaudio/best"
    assert options["outtmpl"] == {"default": "source.%(ext)s"}
    assert options["paths"]["home"] == str(tmp_path)
    assert options["restrictfilenames"] and options["quiet"] and options["noprogress"]
    assert options["postprocessors"] == [] and options["remote_components"] == []
    assert options["external_downloader"] == {"default": "native"}
    assert not any("exec" in key or "cookie" in key for key in options)
    assert options["socket_timeout"] and options["retries"]
    assert callable(options["match_filter"])
    assert "download_ranges" not in options
    deno = options["js_runtimes"]["deno"]["path"]
    assert os.access(deno, os.X_OK)
    assert os.access(options["ffmpeg_location"], os.X_OK)

    # The limits run inside yt-dlp, before formats are chosen (incomplete) and before download.
    check = options["match_filter"]
    with pytest.raises(FetchError, match=r"^The video is 3:12:00 long; the limit is 2:00:00$"):
        check({"duration": 3 * 3600 + 12 * 60, "live_status": "not_live"}, incomplete={"url"})
    with pytest.raises(FetchError, match=LIVE_MESSAGE):
        check({"is_live": True, "live_status": "is_live"}, incomplete={"url"})
    assert check({"duration": 3600, "filesize": 600 * MB}, incomplete={"url"}) is None
    with pytest.raises(FetchError, match="600 MB; the limit is 500 MB"):
        check({"duration": 3600, "filesize": 600 * MB}, incomplete=False)

    # Only YoutubeIE is loaded: no generic extractor to fall back on.
    with yt_dlp.YoutubeDL(options) as ydl:
        assert list(ydl._ies) == ["Youtube"]

    windowed = youtube_options(tmp_path, start=30, end=90, max_seconds=60, max_bytes=MB)
    assert windowed["download_ranges"] == yt_dlp.utils.download_range_func(None, [(30, 90)])
    assert windowed["force_keyframes_at_cuts"] is False
    assert windowed["external_downloader_args"] == {"ffmpeg_o": ["-fs", str(MB)]}
    # A 3-hour video is fine when the 60 s window is what gets downloaded.
    assert windowed["match_filter"]({"duration": 3 * 3600}, incomplete={"url"}) is None


@pytest.mark.parametrize(("upstream", "message"), [
    ("ERROR: [youtube] dQw4w9WgXcQ: Private video. Sign in if you've been granted access to "
     "this video", "This YouTube video is private"),
    ("ERROR: [youtube] dQw4w9WgXcQ: Video unavailable",
     "This YouTube video is unavailable (removed or restricted)"),
    ("ERROR: [youtube] dQw4w9WgXcQ: Video unavailable. This video has been removed by the "
     "uploader", "This YouTube video is unavailable (removed or restricted)"),
    ("ERROR: [youtube] dQw4w9WgXcQ: This live event will begin in 3 hours.", LIVE_MESSAGE),
    ("ERROR: [youtube] dQw4w9WgXcQ: Premieres in 20 minutes", LIVE_MESSAGE),
    ("ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm your age. This video may be "
     "inappropriate for some users.",
     "This YouTube video is age-restricted and cannot be fetched without signing in"),
    ("ERROR: [youtube] dQw4w9WgXcQ: Sign in to confirm you\u2019re not a bot.",
     "YouTube is refusing downloads from this server right now; try again later or upload "
     "the file"),
    ("ERROR: [youtube] dQw4w9WgXcQ: Join this channel to get access to members-only content",
     "This YouTube video is for channel members only"),
    ("ERROR: No suitable extractor found for URL http://example.com/a.mp3",
     "Only links to a single YouTube video are supported"),
    ("ERROR: [youtube] dQw4w9WgXcQ: Unable to download API page: <urlopen error [Errno -3] "
     "Temporary failure in name resolution>", fetch_service.YOUTUBE_NETWORK),
    ("ERROR: something nobody has seen before", "Could not download the YouTube video"),
])
def test_youtube_error_messages(upstream, message):
    assert youtube_error_message(upstream) == message


# -- YouTube: the real yt-dlp ---------------------------------------------------------------

def test_youtube_never_uses_the_generic_extractor(plain_drive, tmp_path):
    server, base = plain_drive
    server.files["/video.mp3"] = (b"ID3" + b"\0" * 1000, "audio/mpeg")
    with pytest.raises(FetchError) as caught:
        fetch_youtube(f"{base}/video.mp3", tmp_path, start=None, end=None, max_seconds=600,
                      max_bytes=MB, allow_private=True)  # the address check is not what stops it
    assert str(caught.value) == "Only links to a single YouTube video are supported"
    assert "No suitable extractor" in caught.value.detail
    assert server.requests == []
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def mp3(tmp_path_factory) -> bytes:
    from audio_service import ffmpeg_exe

    path = tmp_path_factory.mktemp("media") / "tone.mp3"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=20", "-ac", "1", "-b:a", "64k", str(path)],
                   check=True, timeout=120)
    return path.read_bytes()


WATCH = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


@pytest.fixture
def fake_youtube(plain_drive, mp3, monkeypatch):
    """yt-dlp as it is, except that "extraction" returns this dict: format selection, the
    limits, the progress hook, the HTTP downloader and FFmpeg all run for real."""
    import yt_dlp

    server, base = plain_drive
    server.files["/audio.mp3"] = (mp3, "audio/mpeg")
    info = {"id": "dQw4w9WgXcQ", "title": "Sunday Sermon", "duration": 20.0,
            "live_status": "not_live", "webpage_url": WATCH, "extractor": "youtube",
            "extractor_key": "Youtube",
            "formats": [{"format_id": "251", "url": f"{base}/audio.mp3", "ext": "mp3",
                         "acodec": "mp3", "vcodec": "none", "protocol": "http"}]}

    def extract_info(self, url, download=True, *args, **kwargs):
        assert url == WATCH
        return self.process_ie_result(copy.deepcopy(info), download=download)

    monkeypatch.setattr(yt_dlp.YoutubeDL, "extract_info", extract_info)
    return server, info


def test_youtube_download_whole(fake_youtube, tmp_path, mp3):
    server, _ = fake_youtube
    seen: list[tuple[int, int | None]] = []
    result = fetch_youtube(WATCH, tmp_path, start=None, end=None, max_seconds=600,
                           max_bytes=MB, progress=lambda d, t: seen.append((d, t)),
                           allow_private=True)
    assert result.path == (tmp_path / "source.mp3").resolve()
    assert result.path.read_bytes() == mp3
    assert (result.title, result.windowed, result.size) == ("Sunday Sermon", False, len(mp3))
    assert seen and seen[-1] == (len(mp3), len(mp3))
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["source.mp3"]


def test_youtube_download_window_with_ffmpeg(fake_youtube, tmp_path, mp3):
    from audio_service import probe_audio

    result = fetch_youtube(WATCH, tmp_path, start=5, end=10, max_seconds=6, max_bytes=MB,
                           allow_private=True)  # 20 s video, 6 s limit: the window fits
    assert result.windowed is True and result.path.name == "source.mp3"
    assert result.size < len(mp3) / 2
    assert 4 <= probe_audio(result.path).duration <= 6


def test_youtube_too_long_is_refused_before_download(fake_youtube, tmp_path):
    server, _ = fake_youtube
    with pytest.raises(FetchError, match=r"^The video is 0:00:20 long; the limit is 0:00:10$"):
        fetch_youtube(WATCH, tmp_path, start=None, end=None, max_seconds=10, max_bytes=MB,
                      allow_private=True)
    assert server.requests == []


def test_youtube_live_is_refused_before_download(fake_youtube, tmp_path):
    server, info = fake_youtube
    info.update(live_status="is_live", is_live=True)
    with pytest.raises(FetchError, match=LIVE_MESSAGE):
        fetch_youtube(WATCH, tmp_path, start=None, end=None, max_seconds=600, max_bytes=MB,
                      allow_private=True)
    assert server.requests == []


def test_youtube_stops_past_max_bytes(fake_youtube, tmp_path, mp3):
    # No filesize in the format, so only the progress hook can notice.
    with pytest.raises(FetchError, match="limit"):
        fetch_youtube(WATCH, tmp_path, start=None, end=None, max_seconds=600,
                      max_bytes=len(mp3) // 3, allow_private=True)
    assert list(tmp_path.iterdir()) == []


def test_youtube_known_size_is_refused_before_download(fake_youtube, tmp_path, mp3):
    server, info = fake_youtube
    info["formats"][0]["filesize"] = len(mp3)
    with pytest.raises(FetchError, match="the limit is"):
        fetch_youtube(WATCH, tmp_path, start=None, end=None, max_seconds=600,
                      max_bytes=len(mp3) // 3, allow_private=True)
    assert server.requests == []


def test_youtube_cancel(fake_youtube, tmp_path):
    cancel = threading.Event()
    with pytest.raises(FetchError, match=fetch_service.CANCELLED_MESSAGE):
        fetch_youtube(WATCH, tmp_path, start=None, end=None, max_seconds=600, max_bytes=MB,
                      progress=lambda done, total: cancel.set(), cancel=cancel,
                      allow_private=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("window", [(None, None), (5, 10)], ids=["yt-dlp", "ffmpeg"])
def test_youtube_media_on_private_address_is_refused(fake_youtube, tmp_path, monkeypatch,
                                                      window):
    # Both downloaders go through the guard: yt-dlp's own, and FFmpeg cutting a window.
    server, info = fake_youtube
    canary = server.canary
    info["formats"][0]["url"] = f"http://127.0.0.2:{canary.server_address[1]}/audio.mp3"
    real_resolve, real_public = egress.resolve, egress.is_public_ip
    monkeypatch.setattr(egress, "resolve", lambda host, port: (
        [("127.0.0.1", 443)] if host == "www.youtube.com" else real_resolve(host, port)))
    refused = []

    def is_public(ip):
        if ip == "127.0.0.1" or real_public(ip):
            return True
        refused.append(ip)
        return False
    monkeypatch.setattr(egress, "is_public_ip", is_public)
    with pytest.raises(FetchError) as caught:
        fetch_youtube(WATCH, tmp_path, start=window[0], end=window[1], max_seconds=600,
                      max_bytes=MB)
    assert str(caught.value) == PRIVATE_MESSAGE
    assert canary.requests == []
    assert refused == ["127.0.0.2"]  # refused once, not retried

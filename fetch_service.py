"""Fetching a job's source audio: one YouTube video (yt-dlp) or one Google Drive file (gdown).

Rules every fetch follows:
- `check_public_host` runs before any request: http/https only, and every address the host
  resolves to must be public (unless `allow_private`, for tests and private deployments).
- Every connection yt-dlp, FFmpeg and gdown open goes through the egress guard (egress.py),
  which connects only to public addresses.
- Only yt-dlp's "youtube" extractor is loaded (the generic extractor never runs), audio only,
  no playlists, no post-processors, no cookies; the output is always `source.<ext>`.
- Limits (length, bytes) are checked before the download and enforced during it; `cancel`
  stops it. A half-written file never carries a finished name.
- Every failure is a `FetchError`: str() is a short message a person can act on, `.detail`
  keeps the upstream text for the error log.
"""
from __future__ import annotations

import contextvars
import functools
import logging
import math
import os
import re
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast
from urllib.parse import urlsplit

import egress
from egress import Cancel, EgressGuard
from errors import ServiceError
from links import DRIVE_HOSTS
from validation import format_hms

log = logging.getLogger("ezra.fetch")

Progress = Callable[[int, int | None], None]

PRIVATE_MESSAGE = "The link points to a private or local network address"
LIVE_MESSAGE = "Live streams cannot be transcribed; wait until it has ended"
CANCELLED_MESSAGE = "The download was cancelled"
DRIVE_NOT_SHARED = ("The Google Drive file is not shared publicly: set 'Anyone with the link' "
                    "and try again")
DRIVE_QUOTA = ("Google Drive refuses more downloads of this file today (quota exceeded); "
               "try again tomorrow or upload the file")
DRIVE_FOLDER = "The link is a Google Drive folder; share and send the link of one file"
DRIVE_NOT_FOUND = "The Google Drive file does not exist or was deleted; check the link"
DRIVE_NETWORK = "Could not download from Google Drive (network problem); try again later"
YOUTUBE_NETWORK = "Could not reach YouTube (network problem); try again later"

# yt-dlp's network timeout and retry counts; a stalled connection fails within a minute.
SOCKET_TIMEOUT = 30.0
RETRIES = 3
# Video times in messages: 1:05:00, a started second counted whole (a length over a limit).
_hms = functools.partial(format_hms, round_up=True, pad_hours=False)
# The folder inside dest_dir where yt-dlp works (not matching "source.*").
YOUTUBE_STAGING = "youtube-download"


class FetchError(ServiceError):
    """The source could not be fetched. str() is for the user, `detail` for the error log."""


@dataclass(frozen=True)
class FetchResult:
    path: Path
    title: str | None
    windowed: bool  # True when only [start, end] was downloaded
    size: int


# -- addresses ------------------------------------------------------------------------------

def check_public_host(url: str, *, allow_private: bool = False) -> None:
    """Refuse anything but an http(s) URL whose host resolves only to public addresses."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        port = parts.port
    except ValueError:
        raise FetchError("The link is malformed", detail=url) from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchError("The link must start with https://", detail=url)
    if not host:
        raise FetchError("The link has no host name", detail=url)
    if allow_private:
        return
    try:
        addresses = egress.resolve(host, port or (443 if scheme == "https" else 80))
    except (OSError, UnicodeError) as exc:
        raise FetchError("The link's server could not be found; check the link or try again",
                         detail=f"{host}: {exc}") from exc
    if not addresses:
        raise FetchError("The link's server could not be found; check the link or try again",
                         detail=f"{host}: no addresses")
    for address, _ in addresses:
        if not egress.is_public_ip(address):
            raise FetchError(PRIVATE_MESSAGE, detail=f"{host} resolves to {address}")


def _warn_if_env_proxy(url: str) -> None:
    # requests lets HTTP(S)_PROXY from the environment override a session's proxy, so gdown
    # would bypass the guard; the operator's proxy then decides where connections go.
    import requests.utils

    if requests.utils.get_environ_proxies(url):
        log.warning("an HTTP(S)_PROXY environment variable applies to %s; Google Drive "
                    "downloads go through it instead of the private-address guard", url)


# -- shared helpers -------------------------------------------------------------------------

def _human_size(size: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if size >= scale:
            value = size / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{int(size)} bytes"


def too_large(size: float | None, max_bytes: int) -> FetchError:
    if size is None:
        return FetchError(f"The file is larger than the limit of {_human_size(max_bytes)}")
    return FetchError(f"The file is {_human_size(size)}; the limit is {_human_size(max_bytes)}")


def _normalize(text: str) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # yt-dlp may colour "ERROR:"
    text = text.replace("\u2019", "'")
    return " ".join(text.split()).lower()


def _remove_sources(dest_dir: Path) -> None:
    """Leftovers of an earlier or failed attempt, so none of them can pass for a result."""
    for path in dest_dir.glob("source.*"):
        if path.is_file():
            path.unlink(missing_ok=True)


def _discard(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


T = TypeVar("T")


def _guarded_download(dest_dir: Path, scratch: Path, download: Callable[[EgressGuard], T],
                      translate: Callable[[Exception, str], FetchError | None], *,
                      allow_private: bool, timeout: float, cancel: Cancel | None) -> T:
    """What every fetch does around its downloader: a dest_dir without earlier sources, the
    egress guard for every connection, and on failure no scratch left behind and a FetchError
    a person can act on (`translate` names the downloader's own errors)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    _remove_sources(dest_dir)
    with EgressGuard(allow_private=allow_private, timeout=timeout, cancel=cancel) as guard:
        try:
            return download(guard)
        except BaseException as exc:
            _discard(scratch)
            # Only errors are translated; KeyboardInterrupt and the like pass through.
            failure = _failure(exc, guard, translate) if isinstance(exc, Exception) else None
            if failure is None or failure is exc:
                raise
            raise failure from exc


def _failure(exc: Exception, guard: EgressGuard,
             translate: Callable[[Exception, str], FetchError | None]) -> FetchError | None:
    """The FetchError for a downloader's exception; None lets it propagate (the server's
    disk, a bug: not the user's to fix)."""
    if isinstance(exc, FetchError):
        return exc
    inner = getattr(exc, "exc_info", None)  # yt-dlp's DownloadError wraps what a hook raised
    if inner and isinstance(inner[1], FetchError):
        return inner[1]
    detail = f"{type(exc).__name__}: {exc}"
    if guard.refused:
        return FetchError(PRIVATE_MESSAGE, detail=f"refused {guard.refused}; {detail}")
    if guard.cancelled.is_set():
        return FetchError(CANCELLED_MESSAGE, detail=detail)
    return translate(exc, detail)


class _ByteLimit:
    """A downloader's progress callback: stops it on cancel or past max_bytes (raising in the
    callback stops the transfer), and passes the rest on to `progress`."""

    def __init__(self, guard: EgressGuard, max_bytes: int, progress: Progress | None):
        self.guard, self.max_bytes, self.progress = guard, max_bytes, progress

    def __call__(self, done: int, total: int | None, estimate: float | None = None) -> None:
        if self.guard.poll_cancel():
            raise FetchError(CANCELLED_MESSAGE)
        if done > self.max_bytes or (total and total > self.max_bytes):
            raise too_large(total if total and total > self.max_bytes else None,
                            self.max_bytes)
        if self.progress is not None:
            expected = total or estimate
            self.progress(done, int(expected) if expected else None)

    def youtube_hook(self, status: dict[str, Any]) -> None:
        self(int(status.get("downloaded_bytes") or 0), status.get("total_bytes"),
             status.get("total_bytes_estimate"))


def _keep(done: Path, final: Path, max_bytes: int, empty_message: str) -> int:
    """Give a complete download its finished name (only once every byte is there); its size."""
    size = done.stat().st_size
    if size == 0 or size > max_bytes:
        done.unlink(missing_ok=True)
        raise too_large(size, max_bytes) if size else FetchError(empty_message)
    os.replace(done, final)
    return size


@functools.cache
def _deno_path() -> str | None:
    """The deno binary from the `deno` PyPI package, else one on PATH."""
    try:
        import deno

        return deno.find_deno_bin()
    except (ImportError, FileNotFoundError):
        return shutil.which("deno")


def _ffmpeg_path() -> str | None:
    try:
        from audio_service import ffmpeg_exe

        return ffmpeg_exe()
    except Exception:  # ImportError, or its AudioError when no ffmpeg exists
        pass
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception:
        return None


# -- YouTube --------------------------------------------------------------------------------

class _YtdlpLog:
    """yt-dlp's output goes to logging, never to the worker's stderr."""

    def debug(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def info(self, message: str) -> None:
        log.debug("yt-dlp: %s", message)

    def warning(self, message: str) -> None:
        log.info("yt-dlp: %s", message)

    def error(self, message: str) -> None:
        log.info("yt-dlp: %s", message)


def _window(start: float | None, end: float | None) -> tuple[float, float | None] | None:
    if start is None and end is None:
        return None
    begin = float(start or 0)
    if not math.isfinite(begin) or begin < 0:
        raise FetchError("The start time must be zero or more seconds")
    if end is not None and (not math.isfinite(end) or end <= begin):
        raise FetchError("The end time must be after the start time")
    if begin == 0 and end is None:
        return None  # the whole video
    return begin, (float(end) if end is not None else None)


def _check_limits(info: dict[str, Any], *, window: tuple[float, float | None] | None,
                  max_seconds: int, max_bytes: int, check_size: bool) -> None:
    live_status = info.get("live_status")
    if info.get("is_live") or live_status in ("is_live", "is_upcoming"):
        raise FetchError(LIVE_MESSAGE, detail=f"live_status={live_status}")
    if live_status == "post_live":
        raise FetchError("The live stream has just ended and YouTube is still processing it; "
                         "try again later", detail="live_status=post_live")
    duration = info.get("duration")
    what, length = "The video", duration
    if window is not None:
        start, end = window
        if duration is not None and start >= duration:
            raise FetchError(f"The start time {_hms(start)} is past the end of the video "
                             f"({_hms(duration)})")
        known = [x for x in (end, duration) if x is not None]
        stop = min(known) if known else None
        what, length = "The selected part", (stop - start if stop is not None else None)
    if length is None:
        raise FetchError("YouTube did not say how long the video is, so it cannot be "
                         "checked against the limit")
    if length > max_seconds:
        raise FetchError(f"{what} is {_hms(length)} long; the limit is {_hms(max_seconds)}",
                         detail=f"duration={duration} window={window}")
    if check_size:
        size = info.get("filesize") or info.get("filesize_approx")
        if size and window is not None and duration:
            size = size * length / duration  # the window's share of the whole
        if size and size > max_bytes:
            raise too_large(size, max_bytes)


def youtube_options(dest_dir: Path, *, start: float | None = None, end: float | None = None,
                    max_seconds: int, max_bytes: int, proxy: str | None = None,
                    progress_hook: Callable[[dict[str, Any]], None] | None = None,
                    ) -> dict[str, Any]:
    """The yt-dlp parameters of one fetch (exposed so tests can read them)."""
    import yt_dlp.utils

    window = _window(start, end)

    def limits(info: dict[str, Any], *, incomplete: Any = False) -> None:
        # Runs before format selection (incomplete: sizes unknown) and again right before the
        # download; raising stops yt-dlp there.
        _check_limits(info, window=window, max_seconds=max_seconds, max_bytes=max_bytes,
                      check_size=not incomplete)

    deno = _deno_path()
    options: dict[str, Any] = {
        "format": "bestaudio/best",
        "noplaylist": True,
        # Regexes fullmatched against extractor names: exactly YoutubeIE, never "generic".
        "allowed_extractors": ["youtube"],
        "paths": {"home": str(dest_dir), "temp": str(dest_dir)},
        "outtmpl": {"default": "source.%(ext)s"},  # never the title in the path
        "restrictfilenames": True,
        "overwrites": True,
        "continuedl": False,
        "quiet": True,
        "no_warnings": True,
        "noprogress": True,
        "logger": _YtdlpLog(),
        "socket_timeout": SOCKET_TIMEOUT,
        "retries": RETRIES,
        "fragment_retries": RETRIES,
        "extractor_retries": RETRIES,
        # yt-dlp's own HTTP downloader; FFmpeg runs only to cut a window (no other way).
        "external_downloader": {"default": "native"},
        "postprocessors": [],
        "match_filter": limits,
        "progress_hooks": [progress_hook] if progress_hook else [],
        "remote_components": [],  # never download challenge-solver code
        "writethumbnail": False,
        "writesubtitles": False,
        "writeinfojson": False,
        "warn_when_outdated": False,
    }
    if deno:
        options["js_runtimes"] = {"deno": {"path": deno}}
    ffmpeg = _ffmpeg_path()
    if ffmpeg:
        options["ffmpeg_location"] = ffmpeg
    if proxy:
        options["proxy"] = proxy
    if window is not None:
        begin, stop = window
        options["download_ranges"] = yt_dlp.utils.download_range_func(
            None, [(begin, stop if stop is not None else math.inf)])
        options["force_keyframes_at_cuts"] = False  # stream copy: fast, cuts at keyframes
        # FFmpeg reports no progress, so it limits the output size itself.
        options["external_downloader_args"] = {"ffmpeg_o": ["-fs", str(max_bytes)]}
    return options


# Checked in order; the first phrase found in yt-dlp's message picks the user's message.
_YOUTUBE_MESSAGES: list[tuple[tuple[str, ...], str]] = [
    (("private video", "video is private"), "This YouTube video is private"),
    (("live event will begin", "premieres in", "premiere will begin", "is_upcoming"),
     LIVE_MESSAGE),
    (("confirm your age", "age-restricted", "age restricted", "inappropriate for some users"),
     "This YouTube video is age-restricted and cannot be fetched without signing in"),
    (("not a bot",),
     "YouTube is refusing downloads from this server right now; try again later or upload "
     "the file"),
    (("members-only", "members only", "join this channel"),
     "This YouTube video is for channel members only"),
    (("not available in your country", "geo restrict", "geo-restrict"),
     "This YouTube video is not available in the server's country"),
    (("video unavailable", "no longer available", "has been removed", "been terminated",
      "video is not available", "this video is unavailable", "copyright"),
     "This YouTube video is unavailable (removed or restricted)"),
    (("sign in",), "This YouTube video requires signing in"),
    (("no suitable extractor", "unsupported url"),
     "Only links to a single YouTube video are supported"),
    (("requested format is not available",),
     "YouTube offers no downloadable audio for this video"),
    (("cannot be partially downloaded", "ffmpeg is not installed"),
     "The server cannot download part of this video; remove the start and end times"),
    (("http error 429", "too many requests"),
     "YouTube is limiting downloads from this server; try again later"),
    (("unable to download", "timed out", "connection", "name resolution", "network",
      "http error 5", "transporterror", "ssl"), YOUTUBE_NETWORK),
]


def youtube_error_message(text: str) -> str:
    """The user's message for a yt-dlp error text."""
    normalized = _normalize(text)
    for phrases, message in _YOUTUBE_MESSAGES:
        if any(phrase in normalized for phrase in phrases):
            return message
    return "Could not download the YouTube video"


def youtube_failure(exc: Exception, detail: str) -> FetchError | None:
    import yt_dlp.utils

    if isinstance(exc, yt_dlp.utils.YoutubeDLError):
        return FetchError(youtube_error_message(str(exc)), detail=str(exc))
    if isinstance(exc, (ConnectionError, TimeoutError, socket.gaierror)):
        return FetchError(YOUTUBE_NETWORK, detail=detail)
    return None


def _downloaded_file(info: dict[str, Any], folder: Path) -> Path:
    root = folder.resolve()
    for entry in info.get("requested_downloads") or []:
        path = Path(entry.get("filepath") or "").resolve()
        if path.parent == root and path.is_file():
            return path
    found = sorted(p for p in root.glob("source.*") if p.is_file() and not any(
        mark in p.name for mark in (".part", ".ytdl", ".temp")))
    if not found:
        raise FetchError("YouTube sent no audio; try again later",
                         detail=f"no source file in {root}")
    return found[0]


def fetch_youtube(url: str, dest_dir: Path, *, start: float | None, end: float | None,
                  max_seconds: int, max_bytes: int, progress: Progress | None = None,
                  cancel: Cancel | None = None, allow_private: bool = False) -> FetchResult:
    """Download the audio of one YouTube video (or only [start, end]) into dest_dir."""
    check_public_host(url, allow_private=allow_private)
    window = _window(start, end)
    staging = dest_dir / YOUTUBE_STAGING
    download = functools.partial(_youtube_download, url=url, staging=staging, start=start,
                                 end=end, window=window, max_seconds=max_seconds,
                                 max_bytes=max_bytes, progress=progress)
    try:
        info, downloaded = _guarded_download(dest_dir, staging, download, youtube_failure,
                                             allow_private=allow_private,
                                             timeout=SOCKET_TIMEOUT, cancel=cancel)
        path = dest_dir.resolve() / downloaded.name
        size = _keep(downloaded, path, max_bytes, "YouTube sent an empty file; try again later")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if progress is not None:
        progress(size, size)
    return FetchResult(path=path, title=info.get("title"), windowed=window is not None,
                       size=size)


def _youtube_download(guard: EgressGuard, *, url: str, staging: Path, start: float | None,
                      end: float | None, window: tuple[float, float | None] | None,
                      max_seconds: int, max_bytes: int, progress: Progress | None,
                      ) -> tuple[dict[str, Any], Path]:
    """yt-dlp's part of fetch_youtube, inside the guard: the video's info and its file."""
    # yt-dlp's partial files (.part, .ytdl, .part-FragN) stay in a folder of their own, so
    # nothing named source.* exists in dest_dir until the download is complete.
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    options = youtube_options(staging, start=start, end=end, max_seconds=max_seconds,
                              max_bytes=max_bytes, proxy=guard.url,
                              progress_hook=_ByteLimit(guard, max_bytes, progress).youtube_hook)
    info = contextvars.copy_context().run(_extract_and_download, url, options, guard,
                                          window=window, max_seconds=max_seconds,
                                          max_bytes=max_bytes)
    if guard.poll_cancel():
        raise FetchError(CANCELLED_MESSAGE)
    return info, _downloaded_file(info, staging)


def _extract_and_download(url: str, options: dict[str, Any], guard: EgressGuard, *,
                          window: tuple[float, float | None] | None, max_seconds: int,
                          max_bytes: int) -> dict[str, Any]:
    import yt_dlp
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    # yt-dlp decides whether FFmpeg can cut a window by asking a downloader-less
    # FFmpegPostProcessor, which reads only this context variable (the CLI sets it too);
    # without it a venv-only FFmpeg counts as "not installed". Run in a copied context.
    FFmpegPostProcessor._ffmpeg_location.set(options.get("ffmpeg_location"))
    with yt_dlp.YoutubeDL(options) as ydl:
        info = ydl.extract_info(url, download=False)
        if not info:
            raise FetchError("YouTube returned nothing for this link")
        if info.get("_type", "video") != "video":
            raise FetchError("Only links to a single YouTube video are supported",
                             detail=f"_type={info.get('_type')}")
        _check_limits(info, window=window, max_seconds=max_seconds, max_bytes=max_bytes,
                      check_size=True)
        if guard.poll_cancel():
            raise FetchError(CANCELLED_MESSAGE)
        return cast(dict[str, Any], ydl.process_ie_result(info, download=True))


# -- Google Drive ---------------------------------------------------------------------------

_DRIVE_ID = re.compile(r"[A-Za-z0-9_-]{1,200}")


class _CappedWriter:
    """The file object gdown writes to: counts bytes and stops past max_bytes."""

    def __init__(self, raw: BinaryIO, max_bytes: int):
        self._raw = raw
        self.max_bytes = max_bytes
        self.written = 0

    def write(self, data: bytes) -> int:
        if self.written + len(data) > self.max_bytes:
            raise too_large(None, self.max_bytes)
        self.written += len(data)
        return self._raw.write(data)

    def flush(self) -> None:
        self._raw.flush()


def drive_error_message(text: str) -> str:
    """The user's message for a gdown FileURLRetrievalError text."""
    normalized = _normalize(text)
    if "too many users have viewed or downloaded" in normalized or "quota" in normalized:
        return DRIVE_QUOTA
    if "folder" in normalized:
        return DRIVE_FOLDER
    return DRIVE_NOT_SHARED


def title_from_name(name: str | None) -> str | None:
    if not name:
        return None
    stem = os.path.splitext(name)[0].strip() if not name.startswith(".") else name.strip()
    return stem or None


def _disposition_name(header: str | None) -> str | None:
    # Same reading as gdown's _get_filename_from_response (RFC 5987 form first).
    if not header:
        return None
    from urllib.parse import unquote

    header = unquote(header)
    match = (re.search(r"filename\*=UTF-8''(.*)", header)
             or re.search(r'filename="(.*?)"', header))
    return match.group(1).replace("/", "_").replace("\\", "_").strip() if match else None


def drive_file_headers(url: str, proxy: str, timeout: float
                       ) -> tuple[str, str | None, int | None]:
    """Follow Drive's confirmation pages the way gdown does and read only the headers of the
    answer that carries the file: its URL, file name and announced size (None when not
    given). gdown's parser raises FileURLRetrievalError for Drive's error pages. `proxy` (the
    egress guard) is the only way out, no *_PROXY variables; an operator's CA bundle still
    counts, as it does for gdown."""
    import requests
    from gdown.download import get_url_from_gdrive_confirmation

    with requests.Session() as session:
        session.trust_env = False
        session.proxies = {"http": proxy, "https": proxy}
        session.verify = (os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
                          or True)
        for _ in range(3):
            with session.get(url, stream=True, timeout=timeout) as response:
                response.raise_for_status()
                disposition = response.headers.get("Content-Disposition")
                if disposition or not response.headers.get("Content-Type", "").startswith(
                        "text/html"):
                    length = response.headers.get("Content-Length")
                    return (response.url, _disposition_name(disposition),
                            int(length) if length and length.isdigit() else None)
                url = get_url_from_gdrive_confirmation(response.text)
    raise FetchError(DRIVE_NOT_SHARED, detail=f"no file after confirmations at {url}")


def drive_failure(exc: Exception, detail: str) -> FetchError | None:
    import gdown.exceptions
    import requests

    if isinstance(exc, gdown.exceptions.DownloadCancelled):
        return FetchError(CANCELLED_MESSAGE, detail=detail)
    if isinstance(exc, gdown.exceptions.FileURLRetrievalError):
        return FetchError(drive_error_message(str(exc)), detail=detail)
    if isinstance(exc, requests.HTTPError):
        status = exc.response.status_code if exc.response is not None else 0
        message = {401: DRIVE_NOT_SHARED, 403: DRIVE_NOT_SHARED, 404: DRIVE_NOT_FOUND,
                   429: DRIVE_QUOTA}.get(status)
        return FetchError(message or f"Google Drive answered with an error (HTTP {status}); "
                                     "try again later", detail=detail)
    if isinstance(exc, (requests.RequestException, gdown.exceptions.DownloadError,
                        ConnectionError, TimeoutError)):
        return FetchError(DRIVE_NETWORK, detail=detail)
    return None


def fetch_drive(file_id: str, dest_dir: Path, *, base_url: str = "https://drive.google.com",
                max_bytes: int, progress: Progress | None = None, cancel: Cancel | None = None,
                timeout: float = 60, allow_private: bool = False) -> FetchResult:
    """Download one publicly shared Google Drive file to dest_dir/source.drive.

    gdown speaks Drive's protocol (confirmation pages, Docs export, error pages) only to
    drive.google.com and docs.google.com; any other base_url is probed by `drive_file_headers`.
    """
    if not _DRIVE_ID.fullmatch(file_id):
        raise FetchError("The Google Drive link does not name a file", detail=file_id)
    url = f"{base_url.rstrip('/')}/uc?id={file_id}"
    check_public_host(url, allow_private=allow_private)
    _warn_if_env_proxy(url)
    part, final = dest_dir / "source.part", dest_dir / "source.drive"
    download = functools.partial(_drive_download, url=url, part=part, max_bytes=max_bytes,
                                 timeout=timeout, progress=progress)
    title = _guarded_download(dest_dir, part, download, drive_failure,
                              allow_private=allow_private, timeout=timeout, cancel=cancel)
    size = _keep(part, final, max_bytes, "The Google Drive file is empty")
    return FetchResult(path=final, title=title, windowed=False, size=size)


def _drive_download(guard: EgressGuard, *, url: str, part: Path, max_bytes: int,
                    timeout: float, progress: Progress | None) -> str | None:
    """gdown's part of fetch_drive, inside the guard: the file's title."""
    import gdown

    common = dict(quiet=True, use_cookies=False, proxy=guard.url, timeout=timeout,
                  cancel=guard.cancelled)
    if urlsplit(url).hostname in DRIVE_HOSTS:
        # gdown hands a file object no name, so ask for it first; this also turns
        # "not shared" and quota pages into errors before any file exists.
        found = gdown.download(url=url, skip_download=True, **common)
        title, download_url = title_from_name(getattr(found, "path", None)), url
    else:
        # gdown downloads a base_url that is not Google's (tests, mirrors) as a plain file:
        # read the name and Drive's error pages here, the way gdown would.
        download_url, name, _size = drive_file_headers(url, guard.url, timeout)
        title = title_from_name(name)
    with open(part, "wb") as raw:
        # gdown's total is the announced length: _ByteLimit refuses before the bytes arrive.
        gdown.download(url=download_url, output=cast(BinaryIO, _CappedWriter(raw, max_bytes)),
                       progress=_ByteLimit(guard, max_bytes, progress), **common)
    return title

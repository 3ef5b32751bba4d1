"""Knowing a link before queueing it: `POST /process` reads a YouTube video's title and length
(yt-dlp metadata only, nothing downloaded) or a Google Drive file's name and size (the answer's
headers, the body never read) before it answers.

The probe uses fetch_service's rules as they are: the address check, the egress guard every
connection goes through, yt-dlp's options (YouTube extractor only, the same limits). A verdict
the job would reach anyway (a private, removed, live or too long video, a window past its end,
a Drive file not shared, missing or too large) is a 400 at once and no job is stored; the title
becomes the job's `audio_file_name` from the first list view on. Whatever cannot be known
within LINK_METADATA_TIMEOUT_SECONDS, or fails for a reason that may pass (the network, quotas,
YouTube refusing the server for a while), is accepted: the job says why later if it must.
"""
from __future__ import annotations

import functools
import logging
import tempfile
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from links import Source

log = logging.getLogger("ezra.source_metadata")

# yt-dlp's messages (fetch_service's table) for verdicts that no retry changes.
_FINAL_YOUTUBE_PHRASES = ("private video", "video unavailable", "members-only",
                          "confirm your age", "geo restrict", "no suitable extractor",
                          "live event will begin")
# Messages of fetch_service's own checks that start this way are final too: too long, a
# window past the end, too large.
_FINAL_PREFIXES = ("The video is ", "The selected part is ", "The start time ",
                   "The file is ")


@dataclass(frozen=True)
class LinkMetadata:
    title: str | None
    duration: float | None  # seconds; None for Drive (known only once downloaded)
    size: int | None  # bytes, when announced
    extension: str | None  # the media's extension, when known ("webm", "m4a")


class LinkRefused(Exception):
    """The link will not work, whatever the job does: str() is the user's message."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message


@functools.cache
def _final_messages() -> frozenset[str]:
    from fetch_service import (DRIVE_FOLDER, DRIVE_NOT_FOUND, DRIVE_NOT_SHARED, LIVE_MESSAGE,
                               youtube_error_message)

    return frozenset({LIVE_MESSAGE, DRIVE_FOLDER, DRIVE_NOT_FOUND, DRIVE_NOT_SHARED,
                      "Only links to a single YouTube video are supported",
                      *(youtube_error_message(p) for p in _FINAL_YOUTUBE_PHRASES)})


def is_final(message: str) -> bool:
    """True for a fetch failure no retry can change (the user must send something else)."""
    return message in _final_messages() or message.startswith(_FINAL_PREFIXES)


def probe_link(source: Source, *, start: float | None, end: float | None,
               config: dict[str, Any]) -> LinkMetadata | None:
    """What the link names, within LINK_METADATA_TIMEOUT_SECONDS; None when that is not known
    in time or the probe failed for a passing reason. Raises LinkRefused for a final verdict."""
    timeout = float(config.get("LINK_METADATA_TIMEOUT_SECONDS") or 0)
    if timeout <= 0:
        return None
    from fetch_service import FetchError

    cancel = threading.Event()
    result: Future[LinkMetadata | None] = Future()

    def run() -> None:
        try:
            if source.kind == "youtube":
                found = _youtube(source.url, start=start, end=end, timeout=timeout,
                                 cancel=cancel, config=config)
            else:
                found = _drive(source.ident, timeout=timeout, cancel=cancel, config=config)
            result.set_result(found)
        except BaseException as exc:  # handed to the waiting request
            result.set_exception(exc)

    # A thread of its own, so a probe that hangs past the deadline cannot hold the request;
    # the cancel then cuts its connections (the egress guard watches it).
    threading.Thread(target=run, name="link-metadata", daemon=True).start()
    try:
        return result.result(timeout=timeout)
    except TimeoutError:
        cancel.set()
        log.info("link metadata: no answer within %.1f s for %s; accepted", timeout, source.url)
        return None
    except FetchError as exc:
        if is_final(str(exc)):
            raise LinkRefused(str(exc), exc.detail) from exc
        log.info("link metadata: %s (%s); accepted", exc, exc.detail)
        return None
    except Exception:
        # A probe is a courtesy: whatever broke here, the job will meet it and say so.
        log.warning("link metadata probe failed for %s; accepted", source.url, exc_info=True)
        return None


def _youtube(url: str, *, start: float | None, end: float | None, timeout: float,
             cancel: threading.Event, config: dict[str, Any]) -> LinkMetadata | None:
    from egress import EgressGuard
    from fetch_service import (SOCKET_TIMEOUT, FetchError, youtube_failure, check_public_host,
                               youtube_options)

    allow_private = config["ALLOW_PRIVATE_ADDRESSES"]
    check_public_host(url, allow_private=allow_private)
    import yt_dlp
    from yt_dlp.postprocessor.ffmpeg import FFmpegPostProcessor

    with tempfile.TemporaryDirectory(prefix="ezra-probe-") as scratch, EgressGuard(
            allow_private=allow_private, timeout=min(timeout, SOCKET_TIMEOUT),
            cancel=cancel) as guard:
        # fetch_youtube's options (extractor, limits, proxy); nothing is written to scratch.
        options = youtube_options(Path(scratch), start=start, end=end,
                                  max_seconds=config["MAX_AUDIO_SECONDS"],
                                  max_bytes=config["MAX_DOWNLOAD_MB"] * 1024 * 1024,
                                  proxy=guard.url)
        options["socket_timeout"] = min(timeout, SOCKET_TIMEOUT)
        # As fetch_youtube does: yt-dlp asks this context variable whether FFmpeg can cut.
        FFmpegPostProcessor._ffmpeg_location.set(options.get("ffmpeg_location"))
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                info = ydl.extract_info(url, download=False)
            if not info:
                return None
            if info.get("_type", "video") != "video":
                raise FetchError("Only links to a single YouTube video are supported",
                                 detail=f"_type={info.get('_type')}")
            # The limits fetch_youtube checks before downloading: live, length, window, size.
            options["match_filter"](info, incomplete=False)
        except Exception as exc:
            failure = youtube_failure(exc, guard)
            if failure is None:
                raise
            raise failure from exc
    duration = info.get("duration")
    return LinkMetadata(title=info.get("title"),
                        duration=float(duration) if duration is not None else None,
                        size=info.get("filesize") or info.get("filesize_approx"),
                        extension=info.get("ext"))


def _drive(file_id: str, *, timeout: float, cancel: threading.Event,
           config: dict[str, Any]) -> LinkMetadata | None:
    from egress import EgressGuard
    from fetch_service import (check_public_host, drive_failure, drive_file_headers,
                               title_from_name, too_large)

    allow_private = config["ALLOW_PRIVATE_ADDRESSES"]
    max_bytes = config["MAX_DOWNLOAD_MB"] * 1024 * 1024
    url = f"{config['DRIVE_BASE_URL'].rstrip('/')}/uc?id={file_id}"
    check_public_host(url, allow_private=allow_private)
    with EgressGuard(allow_private=allow_private, timeout=timeout, cancel=cancel) as guard:
        try:
            _url, name, size = drive_file_headers(url, guard.url, timeout)
        except Exception as exc:
            failure = drive_failure(exc, guard)
            if failure is None:
                raise
            raise failure from exc
    if size is not None and size > max_bytes:
        raise too_large(size, max_bytes)
    return LinkMetadata(title=title_from_name(name), duration=None, size=size, extension=None)


def stored_names(metadata: LinkMetadata, source_kind: str) -> tuple[str, str] | None:
    """(audio_file_name, audio_file_path) from a link's title, as the pipeline names a fetched
    source (a YouTube title gets the media's extension; Drive's type is unknown: none)."""
    from validation import source_names

    if not metadata.title:
        return None
    suffix = f".{metadata.extension}" if source_kind == "youtube" and metadata.extension else ""
    return source_names(metadata.title, suffix)

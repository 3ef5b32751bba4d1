"""What a submitted link names: one YouTube video or one Google Drive file, or an error.

Hosts are matched exactly on the parsed URL (never by substring), so
`https://evil.example/youtube.com/...` or `https://youtube.com@evil.example/` are refused.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

YOUTUBE_HOSTS = frozenset({
    "youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be",
    "www.youtu.be", "youtube-nocookie.com", "www.youtube-nocookie.com",
})
DRIVE_HOSTS = frozenset({"drive.google.com", "docs.google.com"})
DEFAULT_ALLOWED_HOSTS = YOUTUBE_HOSTS | DRIVE_HOSTS

_VIDEO_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_DRIVE_ID = re.compile(r"^[A-Za-z0-9_-]{10,200}$")
MAX_LINK_LENGTH = 2048


class LinkError(ValueError):
    """The link cannot be used; the message tells the user what to send instead."""


@dataclass(frozen=True)
class Source:
    kind: str  # "youtube" or "drive"
    ident: str  # the video id or the Drive file id
    url: str  # the canonical URL the fetcher uses

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""


def parse_link(link: str, allowed_hosts: frozenset[str] | set[str] | None = None) -> Source:
    link = link.strip()
    if len(link) > MAX_LINK_LENGTH:
        raise LinkError(f"The link is longer than {MAX_LINK_LENGTH} characters")
    if any(ch.isspace() or ord(ch) < 32 for ch in link):
        raise LinkError("The link must not contain spaces or control characters")
    try:
        parts = urlsplit(link)
    except ValueError:  # "https://[youtube.com]/", a fullwidth slash in the host, ...
        raise LinkError("The link is malformed; copy it again from the browser's address "
                        "bar") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise LinkError("The link must start with https:// (a YouTube or Google Drive link)")
    if parts.username or parts.password:
        raise LinkError("The link must not contain a user name or password")
    try:
        host = (parts.hostname or "").rstrip(".").lower()
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise LinkError("The link's host or port is malformed") from None
    # Configuration may narrow the hosts (e.g. Drive only), never widen them.
    allowed = allowed_hosts if allowed_hosts is not None else DEFAULT_ALLOWED_HOSTS
    if host not in allowed:
        raise LinkError("Only YouTube and Google Drive links are accepted")
    if host in YOUTUBE_HOSTS:
        return _youtube(parts, host)
    if host in DRIVE_HOSTS:
        return _drive(parts)
    raise LinkError("Only YouTube and Google Drive links are accepted")


def _youtube(parts, host: str) -> Source:
    query = parse_qs(parts.query)
    path = [p for p in parts.path.split("/") if p]
    video_id = None
    if host in ("youtu.be", "www.youtu.be"):
        video_id = path[0] if path else None
    elif path[:1] == ["watch"]:
        video_id = (query.get("v") or [None])[0]
    elif len(path) >= 2 and path[0] in ("shorts", "live", "embed", "v", "e"):
        video_id = path[1]
    elif path[:1] == ["playlist"] or ("list" in query and "v" not in query):
        raise LinkError("The link names a playlist; open one video of it and send that link")
    if not video_id or not _VIDEO_ID.match(video_id):
        raise LinkError("The YouTube link does not name a video (expected watch?v=..., "
                        "youtu.be/... or shorts/...)")
    return Source("youtube", video_id, f"https://www.youtube.com/watch?v={video_id}")


def _drive(parts) -> Source:
    query = parse_qs(parts.query)
    path = [p for p in parts.path.split("/") if p]
    if "folders" in path or "folderview" in path or path[-1:] == ["drive"] and "id" not in query:
        raise LinkError("Google Drive folder links are not supported; share and send the "
                        "link of one file")
    file_id = None
    if "d" in path and path.index("d") + 1 < len(path):
        file_id = path[path.index("d") + 1]
    elif "id" in query:
        file_id = query["id"][0]
    if not file_id or not _DRIVE_ID.match(file_id):
        raise LinkError("The Google Drive link does not name a file (expected "
                        "drive.google.com/file/d/<id>/...)")
    return Source("drive", file_id, f"https://drive.google.com/uc?id={file_id}")

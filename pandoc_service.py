"""Markdown → Word export with pandoc, and safe download names for user-titled files.

pandoc runs as a child process with arguments as a list, a timeout, a heap limit and
`--sandbox`: the markdown comes from users (and from models fed with their audio), and without
the sandbox `![x](/etc/passwd)` or a remote image URL would be fetched and embedded in the .docx.
"""
from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import unicodedata
from pathlib import Path

from errors import ServiceError

DEFAULT_REFERENCE_DOCX = Path(__file__).parent / "assets" / "reference.docx"

# A long transcript converts in about a second; this stops pathological input.
DEFAULT_TIMEOUT = 120.0
# pandoc's manual recommends a heap limit against pathological inputs (DoS).
_HEAP_LIMIT = ["+RTS", "-M1024m", "-RTS"]
# Markdown with `raw_attribute` off: a ```{=openxml} block would otherwise put arbitrary
# WordprocessingML (e.g. fields that fetch URLs when Word updates them) into the document.
_READER = "markdown-raw_attribute"


class PandocError(ServiceError):
    """The document could not be produced; str() is a short message."""


@functools.cache
def pandoc_exe() -> str:
    """A system pandoc when there is one, else the binary inside the pypandoc-binary wheel.

    pypandoc.get_pandoc_path() only looks for binaries (PATH, its wheel's `files/pandoc`, a few
    usual places) and runs `--version` on them; it never downloads anything.
    """
    found = shutil.which("pandoc")
    if found:
        return found
    try:
        import pypandoc
        return pypandoc.get_pandoc_path()
    except (ImportError, OSError) as exc:
        raise PandocError("pandoc is not installed on the server") from exc


@functools.cache
def _heap_limit_args() -> tuple[str, ...]:
    # A pandoc built without -rtsopts rejects +RTS; then we rely on the timeout alone.
    try:
        result = subprocess.run([pandoc_exe(), *_HEAP_LIMIT, "--version"], stdin=subprocess.DEVNULL,
                                capture_output=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ()
    return tuple(_HEAP_LIMIT) if result.returncode == 0 else ()


def _short_error(stderr: bytes) -> str:
    """pandoc's first error line, without its Haskell call-stack dump."""
    for line in stderr.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if not line or line.startswith("[WARNING]") or line.startswith("HasCallStack"):
            continue
        line = re.sub(r"^pandoc(?:\.exe)?:\s*", "", line)
        if "heap overflow" in line.lower() or "heap exhausted" in line.lower():
            return "The document is too large or complex to convert"
        return line[:197] + "..." if len(line) > 200 else line
    return "unknown error"


def markdown_to_docx(markdown: str, reference_doc: Path | None = None,
                     timeout: float = DEFAULT_TIMEOUT) -> bytes:
    """The .docx bytes for `markdown`, styled by `reference_doc` when given.

    Sandbox and reference doc: `--sandbox` only restricts what the *document* can make pandoc
    read (images, includes, URLs); files named on the command line, like --reference-doc, are
    read before the sandbox applies. Verified with pandoc 3.9 (tests/test_pandoc_service.py
    checks a style that exists only in a test reference doc). Markdown is fed on stdin and the
    .docx read from stdout, so there is no temporary file to clean up.
    """
    if not isinstance(markdown, str):
        raise PandocError("The document text must be a string")
    args = [pandoc_exe(), *_heap_limit_args(), "--sandbox", "-f", _READER, "-t", "docx"]
    if reference_doc is not None:
        reference = Path(reference_doc)
        if not reference.is_file():
            raise PandocError(f"The reference document {reference.name} does not exist")
        args += ["--reference-doc", os.path.abspath(reference)]
    args += ["-o", "-"]
    try:
        result = subprocess.run(args, input=markdown.encode("utf-8", "replace"),
                                capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PandocError("Creating the Word document took too long") from None
    except OSError as exc:
        raise PandocError("pandoc could not be started on the server") from exc
    if result.returncode != 0:
        raise PandocError(f"The Word document could not be created: {_short_error(result.stderr)}")
    if not result.stdout.startswith(b"PK"):
        raise PandocError("The Word document could not be created: pandoc returned no document")
    return result.stdout


# --------------------------------------------------------------------------- download names

_MAX_NAME_CHARS = 120
# Path separators, quotes, and the characters Windows forbids in file names.
_UNSAFE_CHARS = re.compile(r"[/\\\"'`<>:|?*]")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)),
                     *(f"LPT{i}" for i in range(1, 10))}


@functools.lru_cache(maxsize=4096)  # every list row names three documents
def _clean_stem(text: str) -> str:
    text = unicodedata.normalize("NFC", text)
    # Drop control (Cc), format (Cf: bidi overrides that disguise extensions, zero-width),
    # surrogate, private-use and unassigned characters; keep letters of every script.
    text = "".join(" " if ch.isspace() else ch for ch in text
                   if ch.isspace() or unicodedata.category(ch)[0] != "C")
    text = _UNSAFE_CHARS.sub(" ", text)
    text = " ".join(text.split())  # collapse whitespace, including Unicode spaces
    text = text.lstrip(". ")  # no hidden files, no "../"
    text = text[:_MAX_NAME_CHARS].rstrip(". ")  # Windows drops trailing dots and spaces
    if text.split(".")[0].upper() in _WINDOWS_RESERVED:
        text = "_" + text
    return text


def safe_download_name(title: str | None, extension: str, fallback: str) -> str:
    """A Content-Disposition file name from a user-controlled title, e.g. "Talk — Été 2024.docx".

    Unicode letters are kept: Flask's send_file(download_name=...) sends an ASCII `filename=`
    plus an RFC 5987 `filename*=UTF-8''…` that browsers prefer.
    """
    stem = _clean_stem(title) if isinstance(title, str) else ""
    if not stem:
        stem = _clean_stem(fallback) or "download"
    extension = extension.strip()
    if extension and not extension.startswith("."):
        extension = "." + extension
    return stem + extension


__all__ = ["PandocError", "DEFAULT_REFERENCE_DOCX", "pandoc_exe", "markdown_to_docx",
           "safe_download_name"]

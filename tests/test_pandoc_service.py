"""pandoc_service with the real pandoc binary."""
from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pandoc_service import (  # noqa: E402
    DEFAULT_REFERENCE_DOCX,
    PandocError,
    markdown_to_docx,
    pandoc_exe,
    safe_download_name,
)

MARKDOWN = """# Quarterly Review

The *zebra* crossed the **riverbank** at dawn.

## Späte Fragen

- Ünïcödé survives
- second item
"""
MARKER_STYLE = "EzraTestMarker"


def docx_part(data: bytes, name: str) -> str:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return archive.read(name).decode("utf-8")


@pytest.fixture(scope="module")
def marked_reference(tmp_path_factory) -> Path:
    """The default reference doc plus one custom style that pandoc's built-in one lacks."""
    path = tmp_path_factory.mktemp("ref") / "marked.docx"
    with zipfile.ZipFile(DEFAULT_REFERENCE_DOCX) as src, \
            zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename == "word/styles.xml":
                style = (f'<w:style w:type="paragraph" w:customStyle="1" '
                         f'w:styleId="{MARKER_STYLE}"><w:name w:val="{MARKER_STYLE}"/></w:style>')
                data = data.replace(b"</w:styles>", style.encode() + b"</w:styles>")
            dst.writestr(item, data)
    return path


def test_pandoc_exe_runs():
    exe = pandoc_exe()
    assert os.access(exe, os.X_OK)


def test_default_reference_docx_is_shipped():
    assert DEFAULT_REFERENCE_DOCX.is_file()
    with zipfile.ZipFile(DEFAULT_REFERENCE_DOCX) as archive:
        assert "word/styles.xml" in archive.namelist()


def test_markdown_to_docx_contains_the_text():
    data = markdown_to_docx(MARKDOWN)
    assert zipfile.is_zipfile(io.BytesIO(data))
    document = docx_part(data, "word/document.xml")
    for word in ("Quarterly Review", "zebra", "riverbank", "Späte Fragen", "Ünïcödé survives"):
        assert word in document
    assert 'w:val="Heading1"' in document and 'w:val="Heading2"' in document


def test_reference_doc_is_applied_in_sandbox(marked_reference):
    styled = markdown_to_docx(MARKDOWN, marked_reference)
    assert MARKER_STYLE in docx_part(styled, "word/styles.xml")
    assert "zebra" in docx_part(styled, "word/document.xml")
    plain = markdown_to_docx(MARKDOWN, DEFAULT_REFERENCE_DOCX)
    assert MARKER_STYLE not in docx_part(plain, "word/styles.xml")


def test_sandbox_blocks_local_files(tmp_path):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"\x89PNG\r\n\x1a\n" + b"secret-bytes" * 10)
    data = markdown_to_docx(f"# Hi\n\n![leak]({secret})\n\n![remote](http://127.0.0.1:9/x.png)\n")
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert not [n for n in archive.namelist() if n.startswith("word/media/")]
        assert all(b"secret-bytes" not in archive.read(n) for n in archive.namelist())


def test_raw_openxml_is_not_injected():
    raw = "<w:p><w:r><w:t>INJECTED</w:t></w:r></w:p>"
    data = markdown_to_docx(f"```{{=openxml}}\n{raw}\n```\n\nInline `{raw}`{{=openxml}}\n")
    document = docx_part(data, "word/document.xml")
    assert raw not in document  # only as escaped text
    assert "INJECTED" in document


def test_empty_markdown_gives_a_document():
    data = markdown_to_docx("")
    assert "word/document.xml" in zipfile.ZipFile(io.BytesIO(data)).namelist()


def test_missing_reference_doc(tmp_path):
    with pytest.raises(PandocError, match="does not exist"):
        markdown_to_docx("# Hi", tmp_path / "missing.docx")


def test_broken_reference_doc(tmp_path):
    broken = tmp_path / "broken.docx"
    broken.write_text("not a zip")
    with pytest.raises(PandocError) as exc:
        markdown_to_docx("# Hi", broken)
    assert "HasCallStack" not in str(exc.value) and "\n" not in str(exc.value)


def test_timeout():
    with pytest.raises(PandocError, match="too long"):
        markdown_to_docx("# Hi\n" * 1000, timeout=0.001)


@pytest.mark.parametrize("title, expected", [
    ("Quarterly Review", "Quarterly Review.docx"),
    ("../../etc/passwd", "etc passwd.docx"),
    ("..\\..\\boot.ini", "boot.ini.docx"),
    ('My "quoted" \'talk\'', "My quoted talk.docx"),
    ("  lots \t of\n\nspace  ", "lots of space.docx"),
    (".hidden", "hidden.docx"),
    ("bell\x07 and \x00nul", "bell and nul.docx"),
    ("evil\u202egpj.exe", "evilgpj.exe.docx"),  # bidi override removed
    ("Été à Zürich — 日本語", "Été à Zürich — 日本語.docx"),
    ("CON", "_CON.docx"),
    ("", "transcript-7.docx"),
    (None, "transcript-7.docx"),
    ("...", "transcript-7.docx"),
    ("/\\:*?", "transcript-7.docx"),
])
def test_safe_download_name(title, expected):
    assert safe_download_name(title, ".docx", "transcript-7") == expected


def test_safe_download_name_length_and_extension():
    name = safe_download_name("é" * 500, "md", "x")
    assert name == "é" * 120 + ".md"
    assert safe_download_name("a" * 119 + " .b", ".txt", "x") == "a" * 119 + ".txt"
    assert safe_download_name(None, ".docx", "../") == "download.docx"

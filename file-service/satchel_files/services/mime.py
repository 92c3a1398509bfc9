"""The MIME type of uploaded bytes: detected from the content, checked against what the client says.

Detection looks at the first chunk only: magic numbers (the `filetype` library, plus executables
and active web content it does not know), then "is it UTF-8 text without NULs". The client's
claims are the part's Content-Type and the filename's extension. A claim that contradicts the
content in a way that matters is rejected: content that a browser or an OS would run (HTML, SVG,
XML with scripts, ELF/PE/Mach-O executables, `#!` scripts) under a harmless-looking claim (an
image, audio, video, PDF, plain text, ...). Otherwise the detected type wins, except that a text
claim refines detected plain text (`text/csv; charset=utf-8` on text bytes stays `text/csv`) and
a specific claim refines bytes we cannot identify.
"""
from __future__ import annotations

import mimetypes
import re

import filetype

from satchel_shared.errors import ApiError

OCTET_STREAM = "application/octet-stream"
TEXT_PLAIN = "text/plain"
SNIFF_BYTES = 64 * 1024

_MIME_TABLE = mimetypes.MimeTypes(filenames=())  # the built-in table, not the host's
_GENERIC = {OCTET_STREAM, "binary/octet-stream", "application/binary", "application/unknown",
            "application/x-download", "application/force-download", ""}
_EXECUTABLE = {"application/x-executable", "application/x-msdownload", "application/x-mach-binary",
               "application/x-sh", "application/x-shellscript", "text/x-script"}
_ACTIVE = {"text/html", "image/svg+xml", "application/xhtml+xml", "application/xml", "text/xml"}
_HTML_START = re.compile(
    rb"\s*(<!doctype\s+html|<html|<head|<body|<script|<iframe|<h1|<div|<font|<table|<a\s|<style"
    rb"|<title|<b>|<br|<p>|<p\s|<!--)", re.IGNORECASE)
_SVG = re.compile(rb"<svg[\s>]", re.IGNORECASE)
_XML = re.compile(rb"\s*<\?xml", re.IGNORECASE)
_MACH_O = (b"\xfe\xed\xfa\xce", b"\xfe\xed\xfa\xcf", b"\xce\xfa\xed\xfe", b"\xcf\xfa\xed\xfe",
           b"\xca\xfe\xba\xbe")
_TEXT_LIKE = re.compile(r"^(text/.+|application/(json|.+\+json|javascript|x-yaml|yaml|toml"
                        r"|x-ndjson|sql|x-sql|x-tex|rtf)|image/svg\+xml)$")


def normalize(content_type: str | None) -> str:
    """`Text/Plain; charset=UTF-8` -> `text/plain`; junk -> ''."""
    if not content_type:
        return ""
    base = content_type.split(";", 1)[0].strip().lower()
    return base if re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]*/[a-z0-9][a-z0-9!#$&^_.+-]*", base) else ""


def from_extension(filename: str) -> str:
    guessed, _ = _MIME_TABLE.guess_type(filename, strict=False)
    return normalize(guessed)


def detect(head: bytes) -> str:
    """The type of content starting with `head` (the first chunk, or its first 64 KiB)."""
    head = head[:SNIFF_BYTES]
    if not head:
        return "application/x-empty"
    if head.startswith(_MACH_O):
        return "application/x-mach-binary"
    kind = filetype.guess(head)
    if kind is not None:
        return kind.mime
    if head.startswith(b"#!"):
        return "text/x-script"
    text = head.removeprefix(b"\xef\xbb\xbf")
    if _HTML_START.match(text):
        return "text/html"
    if _XML.match(text) or text.lstrip().startswith(b"<svg"):
        return "image/svg+xml" if _SVG.search(text) else "application/xml"
    if _is_utf8_text(head):
        return TEXT_PLAIN
    return OCTET_STREAM


def _is_utf8_text(head: bytes) -> bool:
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # The sniffed prefix may end inside a multi-byte character.
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"


def is_dangerous(mime_type: str) -> bool:
    return mime_type in _EXECUTABLE or mime_type in _ACTIVE


def choose(head: bytes, *, declared: str | None, filename: str) -> str:
    """The MIME type to store for a file, or ApiError(400) if the claims contradict the bytes."""
    detected = detect(head)
    claims = [claim for claim in (normalize(declared), from_extension(filename))
              if claim and claim not in _GENERIC]
    if is_dangerous(detected):
        for claim in claims:
            if not _claim_allows(claim, detected):
                raise ApiError(400, "content_type_mismatch",
                               f"The file {filename!r} is said to be {claim} but its content is "
                               f"{detected}.",
                               {"filename": filename, "claimed": claim, "detected": detected})
        return detected
    if detected == "application/x-empty":
        return claims[0] if claims else OCTET_STREAM
    if detected == TEXT_PLAIN:
        text_claims = [claim for claim in claims if _TEXT_LIKE.match(claim)
                       and not is_dangerous(claim)]
        return text_claims[0] if text_claims else TEXT_PLAIN
    if detected == OCTET_STREAM:
        unknowable = [claim for claim in claims if not _is_sniffable(claim)]
        return unknowable[0] if unknowable else OCTET_STREAM
    return detected


def _claim_allows(claim: str, detected: str) -> bool:
    """A claim is consistent with dangerous content only if it names that kind of content."""
    if claim == detected:
        return True
    if detected in _ACTIVE:
        return claim in _ACTIVE
    return claim in _EXECUTABLE or claim.startswith("application/x-")


def _is_sniffable(claim: str) -> bool:
    """Types whose content `detect` would have recognised: unknown bytes are not one of them."""
    return (claim.split("/", 1)[0] in ("image", "audio", "video", "text", "font")
            or claim in ("application/pdf", "application/zip", "application/gzip")
            or is_dangerous(claim))

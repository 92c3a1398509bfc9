"""Streaming multipart/form-data (RFC 7578, RFC 2046 section 5.1) over a `readinto` body.

`iter_parts(body, content_type)` yields `FieldPart`s (small values, read whole) and `FilePart`s.
A file part's bytes are read with `FilePart.read_into(buffer, want)`, which fills the caller's
buffer straight from the body (under gunicorn: one copy, from the socket) and looks for the
boundary in place, so the bytes of a large upload are never copied around in Python. A part
must be consumed before the next one is asked for (what is left of it is skipped).

Malformed bodies raise ApiError(400); oversized headers, fields or part counts ApiError(413).
Line breaks must be CRLF, as RFC 2046 says and every client sends.
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from werkzeug.datastructures import Headers
from werkzeug.http import parse_options_header

from satchel_shared.errors import ApiError

READ_BYTES = 64 * 1024  # reads for headers, fields and skipped bytes
MAX_HEADER_BYTES = 16 * 1024
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 1000
_MAX_PADDING_BYTES = 1024  # transport padding allowed after a boundary


@dataclass
class FieldPart:
    name: str
    value: str


class FilePart:
    def __init__(self, parser: "_Parser", name: str, filename: str, content_type: str | None):
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self._parser = parser

    @property
    def lookahead(self) -> int:
        """How much larger than `want` a buffer given to `read_into` must be."""
        return self._parser.lookahead

    def read_into(self, buffer, want: int) -> int:
        """Put the part's next bytes in `buffer[:n]`, n = `want` unless the part ends first (so
        n < want means it has ended). `buffer` is a bytearray or an mmap of at least
        `want + lookahead` bytes: the reads may go that far to see where the part ends."""
        return self._parser.read_part_into(self, buffer, want)


def _malformed(detail: str = "") -> ApiError:
    return ApiError(400, "invalid_multipart",
                    "The request body is not valid multipart/form-data." + (f" {detail}" if detail else ""))


def boundary_of(content_type: str | None) -> bytes:
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary:
        raise ApiError(400, "invalid_multipart",
                       "Send the request as multipart/form-data (with a boundary).")
    if len(boundary) > 200 or not boundary.isascii():
        raise _malformed("Bad boundary.")
    return boundary.encode("ascii")


class _Parser:
    """Reads the body once, front to back. `_ahead` holds bytes read but not consumed yet
    (a few bytes while a file streams; at most one read when a part has just ended)."""

    def __init__(self, body, boundary: bytes):
        self._body = body
        self._delimiter = b"\r\n--" + boundary
        # The first boundary may open the body without a line break before it: pretend one.
        self._ahead = bytearray(b"\r\n")
        self._eof = False
        self._current: FilePart | None = None
        self._part_ended = True

    @property
    def lookahead(self) -> int:
        return len(self._delimiter)

    # --- reading ------------------------------------------------------------------------------
    def _read(self, view: memoryview) -> int:
        """Bytes for the start of `view`: those read ahead first, then the body's."""
        if self._ahead:
            count = min(len(view), len(self._ahead))
            view[:count] = self._ahead[:count]
            del self._ahead[:count]
            return count
        if self._eof:
            return 0
        count = self._body.readinto(view)
        self._eof = count == 0
        return count

    def _unread(self, data) -> None:
        self._ahead[:0] = data

    def _read_ahead(self) -> bool:
        """Append one more read to `_ahead`; False at the end of the body."""
        if self._eof:
            return False
        scratch = bytearray(READ_BYTES)
        count = self._body.readinto(memoryview(scratch))
        if count == 0:
            self._eof = True
            return False
        self._ahead += memoryview(scratch)[:count]
        return True

    def _need(self, size: int) -> bool:
        while len(self._ahead) < size:
            if not self._read_ahead():
                return False
        return True

    # --- structure ----------------------------------------------------------------------------
    def parts(self) -> Iterator[FieldPart | FilePart]:
        self._skip_preamble()
        for _ in range(MAX_PARTS + 1):
            if not self._open_part():
                return
            headers = self._read_headers()
            disposition = headers.get("Content-Disposition")
            if disposition is None:
                raise _malformed("A part has no Content-Disposition header.")
            _, options = parse_options_header(disposition)
            name = options.get("name") or ""
            self._part_ended = False
            if "filename" in options or "filename*" in disposition.lower():
                part = FilePart(self, name, _raw_filename(disposition, options),
                                headers.get("Content-Type"))
                self._current = part
                yield part
                self._skip_rest_of(part)
            else:
                yield FieldPart(name, self._read_field(name))
        raise ApiError(413, "payload_too_large", f"A request may have at most {MAX_PARTS} parts.")

    def _skip_preamble(self) -> None:
        keep = len(self._delimiter) - 1
        while (found := self._ahead.find(self._delimiter)) < 0:
            del self._ahead[:max(0, len(self._ahead) - keep)]
            if not self._read_ahead():
                raise _malformed("The boundary does not occur in the body.")
        del self._ahead[:found]

    def _open_part(self) -> bool:
        """At a delimiter: step over it; True if a part follows, False at the closing one."""
        if not self._need(len(self._delimiter) + 2):
            raise _malformed("The body ended inside a boundary.")
        del self._ahead[:len(self._delimiter)]
        if self._ahead.startswith(b"--"):
            return False  # the close delimiter; the epilogue is ignored
        padding = 0
        while True:
            if not self._need(padding + 2):
                raise _malformed("The body ended after a boundary.")
            if self._ahead[padding:padding + 2] == b"\r\n":
                del self._ahead[:padding + 2]
                return True
            if self._ahead[padding] not in b" \t" or padding >= _MAX_PADDING_BYTES:
                raise _malformed("A boundary is not followed by a line break.")
            padding += 1

    def _read_headers(self) -> Headers:
        if not self._need(2):
            raise _malformed("The body ended inside a part's headers.")
        if self._ahead.startswith(b"\r\n"):  # no headers at all
            del self._ahead[:2]
            return Headers()
        while (end := self._ahead.find(b"\r\n\r\n")) < 0:
            if len(self._ahead) > MAX_HEADER_BYTES:
                raise ApiError(413, "payload_too_large", "A multipart header is too large.")
            if not self._read_ahead():
                raise _malformed("The body ended inside a part's headers.")
        if end > MAX_HEADER_BYTES:
            raise ApiError(413, "payload_too_large", "A multipart header is too large.")
        block = bytes(self._ahead[:end])
        # An empty part may share the header block's last line break with its delimiter
        # (werkzeug's test client writes it so; werkzeug's parser accepts it).
        self._need(end + 2 + len(self._delimiter))
        shares_line_break = self._ahead.startswith(self._delimiter, end + 2)
        del self._ahead[:end + (2 if shares_line_break else 4)]
        return _parse_headers(block)

    def _read_field(self, name: str) -> str:
        buffer = bytearray(MAX_FIELD_BYTES + 1 + self.lookahead)
        count = self._read_body(buffer, MAX_FIELD_BYTES + 1)
        if count > MAX_FIELD_BYTES:
            raise ApiError(413, "payload_too_large", f"The form field {name!r} is too large.")
        try:
            return buffer[:count].decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "invalid_multipart", f"The form field {name!r} is not UTF-8.") from None

    def _skip_rest_of(self, part: FilePart) -> None:
        if self._current is part and not self._part_ended:
            scratch = bytearray(READ_BYTES + self.lookahead)
            while self._read_body(scratch, READ_BYTES) == READ_BYTES:
                pass
        self._current = None

    # --- part bodies --------------------------------------------------------------------------
    def read_part_into(self, part: FilePart, buffer, want: int) -> int:
        if part is not self._current:
            raise RuntimeError("a file part can only be read before the next part is asked for")
        return self._read_body(buffer, want)

    def _read_body(self, buffer, want: int) -> int:
        """The core loop: read into `buffer` up to `want + lookahead` bytes, find the delimiter
        in what came in (and the few bytes before it), hand back what is past the answer."""
        if self._part_ended:
            return 0
        size = len(self._delimiter)
        capacity = want + size
        if len(buffer) < capacity:
            raise ValueError(f"the buffer must hold want + {size} bytes")
        view = memoryview(buffer)
        filled = 0
        while True:
            received = self._read(view[filled:capacity])
            if received == 0:
                raise _malformed("The body ended inside a part.")
            found = buffer.find(self._delimiter, max(0, filled - size + 1), filled + received)
            filled += received
            if found >= 0:  # the part ends at `found` (or later, if that is past `want`)
                count = min(found, want)
                self._part_ended = found <= want
            elif filled >= want + size - 1:  # no delimiter can begin before `want`
                count = want
            else:
                continue
            self._unread(view[count:filled])
            return count


def iter_parts(body, content_type: str | None) -> Iterator[FieldPart | FilePart]:
    """The parts of a multipart/form-data body read from `body.readinto` (see api/body.py)."""
    return _Parser(body, boundary_of(content_type)).parts()


_CONTINUATION = re.compile(rb"\r\n[ \t]+")


def _parse_headers(block: bytes) -> Headers:
    headers = Headers()
    try:
        text = _CONTINUATION.sub(b" ", block).decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("A part's headers are not UTF-8.") from None
    for line in text.split("\r\n"):
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise _malformed(f"Bad part header line {line[:80]!r}.")
        headers.add(name.strip(" \t"), value.strip(" \t"))
    return headers


_QUOTED_FILENAME = re.compile(r'filename="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def _raw_filename(disposition: str, options: dict) -> str:
    """The part's filename with backslashes kept: browsers send Windows paths unescaped
    (`C:\\dir\\a.txt`), which quoted-string unescaping would turn into `C:dira.txt`."""
    filename = options.get("filename") or ""
    if "filename*" in disposition.lower():
        return filename  # RFC 5987, already decoded
    match = _QUOTED_FILENAME.search(disposition)
    if match is None or "\\" not in match.group(1):
        return filename
    return match.group(1).replace('\\"', '"')

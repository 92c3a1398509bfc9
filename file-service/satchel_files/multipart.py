"""Streaming multipart/form-data: parts as they arrive, file bodies as pieces, nothing spooled.

`iter_parts(stream, content_type)` yields `FieldPart`s (small values, read whole) and `FilePart`s,
whose `pieces()` must be consumed before asking for the next part (what is left is skipped).
Malformed bodies raise ApiError(400); oversized fields or headers ApiError(413).
"""
from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

from werkzeug.exceptions import RequestEntityTooLarge
from werkzeug.http import parse_options_header
from werkzeug.sansio.multipart import (NEED_DATA, Data, Epilogue, Field, File, MultipartDecoder,
                                       Preamble)

from satchel_shared.errors import ApiError

READ_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 16 * 1024
MAX_PARTS = 1000


@dataclass
class FieldPart:
    name: str
    value: str


class FilePart:
    def __init__(self, reader: "_Reader", name: str, filename: str, content_type: str | None):
        self.name = name
        self.filename = filename
        self.content_type = content_type
        self._reader = reader
        self.is_consumed = False

    def pieces(self) -> Iterator[bytes]:
        """The part's body, in pieces of at most about READ_BYTES."""
        if self.is_consumed:
            return
        while True:
            event = self._reader.next_event()
            if not isinstance(event, Data):  # pragma: no cover - the decoder guarantees Data
                raise _malformed()
            if event.data:
                yield event.data
            if not event.more_data:
                self.is_consumed = True
                return


def _malformed(detail: str = "") -> ApiError:
    return ApiError(400, "invalid_multipart",
                    "The request body is not valid multipart/form-data." + (f" {detail}" if detail else ""))


class _Reader:
    def __init__(self, stream: BinaryIO, boundary: bytes):
        self._stream = stream
        self._decoder = MultipartDecoder(boundary, max_form_memory_size=READ_BYTES * 2 + 64 * 1024,
                                         max_parts=MAX_PARTS)

    def next_event(self):
        while True:
            try:
                event = self._decoder.next_event()
            except RequestEntityTooLarge:
                raise ApiError(413, "payload_too_large", "A multipart header is too large.") from None
            except ValueError as exc:
                raise _malformed(str(exc)) from None
            if event is not NEED_DATA:
                return event
            data = self._stream.read(READ_BYTES)
            try:
                self._decoder.receive_data(data or None)
            except RequestEntityTooLarge:
                raise ApiError(413, "payload_too_large", "A multipart header is too large.") from None


def boundary_of(content_type: str | None) -> bytes:
    mimetype, options = parse_options_header(content_type or "")
    boundary = options.get("boundary", "")
    if mimetype != "multipart/form-data" or not boundary:
        raise ApiError(400, "invalid_multipart",
                       "Send the request as multipart/form-data (with a boundary).")
    if len(boundary) > 200 or not boundary.isascii():
        raise _malformed("Bad boundary.")
    return boundary.encode("ascii")


def iter_parts(stream: BinaryIO, content_type: str | None) -> Iterator[FieldPart | FilePart]:
    reader = _Reader(stream, boundary_of(content_type))
    pending: FilePart | None = None
    while True:
        if pending is not None and not pending.is_consumed:
            for _ in pending.pieces():
                pass
        pending = None
        event = reader.next_event()
        if isinstance(event, Preamble):
            continue
        if isinstance(event, Epilogue):
            return
        if isinstance(event, File):
            pending = FilePart(reader, event.name or "", _raw_filename(event),
                               event.headers.get("Content-Type"))
            yield pending
        elif isinstance(event, Field):
            yield FieldPart(event.name or "", _read_field(reader, event.name or ""))
        else:
            raise _malformed()


_QUOTED_FILENAME = re.compile(r'filename="((?:[^"\\]|\\.)*)"', re.IGNORECASE)


def _raw_filename(event: File) -> str:
    """The part's filename with backslashes kept: browsers send Windows paths unescaped
    (`C:\\dir\\a.txt`), which quoted-string unescaping would turn into `C:dira.txt`."""
    disposition = event.headers.get("Content-Disposition", "")
    if "filename*" in disposition.lower():
        return event.filename  # RFC 5987, already decoded
    match = _QUOTED_FILENAME.search(disposition)
    if match is None or "\\" not in match.group(1):
        return event.filename
    return match.group(1).replace('\\"', '"')


def _read_field(reader: _Reader, name: str) -> str:
    value = bytearray()
    while True:
        event = reader.next_event()
        if not isinstance(event, Data):
            raise _malformed()
        value += event.data
        if len(value) > MAX_FIELD_BYTES:
            raise ApiError(413, "payload_too_large", f"The form field {name!r} is too large.")
        if not event.more_data:
            break
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "invalid_multipart", f"The form field {name!r} is not UTF-8.") from None

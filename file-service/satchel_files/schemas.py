"""The edge: what requests may carry and how responses look. No database access here."""
from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from satchel_shared.errors import ApiError
from satchel_shared.fields import Text

from .change_cursor import ChangeCursor, is_epoch_id
from .repositories.listing import MAX_MS
from .services.clock import to_ms

MAX_FILENAME_BYTES = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


# filenames


def clean_filename(raw: str | None) -> str:
    """A display name: NFC, last path segment, no control characters, <= 255 UTF-8 bytes.

    Raises ApiError(400) when nothing usable is left. Never used in a storage path.
    """
    name = unicodedata.normalize("NFC", raw or "")
    name = re.split(r"[/\\]", name)[-1]
    name = _CONTROL.sub("", name).strip()
    if name in ("", ".", ".."):
        raise ApiError(400, "invalid_filename", "The file name is empty or not a usable name.",
                       {"filename": raw})
    return _truncate_utf8(name, MAX_FILENAME_BYTES)


def _truncate_utf8(name: str, limit: int) -> str:
    if len(name.encode("utf-8")) <= limit:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem or len(extension.encode("utf-8")) > 32:
        stem, extension = name, ""
    suffix = f".{extension}" if extension else ""
    budget = limit - len(suffix.encode("utf-8"))
    encoded = stem.encode("utf-8")[:budget]
    stem = encoded.decode("utf-8", errors="ignore")  # drops a cut multi-byte character
    return unicodedata.normalize("NFC", stem + suffix)


def is_user_file_id(value: str) -> bool:
    return bool(_UUID.fullmatch(value))


# cursors: opaque to clients; to us base64url, unpadded, of '<version>:<value>:...'


class CursorCodec:
    """One kind of cursor. `decode` accepts only the exact string `encode` gives for the values
    it reads, so a position has one spelling: a tampered, re-padded, truncated or other kind of
    cursor is a ValidationError (a 400 naming the field), never a position nobody issued."""

    def __init__(self, version: str, *parsers: Callable[[str], Any], max_length: int, error: str):
        self.version = version
        self.parsers = parsers
        self.max_length = max_length
        self.error = error

    def encode(self, *values: object) -> str:
        raw = ":".join([self.version, *map(str, values)]).encode("ascii")
        return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")

    def decode(self, cursor: str) -> tuple:
        try:
            if len(cursor) > self.max_length:
                raise ValueError(cursor)
            raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
            version, *texts = raw.split(":")
            if version != self.version or len(texts) != len(self.parsers):
                raise ValueError(raw)
            values = tuple(parse(text) for parse, text in zip(self.parsers, texts, strict=True))
            if self.encode(*values) != cursor:
                raise ValueError(raw)
        except ValueError:  # binascii.Error and UnicodeError included
            raise ValidationError(self.error) from None
        return values


def _whole_number(maximum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not (text.isascii() and text.isdigit()) or int(text) > maximum:
            raise ValueError(text)
        return int(text)
    return parse


def _user_file_id(text: str) -> str:
    if not is_user_file_id(text):
        raise ValueError(text)
    return text


def _epoch_id(text: str) -> str:
    if not is_epoch_id(text):
        raise ValueError(text)
    return text


# the list: keyset (created_ms, user_file_id), 'v1:<ms>:<id>'; the change feed:
# 'c2:<epoch>:<seq>', and 'c1:<seq>' as issued before the feed had epochs (services/changes.py)
LIST_CURSOR = CursorCodec("v1", _whole_number(MAX_MS), _user_file_id, max_length=200,
                          error="Not a cursor this service issued.")
_MAX_SEQ = 10**12 - 1
_NOT_A_CHANGE_CURSOR = "Not a change cursor this service issued."
CHANGE_CURSOR = CursorCodec("c2", _epoch_id, _whole_number(_MAX_SEQ), max_length=44,
                            error=_NOT_A_CHANGE_CURSOR)
LEGACY_CHANGE_CURSOR = CursorCodec("c1", _whole_number(_MAX_SEQ), max_length=40,
                                   error=_NOT_A_CHANGE_CURSOR)


def encode_cursor(created_ms: int, user_file_id: str) -> str:
    return LIST_CURSOR.encode(created_ms, user_file_id)


def decode_cursor(cursor: str) -> tuple[int, str]:
    created_ms, user_file_id = LIST_CURSOR.decode(cursor)
    return created_ms, user_file_id


def encode_change_cursor(cursor: ChangeCursor) -> str:
    """The inverse of decode_change_cursor; a cursor without an epoch is the `c1` form issued
    before epochs existed (only tests and the bench still make one)."""
    if cursor.epoch is None:
        return LEGACY_CHANGE_CURSOR.encode(cursor.seq)
    return CHANGE_CURSOR.encode(cursor.epoch, cursor.seq)


def decode_change_cursor(cursor: str) -> ChangeCursor:
    try:
        epoch, seq = CHANGE_CURSOR.decode(cursor)
    except ValidationError:
        (seq,) = LEGACY_CHANGE_CURSOR.decode(cursor)
        epoch = None
    return ChangeCursor(epoch, seq)


class CursorField(fields.String):
    """A query parameter loaded by `decode` (e.g. `decode_cursor`)."""

    def __init__(self, decode: Callable[[str], Any], **kwargs):
        super().__init__(**kwargs)
        self.decode = decode

    def _deserialize(self, value, attr, data, **kwargs):
        return self.decode(super()._deserialize(value, attr, data, **kwargs))


# requests


class ListFilesQuery(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    cursor = CursorField(decode_cursor, load_default=None)


# responses


class UploadedFileSchema(Schema):
    filename = fields.String()
    file_object_id = fields.String()
    user_file_id = fields.String()
    hash = fields.String()
    size_bytes = fields.Integer()
    mime_type = fields.String()


class UserFileSchema(Schema):
    user_file_id = fields.String()
    file_object_id = fields.String()
    filename = fields.String()
    size_bytes = fields.Integer()
    mime_type = fields.String()
    ref_count = fields.Integer()
    storage_path = fields.String(allow_none=True)
    uploaded_at = fields.DateTime()
    storage_saved_bytes = fields.Integer()


class ChunkSchema(Schema):
    index = fields.Integer()
    hash = fields.String()
    size_bytes = fields.Integer()
    # chunked uploads: per-chunk state, where to PUT it, and (once available) where to GET it
    status = fields.String()
    reason = fields.String()
    upload_url = fields.String()
    upload_expires_at = fields.DateTime()
    download_url = fields.String()


class UserFileDetailSchema(UserFileSchema):
    hash = fields.String()
    status = fields.String()
    chunks = fields.List(fields.Nested(ChunkSchema))
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    etag = fields.String()
    download_url = fields.String(allow_none=True)
    download_url_expires_at = fields.DateTime()
    chunk_size = fields.Integer()
    upload_expires_at = fields.DateTime()   # chunked uploads in progress only
    failure = fields.Dict(allow_none=True)  # chunked uploads that failed as a whole


class PublicConfigSchema(Schema):
    chunk_size_bytes = fields.Integer()
    max_upload_bytes = fields.Integer()
    user_quota_bytes = fields.Integer()
    download_url_ttl_seconds = fields.Integer()
    hash_algorithm = fields.String()


# the change feed: `cursor` (see cursors above) or `since` = ISO 8601 or epoch milliseconds

MAX_CHANGES_WAIT_SECONDS = 60


def parse_since(text: str) -> int:
    """Epoch milliseconds from '1700000000000' or an ISO 8601 time (UTC when no offset)."""
    if text.isdigit() and len(text) <= 15:
        return int(text)
    moment = None
    for candidate in (text, text[::-1].replace(" ", "+", 1)[::-1]):  # '+' sent unencoded
        try:
            moment = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    if moment is None or len(text) > 40:
        raise ValidationError("Give an ISO 8601 time or epoch milliseconds.")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    millis = to_ms(moment)
    if millis < 0:
        raise ValidationError("The time is before 1970.")
    return millis


class SinceField(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        return parse_since(super()._deserialize(value, attr, data, **kwargs).strip())


class ChangesQuery(Schema):
    since = SinceField(load_default=None, metadata={"description": "ISO 8601 or epoch ms"})
    cursor = CursorField(decode_change_cursor, load_default=None)
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    wait = fields.Float(load_default=0, validate=validate.Range(min=0, max=MAX_CHANGES_WAIT_SECONDS),
                        metadata={"description": "long-poll up to this many seconds"})

    @validates_schema
    def _since_or_cursor(self, data, **kwargs):
        if (data.get("since") is None) == (data.get("cursor") is None):
            raise ValidationError("Give either `since` or `cursor` (GET /api/v1/changes/latest "
                                  "gives a cursor for now).", "cursor")


class ChangeSchema(Schema):
    file_id = fields.String()
    op = fields.String(metadata={"enum": ["created", "updated", "renamed", "deleted"]})
    at = fields.DateTime()
    filename = fields.String(allow_none=True)
    size_bytes = fields.Integer(allow_none=True)
    hash = fields.String(allow_none=True)
    version = fields.Integer(allow_none=True)


class ChangesPageSchema(Schema):
    changes = fields.List(fields.Nested(ChangeSchema))
    file_ids = fields.List(fields.String())
    cursor = fields.String()
    has_more = fields.Boolean()


class LatestCursorSchema(Schema):
    cursor = fields.String()


# --- chunked uploads (POST /api/v1/files, PATCH /api/v1/files/{id}) ------------------------

class Sha256Hex(fields.String):
    """A SHA-256 in hex, either case; loaded in lower case, the form hashes are stored in."""

    _HEX = validate.Regexp(r"^[0-9a-fA-F]{64}$", error="Must be a SHA-256 in hex.")

    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        self._HEX(text)
        return text.lower()
MAX_DECLARED_CHUNKS = 1 << 20


class DeclaredChunkSchema(Schema):
    index = fields.Integer(required=True, validate=validate.Range(min=0))
    hash = Sha256Hex(required=True)
    size_bytes = fields.Integer(required=True, validate=validate.Range(min=1))


class RegisterUploadSchema(Schema):
    filename = Text(required=True, validate=validate.Length(min=1, max=4096))
    size_bytes = fields.Integer(required=True, validate=validate.Range(min=0))
    mime_type = Text(load_default=None, validate=validate.Length(max=255))
    hash = Sha256Hex(required=True)
    chunks = fields.List(fields.Nested(DeclaredChunkSchema), required=True,
                         validate=validate.Length(max=MAX_DECLARED_CHUNKS))


class ChunkReportSchema(Schema):
    index = fields.Integer(required=True, validate=validate.Range(min=0))
    status = fields.String(required=True, validate=validate.OneOf(["uploaded"]))


class ReportChunksSchema(Schema):
    chunks = fields.List(fields.Nested(ChunkReportSchema), required=True,
                         validate=validate.Length(min=1, max=MAX_DECLARED_CHUNKS))

"""The edge: what requests may carry and how responses look. No database access here."""
from __future__ import annotations

import base64
import binascii
import re
import unicodedata

from marshmallow import Schema, ValidationError, fields, validate

from satchel_shared.errors import ApiError

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


# list cursor: opaque to clients, keyset (created_ms, _id) to us: base64url('v1:<ms>:<id>')


def encode_cursor(created_ms: int, user_file_id: str) -> str:
    millis = created_ms
    raw = f"v1:{millis}:{user_file_id}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, millis, user_file_id = raw.split(":")
        if version != "v1" or not millis.isdigit() or len(millis) > 15 \
                or not is_user_file_id(user_file_id):
            raise ValueError(raw)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise ValidationError("Not a cursor this service issued.") from None
    return int(millis), user_file_id


class CursorField(fields.String):
    def _deserialize(self, value, attr, data, **kwargs):
        text = super()._deserialize(value, attr, data, **kwargs)
        if len(text) > 200:
            raise ValidationError("Not a cursor this service issued.")
        return decode_cursor(text)


# requests


class ListFilesQuery(Schema):
    limit = fields.Integer(load_default=100, validate=validate.Range(min=1, max=1000))
    cursor = CursorField(load_default=None)


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


class UserFileDetailSchema(UserFileSchema):
    hash = fields.String()
    status = fields.String()
    chunks = fields.List(fields.Nested(ChunkSchema))
    version = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    etag = fields.String()
    download_url = fields.String()
    download_url_expires_at = fields.DateTime()


class PublicConfigSchema(Schema):
    chunk_size_bytes = fields.Integer()
    max_upload_bytes = fields.Integer()
    user_quota_bytes = fields.Integer()
    download_url_ttl_seconds = fields.Integer()
    hash_algorithm = fields.String()

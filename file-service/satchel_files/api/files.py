from __future__ import annotations

from flask import current_app, g, request, url_for
from flask_smorest import Blueprint

from satchel_shared.tokens import authenticate, require_auth

from ..multipart import iter_parts
from ..schemas import ListFilesQuery, UploadedFileSchema, UserFileDetailSchema, UserFileSchema
from ..services.files import FileService
from .body import request_body
from .content import content_response

blueprint = Blueprint("files", __name__, url_prefix="/api/v1/files", description="A user's files")

_MULTIPART_SLACK_BYTES = 1024 * 1024  # boundaries and part headers around the file bytes
_UPLOAD_BODY = {"content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["files"],
    "properties": {"files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}
_UPDATE_BODY = {"content": {"multipart/form-data": {"schema": {
    "type": "object",
    "properties": {"file": {"type": "string", "format": "binary"}, "filename": {"type": "string"}}}}}}
_BEARER = [{"bearerAuth": []}]


def _files() -> FileService:
    return current_app.extensions["satchel.files"]


def _multipart_parts():
    if request.content_length is not None:  # refused before a byte is read
        _files().refuse_oversized(request.content_length - _MULTIPART_SLACK_BYTES)
    return iter_parts(request_body(request.environ), request.headers.get("Content-Type"))


def _if_match():
    if "If-Match" not in request.headers:
        return None
    return request.if_match.contains  # an entry tag -> does If-Match name it (`*` does)


@blueprint.post("/upload")
@require_auth
@blueprint.response(201, UploadedFileSchema(many=True))
@blueprint.doc(security=_BEARER, requestBody=_UPLOAD_BODY)
def upload_files():
    """Upload one or more files (multipart field `files`); all are stored, or none."""
    return _files().upload(g.user_id, _multipart_parts())


@blueprint.get("")
@require_auth
@blueprint.arguments(ListFilesQuery, location="query")
@blueprint.response(200, UserFileSchema(many=True))
@blueprint.doc(security=_BEARER)
def list_files(query):
    """The caller's files, newest first; the next page is in the `Link: rel="next"` header."""
    items, next_cursor = _files().list_files(g.user_id, limit=query["limit"], cursor=query["cursor"])
    headers = {}
    if next_cursor:
        next_url = url_for("files.list_files", limit=query["limit"], cursor=next_cursor)
        headers["Link"] = f'<{next_url}>; rel="next"'
    return items, headers


@blueprint.get("/<user_file_id>")
@require_auth
@blueprint.response(200, UserFileDetailSchema)
@blueprint.doc(security=_BEARER)
def get_file(user_file_id):
    """A file's metadata, chunks and pre-signed download URLs (per chunk and whole); for a
    chunked upload in progress, its state with fresh upload URLs (this is how to resume)."""
    return current_app.extensions["satchel.uploads"].get_file(g.user_id, user_file_id)


@blueprint.put("/<user_file_id>")
@require_auth
@blueprint.response(200, UserFileDetailSchema)
@blueprint.doc(security=_BEARER, requestBody=_UPDATE_BODY)
def update_file(user_file_id):
    """Replace the content (`file` part) and/or rename (`filename` field); honours If-Match."""
    return _files().update_file(g.user_id, user_file_id, _multipart_parts(), if_match=_if_match())


@blueprint.delete("/<user_file_id>")
@require_auth
@blueprint.response(204)
@blueprint.doc(security=_BEARER)
def delete_file(user_file_id):
    """Delete the file (its content is kept while other files still share it), or abort a
    chunked upload in progress."""
    current_app.extensions["satchel.uploads"].delete_file(g.user_id, user_file_id)


@blueprint.get("/<user_file_id>/content")
@blueprint.doc(security=[{"bearerAuth": []}, {}])
def get_content(user_file_id):
    """The file's bytes (Range, If-None-Match); a bearer token or a signed URL grants access."""
    if "signature" in request.args:
        content = _files().content_for_signed_url(user_file_id, request.args.to_dict())
    else:
        content = _files().content_for_owner(authenticate(), user_file_id)
    return content_response(_files(), content, current_app.extensions["satchel.accel_prefix"],
                            current_app.extensions["satchel.accel_concat"])

"""Chunked uploads (seed 000): register a file, then report its chunks as they are PUT."""
from __future__ import annotations

from flask import current_app, g
from flask_smorest import Blueprint

from satchel_shared.tokens import require_auth

from ..schemas import RegisterUploadSchema, ReportChunksSchema, UserFileDetailSchema
from ..services.uploads import UploadService

blueprint = Blueprint("uploads", __name__, url_prefix="/api/v1/files",
                      description="Chunked uploads straight to blob storage")
_BEARER = [{"bearerAuth": []}]


def uploads() -> UploadService:
    return current_app.extensions["satchel.uploads"]


@blueprint.post("")
@require_auth
@blueprint.arguments(RegisterUploadSchema)
@blueprint.response(201, UserFileDetailSchema)
@blueprint.doc(security=_BEARER)
def register_upload(request):
    """Register a file by its chunks: a pre-signed PUT URL for each chunk still needed.

    Chunks this user already holds are `verified` at once; if the user already has this very
    content, the file is `available` at once."""
    return uploads().register(g.user_id, request)


@blueprint.patch("/<user_file_id>")
@require_auth
@blueprint.arguments(ReportChunksSchema)
@blueprint.response(200, UserFileDetailSchema)
@blueprint.doc(security=_BEARER)
def report_chunks(request, user_file_id):
    """Report chunks as uploaded: each is verified, or failed with a reason and a fresh URL."""
    return uploads().report_chunks(g.user_id, user_file_id, request["chunks"])

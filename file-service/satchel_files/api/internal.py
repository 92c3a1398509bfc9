"""Endpoints for the gateway only (never routed from outside): nginx `auth_request` targets."""
from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

from flask import Blueprint, Response, current_app, request

from satchel_shared.errors import ApiError

from ..storage import response_headers
from ..storage.signed_urls import SIZE_PARAM

blueprint = Blueprint("internal", __name__, url_prefix="/internal")


# nginx sends auth_request subrequests with the original method (and no body).
@blueprint.route("/blobs/verify", methods=["GET", "PUT", "POST"])
def verify_blob_url():
    """204 if X-Original-Method + X-Original-URI is a valid signed blob URL, else 403.

    For GET/HEAD the headers the URL asks for come back as X-Satchel-Content-Disposition and
    X-Satchel-Content-Type; a PUT must carry X-Original-Content-Length equal to its signed size.
    """
    store = current_app.extensions["satchel.blob_store"]
    if not hasattr(store, "verify_signed_url"):
        raise ApiError(404, "not_found", "This blob backend does not use gateway-signed URLs.")
    method = request.headers.get("X-Original-Method", "").upper()
    parts = urlsplit(request.headers.get("X-Original-URI", ""))
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    query = dict(pairs)
    signed_method = "GET" if method == "HEAD" else method
    if (not method or not parts.path or len(query) != len(pairs)
            or not store.verify_signed_url(signed_method, parts.path, query)):
        raise ApiError(403, "forbidden", "The blob URL is invalid or has expired.")
    if signed_method == "PUT" and request.headers.get("X-Original-Content-Length") != query.get(SIZE_PARAM):
        raise ApiError(403, "forbidden", "The upload size differs from the signed size.")
    response = Response(status=204)
    if signed_method == "GET":
        for header, value in response_headers(query).items():
            response.headers[f"X-Satchel-{header}"] = value
    return response

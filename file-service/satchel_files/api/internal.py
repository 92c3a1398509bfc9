"""Endpoints for the gateway only (never routed from outside): nginx `auth_request` targets."""
from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from satchel_shared.errors import ApiError

from ..storage.signed_urls import BlobUrlRefused, SignsOwnUrls

blueprint = Blueprint("internal", __name__, url_prefix="/internal")


# nginx sends auth_request subrequests with the original method (and no body).
@blueprint.route("/blobs/verify", methods=["GET", "PUT", "POST"])
def verify_blob_url():
    """204 if X-Original-Method + X-Original-URI is a valid signed blob URL, else 403.

    For GET/HEAD the headers the URL asks for come back as X-Satchel-Content-Disposition and
    X-Satchel-Content-Type; a PUT must carry X-Original-Content-Length equal to its signed size.
    """
    store = current_app.extensions["satchel.blob_store"]
    if not isinstance(store, SignsOwnUrls):
        # 403, not 404: nginx's auth_request takes any other answer as its own failure (500)
        raise ApiError(403, "forbidden", "This blob backend does not use gateway-signed URLs.")
    try:
        headers = store.verify_blob_request(request.headers.get("X-Original-Method", ""),
                                            request.headers.get("X-Original-URI", ""),
                                            request.headers.get("X-Original-Content-Length"))
    except BlobUrlRefused as refused:
        raise ApiError(403, "forbidden", refused.message, {"reason": refused.reason}) from None
    response = Response(status=204)
    for header, value in headers.items():
        response.headers[f"X-Satchel-{header}"] = value
    return response

"""One JSON error envelope for every 4xx and 5xx a service answers.

    {"error": {"code": "not_found", "message": "...", "details": {...}, "request_id": "..."}}
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Flask, g, jsonify, request
from pymongo.errors import ConnectionFailure
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    410: "gone",
    411: "length_required",
    412: "precondition_failed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    416: "range_not_satisfiable",
    422: "unprocessable_entity",
    429: "too_many_requests",
    500: "internal_error",
    503: "service_unavailable",
}


class ApiError(Exception):
    """An expected failure with an HTTP status, a stable machine code and a human message."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or {}


def service_unavailable(message: str, *, retry_after_seconds: int = 5) -> ApiError:
    """A 503 that tells the client when to try again."""
    return ApiError(503, "service_unavailable", message,
                    headers={"Retry-After": str(retry_after_seconds)})


def database_unavailable() -> ApiError:
    """The 503 of a request the database could not serve."""
    return service_unavailable("The database is unavailable; retry shortly.")


def error_response(status: int, code: str, message: str, details: Any = None, headers=None):
    body: dict[str, Any] = {"code": code, "message": message}
    if details is not None:
        body["details"] = details
    request_id = g.get("request_id")
    if request_id:
        body["request_id"] = request_id
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def _validation_details(exc: HTTPException) -> Any:
    """Field errors from webargs/flask-smorest, flattened to {field: [messages]}."""
    messages = getattr(exc, "data", {}).get("messages") if hasattr(exc, "data") else None
    if not isinstance(messages, dict):
        return None
    if len(messages) == 1 and next(iter(messages)) in ("json", "query", "form", "files", "headers"):
        return next(iter(messages.values()))
    return messages


def handle_http_exception(exc: HTTPException):
    status = exc.code or 500
    if status == 422:  # schema validation: the request is bad, say which fields
        return error_response(
            400, "validation_error", "The request has invalid fields.", _validation_details(exc)
        )
    headers = {}
    if status == 405 and exc.valid_methods:  # type: ignore[attr-defined]
        headers["Allow"] = ", ".join(exc.valid_methods)  # type: ignore[attr-defined]
    message = exc.description or exc.name
    if status == 404 and "requested URL was not found" in (message or ""):
        message = f"No route for {request.method} {request.path}."
    return error_response(status, _CODES.get(status, "http_error"), message, headers=headers)


def handle_api_error(exc: ApiError):
    return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)


def handle_database_unavailable(exc: ConnectionFailure):
    log.error("MongoDB unavailable", extra={"error": str(exc)})
    return handle_api_error(database_unavailable())


def handle_unexpected(exc: Exception):
    log.exception("unhandled error")
    return error_response(500, "internal_error", "An unexpected error occurred.")


def register_error_handlers(app: Flask) -> None:
    """Install the envelope; call after flask-smorest's Api.init_app so ours win."""
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(ConnectionFailure, handle_database_unavailable)
    app.register_error_handler(Exception, handle_unexpected)

"""Wiring every Satchel Flask app shares: proxy headers, request ids, logs, errors, OpenAPI."""
from __future__ import annotations

import logging

from flask import Flask
from flask_smorest import Api
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import describe
from .errors import register_error_handlers
from .logging import configure_logging, init_request_id


def init_common(app: Flask, config, *, service: str, trusted_proxy_count: int) -> None:
    configure_logging(getattr(config, "log_level", "INFO"), service=service)
    if trusted_proxy_count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=trusted_proxy_count, x_proto=trusted_proxy_count)
    init_request_id(app)
    app.json.sort_keys = False
    logging.getLogger(service).info("effective configuration", extra={"config": describe(config)})


def create_api(app: Flask, *, title: str, version: str, openapi_json_path: str) -> Api:
    """flask-smorest Api serving the spec built from the schemas at `openapi_json_path`."""
    prefix, _, filename = openapi_json_path.rpartition("/")
    app.config.update(
        API_TITLE=title,
        API_VERSION=version,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX=prefix or "/",
        OPENAPI_JSON_PATH=filename,
    )
    api = Api(app, spec_kwargs={"components": {"securitySchemes": {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}}}})
    register_error_handlers(app)  # after Api(), so the envelope replaces smorest's handler
    return api

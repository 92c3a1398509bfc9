"""Satchel's auth service: accounts, login, EdDSA access tokens, rotating refresh tokens, JWKS."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timezone

from flask import Flask
from pymongo import MongoClient

from satchel_shared.app import create_api, init_common
from satchel_shared.config import load_config
from satchel_shared.health import health_blueprint
from satchel_shared.mongo import IndexBootstrap, connect_mongo
from satchel_shared.tokens import StaticKeySet, TokenVerifier, install_verifier

from .api import BLUEPRINTS
from .config import AuthConfig
from .keys import load_key_ring
from .repositories import (LoginFailureRepository, RefreshTokenRepository,
                           UserRepository)
from .services import EXTENSION, AccountService, AuthServices, LoginThrottle, PasswordHasher, TokenService

SERVICE = "auth"
MAX_REQUEST_BYTES = 64 * 1024  # every request body here is a few hundred bytes of JSON
log = logging.getLogger(SERVICE)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def create_app(config: AuthConfig | None = None, *, mongo: MongoClient | None = None,
               clock: Clock | None = None) -> Flask:
    """The auth app. Tests inject `mongo` (mongomock) and `clock` (aware UTC datetimes)."""
    config = config or load_config(AuthConfig)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_REQUEST_BYTES
    init_common(app, config, service=SERVICE, trusted_proxy_count=config.trusted_proxy_count)
    api = create_api(app, title="Satchel auth", version="1",
                     openapi_json_path="/api/v1/auth/openapi.json")
    mongo = mongo or connect_mongo(config.mongo_uri, app_name="satchel-auth")
    indexes = register_extensions(app, config, mongo, clock or utc_now)
    register_blueprints(app, api, mongo, indexes)
    register_hooks(app, indexes)
    return app


def register_extensions(app: Flask, config: AuthConfig, mongo: MongoClient, clock: Clock) -> IndexBootstrap:
    keys = load_key_ring(config.jwt_keys_dir, config.jwt_active_kid)
    verifier = TokenVerifier(StaticKeySet(keys.verification_keys()),
                             issuer=config.jwt_issuer, audience=config.jwt_audience)
    install_verifier(app, verifier)

    db = mongo[config.mongo_db]
    users, failures, refresh_tokens = (
        UserRepository(db), LoginFailureRepository(db), RefreshTokenRepository(db))
    tokens = TokenService(
        keys, verifier, refresh_tokens, clock=clock,
        issuer=config.jwt_issuer, audience=config.jwt_audience,
        access_ttl_seconds=config.access_token_ttl_seconds,
        refresh_ttl_seconds=config.refresh_token_ttl_seconds,
    )
    throttle = LoginThrottle(
        failures, clock=clock,
        max_per_account=config.login_max_failures,
        max_per_address=config.login_max_failures_per_ip,
        lockout_seconds=config.login_lockout_seconds,
    )
    accounts = AccountService(users, PasswordHasher(config.bcrypt_rounds), throttle, tokens, clock=clock)
    app.extensions[EXTENSION] = AuthServices(accounts=accounts, tokens=tokens)
    log.info("signing keys loaded", extra={"kids": sorted(keys.keys), "active_kid": keys.active.kid})

    indexes = IndexBootstrap((users, failures, refresh_tokens))
    indexes.ensure_at_startup(log)
    return indexes


def register_blueprints(app: Flask, api, mongo: MongoClient, indexes: IndexBootstrap) -> None:
    app.register_blueprint(health_blueprint({"mongo": indexes.readiness_check(mongo)}))
    for blueprint in BLUEPRINTS:
        api.register_blueprint(blueprint)


def register_hooks(app: Flask, indexes: IndexBootstrap) -> None:
    # The JWKS comes from the key files: other services keep verifying tokens while MongoDB
    # is down.
    indexes.install(app, without_database=("jwks",))


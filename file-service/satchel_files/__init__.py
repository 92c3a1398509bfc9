"""Satchel's file service."""
from __future__ import annotations

import logging
import time

from flask import Flask
from pymongo import MongoClient

from satchel_shared.app import create_api, init_common
from satchel_shared.config import load_config
from satchel_shared.errors import error_response, handle_api_error, service_unavailable
from satchel_shared.health import health_blueprint
from satchel_shared.mongo import IndexBootstrap, connect_mongo
from satchel_shared.tokens import RemoteKeySet, TokenVerifier, install_verifier

from .config import Config
from .repositories import BlobRepository, FileObjectRepository, IntentRepository, UserFileRepository
from .repositories.changes import ChangeRepository
from .repositories.listing import FileListingRepository
from .services.changes import ChangeFeed
from .services.clock import Clock
from .services.files import FileService, FileSettings
from .services.ingest import BufferPool
from .services.maintenance import Maintenance
from .services.quota import Quota
from .services.refcounts import IntentLost, ReferencesBusy, RefCounts
from .repositories.uploads import UploadRepository
from .repositories.usage import UsageRepository
from .services.uploads import UploadService, UploadSettings
from .storage import (BlobNotFound, BlobStore, LocalBlobStore, S3BlobStore, StorageError,
                      StorageUnavailable, build_s3_client)
from .storage.signed_urls import SignedBlobUrls

SERVICE = "file-service"
log = logging.getLogger(SERVICE)


def create_app(config: Config | None = None, *, mongo: MongoClient | None = None, key_set=None,
               blob_store: BlobStore | None = None, clock: Clock = time.time) -> Flask:
    """The file app. Tests inject `mongo` (mongomock), `key_set`, `blob_store` and `clock`."""
    config = config or load_config(Config)
    app = Flask(__name__)
    app.config["SATCHEL"] = config
    init_common(app, config, service=SERVICE, trusted_proxy_count=config.trusted_proxy_count)
    register_extensions(app, config, mongo=mongo, key_set=key_set, blob_store=blob_store,
                        clock=clock)
    register_blueprints(app)
    register_hooks(app)
    register_errorhandlers(app)
    register_commands(app)
    return app


def build_blob_store(config: Config) -> BlobStore:
    if config.storage_backend == "s3":
        client = build_s3_client(config.s3_endpoint_url, config.s3_region,
                                 config.aws_access_key_id, config.aws_secret_access_key)
        presign_client = None
        if config.s3_public_endpoint_url:
            presign_client = build_s3_client(config.s3_public_endpoint_url, config.s3_region,
                                             config.aws_access_key_id, config.aws_secret_access_key)
        store = S3BlobStore(client, config.s3_bucket, presign_client=presign_client)
        try:
            store.check()
        except StorageUnavailable as exc:  # /readyz keeps saying so until it is fixed
            log.error("blob store unavailable at start-up", extra={"error": str(exc)})
        return store
    return LocalBlobStore(config.data_dir, public_base_url=config.public_base_url,
                          url_secret=config.blob_url_secret.encode("utf-8"))



def register_extensions(app: Flask, config: Config, *, mongo, key_set, blob_store, clock) -> None:
    mongo = mongo or connect_mongo(config.mongo_uri, app_name="satchel-files")
    store = blob_store or build_blob_store(config)
    database = mongo[config.mongo_db]
    blobs, file_objects = BlobRepository(database), FileObjectRepository(database)
    intents, user_files = IntentRepository(database), UserFileRepository(database)
    change_log = ChangeRepository(database)
    listing = FileListingRepository(database)
    changes = ChangeFeed(change_log, lease_seconds=config.change_pending_lease_seconds,
                         retention_seconds=config.change_retention_seconds,
                         max_waiting=config.max_waiting_long_polls, clock=clock)
    app.extensions["satchel.changes"] = changes
    refcounts = RefCounts(blobs, file_objects, intents, store,
                          lease_seconds=config.gc_grace_seconds, clock=clock)
    settings = FileSettings(chunk_size_bytes=config.chunk_size_bytes,
                            download_url_ttl_seconds=config.download_url_ttl_seconds)
    content_urls = SignedBlobUrls(config.public_base_url, config.blob_url_secret.encode("utf-8"),
                                  clock=clock)
    app.extensions["satchel.mongo"] = mongo
    app.extensions["satchel.blob_store"] = store
    usage = UsageRepository(database)
    quota = Quota(user_files, usage, max_upload_bytes=config.max_upload_bytes,
                  user_quota_bytes=config.user_quota_bytes, clock=clock)
    app.extensions["satchel.files"] = FileService(user_files, file_objects, refcounts, store,
                                                  settings, content_urls=content_urls,
                                                  changes=changes, listing=listing,
                                                  quota=quota,
                                                  buffers=BufferPool(config.upload_buffer_bytes),
                                                  clock=clock)
    uploads = UploadRepository(database)
    app.extensions["satchel.uploads"] = UploadService(
        uploads, app.extensions["satchel.files"],
        UploadSettings(upload_url_ttl_seconds=config.upload_url_ttl_seconds,
                       upload_ttl_seconds=config.upload_ttl_seconds), blobs=blobs, clock=clock)
    app.extensions["satchel.maintenance"] = Maintenance(
        blobs, file_objects, intents, user_files, store, refcounts,
        grace_seconds=config.gc_grace_seconds, changes=changes,
        uploads=app.extensions["satchel.uploads"], listing=listing, usage=usage, clock=clock)
    app.extensions["satchel.accel_prefix"] = (
        config.accel_redirect_prefix.rstrip("/") if config.is_accel_redirect else None)
    app.extensions["satchel.accel_concat"] = (
        config.accel_concat_location if config.is_accel_redirect else None)
    indexes = IndexBootstrap((blobs, file_objects, intents, user_files, change_log, uploads,
                              listing, usage))
    app.extensions["satchel.indexes"] = indexes
    indexes.ensure_at_startup(log)
    key_set = key_set or RemoteKeySet(config.jwks_url, ttl_seconds=config.jwks_cache_seconds)
    install_verifier(app, TokenVerifier(key_set, issuer=config.jwt_issuer,
                                        audience=config.jwt_audience))


def register_blueprints(app: Flask) -> None:
    from .api.changes import blueprint as changes_blueprint
    from .api.files import blueprint as files_blueprint
    from .api.internal import blueprint as internal_blueprint
    from .api.public import blueprint as public_blueprint
    from .api.uploads import blueprint as uploads_blueprint

    indexes = app.extensions["satchel.indexes"]
    store = app.extensions["satchel.blob_store"]
    app.register_blueprint(health_blueprint({
        "mongo": indexes.readiness_check(app.extensions["satchel.mongo"]),
        "storage": store.check,
    }))
    app.register_blueprint(internal_blueprint)
    api = create_api(app, title="Satchel file service", version="v1",
                     openapi_json_path="/api/v1/openapi.json")
    api.register_blueprint(files_blueprint)
    api.register_blueprint(uploads_blueprint)
    api.register_blueprint(changes_blueprint)
    api.register_blueprint(public_blueprint)


def register_hooks(app: Flask) -> None:
    app.extensions["satchel.indexes"].install(app)


def register_errorhandlers(app: Flask) -> None:
    """The shared envelope covers the rest (a lost database is a 503 there too)."""

    def unavailable(message: str):
        return handle_api_error(service_unavailable(message))

    @app.errorhandler(ReferencesBusy)
    def _busy(exc):
        log.warning("content is being deleted; gave up waiting", extra={"error": str(exc)})
        return unavailable("This content is being cleaned up; retry shortly.")

    @app.errorhandler(IntentLost)
    def _intent_lost(exc):
        log.error("request outlived its grace period", extra={"intent_id": str(exc)})
        return unavailable("The request took too long; retry.")

    @app.errorhandler(BlobNotFound)
    def _blob_missing(exc):
        log.error("a referenced blob is missing from the blob store", extra={"error": str(exc)})
        return error_response(500, "internal_error", "The file's content is missing; run fsck.")

    @app.errorhandler(StorageError)
    def _storage_unavailable(exc):
        log.error("blob store failure", extra={"error": str(exc)})
        return unavailable("The blob store is unavailable; retry shortly.")


def register_commands(app: Flask) -> None:
    from .cli import flask_commands

    for command in flask_commands():
        app.cli.add_command(command)

"""The one way both services build a MongoDB client."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime, timezone

from flask import Flask, request
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from .errors import database_unavailable

log = logging.getLogger(__name__)


def connect_mongo(uri: str, *, app_name: str, timeout_ms: int = 5000) -> MongoClient:
    """A client that returns timezone-aware UTC datetimes; connects lazily (safe before fork)."""
    return MongoClient(
        uri,
        appname=app_name,
        tz_aware=True,
        uuidRepresentation="standard",
        serverSelectionTimeoutMS=timeout_ms,
        connectTimeoutMS=timeout_ms,
        connect=False,
    )


def as_utc(value: datetime) -> datetime:
    """Datetimes from a client without tz_aware (mongomock) come back naive but are UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def ping(client: MongoClient) -> None:
    client.admin.command("ping")


class IndexBootstrap:
    """Creates a service's indexes once per process: at start-up if MongoDB answers, else on
    the first request after it does (so a service can start before its database)."""

    def __init__(self, repositories):
        self.repositories = tuple(repositories)
        self.is_done = False
        self._lock = threading.Lock()

    def ensure(self) -> None:
        if self.is_done:
            return
        with self._lock:
            if not self.is_done:
                for repository in self.repositories:
                    repository.ensure_indexes()
                self.is_done = True

    def ensure_at_startup(self, service_log: logging.Logger) -> None:
        """Create the indexes now if MongoDB answers; if not, warn and leave it to `install`."""
        try:
            self.ensure()
        except PyMongoError as exc:
            service_log.warning(
                "MongoDB unavailable at start-up; indexes will be created on first request",
                extra={"error": str(exc)})

    def readiness_check(self, client: MongoClient) -> Callable[[], None]:
        """A /readyz check: MongoDB answers and the indexes exist."""

        def mongo_ready() -> None:
            ping(client)
            self.ensure()

        return mongo_ready

    def install(self, app: Flask, *, without_database: tuple[str, ...] = ()) -> None:
        """Before each request, make sure the indexes exist: 503 if MongoDB cannot be reached.

        Health checks and the blueprints named in `without_database` (they never touch MongoDB)
        are served whatever the database's state."""
        exempt = {"health", *without_database}

        @app.before_request
        def _indexes_exist():
            if self.is_done or request.blueprint in exempt:
                return
            try:
                self.ensure()
            except PyMongoError as exc:
                log.error("cannot create indexes", extra={"error": str(exc)})
                raise database_unavailable() from exc

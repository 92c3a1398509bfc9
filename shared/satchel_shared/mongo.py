"""The one way both services build a MongoDB client."""
from __future__ import annotations

from pymongo import MongoClient


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


def ping(client: MongoClient) -> None:
    client.admin.command("ping")

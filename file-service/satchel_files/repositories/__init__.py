"""pymongo access, one class per collection. Nothing here decides anything.

Portability (real MongoDB, nx-27017, mongomock): no `$setOnInsert`; no multi-document
transactions; no compound index that names `_id` (nx-27017 then rejects inserts); and no
datetime written by an update operator (nx-27017 stores `$set` datetimes as strings), so
timestamps that change after insert are integer epoch milliseconds (`*_ms`), and documents
whose datetimes change are rewritten whole with `replace_one`.
"""
from __future__ import annotations

from satchel_shared.mongo import as_utc

from .blobs import BlobRepository
from .file_objects import FileObjectRepository
from .intents import IntentRepository
from .user_files import UserFileRepository

__all__ = ["BlobRepository", "FileObjectRepository", "IntentRepository", "UserFileRepository",
           "as_utc"]


from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime

from pymongo.database import Database


class IntentRepository:
    """`ref_intents`: references an in-flight request may hold that no other document shows yet.

    {_id: uuid4, blob_refs: [chunk hash, ...], file_object_refs: [file object id, ...],
     heartbeat_ms, created_at}
    """

    def __init__(self, database: Database):
        self.collection = database["ref_intents"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("heartbeat_ms", 1)])

    def insert(self, intent_id: str, now_ms: int, created_at: datetime, *,
               blob_refs: list[str] | None = None) -> None:
        self.collection.insert_one({"_id": intent_id, "blob_refs": list(blob_refs or ()),
                                    "file_object_refs": [], "heartbeat_ms": now_ms,
                                    "created_at": created_at})

    def add_blob_refs(self, intent_id: str, blob_hashes: list[str], now_ms: int) -> bool:
        result = self.collection.update_one(
            {"_id": intent_id},
            {"$push": {"blob_refs": {"$each": list(blob_hashes)}},
             "$set": {"heartbeat_ms": now_ms}})
        return result.matched_count == 1

    def add_file_object_ref(self, intent_id: str, file_object_id: str, now_ms: int) -> bool:
        result = self.collection.update_one(
            {"_id": intent_id},
            {"$push": {"file_object_refs": file_object_id}, "$set": {"heartbeat_ms": now_ms}})
        return result.matched_count == 1

    def delete(self, intent_id: str) -> None:
        self.collection.delete_one({"_id": intent_id})

    def stale(self, cutoff_ms: int) -> Iterator[dict]:
        return self.collection.find({"heartbeat_ms": {"$lte": cutoff_ms}})

    def delete_if_stale(self, intent_id: str, cutoff_ms: int) -> bool:
        result = self.collection.delete_one({"_id": intent_id, "heartbeat_ms": {"$lte": cutoff_ms}})
        return result.deleted_count == 1

    def all(self) -> Iterator[dict]:
        return self.collection.find({})

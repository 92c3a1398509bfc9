from __future__ import annotations

from collections.abc import Iterable, Iterator

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database

LIVE = "live"
DELETING = "deleting"


class FileObjectRepository:
    """`file_objects`: immutable content, shared by every user file with the same bytes.

    {_id: uuid4, hash: whole-file sha256 (unique), size_bytes, mime_type, chunk_size,
     chunks: [chunk hash, ...], ref_count, rev, state: "live"|"deleting",
     deleting_since_ms: int|None, created_at}
    """

    def __init__(self, database: Database):
        self.collection = database["file_objects"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("hash", ASCENDING)], unique=True, name="hash_unique")
        # Databases from before chunk notes (repositories/blobs.py) have a multikey index on
        # `chunks` that every insert still pays for: nothing queries by chunk any more.
        for name, spec in self.collection.index_information().items():
            if [key for key, _ in spec["key"]] == ["chunks"]:
                self.collection.drop_index(name)

    def find(self, file_object_id: str) -> dict | None:
        return self.collection.find_one({"_id": file_object_id})

    def live_chunks(self, file_object_ids: Iterable[str]) -> dict[str, list[str]]:
        """{file object id: its chunks} for those of `file_object_ids` that are live."""
        ids = list(set(file_object_ids))
        if not ids:
            return {}
        cursor = self.collection.find({"_id": {"$in": ids}}, {"chunks": 1, "state": 1})
        return {doc["_id"]: doc["chunks"] for doc in cursor if doc["state"] == LIVE}

    def find_by_hash(self, file_hash: str) -> dict | None:
        return self.collection.find_one({"hash": file_hash})

    def find_many(self, file_object_ids: Iterable[str]) -> dict[str, dict]:
        ids = list(set(file_object_ids))
        if not ids:
            return {}
        return {doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": ids}})}

    def increment_live(self, file_object_id: str) -> bool:
        result = self.collection.update_one(
            {"_id": file_object_id, "state": LIVE}, {"$inc": {"ref_count": 1, "rev": 1}})
        return result.matched_count == 1

    def insert(self, document: dict) -> None:
        """Raises DuplicateKeyError when a file object with this hash exists."""
        self.collection.insert_one(document)

    def decrement_live(self, file_object_id: str) -> dict | None:
        return self.collection.find_one_and_update(
            {"_id": file_object_id, "state": LIVE}, {"$inc": {"ref_count": -1, "rev": 1}},
            return_document=ReturnDocument.AFTER,
        )

    def mark_deleting(self, file_object_id: str, now_ms: int) -> bool:
        result = self.collection.update_one(
            {"_id": file_object_id, "ref_count": {"$lte": 0}, "state": LIVE},
            {"$set": {"state": DELETING, "deleting_since_ms": now_ms}},
        )
        return result.matched_count == 1

    def delete_deleting(self, file_object_id: str) -> None:
        self.collection.delete_one({"_id": file_object_id, "state": DELETING})

    def stuck_deleting(self, cutoff_ms: int) -> Iterator[dict]:
        return self.collection.find({"state": DELETING, "deleting_since_ms": {"$lte": cutoff_ms}})

    def all(self) -> Iterator[dict]:
        return self.collection.find({})

    def set_count_if_unchanged(self, file_object_id: str, rev: int, ref_count: int) -> bool:
        result = self.collection.update_one(
            {"_id": file_object_id, "rev": rev, "state": LIVE},
            {"$set": {"ref_count": ref_count}, "$inc": {"rev": 1}},
        )
        return result.matched_count == 1

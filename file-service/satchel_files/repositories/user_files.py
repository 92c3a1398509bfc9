from __future__ import annotations

from collections.abc import Iterator
from pymongo.database import Database

AVAILABLE = "available"


class UserFileRepository:
    """`user_files`: a user's entries.

    {_id: uuid4, owner_id, filename, file_object_id, hash, size_bytes, mime_type,
     status: "available", version, created_at, created_ms, updated_at, change_seq}

    `change_seq` is the number of the owner's last change applied to the entry (services/changes).

    `created_ms` (created_at as epoch milliseconds) is the list's sort and keyset key:
    nx-27017 compares datetimes only to the second. It never changes once the file is
    available (PUT rewrites the document with it). The list is not read from here: a page of
    an owner's files is a range of `file_listing` (repositories/listing.py, which says why)
    joined back to these documents by `_id`.
    """

    def __init__(self, database: Database):
        self.collection = database["user_files"]

    def ensure_indexes(self) -> None:
        # The owner's usage (quota) and the chunk-skipping lookups read by owner_id. The list
        # does not use this collection's indexes (see repositories/listing.py).
        self.collection.create_index([("owner_id", 1)])
        self.collection.create_index([("file_object_id", 1)])

    def find(self, user_file_id: str) -> dict | None:
        return self.collection.find_one({"_id": user_file_id})

    def find_many(self, user_file_ids: list[str]) -> dict[str, dict]:
        """{_id: document} of those that exist (any status, any owner: the caller checks)."""
        if not user_file_ids:
            return {}
        return {doc["_id"]: doc for doc in self.collection.find({"_id": {"$in": user_file_ids}})}

    def file_object_ids_owned(self, owner_id: str, file_object_ids: list[str]) -> set[str]:
        """The file object ids among `file_object_ids` that the owner's available files point
        at: one query over the owner's files. (find, not distinct: nx-27017's distinct ignores
        an $in in its filter.)"""
        cursor = self.collection.find({"owner_id": owner_id, "status": AVAILABLE,
                                       "file_object_id": {"$in": file_object_ids}},
                                      {"file_object_id": 1})
        return {doc["file_object_id"] for doc in cursor}

    def owner_has_file_object(self, owner_id: str, file_object_id: str) -> bool:
        return self.collection.find_one({"owner_id": owner_id, "file_object_id": file_object_id,
                                         "status": AVAILABLE}, {"_id": 1}) is not None

    def available_positions(self) -> Iterator[dict]:
        """fsck: every available file's listing position."""
        return self.collection.find({"status": AVAILABLE},
                                    {"owner_id": 1, "created_ms": 1, "status": 1})

    def total_size_for_owner(self, owner_id: str) -> int:
        rows = list(self.collection.aggregate([
            {"$match": {"owner_id": owner_id}},
            {"$group": {"_id": None, "total": {"$sum": "$size_bytes"}}},
        ]))
        return int(rows[0]["total"]) if rows else 0

    def total_size_by_owner(self) -> dict[str, int]:
        """fsck: every owner's total, in one pass over the collection."""
        rows = self.collection.aggregate([
            {"$group": {"_id": "$owner_id", "total": {"$sum": "$size_bytes"}}},
        ])
        return {row["_id"]: int(row["total"]) for row in rows}

    def insert_many(self, documents: list[dict]) -> None:
        self.collection.insert_many(documents, ordered=True)

    def replace_if_unchanged(self, current: dict, replacement: dict) -> bool:
        """Rewrite the entry only if nobody changed it since `current` was read."""
        result = self.collection.replace_one(
            {"_id": current["_id"], "owner_id": current["owner_id"],
             "version": current["version"], "file_object_id": current["file_object_id"]},
            replacement,
        )
        return result.matched_count == 1

    def delete_if_unchanged(self, current: dict) -> bool:
        """Delete the entry only if nobody changed it (content or name) since `current`."""
        result = self.collection.delete_one(
            {"_id": current["_id"], "owner_id": current["owner_id"],
             "version": current["version"], "file_object_id": current["file_object_id"]})
        return result.deleted_count == 1

    def all(self) -> Iterator[dict]:
        return self.collection.find({}, {"file_object_id": 1})

    def delete_ids(self, user_file_ids: list[str]) -> None:
        self.collection.delete_many({"_id": {"$in": user_file_ids}})

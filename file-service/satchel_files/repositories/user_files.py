from __future__ import annotations

from collections.abc import Iterator
from pymongo import DESCENDING
from pymongo.database import Database

AVAILABLE = "available"
_NEWEST_FIRST = [("created_ms", DESCENDING), ("_id", DESCENDING)]


class UserFileRepository:
    """`user_files`: a user's entries.

    {_id: uuid4, owner_id, filename, file_object_id, hash, size_bytes, mime_type,
     status: "available", version, created_at, created_ms, updated_at, change_seq}

    `change_seq` is the number of the owner's last change applied to the entry (services/changes).

    `created_ms` (created_at as epoch milliseconds) is the list's sort and keyset key:
    nx-27017 compares datetimes only to the second.
    """

    def __init__(self, database: Database):
        self.collection = database["user_files"]

    def ensure_indexes(self) -> None:
        # (_id is the keyset tie-breaker, but nx-27017 rejects inserts into an index naming _id.)
        self.collection.create_index([("owner_id", 1), ("created_ms", DESCENDING)])
        self.collection.create_index([("file_object_id", 1)])

    def find(self, user_file_id: str) -> dict | None:
        return self.collection.find_one({"_id": user_file_id})

    def list_for_owner(self, owner_id: str, *, limit: int,
                       after: tuple[int, str] | None = None) -> list[dict]:
        """Newest first; `after` = (created_ms, _id) of the last entry of the previous page.

        The keyset condition is one range (`created_ms <= X`) and the entries of that same
        millisecond already served are dropped here: an `$or` of two conditions is the textbook
        form, but nx-27017 answers it with a full collection scan (0.96 s vs 0.06 s for a page
        of a 50,000-file account), which would make every page after the first cost as much as
        the whole account. Ties within one millisecond are few; the fetch widens if they are not.
        """
        query: dict = {"owner_id": owner_id, "status": AVAILABLE}
        if after is None:
            return list(self.collection.find(query).sort(_NEWEST_FIRST).limit(limit))
        created_ms, user_file_id = after
        query["created_ms"] = {"$lte": created_ms}
        slack = 16
        while True:
            fetched = list(self.collection.find(query).sort(_NEWEST_FIRST).limit(limit + slack))
            page = [doc for doc in fetched
                    if doc["created_ms"] < created_ms or doc["_id"] < user_file_id]
            if len(page) >= limit or len(fetched) < limit + slack:
                return page[:limit]
            slack *= 4  # more same-millisecond entries than slack: look further

    def total_size_for_owner(self, owner_id: str) -> int:
        rows = list(self.collection.aggregate([
            {"$match": {"owner_id": owner_id}},
            {"$group": {"_id": None, "total": {"$sum": "$size_bytes"}}},
        ]))
        return int(rows[0]["total"]) if rows else 0

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

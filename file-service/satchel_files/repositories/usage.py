from __future__ import annotations

from collections.abc import Iterator

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError


class UsageRepository:
    """`usage`: the bytes each owner's user files take (available files and uploads in
    progress), kept as they come and go, so a quota decision reads one document.

    {_id: owner_id, bytes, rev, updated_ms}

    `reserve` is one conditional `$inc`: atomic on every backend, so two uploads of one owner
    cannot both take the last room. `rev` grows with every change; fsck sets a count only if
    `rev` did not move while it was summing (services/quota.py).
    """

    def __init__(self, database: Database):
        self.collection = database["usage"]

    def ensure_indexes(self) -> None:
        pass  # only read by _id

    def find(self, owner_id: str) -> dict | None:
        return self.collection.find_one({"_id": owner_id})

    def create(self, owner_id: str, size_bytes: int, now_ms: int) -> None:
        """The owner's first count; a concurrent first count wins just as well."""
        try:
            self.collection.insert_one({"_id": owner_id, "bytes": size_bytes, "rev": 0,
                                        "updated_ms": now_ms})
        except DuplicateKeyError:
            pass

    def reserve(self, owner_id: str, adding_bytes: int, limit_bytes: int, now_ms: int) -> bool:
        """Add `adding_bytes` if the total stays within `limit_bytes`; whether it did."""
        result = self.collection.update_one(
            {"_id": owner_id, "bytes": {"$lte": limit_bytes - adding_bytes}},
            {"$inc": {"bytes": adding_bytes, "rev": 1}, "$set": {"updated_ms": now_ms}})
        return result.modified_count == 1

    def touch(self, owner_id: str, now_ms: int) -> bool:
        """Mark the count as changing (before a write that frees bytes; see services/quota.py);
        whether the owner has a count."""
        result = self.collection.update_one({"_id": owner_id},
                                            {"$inc": {"rev": 1}, "$set": {"updated_ms": now_ms}})
        return result.matched_count == 1

    def add(self, owner_id: str, delta_bytes: int, now_ms: int) -> None:
        self.collection.update_one(
            {"_id": owner_id},
            {"$inc": {"bytes": delta_bytes, "rev": 1}, "$set": {"updated_ms": now_ms}})

    def all(self) -> Iterator[dict]:
        return self.collection.find({})

    def set_if_rev(self, owner_id: str, rev: int, size_bytes: int, now_ms: int) -> bool:
        result = self.collection.update_one(
            {"_id": owner_id, "rev": rev},
            {"$set": {"bytes": size_bytes, "updated_ms": now_ms}, "$inc": {"rev": 1}})
        return result.modified_count == 1

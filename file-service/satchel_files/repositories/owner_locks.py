from __future__ import annotations

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError


class OwnerLockRepository:
    """`owner_locks`: short leases that serialize one owner's quota-deciding writes.

    {_id: "<purpose>:<owner_id>", holder: uuid4, expires_ms}

    Taken by a unique insert; a lease past `expires_ms` (its holder died) is taken over by one
    conditional write. Released by deleting it, only by its holder.
    """

    def __init__(self, database: Database):
        self.collection = database["owner_locks"]

    def ensure_indexes(self) -> None:
        pass  # only read by _id

    def try_acquire(self, key: str, holder: str, now_ms: int, lease_ms: int) -> bool:
        try:
            self.collection.insert_one({"_id": key, "holder": holder,
                                        "expires_ms": now_ms + lease_ms})
            return True
        except DuplicateKeyError:
            result = self.collection.update_one(
                {"_id": key, "expires_ms": {"$lt": now_ms}},
                {"$set": {"holder": holder, "expires_ms": now_ms + lease_ms}})
            return result.modified_count == 1

    def release(self, key: str, holder: str) -> None:
        self.collection.delete_one({"_id": key, "holder": holder})

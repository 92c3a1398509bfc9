from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from pymongo import ReturnDocument
from pymongo.database import Database

PRESENT = "present"
DELETING = "deleting"
FILE_OBJECTS_KEPT = 64


class BlobRepository:
    """`blobs`: one document per stored chunk.

    {_id: sha256 hex, size_bytes, ref_count, rev, state: "present"|"deleting",
     zero_since_ms: int|None, deleting_since_ms: int|None, created_at,
     file_objects: [file object id, ...]}

    `rev` grows with every ref_count change, so fsck can repair a count only if nothing touched
    it while fsck was counting.

    `file_objects` lists the newest FILE_OBJECTS_KEPT file objects made with this chunk: how a
    chunked registration finds which chunks the user already holds by `_id` alone (nx-27017
    scans the whole collection for `$in` on an array field such as `file_objects.chunks`). It
    only ever suggests: an id may be of a file object since deleted, and one file object too
    many for the list (or made before the list existed) is only a chunk sent again.
    """

    def __init__(self, database: Database):
        self.collection = database["blobs"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("ref_count", 1), ("state", 1)])

    def find(self, blob_hash: str) -> dict | None:
        return self.collection.find_one({"_id": blob_hash})

    def note_file_object(self, blob_hashes: Iterable[str], file_object_id: str) -> None:
        self.collection.update_many(
            {"_id": {"$in": list(set(blob_hashes))}},
            {"$push": {"file_objects": {"$each": [file_object_id], "$slice": -FILE_OBJECTS_KEPT}}})

    def file_objects_holding(self, blob_hashes: Iterable[str]) -> set[str]:
        """The file objects noted for any of `blob_hashes` (see the class docstring)."""
        hashes = list(set(blob_hashes))
        if not hashes:
            return set()
        cursor = self.collection.find({"_id": {"$in": hashes}}, {"file_objects": 1})
        return {file_object_id for doc in cursor for file_object_id in doc.get("file_objects", ())}

    def increment_present(self, blob_hash: str) -> bool:
        result = self.collection.update_one(
            {"_id": blob_hash, "state": PRESENT},
            {"$inc": {"ref_count": 1, "rev": 1}, "$set": {"zero_since_ms": None}},
        )
        return result.matched_count == 1

    def insert_referenced(self, blob_hash: str, size_bytes: int, created_at: datetime, *,
                          ref_count: int = 1) -> None:
        """A present blob with `ref_count` references; DuplicateKeyError when it exists."""
        self.collection.insert_one({
            "_id": blob_hash, "size_bytes": size_bytes, "ref_count": ref_count, "rev": 1,
            "state": PRESENT, "zero_since_ms": None, "deleting_since_ms": None,
            "created_at": created_at,
        })

    def insert_deleting(self, blob_hash: str, size_bytes: int, now_ms: int,
                        created_at: datetime) -> None:
        """Claim a stored blob that has no document, to delete it; DuplicateKeyError if taken."""
        self.collection.insert_one({
            "_id": blob_hash, "size_bytes": size_bytes, "ref_count": 0, "rev": 0,
            "state": DELETING, "zero_since_ms": now_ms, "deleting_since_ms": now_ms,
            "created_at": created_at,
        })

    def decrement(self, blob_hash: str) -> dict | None:
        return self.collection.find_one_and_update(
            {"_id": blob_hash}, {"$inc": {"ref_count": -1, "rev": 1}},
            return_document=ReturnDocument.AFTER,
        )

    def decrement_many(self, blob_hashes: list[str]) -> int:
        """decrement() each of the distinct `blob_hashes` in one write; how many matched."""
        result = self.collection.update_many(
            {"_id": {"$in": blob_hashes}}, {"$inc": {"ref_count": -1, "rev": 1}})
        return result.matched_count

    def mark_zero_since(self, blob_hash: str, now_ms: int) -> None:
        self.mark_zero_since_many([blob_hash], now_ms)

    def mark_zero_since_many(self, blob_hashes: list[str], now_ms: int) -> None:
        self.collection.update_many(
            {"_id": {"$in": blob_hashes}, "ref_count": 0, "state": PRESENT,
             "zero_since_ms": None},
            {"$set": {"zero_since_ms": now_ms}},
        )

    def stamp_unstamped_zeros(self, now_ms: int) -> int:
        """Blobs that reached 0 without a zero_since (a crash in between) start their grace now."""
        result = self.collection.update_many(
            {"ref_count": {"$lte": 0}, "state": PRESENT, "zero_since_ms": None},
            {"$set": {"zero_since_ms": now_ms}},
        )
        return result.modified_count

    def collectable(self, cutoff_ms: int) -> Iterator[dict]:
        return self.collection.find(
            {"ref_count": 0, "state": PRESENT, "zero_since_ms": {"$lte": cutoff_ms}})

    def mark_deleting(self, blob_hash: str, cutoff_ms: int, now_ms: int) -> bool:
        result = self.collection.update_one(
            {"_id": blob_hash, "ref_count": 0, "state": PRESENT,
             "zero_since_ms": {"$lte": cutoff_ms}},
            {"$set": {"state": DELETING, "deleting_since_ms": now_ms}},
        )
        return result.matched_count == 1

    def stuck_deleting(self, cutoff_ms: int) -> Iterator[dict]:
        return self.collection.find({"state": DELETING, "deleting_since_ms": {"$lte": cutoff_ms}})

    def take_over_deleting(self, blob_hash: str, seen_since_ms: int, now_ms: int) -> bool:
        """Claim a deletion whose owner went quiet (its lease `seen_since_ms` expired)."""
        result = self.collection.update_one(
            {"_id": blob_hash, "state": DELETING, "deleting_since_ms": seen_since_ms},
            {"$set": {"deleting_since_ms": now_ms}},
        )
        return result.matched_count == 1

    def delete_deleting(self, blob_hash: str, since_ms: int) -> None:
        self.collection.delete_one(
            {"_id": blob_hash, "state": DELETING, "deleting_since_ms": since_ms})

    def all(self) -> Iterator[dict]:
        return self.collection.find({})

    def set_count_if_unchanged(self, blob_hash: str, rev: int, ref_count: int,
                               now_ms: int) -> bool:
        result = self.collection.update_one(
            {"_id": blob_hash, "rev": rev, "state": PRESENT},
            {"$set": {"ref_count": ref_count,
                      "zero_since_ms": now_ms if ref_count == 0 else None},
             "$inc": {"rev": 1}},
        )
        return result.matched_count == 1

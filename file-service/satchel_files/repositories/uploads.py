from __future__ import annotations

from collections.abc import Iterator

from pymongo.database import Database

UPLOADING = "uploading"
FAILED = "failed"
IN_PROGRESS = (UPLOADING, FAILED)  # not available yet; their verified chunks hold blob refs

PENDING = "pending"      # chunk statuses
VERIFIED = "verified"
CHUNK_FAILED = "failed"


class UploadRepository:
    """Chunked uploads in progress: `user_files` entries whose status is "uploading" or "failed".

    They live in `user_files` (same _id before and after), so they count toward the quota by
    their declared size, and the list (status "available" only) does not show them. Extra fields:

    {chunk_size, chunks: [{index, hash, size_bytes, status: pending|verified|failed,
     upload_key, reason}], upload_rev, upload_expires_ms, failure: {code, message}|None,
     digest: {through, sha256_state}}  (the running whole-file SHA-256: services/upload_digest.py)

    Every `verified` chunk entry holds one blob reference (with multiplicity), as a file
    object's chunk list does. `upload_rev` grows with every write to the chunk list; writes are
    whole-document replaces conditional on it (nx-27017 has no positional array updates).
    """

    def __init__(self, database: Database):
        self.collection = database["user_files"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("status", 1), ("upload_expires_ms", 1)])

    def find(self, user_file_id: str) -> dict | None:
        return self.collection.find_one({"_id": user_file_id})

    def insert(self, document: dict) -> None:
        self.collection.insert_one(document)

    def replace_if_rev(self, current: dict, replacement: dict) -> bool:
        """Rewrite the upload only if nobody wrote it since `current` was read (also used to
        turn it into an available file: `replacement` then has no upload fields)."""
        result = self.collection.replace_one(
            {"_id": current["_id"], "status": current["status"],
             "upload_rev": current["upload_rev"]}, replacement)
        return result.matched_count == 1

    def delete_if_rev(self, current: dict, *, expired_by_ms: int | None = None) -> bool:
        """Delete the upload if nobody wrote it since `current` was read, and (gc) only if it
        is still expired by `expired_by_ms`: `touch` pushes the expiry back without a new rev."""
        query = {"_id": current["_id"], "status": current["status"],
                 "upload_rev": current["upload_rev"]}
        if expired_by_ms is not None:
            query["upload_expires_ms"] = {"$lte": expired_by_ms}
        return self.collection.delete_one(query).deleted_count == 1

    def touch(self, current: dict, expires_ms: int) -> dict:
        """Push back the expiry of an upload in progress, unless someone wrote it since
        `current` was read (then that write decides). A replace, not `$set`: nx-27017 drops
        `$set` updates on a collection named `user_files` and answers "modified: 1"
        (docs/CONTRACT.md). The revision stays, so a concurrent compare-and-set still lands;
        gc's delete checks the expiry itself (`delete_if_rev`)."""
        touched = {**current, "upload_expires_ms": expires_ms}
        result = self.collection.replace_one(
            {"_id": current["_id"], "status": current["status"],
             "upload_rev": current["upload_rev"]}, touched)
        return touched if result.matched_count == 1 else current

    def in_progress_for_owner(self, owner_id: str) -> list[dict]:
        """The owner's uploads not yet available, with their chunks (for skipping)."""
        return list(self.collection.find({"owner_id": owner_id, "status": {"$in": list(IN_PROGRESS)}},
                                         {"chunks": 1}))

    def in_progress(self) -> Iterator[dict]:
        return self.collection.find({"status": {"$in": list(IN_PROGRESS)}})

    def expired(self, now_ms: int) -> Iterator[dict]:
        return self.collection.find({"status": {"$in": list(IN_PROGRESS)},
                                     "upload_expires_ms": {"$lte": now_ms}})

from __future__ import annotations

from collections.abc import Iterator

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

MAX_MS = 10**13 - 1  # above any epoch millisecond this service will see (year 2286)
_INVERT_HEX = str.maketrans("0123456789abcdef", "fedcba9876543210")


def listing_position(created_ms: int, user_file_id: str) -> str:
    """The entry's place in its owner's list: ascending order = the list's order (newest
    first, then user_file_id descending, as the list has always ordered same-millisecond files).

    user_file_ids are lowercase canonical UUIDs (schemas._UUID): complementing every hex digit
    keeps their length and dashes and reverses their order."""
    if not 0 <= created_ms <= MAX_MS:
        raise ValueError(f"created_ms out of range: {created_ms}")
    return f"{MAX_MS - created_ms:013d}:{user_file_id.translate(_INVERT_HEX)}"


def listing_key(owner_id: str, created_ms: int, user_file_id: str) -> str:
    """`_id` of the entry: "<owner_id>:<position>", one entry per (owner, file, created_ms)."""
    return f"{owner_id}:{listing_position(created_ms, user_file_id)}"


def listing_document(owner_id: str, user_file_id: str, created_ms: int) -> dict:
    """The shape of a `file_listing` document (also used by the benchmark to seed accounts)."""
    position = listing_position(created_ms, user_file_id)
    return {"_id": f"{owner_id}:{position}", "owner_id": owner_id, "pos": position,
            "user_file_id": user_file_id, "created_ms": created_ms}


def listing_document_for(user_file: dict) -> dict:
    return listing_document(user_file["owner_id"], user_file["_id"], user_file["created_ms"])


class FileListingRepository:
    """`file_listing`: one entry per available user file, so that a page of GET /api/v1/files
    is one index range read on every engine.

    {_id: "<owner_id>:<pos>", owner_id, user_file_id, created_ms,
     pos: "<MAX_MS - created_ms, 13 digits>:<user_file_id, hex digits complemented>"}

    Why not a query on `user_files`: the list is ordered (created_ms desc, _id desc). Real
    MongoDB walks the (owner_id, created_ms) index and reads O(page) documents, but nx-27017
    (the embedded server of `make run` and the e2e tests) did not: a page cost O(account)
    (147 ms at the middle of a 100,000-file account vs 97 ms for 1,000 files). Here the whole
    order is ONE string, `pos`, so a page is
        find({owner_id: X, pos: {$gt: <cursor's pos>}}).sort(pos, 1).limit(n)
    on the (owner_id, pos) index, then `user_files.find({_id: {$in: ids}})`, keeping in list
    order those that exist, are available, and have this owner and this created_ms
    (services/files.py `list_files`). About 2 ms per page on nx-27017 at any account size.

    What nx-27017 0.8.1 (neosqlite 1.17.2) needs for that, found by reading its SQL:
    - NOT a range on `_id`: `$gt`/`$lt` on `_id` are always evaluated in Python over the whole
      collection (a full scan; equality and `$in` on `_id` use the primary key).
    - An index whose nx name ends in "_owner_id", i.e. a single-field index on owner_id: only
      then is `{owner_id: X}` translated to a plain `=` (otherwise it adds an "or an array
      containing X" arm, and no index can serve the query). With it, SQLite answers the
      equality plus the `pos` range and sort from the (owner_id, pos) index and stops at the
      limit. On real MongoDB the single-field index is redundant, and harmless.

    Crash safety without transactions (the principle of services/refcounts.py): an entry is
    inserted BEFORE its user file becomes available (multipart commit; `mark_available` of a
    chunked upload or a re-upload) and deleted AFTER the user file is deleted. A crash between
    the two writes leaves only a stale entry, which the join skips and `gc` deletes once it is
    older than the grace period; never an available file missing from the list. `created_ms`
    never changes after a file is available (PUT rewrites the document with its created_ms),
    so the entry of a file never moves. `fsck` reports available files without an entry and
    stale entries; `fsck --repair` inserts the missing entries (this is also how a database
    made before this collection existed gets its list: no start-up migration) and deletes
    the stale ones.
    """

    def __init__(self, database: Database):
        self.collection = database["file_listing"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("owner_id", ASCENDING), ("pos", ASCENDING)])
        self.collection.create_index([("owner_id", ASCENDING)])  # nx-27017: see above

    # writes

    def insert_many(self, documents: list[dict]) -> None:
        """Insert entries; one that exists already (the same key: the same owner, file and
        created_ms) is left as it is."""
        if not documents:
            return
        try:
            self.collection.insert_many(documents, ordered=False)
        except BulkWriteError as exc:
            if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", ())):
                raise

    def insert(self, document: dict) -> bool:
        """False when the entry existed already."""
        try:
            self.collection.insert_one(document)
        except DuplicateKeyError:
            return False
        return True

    def delete_ids(self, entry_ids: list[str]) -> None:
        if entry_ids:
            self.collection.delete_many({"_id": {"$in": entry_ids}})

    def delete_if_same(self, entry: dict) -> bool:
        result = self.collection.delete_one({"_id": entry["_id"],
                                             "user_file_id": entry["user_file_id"]})
        return result.deleted_count == 1

    # reads

    def page(self, owner_id: str, *, limit: int,
             after: tuple[int, str] | None = None) -> list[dict]:
        """The owner's next `limit` entries in list order, after position (created_ms,
        user_file_id), or from the start."""
        query: dict = {"owner_id": owner_id}
        if after is not None:
            query["pos"] = {"$gt": listing_position(*after)}
        return list(self.collection.find(query).sort("pos", ASCENDING).limit(limit))

    def find(self, entry_id: str) -> dict | None:
        return self.collection.find_one({"_id": entry_id})

    def all(self) -> Iterator[dict]:
        return self.collection.find({})

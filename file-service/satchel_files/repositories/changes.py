from __future__ import annotations

from collections.abc import Callable

from pymongo import ASCENDING, DESCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

PENDING = "pending"      # opened before its mutation; the mutation may still happen
COMMITTED = "committed"  # the mutation happened
ABORTED = "aborted"      # the mutation did not happen (a 4xx after the change was opened)
UNCERTAIN = "uncertain"  # nobody knows (the writer failed or outlived its lease): deliver it
SETTLED = (COMMITTED, ABORTED, UNCERTAIN)


def change_id(owner_id: str, seq: int) -> str:
    return f"{owner_id}:{seq:012d}"


def change_document(owner_id: str, seq: int, user_file_id: str, op: str, state: str, at_ms: int,
                    details: dict) -> dict:
    """The shape of a `changes` document (also used by the benchmark to seed accounts)."""
    return {"_id": change_id(owner_id, seq), "owner_id": owner_id, "seq": seq,
            "file_id": user_file_id, "op": op, "state": state, "at_ms": at_ms,
            "filename": details.get("filename"), "size_bytes": details.get("size_bytes"),
            "hash": details.get("hash"), "version": details.get("version")}


class ChangeRepository:
    """`changes`: one document per change to one user file, numbered per owner.

    {_id: "<owner_id>:<seq, 12 digits>", owner_id, seq, file_id, op, state, at_ms,
     filename, size_bytes, hash, version}

    `_id` makes (owner_id, seq) unique on every backend: claiming a number is an insert that
    fails with DuplicateKeyError when another writer got there first.

    `change_floors`: {_id: owner_id, trimmed_seq}: the owner's changes up to trimmed_seq were
    removed by gc; a cursor below it cannot be served.

    `change_feed`: one document, {_id: "epoch", epoch, started_ms, is_first}: the feed's
    current epoch (services/changes.py, "Epochs"). Read by `_id` only, which every backend
    serves from its primary key (nx-27017 included: no other index needed).
    """

    def __init__(self, database: Database):
        self.collection = database["changes"]
        self.floors = database["change_floors"]
        self.feed = database["change_feed"]

    def ensure_indexes(self) -> None:
        self.collection.create_index([("owner_id", ASCENDING), ("seq", ASCENDING)], unique=True,
                                     name="owner_seq_unique")
        self.collection.create_index([("owner_id", ASCENDING), ("state", ASCENDING),
                                      ("seq", ASCENDING)], name="owner_state_seq")
        self.collection.create_index([("owner_id", ASCENDING), ("at_ms", ASCENDING)],
                                     name="owner_at")
        self.collection.create_index([("at_ms", ASCENDING)], name="at")
        # nx-27017 (the embedded server) keeps an equality on a field sargable only when a
        # single-field index on that field exists (repositories/listing.py says how it decides).
        # Without these two, every query of one owner's changes (each write's number, each page
        # of the feed) scanned the whole collection, every user's: 70-145 ms at 100,000
        # changes, 1-3 ms with them. Redundant on real MongoDB, and harmless.
        self.collection.create_index([("owner_id", ASCENDING)], name="owner")
        self.collection.create_index([("state", ASCENDING)], name="state")

    # writes

    def insert(self, document: dict) -> None:
        """Raises DuplicateKeyError when the (owner_id, seq) is taken."""
        self.collection.insert_one(document)

    def settle(self, document_id: str, state: str, details: dict | None = None) -> bool:
        """pending -> `state` (with the final details); False if it was no longer pending."""
        update = {"state": state, **(details or {})}
        result = self.collection.update_one({"_id": document_id, "state": PENDING},
                                            {"$set": update})
        return result.matched_count == 1

    def expire(self, document_id: str, opened_before_ms: int) -> bool:
        """A pending change whose lease is over becomes uncertain; False if it was settled."""
        result = self.collection.update_one(
            {"_id": document_id, "state": PENDING, "at_ms": {"$lte": opened_before_ms}},
            {"$set": {"state": UNCERTAIN}})
        return result.matched_count == 1

    # reads

    def find(self, document_id: str) -> dict | None:
        return self.collection.find_one({"_id": document_id})

    def last_seq(self, owner_id: str) -> int:
        top = list(self.collection.find({"owner_id": owner_id}, {"seq": 1})
                   .sort("seq", DESCENDING).limit(1))
        return top[0]["seq"] if top else 0

    def after(self, owner_id: str, seq: int, limit: int) -> list[dict]:
        """The owner's changes with a number above `seq`, in order, at most `limit`."""
        return list(self.collection.find({"owner_id": owner_id, "seq": {"$gt": seq}})
                    .sort("seq", ASCENDING).limit(limit))

    def pending_after(self, owner_id: str, seq: int, limit: int) -> list[dict]:
        return list(self.collection.find({"owner_id": owner_id, "state": PENDING,
                                          "seq": {"$gt": seq}})
                    .sort("seq", ASCENDING).limit(limit))

    def first_at_or_after(self, owner_id: str, at_ms: int, limit: int) -> list[dict]:
        """The owner's first `limit` changes by time among those opened at or after `at_ms`."""
        return list(self.collection.find({"owner_id": owner_id, "at_ms": {"$gte": at_ms}},
                                         {"seq": 1, "at_ms": 1})
                    .sort("at_ms", ASCENDING).limit(limit))

    # retention

    def owners_with_changes_before(self, at_ms: int) -> list[str]:
        return list(self.collection.distinct("owner_id", {"at_ms": {"$lt": at_ms}}))

    def delete_up_to(self, owner_id: str, seq: int) -> int:
        result = self.collection.delete_many({"owner_id": owner_id, "seq": {"$lte": seq}})
        return result.deleted_count

    def trimmed_seq(self, owner_id: str) -> int:
        floor = self.floors.find_one({"_id": owner_id})
        return floor["trimmed_seq"] if floor else 0

    def raise_floor(self, owner_id: str, seq: int) -> None:
        """trimmed_seq = max(trimmed_seq, seq), without upserts (see repositories/__init__)."""
        _update_or_insert(
            lambda: self.floors.update_one({"_id": owner_id},
                                           {"$max": {"trimmed_seq": seq}}).matched_count,
            lambda: self.floors.insert_one({"_id": owner_id, "trimmed_seq": seq}),
            f"the change floor of {owner_id}")

    # the epoch

    def epoch(self) -> dict | None:
        return self.feed.find_one({"_id": _EPOCH})

    def insert_epoch(self, epoch: str, *, started_ms: int, is_first: bool) -> dict:
        """The stored epoch: this one, or the one another process stored first."""
        try:
            self.feed.insert_one(_epoch_document(epoch, started_ms, is_first))
        except DuplicateKeyError:
            pass
        stored = self.epoch()
        if stored is None:
            raise RuntimeError("the change feed's epoch vanished while it was created")
        return stored

    def replace_epoch(self, epoch: str, *, started_ms: int, is_first: bool) -> None:
        """Without upserts (see repositories/__init__); wins over a concurrent insert_epoch."""
        document = _epoch_document(epoch, started_ms, is_first)
        _update_or_insert(
            lambda: self.feed.replace_one({"_id": _EPOCH}, document).matched_count,
            lambda: self.feed.insert_one(dict(document)),
            "the change feed's new epoch")


_EPOCH = "epoch"


def _epoch_document(epoch: str, started_ms: int, is_first: bool) -> dict:
    return {"_id": _EPOCH, "epoch": epoch, "started_ms": started_ms, "is_first": is_first}


def _update_or_insert(update: Callable[[], int], insert: Callable[[], object], what: str) -> None:
    """An upsert without `upsert` (see repositories/__init__): update the document if it is
    there, else insert it; a concurrent insert (DuplicateKeyError) means update again."""
    for _ in range(3):
        if update():
            return
        try:
            insert()
            return
        except DuplicateKeyError:
            continue
    raise RuntimeError(f"could not record {what}")

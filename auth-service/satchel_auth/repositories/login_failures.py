from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

_ATTEMPTS = 5
LOCK_PREFIX = "lock:"


class LoginFailureRepository:
    """`login_failures`: failure counters and lockouts, keyed `account:<email>` / `ip:<address>`.

    Counter {_id: key, failures, expires_at}: the expiry is set by the first failure counted.
    Lock {_id: "lock:" + key, expires_at}. When to lock, and for how long, is the rule of
    services/throttle.py; this class only stores and queries.
    Every query ignores expired documents (the TTL monitor deletes them within a minute or so).
    Times are only ever written on insert, never by $set: the embedded nx-27017 server stores a
    $set datetime as a string (and ignores $setOnInsert in find_one_and_update), so those forms
    are avoided.
    """

    def __init__(self, db: Database):
        self.failures = db["login_failures"]

    def ensure_indexes(self) -> None:
        self.failures.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0,
                                   name="expires_at_ttl")

    def _upsert_live(self, key: str, update: dict, *, now: datetime, expires_at: datetime) -> None:
        """Apply `update` to the unexpired document `key`, creating it (to expire at `expires_at`)."""
        for _ in range(_ATTEMPTS):
            self.failures.delete_one({"_id": key, "expires_at": {"$lte": now}})
            try:
                self.failures.update_one(
                    {"_id": key, "expires_at": {"$gt": now}},
                    {**update, "$setOnInsert": {"expires_at": expires_at}},
                    upsert=True,
                )
                return
            except DuplicateKeyError:  # it expired, or another worker created it, in between
                continue
        raise RuntimeError(f"could not update login failure record {key!r}")

    def count_failure(self, key: str, *, now: datetime, expires_at: datetime) -> int:
        """Count one failure atomically (shared by every worker); the failures counted so far.

        A new counter is created to expire at `expires_at`; a live one keeps its expiry.
        """
        self._upsert_live(key, {"$inc": {"failures": 1}}, now=now, expires_at=expires_at)
        counter = self.failures.find_one({"_id": key}) or {"failures": 1}
        return counter["failures"]

    def lock(self, key: str, *, now: datetime, expires_at: datetime) -> None:
        """Lock `key` until `expires_at`; a live lock keeps its expiry."""
        self._upsert_live(LOCK_PREFIX + key, {}, now=now, expires_at=expires_at)

    def find_lock(self, key: str, now: datetime) -> dict | None:
        return self.failures.find_one({"_id": LOCK_PREFIX + key, "expires_at": {"$gt": now}})

    def reset(self, key: str) -> None:
        self.failures.delete_one({"_id": key})

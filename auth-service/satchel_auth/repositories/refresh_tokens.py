from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database


class RefreshTokenRepository:
    """`refresh_tokens`, stored only as SHA-256 hashes, each in a family (one login's chain).

    {_id: sha256 hex, jti, family_id, user_id, issued_at, expires_at, is_used, is_revoked,
    used_at, revoked_at}. Queries test the flags against False only: the embedded nx-27017
    server stores a $set True as 1 and a $set datetime as a string, so the `*_at` fields are
    for people reading the data, not for queries.
    """

    def __init__(self, db: Database):
        self.tokens = db["refresh_tokens"]

    def ensure_indexes(self) -> None:
        self.tokens.create_index([("expires_at", ASCENDING)], expireAfterSeconds=0,
                                 name="expires_at_ttl")
        self.tokens.create_index([("family_id", ASCENDING)], name="family_id")

    def insert(self, *, token_hash: str, jti: str, family_id: str, user_id: str,
               issued_at: datetime, expires_at: datetime) -> None:
        self.tokens.insert_one({
            "_id": token_hash, "jti": jti, "family_id": family_id, "user_id": user_id,
            "issued_at": issued_at, "expires_at": expires_at,
            "is_used": False, "is_revoked": False, "used_at": None, "revoked_at": None,
        })

    def claim(self, token_hash: str, now: datetime) -> dict | None:
        """Mark a live, unused token used; None if it is not one (used, revoked, expired, unknown)."""
        return self.tokens.find_one_and_update(
            {"_id": token_hash, "is_used": False, "is_revoked": False, "expires_at": {"$gt": now}},
            {"$set": {"is_used": True, "used_at": now}},
            return_document=ReturnDocument.AFTER,
        )

    def find(self, token_hash: str) -> dict | None:
        return self.tokens.find_one({"_id": token_hash})

    def is_revoked(self, token_hash: str) -> bool:
        token = self.tokens.find_one({"_id": token_hash}, {"is_revoked": 1})
        return token is None or bool(token["is_revoked"])

    def revoke_family(self, family_id: str, now: datetime) -> None:
        self.tokens.update_many({"family_id": family_id, "is_revoked": False},
                                {"$set": {"is_revoked": True, "revoked_at": now}})

from __future__ import annotations

from datetime import datetime

from pymongo import ASCENDING
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError


class EmailTaken(Exception):
    """Another account already uses this email (compared case-insensitively)."""


class UserRepository:
    """`users`: {_id: uuid, email (as typed), email_normalized (unique), password_hash, created_at}."""

    def __init__(self, db: Database):
        self.users = db["users"]

    def ensure_indexes(self) -> None:
        self.users.create_index([("email_normalized", ASCENDING)], unique=True,
                                name="email_normalized_unique")

    def insert(self, *, user_id: str, email: str, email_normalized: str, password_hash: str,
               created_at: datetime) -> None:
        try:
            self.users.insert_one({
                "_id": user_id,
                "email": email,
                "email_normalized": email_normalized,
                "password_hash": password_hash,
                "created_at": created_at,
            })
        except DuplicateKeyError as exc:
            raise EmailTaken(email_normalized) from exc

    def find_by_email(self, email_normalized: str) -> dict | None:
        return self.users.find_one({"email_normalized": email_normalized})

    def find_by_id(self, user_id: str) -> dict | None:
        return self.users.find_one({"_id": user_id}, {"password_hash": 0})

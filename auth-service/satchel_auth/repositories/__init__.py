"""pymongo access, one class per collection family; each creates its indexes in ensure_indexes()."""
from __future__ import annotations

from datetime import datetime, timezone

from .login_failures import LoginFailureRepository
from .refresh_tokens import RefreshTokenRepository
from .users import EmailTaken, UserRepository

__all__ = ["EmailTaken", "LoginFailureRepository", "RefreshTokenRepository",
           "UserRepository", "as_utc"]


def as_utc(value: datetime) -> datetime:
    """Datetimes from a client without tz_aware (mongomock) come back naive but are UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


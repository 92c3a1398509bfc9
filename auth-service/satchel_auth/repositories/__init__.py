"""pymongo access, one class per collection family; each creates its indexes in ensure_indexes()."""
from __future__ import annotations

import threading
from collections.abc import Iterable
from datetime import datetime, timezone

from .login_failures import LoginFailureRepository
from .refresh_tokens import RefreshTokenRepository
from .users import EmailTaken, UserRepository

__all__ = ["EmailTaken", "IndexBootstrap", "LoginFailureRepository", "RefreshTokenRepository",
           "UserRepository", "as_utc"]


def as_utc(value: datetime) -> datetime:
    """Datetimes from a client without tz_aware (mongomock) come back naive but are UTC."""
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


class IndexBootstrap:
    """Creates the indexes once per process: at start-up if MongoDB answers, else on first use."""

    def __init__(self, repositories: Iterable):
        self.repositories = tuple(repositories)
        self.is_done = False
        self._lock = threading.Lock()

    def ensure(self) -> None:
        if self.is_done:
            return
        with self._lock:
            if not self.is_done:
                for repository in self.repositories:
                    repository.ensure_indexes()
                self.is_done = True

"""pymongo access, one class per collection family; each creates its indexes in ensure_indexes()."""
from __future__ import annotations

from satchel_shared.mongo import as_utc

from .login_failures import LoginFailureRepository
from .refresh_tokens import RefreshTokenRepository
from .users import EmailTaken, UserRepository

__all__ = ["EmailTaken", "LoginFailureRepository", "RefreshTokenRepository",
           "UserRepository", "as_utc"]


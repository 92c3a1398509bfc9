"""The rules: registration, login with throttling, token issuing and rotation."""
from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from .accounts import AccountService, normalize_email
from .passwords import PasswordHasher
from .throttle import LoginThrottle
from .tokens import TokenPair, TokenService

EXTENSION = "satchel_auth"

__all__ = ["AccountService", "AuthServices", "LoginThrottle", "PasswordHasher", "TokenPair",
           "TokenService", "current_services", "normalize_email"]


@dataclass(frozen=True)
class AuthServices:
    accounts: AccountService
    tokens: TokenService


def current_services() -> AuthServices:
    return current_app.extensions[EXTENSION]

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from datetime import datetime

from satchel_shared.errors import ApiError

from ..repositories import EmailTaken, UserRepository, as_utc
from .passwords import PasswordHasher
from .throttle import LoginThrottle
from .tokens import TokenPair, TokenService

log = logging.getLogger(__name__)


def normalize_email(email: str) -> str:
    return email.strip().lower()


class AccountService:
    def __init__(self, users: UserRepository, hasher: PasswordHasher, throttle: LoginThrottle,
                 tokens: TokenService, *, clock: Callable[[], datetime]):
        self.users = users
        self.hasher = hasher
        self.throttle = throttle
        self.tokens = tokens
        self.clock = clock

    def register(self, email: str, password: str) -> str:
        user_id = str(uuid.uuid4())
        try:
            self.users.insert(
                user_id=user_id,
                email=email.strip(),
                email_normalized=normalize_email(email),
                password_hash=self.hasher.hash(password),
                created_at=self.clock(),
            )
        except EmailTaken as exc:
            raise ApiError(409, "email_taken", "An account with this email already exists.",
                           details={"email": ["An account with this email already exists."]}) from exc
        log.info("account registered", extra={"user_id": user_id})
        return user_id

    def login(self, email: str, password: str, *, client_address: str) -> TokenPair:
        email_normalized = normalize_email(email)
        self.throttle.check(email_normalized, client_address)
        user = self.users.find_by_email(email_normalized)
        if not self.hasher.verify(password, user["password_hash"] if user else None):
            self.throttle.record_failure(email_normalized, client_address)
            log.info("login failed", extra={"client_address": client_address})
            raise ApiError(401, "invalid_credentials", "The email or password is incorrect.")
        self.throttle.record_success(email_normalized)
        log.info("login succeeded", extra={"user_id": user["_id"]})
        return self.tokens.start_session(user["_id"])

    def profile(self, user_id: str) -> dict:
        user = self.users.find_by_id(user_id)
        if user is None:
            raise ApiError(401, "unauthorized", "The account of this token no longer exists.")
        return {"id": user["_id"], "email": user["email"], "created_at": as_utc(user["created_at"])}

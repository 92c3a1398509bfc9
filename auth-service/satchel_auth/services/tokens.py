from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt

from satchel_shared.errors import ApiError
from satchel_shared.tokens import ACCESS, REFRESH, TOKEN_USE_CLAIM, InvalidToken, TokenVerifier

from ..keys import ALGORITHM, KeyRing
from ..repositories import RefreshTokenRepository

log = logging.getLogger(__name__)

FAMILY_CLAIM = "fam"


@dataclass(frozen=True)
class TokenPair:
    token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _invalid_refresh(message: str = "The refresh token is invalid.") -> ApiError:
    return ApiError(401, "invalid_refresh_token", message)


class TokenService:
    """Issues access tokens and rotating refresh tokens; both are EdDSA JWTs from the key ring."""

    def __init__(self, keys: KeyRing, verifier: TokenVerifier, refresh_tokens: RefreshTokenRepository,
                 *, clock: Callable[[], datetime], issuer: str, audience: str,
                 access_ttl_seconds: int, refresh_ttl_seconds: int):
        self.keys = keys
        self.verifier = verifier
        self.refresh_tokens = refresh_tokens
        self.clock = clock
        self.issuer = issuer
        self.audience = audience
        self.access_ttl = timedelta(seconds=access_ttl_seconds)
        self.refresh_ttl = timedelta(seconds=refresh_ttl_seconds)

    def _sign(self, user_id: str, token_use: str, now: datetime, ttl: timedelta, **claims) -> tuple[str, str]:
        jti = uuid.uuid4().hex
        payload = {
            "iss": self.issuer, "aud": self.audience, "sub": user_id,
            "iat": int(now.timestamp()), "exp": int((now + ttl).timestamp()),
            "jti": jti, TOKEN_USE_CLAIM: token_use, **claims,
        }
        signing_key = self.keys.active
        token = jwt.encode(payload, signing_key.private_key, algorithm=ALGORITHM,
                           headers={"kid": signing_key.kid})
        return token, jti

    def _pair(self, user_id: str, family_id: str, now: datetime) -> TokenPair:
        access, _ = self._sign(user_id, ACCESS, now, self.access_ttl)
        refresh, jti = self._sign(user_id, REFRESH, now, self.refresh_ttl, **{FAMILY_CLAIM: family_id})
        self.refresh_tokens.insert(token_hash=_hash(refresh), jti=jti, family_id=family_id,
                                   user_id=user_id, issued_at=now, expires_at=now + self.refresh_ttl)
        return TokenPair(access, refresh, int(self.access_ttl.total_seconds()))

    def start_session(self, user_id: str) -> TokenPair:
        """Tokens for a fresh login: a new refresh token family."""
        return self._pair(user_id, uuid.uuid4().hex, self.clock())

    def _verify_refresh(self, refresh_token: str) -> dict:
        try:
            return self.verifier.verify(refresh_token, token_use=REFRESH)
        except InvalidToken as exc:
            raise _invalid_refresh(f"The refresh token is invalid: {exc}.") from exc

    def rotate(self, refresh_token: str) -> TokenPair:
        """Trade a refresh token for a new pair; a second use of one revokes its whole family."""
        self._verify_refresh(refresh_token)
        now = self.clock()
        token_hash = _hash(refresh_token)
        record = self.refresh_tokens.claim(token_hash, now)
        if record is None:
            known = self.refresh_tokens.find(token_hash)
            if known is not None and known["is_used"]:
                self.refresh_tokens.revoke_family(known["family_id"], now)
                log.warning("refresh token reuse; family revoked",
                            extra={"user_id": known["user_id"], "family_id": known["family_id"]})
                raise _invalid_refresh("The refresh token was already used; the session is revoked.")
            raise _invalid_refresh("The refresh token is revoked or expired.")
        family_id = record["family_id"]
        pair = self._pair(record["user_id"], family_id, now)
        # A revocation that ran before our child token existed did not flag it; it did flag the
        # parent, so look again and take the child down with the family.
        if self.refresh_tokens.is_revoked(token_hash):
            self.refresh_tokens.revoke_family(family_id, now)
            raise _invalid_refresh("The refresh token is revoked.")
        return pair

    def revoke(self, refresh_token: str) -> None:
        """Log out: revoke the token's family. Idempotent for any token we signed."""
        self._verify_refresh(refresh_token)
        known = self.refresh_tokens.find(_hash(refresh_token))
        if known is not None:
            self.refresh_tokens.revoke_family(known["family_id"], self.clock())

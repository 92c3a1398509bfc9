"""Verifying Satchel access tokens: asymmetric JWTs checked against the auth service's JWKS.

The algorithm list is pinned (never taken from the token), and `iss`, `aud`, `sub`, `iat`, `exp`
and `token_use` are required, so neither `alg: none`, an HS256 token signed with the public key,
nor a refresh token passes as an access token.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import jwt
import requests
from flask import current_app, g, request

from .errors import ApiError, service_unavailable

log = logging.getLogger(__name__)

ALGORITHMS = ("EdDSA",)
TOKEN_USE_CLAIM = "token_use"
ACCESS = "access"
REFRESH = "refresh"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "exp", TOKEN_USE_CLAIM)
_EXTENSION = "satchel.token_verifier"


class InvalidToken(Exception):
    """The token is not a valid Satchel token of the expected kind."""


class KeysUnavailable(Exception):
    """The key set could not be fetched, so no token can be checked right now."""


class StaticKeySet:
    """Keys known in-process (the auth service verifies with its own public keys)."""

    def __init__(self, keys: Mapping[str, jwt.PyJWK]):
        self._keys = dict(keys)

    def key_for(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)


class RemoteKeySet:
    """A JWKS fetched over HTTP, cached for `ttl_seconds`, refetched once on an unknown `kid`.

    Refetches for unknown kids are throttled to one per `min_refetch_seconds`, so a flood of
    tokens with made-up kids cannot turn into a flood of requests to the auth service.
    """

    def __init__(
        self,
        url: str,
        *,
        ttl_seconds: float = 300,
        min_refetch_seconds: float = 10,
        timeout_seconds: float = 5,
        session: requests.Session | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.url = url
        self.ttl_seconds = ttl_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self.timeout_seconds = timeout_seconds
        self._session = session or requests.Session()
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at: float | None = None
        self._lock = threading.Lock()

    def _fetch(self) -> None:
        try:
            response = self._session.get(self.url, timeout=self.timeout_seconds)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise KeysUnavailable(f"cannot fetch JWKS from {self.url}: {exc}") from exc
        keys = {}
        for entry in document.get("keys", []):
            try:
                key = jwt.PyJWK.from_dict(entry)
            except jwt.PyJWTError:
                log.warning("ignoring unusable JWKS entry", extra={"kid": entry.get("kid")})
                continue
            if key.key_id:
                keys[key.key_id] = key
        self._keys = keys
        self._fetched_at = self._clock()

    def key_for(self, kid: str) -> jwt.PyJWK | None:
        with self._lock:
            now = self._clock()
            age = None if self._fetched_at is None else now - self._fetched_at
            if age is None or age > self.ttl_seconds:
                self._fetch()
            elif kid not in self._keys and age > self.min_refetch_seconds:
                self._fetch()
            return self._keys.get(kid)


class TokenVerifier:
    def __init__(self, key_set, *, issuer: str, audience: str, leeway_seconds: int = 30):
        self.key_set = key_set
        self.issuer = issuer
        self.audience = audience
        self.leeway_seconds = leeway_seconds

    def verify(self, token: str, *, token_use: str = ACCESS) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        if header.get("alg") not in ALGORITHMS:
            raise InvalidToken("token algorithm not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("token has no key id")
        key = self.key_set.key_for(kid)
        if key is None:
            raise InvalidToken("token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=list(ALGORITHMS),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("token rejected") from exc
        if claims.get(TOKEN_USE_CLAIM) != token_use:
            raise InvalidToken(f"not an {token_use} token")
        if not isinstance(claims.get("sub"), str) or not claims["sub"]:
            raise InvalidToken("token has no subject")
        return claims


def install_verifier(app, verifier: TokenVerifier) -> None:
    app.extensions[_EXTENSION] = verifier


def bearer_token(authorization: str | None) -> str | None:
    """The credentials of an `Authorization: Bearer <token>` header, or None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials or " " in credentials:
        return None
    return credentials


def _unauthorized(message: str) -> ApiError:
    return ApiError(
        401, "unauthorized", message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'}
    )


def authenticate() -> str:
    """The user id of the request's valid access token, also set as `g.user_id`; 401 without
    one. For views where a token is one way in among others; `require_auth` for the rest."""
    token = bearer_token(request.headers.get("Authorization"))
    if token is None:
        raise _unauthorized("A bearer access token is required.")
    verifier: TokenVerifier = current_app.extensions[_EXTENSION]
    try:
        claims = verifier.verify(token)
    except InvalidToken as exc:
        raise _unauthorized(f"Invalid access token: {exc}.") from exc
    except KeysUnavailable as exc:
        log.error("cannot verify tokens: %s", exc)
        raise service_unavailable("Token keys are unavailable; retry shortly.") from exc
    g.user_id = claims["sub"]
    return g.user_id


def require_auth(view):
    """Reject the request with 401 unless it carries a valid access token; set `g.user_id`."""

    @functools.wraps(view)
    def wrapper(*args, **kwargs):
        authenticate()
        return view(*args, **kwargs)

    return wrapper

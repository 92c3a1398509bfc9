"""Signing keys: a directory of Ed25519 private keys named `<kid>.pem`.

Every key in the directory is published in the JWKS and accepted when verifying, so rotating is:
add a key (`generate --force`), let it become active, and delete the old file only once the
tokens it signed have expired (REFRESH_TOKEN_TTL_SECONDS after the switch).

    python -m satchel_auth.keys generate --dir DIR [--force]
"""
from __future__ import annotations

import dataclasses
import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from satchel_shared.config import ConfigError
from satchel_shared.tokens import ALGORITHMS

ALGORITHM = ALGORITHMS[0]
KEY_SUFFIX = ".pem"
_VALID_KID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclasses.dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: Ed25519PrivateKey
    mtime_ns: int

    def public_jwk(self) -> dict:
        jwk = OKPAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}


class KeyRing:
    """All keys of the directory; `active` signs, every one verifies."""

    def __init__(self, keys: list[SigningKey], active_kid: str):
        self.keys = {key.kid: key for key in keys}
        self.active = self.keys[active_kid]

    def public_jwks(self) -> dict:
        return {"keys": [key.public_jwk() for key in self.keys.values()]}

    def verification_keys(self) -> dict[str, jwt.PyJWK]:
        return {kid: jwt.PyJWK.from_dict(key.public_jwk()) for kid, key in self.keys.items()}


def _key_files(directory: Path) -> list[Path]:
    return sorted(path for path in directory.glob(f"*{KEY_SUFFIX}") if path.is_file())


def load_key_ring(directory: str | os.PathLike, active_kid: str | None = None) -> KeyRing:
    """Read every `<kid>.pem`; fail with ConfigError if none is usable or `active_kid` is unknown."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"JWT_KEYS_DIR {str(path)!r} is not a directory")
    keys = []
    for file in _key_files(path):
        kid = file.name[: -len(KEY_SUFFIX)]
        if not _VALID_KID.match(kid):
            raise ConfigError(f"key file {file.name!r}: kid must match {_VALID_KID.pattern}")
        try:
            private_key = serialization.load_pem_private_key(file.read_bytes(), password=None)
        except (ValueError, TypeError, OSError) as exc:
            raise ConfigError(f"key file {str(file)!r} is not an unencrypted PEM private key: {exc}")
        if not isinstance(private_key, Ed25519PrivateKey):
            raise ConfigError(f"key file {str(file)!r} is not an Ed25519 key")
        keys.append(SigningKey(kid, private_key, file.stat().st_mtime_ns))
    if not keys:
        raise ConfigError(
            f"JWT_KEYS_DIR {str(path)!r} holds no <kid>{KEY_SUFFIX} keys "
            "(create one with: python -m satchel_auth.keys generate --dir DIR)"
        )
    if active_kid is None:
        active_kid = max(keys, key=lambda key: (key.mtime_ns, key.kid)).kid
    elif active_kid not in {key.kid for key in keys}:
        raise ConfigError(f"JWT_ACTIVE_KID {active_kid!r} has no key file in {str(path)!r}")
    return KeyRing(keys, active_kid)


def new_kid(now: datetime | None = None) -> str:
    """Sorts by creation time, so name order agrees with mtime order."""
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%S%fZ}-{secrets.token_hex(3)}"


def generate_key(directory: str | os.PathLike, *, force: bool = False) -> tuple[str, bool]:
    """A new key in `directory` unless it already has one (or `force`); returns (kid, created)."""
    path = Path(directory)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    existing = _key_files(path)
    if existing and not force:
        return load_key_ring(path).active.kid, False
    kid = new_kid()
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    target = path / f"{kid}{KEY_SUFFIX}"
    partial = path / f".{kid}{KEY_SUFFIX}.tmp"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, target)  # never leave a half-written key where loaders look
    return kid, True

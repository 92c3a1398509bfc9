"""The auth service's settings, read once from the environment (see satchel_shared.config)."""
from __future__ import annotations

import dataclasses
import os
from typing import Optional

from satchel_shared.config import ServiceConfig, setting


@dataclasses.dataclass(frozen=True, kw_only=True)
class AuthConfig(ServiceConfig):
    mongo_db: str = setting("MONGO_DB", "satchel_auth")
    jwt_keys_dir: str = setting("JWT_KEYS_DIR", help="directory of Ed25519 PEM private keys <kid>.pem")
    jwt_active_kid: Optional[str] = setting("JWT_ACTIVE_KID", None,
                                            help="kid that signs new tokens; default: newest key file")
    access_token_ttl_seconds: int = setting("ACCESS_TOKEN_TTL_SECONDS", 900)
    refresh_token_ttl_seconds: int = setting("REFRESH_TOKEN_TTL_SECONDS", 30 * 24 * 3600)
    bcrypt_rounds: int = setting("BCRYPT_ROUNDS", 12)
    login_max_failures: int = setting("LOGIN_MAX_FAILURES", 5,
                                      help="failed logins per account before it is locked")
    login_lockout_seconds: int = setting("LOGIN_LOCKOUT_SECONDS", 300,
                                         help="failure counting window and lockout duration")
    login_max_failures_per_ip: int = setting("LOGIN_MAX_FAILURES_PER_IP", 20,
                                             help="failed logins per client address before it is locked")

    def problems(self) -> list[str]:
        problems = super().problems()
        if not 4 <= self.bcrypt_rounds <= 16:
            problems.append(f"BCRYPT_ROUNDS must be between 4 and 16, got {self.bcrypt_rounds}")
        for env, value in (
            ("ACCESS_TOKEN_TTL_SECONDS", self.access_token_ttl_seconds),
            ("REFRESH_TOKEN_TTL_SECONDS", self.refresh_token_ttl_seconds),
            ("LOGIN_MAX_FAILURES", self.login_max_failures),
            ("LOGIN_LOCKOUT_SECONDS", self.login_lockout_seconds),
            ("LOGIN_MAX_FAILURES_PER_IP", self.login_max_failures_per_ip),
        ):
            if value < 1:
                problems.append(f"{env} must be at least 1, got {value}")
        if not self.jwt_keys_dir:
            problems.append("JWT_KEYS_DIR is required")
        elif not os.path.isdir(self.jwt_keys_dir):
            problems.append(f"JWT_KEYS_DIR {self.jwt_keys_dir!r} is not a directory "
                            "(create a key with: python -m satchel_auth.keys generate --dir DIR)")
        return problems

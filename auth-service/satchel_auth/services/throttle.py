from __future__ import annotations

import math
from collections.abc import Callable
from datetime import datetime, timedelta

from satchel_shared.errors import ApiError

from ..repositories import LoginFailureRepository, as_utc


class LoginThrottle:
    """Failed-login limits per account and per client address, counted in MongoDB."""

    def __init__(self, failures: LoginFailureRepository, *, clock: Callable[[], datetime],
                 max_per_account: int, max_per_address: int, lockout_seconds: int):
        self.failures = failures
        self.clock = clock
        self.limits = {"account": max_per_account, "ip": max_per_address}
        self.window = timedelta(seconds=lockout_seconds)

    @staticmethod
    def _keys(email_normalized: str, address: str) -> dict[str, str]:
        return {"account": f"account:{email_normalized}", "ip": f"ip:{address}"}

    def check(self, email_normalized: str, address: str) -> None:
        """Raise 429 with Retry-After if the account or the address is locked out."""
        now = self.clock()
        retry_after = 0
        for key in self._keys(email_normalized, address).values():
            lock = self.failures.find_lock(key, now)
            if lock:
                seconds = math.ceil((as_utc(lock["expires_at"]) - now).total_seconds())
                retry_after = max(retry_after, seconds, 1)
        if retry_after:
            raise ApiError(429, "too_many_requests",
                           "Too many failed logins; try again later.",
                           details={"retry_after_seconds": retry_after},
                           headers={"Retry-After": str(retry_after)})

    def record_failure(self, email_normalized: str, address: str) -> None:
        """Count a failure against the account and the address. The lock rule: a key that reaches
        its limit within one window (from its first counted failure) is locked for one window
        from now."""
        now = self.clock()
        until = now + self.window
        for kind, key in self._keys(email_normalized, address).items():
            if self.failures.count_failure(key, now=now, expires_at=until) >= self.limits[kind]:
                self.failures.lock(key, now=now, expires_at=until)

    def record_success(self, email_normalized: str) -> None:
        # The address counter stays: logging into one's own account must not buy more guesses.
        self.failures.reset(self._keys(email_normalized, "")["account"])

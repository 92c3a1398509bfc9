from __future__ import annotations

import bcrypt


class PasswordHasher:
    """bcrypt at a fixed cost. Passwords reach here already validated (≤ 72 UTF-8 bytes)."""

    def __init__(self, rounds: int):
        self.rounds = rounds
        # Checked when the account does not exist, so that costs what a real check costs.
        self._dummy_hash = bcrypt.hashpw(b"satchel-dummy-password", bcrypt.gensalt(rounds))

    def hash(self, password: str) -> str:
        return bcrypt.hashpw(password.encode("utf-8"), bcrypt.gensalt(self.rounds)).decode("ascii")

    def verify(self, password: str, password_hash: str | None) -> bool:
        """True if `password` matches; with no hash, spend the same time and return False."""
        candidate = password.encode("utf-8")
        if password_hash is None:
            bcrypt.checkpw(candidate, self._dummy_hash)
            return False
        return bcrypt.checkpw(candidate, password_hash.encode("ascii"))

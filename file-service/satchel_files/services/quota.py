"""Per-user quota: what a user's files take, and one decision at a time per user.

Usage is the sum of the owner's `user_files` sizes (available files, and uploads in progress
by their declared size). Checking it and then writing is a race when two requests of one user
commit at once: both see room for one more file and both write it. `Quota.admitting()` closes
that: it holds the owner's lease (repositories/owner_locks.py) from the check until the block
that writes is done, so the check another request makes next sees the write.

Streaming uploads also check as bytes arrive, without the lease, to refuse early; the check
under the lease is the one that counts.
"""
from __future__ import annotations

import contextlib
import random
import time
import uuid
from collections.abc import Callable, Iterator

from satchel_shared.errors import ApiError

from ..repositories.owner_locks import OwnerLockRepository
from ..repositories.user_files import UserFileRepository
from .clock import Clock

LEASE_SECONDS = 15     # longer than any admitted block (a few MongoDB writes) takes
WAIT_SECONDS = 10      # how long a request waits for the owner's other request to finish


class Quota:
    def __init__(self, user_files: UserFileRepository, locks: OwnerLockRepository, *,
                 max_upload_bytes: int, user_quota_bytes: int, clock: Clock = time.time,
                 sleep: Callable[[float], None] = time.sleep):
        self.user_files = user_files
        self.locks = locks
        self.max_upload_bytes = max_upload_bytes
        self.user_quota_bytes = user_quota_bytes
        self.clock = clock
        self.sleep = sleep

    def usage(self, owner_id: str) -> int:
        return self.user_files.total_size_for_owner(owner_id)

    def check_request_size(self, request_bytes: int) -> None:
        """413 if a request carries more than MAX_UPLOAD_BYTES."""
        if request_bytes > self.max_upload_bytes:
            raise ApiError(413, "payload_too_large",
                           f"The upload is larger than {self.max_upload_bytes} bytes.",
                           {"max_upload_bytes": self.max_upload_bytes})

    def check(self, request_bytes: int, usage_after: int) -> None:
        """413 if a request carries more than MAX_UPLOAD_BYTES or leaves the owner over quota."""
        self.check_request_size(request_bytes)
        if usage_after > self.user_quota_bytes:
            raise ApiError(413, "quota_exceeded",
                           f"This upload would take your storage over your quota of "
                           f"{self.user_quota_bytes} bytes.",
                           {"user_quota_bytes": self.user_quota_bytes,
                            "needed_bytes": usage_after})

    def refuse_early(self, owner_id: str, *, adding_bytes: int, request_bytes: int = 0) -> None:
        """check() against the usage as of now, without the lease: to refuse before work is
        done; the decision that counts is `admitting`."""
        self.check(request_bytes, self.usage(owner_id) + adding_bytes)

    def meter(self, owner_id: str, *, freeing_bytes: int = 0) -> Callable[[int], None]:
        """A counter for bytes as they arrive: each call adds to the request and refuses (413)
        once it passes MAX_UPLOAD_BYTES or the quota as of now, counting `freeing_bytes` (what
        the request replaces) as given back."""
        usage = self.usage(owner_id) - freeing_bytes
        received = 0

        def count(size: int) -> None:
            nonlocal received
            received += size
            self.check(received, usage + received)

        return count

    @contextlib.contextmanager
    def admitting(self, owner_id: str, *, adding_bytes: int) -> Iterator[None]:
        """Check that the owner's usage plus `adding_bytes` fits (413 if not), then run the
        block that makes it so while no other request of the owner can check."""
        key, holder = f"quota:{owner_id}", uuid.uuid4().hex
        self._acquire(key, holder)
        try:
            self.check(0, self.usage(owner_id) + adding_bytes)
            yield
        finally:
            self.locks.release(key, holder)

    def _acquire(self, key: str, holder: str) -> None:
        deadline = time.monotonic() + WAIT_SECONDS
        pause = 0.002
        while not self.locks.try_acquire(key, holder, int(self.clock() * 1000),
                                         LEASE_SECONDS * 1000):
            if time.monotonic() >= deadline:
                raise ApiError(409, "busy", "Another upload of yours is being saved; retry.",
                               headers={"Retry-After": "1"})
            self.sleep(pause * (1 + random.random()))
            pause = min(pause * 2, 0.05)

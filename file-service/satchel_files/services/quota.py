"""Per-user quota: what a user's files take, decided in one atomic write.

Usage is what the owner's `user_files` take: available files, and uploads in progress by their
declared size. It is kept as a count (repositories/usage.py) rather than summed per request:
the sum costs O(account) (70-100 ms at 100,000 files on nx-27017) and had to run under an
owner-wide lease, which serialized a user's uploads; four at a time into a large account waited
10 s and were refused (409 busy).

The rule of services/refcounts.py holds here too: the count may be too HIGH after a crash,
never too low.
- Taking room (`admitting`): ONE conditional `$inc` reserves `adding_bytes` only if the total
  stays within the quota (atomic, so racing uploads cannot pass it together), BEFORE the block
  writes what takes the room. A block that refuses (ApiError: nothing written) gives the room
  back; one that fails otherwise keeps it (it may have written: a count too high).
- Giving room back (`released`): AFTER the write that frees it (delete, smaller content,
  an aborted or expired upload).
- The first decision for an owner without a count sums their files and stores it. Two such
  first decisions and a delete can interleave so that the count ends a file too low; this is
  the only way, once per owner, and fsck repairs it.
- fsck (services/maintenance.py) recomputes every count and repairs one only if it did not
  change while fsck summed (`rev`) and not within the grace period (a request may be between
  its reservation and its write).

Streaming uploads also check as bytes arrive (`meter`), to refuse early; the reservation is the
check that counts.
"""
from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from satchel_shared.errors import ApiError

from ..repositories.usage import UsageRepository
from ..repositories.user_files import UserFileRepository
from .clock import Clock, now_ms


class Reservation:
    """Room taken by `Quota.admitting` for its block. `give_back()` when the block learns that
    nothing it wrote remains (the room is returned when the block ends)."""

    def __init__(self) -> None:
        self.is_given_back = False

    def give_back(self) -> None:
        self.is_given_back = True


class Quota:
    def __init__(self, user_files: UserFileRepository, usage: UsageRepository, *,
                 max_upload_bytes: int, user_quota_bytes: int, clock: Clock = time.time):
        self.user_files = user_files
        self.counts = usage
        self.max_upload_bytes = max_upload_bytes
        self.user_quota_bytes = user_quota_bytes
        self.clock = clock

    def usage(self, owner_id: str) -> int:
        document = self.counts.find(owner_id)
        if document is None:
            self.counts.create(owner_id, self.user_files.total_size_for_owner(owner_id),
                               now_ms(self.clock))
            document = self.counts.find(owner_id)
        return int(document["bytes"])

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
            raise self._over_quota(usage_after)

    def refuse_early(self, owner_id: str, *, adding_bytes: int, request_bytes: int = 0) -> None:
        """check() against the usage as of now: to refuse before work is done; the decision
        that counts is `admitting`."""
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
    def admitting(self, owner_id: str, *, adding_bytes: int) -> Iterator[Reservation]:
        """Reserve `adding_bytes` of the owner's quota (413 if they do not fit) for the block
        that writes what takes them; see the module docstring for when it is given back."""
        self.usage(owner_id)  # the count exists
        if not self.counts.reserve(owner_id, adding_bytes, self.user_quota_bytes,
                                   now_ms(self.clock)):
            raise self._over_quota(self.usage(owner_id) + adding_bytes)
        reservation = Reservation()
        try:
            yield reservation
        except ApiError:
            reservation.give_back()  # refused: nothing was written
            raise
        finally:
            if reservation.is_given_back:
                self.released(owner_id, adding_bytes)

    def released(self, owner_id: str, freed_bytes: int) -> None:
        """`freed_bytes` of the owner's files are gone (written already)."""
        if freed_bytes:
            self.counts.add(owner_id, -freed_bytes, now_ms(self.clock))

    def _over_quota(self, needed_bytes: int) -> ApiError:
        return ApiError(413, "quota_exceeded",
                        f"This upload would take your storage over your quota of "
                        f"{self.user_quota_bytes} bytes.",
                        {"user_quota_bytes": self.user_quota_bytes, "needed_bytes": needed_bytes})

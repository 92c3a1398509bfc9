"""Per-user quota: what a user's files take, decided in one atomic write.

Usage is what the owner's `user_files` take: available files, and uploads in progress by their
declared size. It is kept as a count (repositories/usage.py) rather than summed per request:
the sum costs O(account) (70-100 ms at 100,000 files on nx-27017) and had to run under an
owner-wide lease, which serialized a user's uploads; four at a time into a large account waited
10 s and were refused (409 busy).

The rule of services/refcounts.py holds here too: the count may be too HIGH after a crash,
never too low.
- Taking room (`admitting`, `reserve`): ONE conditional `$inc` reserves the bytes only if the
  total stays within the quota (atomic, so racing uploads cannot pass it together), BEFORE the
  write that takes the room. A block that refuses (ApiError: nothing written) gives the room
  back; one that fails otherwise keeps it (it may have written: a count too high).
- Giving room back (`releasing`): the count is marked as changing (`rev`, `updated_ms`)
  BEFORE the write that frees bytes (a delete, smaller content, an aborted or expired upload)
  and decremented AFTER it, also when a later step (releasing references) fails. The mark is what keeps fsck from setting the count from a sum
  taken after the write and then seeing the decrement land as well.
- New content for a file (`adjusting`): the size change is only known for the version a
  compare-and-set attempt targets, so each attempt reserves what it needs beyond what is held
  (413 if that does not fit) or marks the count, before its write; the difference is settled
  after.
- The first decision for an owner without a count sums their files and stores it. A write
  that frees bytes while the owner has no count gives nothing back after it: the count, made
  later, summed either with those bytes (too high) or without them.
- fsck (services/maintenance.py) recomputes every count and sets one only if its `rev` did
  not move while fsck summed; a count too high that changed within the grace period is a
  request in flight and is left alone.

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


class Adjustment:
    """The room held for one write of `Quota.adjusting`: `reserved` bytes, for `delta`. The
    owner has a count from the start (`adjusting` makes it), so every attempt settles
    against it."""

    def __init__(self, quota: "Quota", owner_id: str) -> None:
        self.quota, self.owner_id = quota, owner_id
        self.reserved = 0
        self.delta = 0

    def to(self, delta: int) -> None:
        """The next attempt's write changes the owner's bytes by `delta`."""
        self.delta = delta
        if delta > self.reserved:
            self.quota.reserve(self.owner_id, delta - self.reserved)
            self.reserved = delta
        elif delta < self.reserved:  # it frees room, or needs less than is held: mark first
            self.quota.counts.touch(self.owner_id, now_ms(self.quota.clock))

    @property
    def surplus(self) -> int:
        """What to give back once the write is done."""
        return self.reserved - self.delta


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

    def reserve(self, owner_id: str, adding_bytes: int) -> None:
        """Take `adding_bytes` of the owner's room now, or 413 if they do not fit. One write
        when the owner has a count (the usual case); the first time, it is made first."""
        for _ in range(2):
            if self.counts.reserve(owner_id, adding_bytes, self.user_quota_bytes,
                                   now_ms(self.clock)):
                return
            if self.counts.find(owner_id) is not None:
                break  # it exists: the bytes do not fit
            self.usage(owner_id)  # the owner's first count, then try again
        raise self._over_quota(self.usage(owner_id) + adding_bytes)

    @contextlib.contextmanager
    def admitting(self, owner_id: str, *, adding_bytes: int) -> Iterator[Reservation]:
        """Reserve `adding_bytes` of the owner's quota (413 if they do not fit) for the block
        that writes what takes them; see the module docstring for when it is given back."""
        self.reserve(owner_id, adding_bytes)
        reservation = Reservation()
        try:
            yield reservation
        except ApiError:
            reservation.give_back()  # refused: nothing was written
            raise
        finally:
            if reservation.is_given_back:
                self.released(owner_id, adding_bytes)

    @contextlib.contextmanager
    def releasing(self, owner_id: str) -> Iterator[Callable[[int], None]]:
        """For a block whose write frees some of the owner's bytes: marks the count before the
        block; the block calls the function it gets with what it freed once written, and
        that is given back when the block ends, even if a later step of it fails (the bytes
        are gone: keeping them counted would hold the owner's room until an fsck repair)."""
        is_counted = self.counts.touch(owner_id, now_ms(self.clock))
        freed: list[int] = []
        try:
            yield freed.append
        finally:
            if is_counted:  # else the count, made later, is summed with or without these bytes
                self.released(owner_id, sum(freed))

    @contextlib.contextmanager
    def adjusting(self, owner_id: str) -> Iterator[Adjustment]:
        """For a compare-and-set whose size change is only known per attempt (new content for a
        file that may change meanwhile): `to(delta)` before each attempt's write."""
        self.usage(owner_id)  # the count exists before any attempt (see Adjustment)
        adjustment = Adjustment(self, owner_id)
        try:
            yield adjustment
        except ApiError:
            self.released(owner_id, adjustment.reserved)  # refused: nothing was written
            raise
        self.released(owner_id, adjustment.surplus)

    def released(self, owner_id: str, freed_bytes: int) -> None:
        """`freed_bytes` of the owner's files are gone (written already; the count was marked
        before, see `releasing`). Negative: bytes taken without a reservation."""
        if freed_bytes:
            self.counts.add(owner_id, -freed_bytes, now_ms(self.clock))

    def _over_quota(self, needed_bytes: int) -> ApiError:
        return ApiError(413, "quota_exceeded",
                        f"This upload would take your storage over your quota of "
                        f"{self.user_quota_bytes} bytes.",
                        {"user_quota_bytes": self.user_quota_bytes, "needed_bytes": needed_bytes})

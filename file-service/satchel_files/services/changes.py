"""The change feed: a cursor that never skips a change, without multi-document transactions.

Why not transactions: a standalone mongod refuses them, and nx-27017 (the embedded server)
accepts them but does not isolate them: every session of a database shares one SQLite
connection, so another client's writes made while a transaction is open join it, and its abort
rolls them back too (probed with nx-27017 0.8.1). Timestamps alone lose changes (two writes in the
same millisecond; a write that commits after a later one was read). So:

Numbers claimed by insert
    Each change to a user file is one `changes` document, numbered per owner: seq 1, 2, 3, ...
    A writer reads the owner's highest seq N and inserts N + 1; `_id` = "<owner>:<seq>" is unique,
    so a DuplicateKeyError means N + 1 exists (and is visible): try N + 2, re-reading the maximum
    now and then, with jitter. A number can only be claimed after its predecessor exists, so the
    numbers have no gaps and appear in order: a reader that has seen seq N will never later find
    a new document numbered N or less. This holds on real MongoDB reading from the primary (a
    duplicate key is only reported against a committed insert) and on nx-27017 (one SQLite writer
    per database, every insert committed before the next command runs).

Opened before, settled after
    The document is inserted `pending` BEFORE the mutation of the user file and set `committed`
    after it, or `aborted` when the request fails with a 4xx (nothing changed), or `uncertain`
    when it fails otherwise (something may have changed). A reader returns changes in seq order
    and STOPS at the first pending change younger than the lease (CHANGE_PENDING_LEASE_SECONDS):
    it never moves its cursor past a change whose mutation might still become visible. Aborted
    changes are passed over; uncertain ones are delivered (the client fetches the file and sees
    whatever is true: at least once, never lost).

Leases, decided by one conditional write
    A pending change older than the lease (its writer died, or is very slow) is turned
    `uncertain` by the reader with update_one({_id, state: pending, at_ms <= cutoff}), and the
    writer settles with update_one({_id, state: pending}): whichever write lands first wins. A
    writer that finds its change already made uncertain has finished a mutation the reader may
    have fetched too early, so it appends a NEW committed change for the same file.

Retention
    `gc` deletes settled changes older than CHANGE_RETENTION_SECONDS, never an owner's newest
    (the next number is claimed from it), after recording the highest trimmed seq per owner. A
    page is read first and that floor after, so a cursor below it gets 410 `reset`, never a
    silent gap. A cursor above the owner's newest number (another server's, a restored
    database) gets 410 `reset` too.

Epochs: a restore never lets a cursor skip
    A restore puts back an older history, and its numbering goes on from the backup's last
    number, so a cursor from after the backup would be accepted once new changes reach its
    number, and silently skip those between. So the feed has an epoch: a random id in one
    `change_feed` document, and every cursor names the epoch it was issued in. A restore starts
    a new epoch (`satchel-stack admin restore` does; elsewhere `python -m satchel_files.cli
    reset-feed`, docs/operations.md); a cursor of any other epoch gets 410 `reset`. The epoch is
    read BEFORE the changes and a returned cursor carries that one, so a cursor is never
    stamped with an epoch younger than the history it was counted in. `since` before the epoch
    began gets 410 too: a client that knew the files at a time the restore undid cannot be
    brought up to date by changes (the undoing was never recorded as changes).
    The first epoch (created on first use, not by a restore) also takes `c1` cursors, those
    issued before epochs existed: they were counted in this history, unless a restore came
    since, and a restore starts an epoch that is not the first.

In order per file
    A user file remembers the number of the last change applied to it (`change_seq`), and every
    mutation is a compare-and-set on the file's `version`. A writer whose change number is below
    the file's `change_seq` (a later-opened change got there first) aborts its change and opens a
    new one (`Recording.follow`) before it retries, so per file, numbers follow the order in
    which mutations really happened: never "deleted" and then "renamed".
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from pymongo.errors import DuplicateKeyError, PyMongoError

from satchel_shared.errors import ApiError, service_unavailable

from ..repositories.changes import (ABORTED, COMMITTED, PENDING, UNCERTAIN, ChangeRepository,
                                    change_document)
from ..change_cursor import ChangeCursor, new_epoch_id
from .clock import Clock, from_ms, now_ms

log = logging.getLogger(__name__)

CREATED, UPDATED, RENAMED, DELETED = "created", "updated", "renamed", "deleted"
DETAIL_FIELDS = ("filename", "size_bytes", "hash", "version")
CHANGE_SEQ_FIELD = "change_seq"  # on a user file: the number of the last change applied to it
_CLAIM_ATTEMPTS = 200
_REREAD_EVERY = 4
_SINCE_CANDIDATES = 50
_TRIM_BATCH = 1000


@dataclass(frozen=True)
class FeedEpoch:
    id: str
    started_ms: int  # `since` before it is refused; 0 for the first epoch (nothing restored)
    is_first: bool   # created on first use, not by a reset: `c1` cursors belong to it


@dataclass(frozen=True)
class ChangePage:
    changes: list[dict]
    cursor_seq: int
    has_more: bool
    is_wait_refused: bool = False  # the worker already holds its share of long-polls
    epoch: str | None = None

    @property
    def file_ids(self) -> list[str]:
        return list(dict.fromkeys(change["file_id"] for change in self.changes))

    @property
    def cursor(self) -> ChangeCursor:
        return ChangeCursor(self.epoch, self.cursor_seq)


@dataclass
class Recording:
    """The change being recorded around one mutation; `details` describe the file after it."""

    feed: "ChangeFeed"
    document: dict = field(default_factory=dict)
    values: dict = field(default_factory=dict)
    is_discarded: bool = False

    def discard(self) -> None:
        """The mutation turned out not to happen (e.g. a compare-and-set that matched nothing)
        without an exception: the change is aborted when the `with` block ends."""
        self.is_discarded = True

    @property
    def seq(self) -> int:
        return self.document["seq"]

    def details(self, **values) -> None:
        self.values.update({key: value for key, value in values.items() if key in DETAIL_FIELDS})

    def follow(self, user_file: dict) -> None:
        """Before a compare-and-set on `user_file`: if a change opened after ours was applied to
        it already, give our number up and take a new one, so per file the numbers keep the
        order of the mutations. Store `seq` as the file's CHANGE_SEQ_FIELD in the write."""
        if user_file.get(CHANGE_SEQ_FIELD, 0) > self.seq:
            self.feed.renumber(self)


def reset_required(message: str) -> ApiError:
    return ApiError(410, "reset", message + " List the files again (GET /api/v1/files) and "
                    "start from GET /api/v1/changes/latest.")


_RESTORED = "The change history was restored or reset since then."


class ChangeFeed:
    def __init__(self, changes: ChangeRepository, *, lease_seconds: int, retention_seconds: int,
                 max_waiting: int, clock: Clock = time.time, poll_seconds: float = 0.25,
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep):
        self.changes = changes
        self.lease_seconds = lease_seconds
        self.retention_seconds = retention_seconds
        self.clock = clock
        self.poll_seconds = poll_seconds
        self.monotonic = monotonic
        self.sleep = sleep
        self._waiting = threading.BoundedSemaphore(max_waiting)

    # writing

    @contextmanager
    def recording(self, owner_id: str, user_file_id: str, op: str,
                  details: dict | None = None) -> Iterator[Recording]:
        """Record `op` on the user file around the mutation inside the `with` block.

        `details` (filename, size_bytes, hash, version; more keys are ignored) describe the
        file after the mutation; the block may add them with `recording.details(...)`."""
        recording = Recording(self)
        recording.details(**(details or {}))
        recording.document = self._claim(owner_id, user_file_id, op, PENDING, recording.values)
        try:
            yield recording
        except ApiError as exc:
            self._settle(recording, ABORTED if exc.status < 500 else UNCERTAIN)
            raise
        except BaseException:
            self._settle(recording, UNCERTAIN)
            raise
        self._settle(recording, ABORTED if recording.is_discarded else COMMITTED)

    def renumber(self, recording: Recording) -> None:
        document = recording.document
        self.changes.settle(document["_id"], ABORTED)
        recording.document = self._claim(document["owner_id"], document["file_id"],
                                         document["op"], PENDING, recording.values)

    def _settle(self, recording: Recording, state: str) -> None:
        """Never fails the request: if this write fails, the change stays pending until its
        lease ends and readers then deliver it as uncertain."""
        document = recording.document
        try:
            if self.changes.settle(document["_id"], state, recording.values):
                return
            if state == COMMITTED:  # a reader gave up on us: tell it again, in a new change
                self._claim(document["owner_id"], document["file_id"], document["op"], COMMITTED,
                            recording.values)
        except PyMongoError:
            log.exception("could not settle a change", extra={"change_id": document["_id"]})

    def _claim(self, owner_id: str, user_file_id: str, op: str, state: str,
               details: dict) -> dict:
        seq = self.changes.last_seq(owner_id) + 1
        for attempt in range(1, _CLAIM_ATTEMPTS + 1):
            document = change_document(owner_id, seq, user_file_id, op, state, self._now_ms(),
                                       details)
            try:
                self.changes.insert(document)
                return document
            except DuplicateKeyError:
                seq += 1  # `seq` exists, so its successor is the next candidate
            if attempt % _REREAD_EVERY == 0:
                self.sleep(random.uniform(0, 0.002 * min(attempt, 50)))
                seq = max(seq, self.changes.last_seq(owner_id) + 1)
        raise service_unavailable("Too many concurrent changes; retry.", retry_after_seconds=1)

    # reading

    def page(self, owner_id: str, after_seq: int, limit: int) -> ChangePage:
        """Up to `limit` changes after `after_seq`, stopping before a change still in flight."""
        documents = self.changes.after(owner_id, after_seq, limit + 1)
        changes: list[dict] = []
        cursor_seq, has_more = after_seq, len(documents) > limit
        for document in documents:
            if document["state"] == PENDING:
                document = self._give_up_if_stale(document)
                if document is None:
                    has_more = False
                    break
            if document["state"] != ABORTED:
                if len(changes) == limit:
                    has_more = True
                    break
                changes.append(_entry(document))
            cursor_seq = document["seq"]
        self._check_cursor(owner_id, after_seq, is_empty=not documents)
        return ChangePage(changes, cursor_seq, has_more)

    def wait_for_page(self, owner_id: str, cursor: ChangeCursor, limit: int,
                      wait_seconds: float) -> ChangePage:
        """Long-poll: the first page with changes after `cursor`, or an empty one after
        `wait_seconds`; its cursor is in the epoch `cursor` was checked against.

        Each worker holds at most `max_waiting` long-polls (one thread each, idle): beyond that,
        it answers at once, so threads stay free for other requests."""
        epoch = self._epoch_of(cursor)  # before the changes are read (see Epochs above)
        return replace(self._wait_for_page(owner_id, cursor.seq, limit, wait_seconds),
                       epoch=epoch.id)

    def _wait_for_page(self, owner_id: str, after_seq: int, limit: int,
                       wait_seconds: float) -> ChangePage:
        page = self.page(owner_id, after_seq, limit)
        if page.changes or wait_seconds <= 0:
            return page
        if not self._waiting.acquire(blocking=False):
            return replace(page, is_wait_refused=True)
        try:
            deadline = self.monotonic() + wait_seconds
            while not page.changes:
                remaining = deadline - self.monotonic()
                if remaining <= 0:
                    break
                self.sleep(min(self.poll_seconds, remaining))
                page = self.page(owner_id, page.cursor_seq, limit)
        finally:
            self._waiting.release()
        return page

    def latest(self, owner_id: str) -> ChangeCursor:
        """A cursor for "now" (see `latest_seq`) in the current epoch."""
        epoch = self.epoch()
        return ChangeCursor(epoch.id, self.latest_seq(owner_id))

    def cursor_for_since(self, owner_id: str, since_ms: int) -> ChangeCursor:
        """A cursor for `since_ms` (see `seq_for_since`) in the current epoch; 410 before the
        epoch began: what a client knew then may have been undone by a restore."""
        epoch = self.epoch()
        if since_ms < epoch.started_ms:
            raise reset_required(_RESTORED)
        return ChangeCursor(epoch.id, self.seq_for_since(owner_id, since_ms))

    def latest_seq(self, owner_id: str) -> int:
        """A cursor for "now": after every settled change, before any still in flight."""
        last = self.changes.last_seq(owner_id)
        after = 0
        while True:
            pending = self.changes.pending_after(owner_id, after, 20)
            for document in pending:
                if document["seq"] > last:
                    return last
                if self._give_up_if_stale(document) is None:
                    return document["seq"] - 1
                after = document["seq"]
            if len(pending) < 20:
                return last

    def seq_for_since(self, owner_id: str, since_ms: int) -> int:
        """The cursor just before the first change opened at or after `since_ms`.

        An approximation by nature (servers' clocks differ): it starts a lease earlier, so a
        change that was opened before `since_ms` but became visible after it is included too
        (at least once), and it takes the lowest number among the first candidates by time."""
        now = self._now_ms()
        if since_ms < now - self.retention_seconds * 1000:
            raise reset_required("Changes that old are no longer kept.")
        candidates = self.changes.first_at_or_after(
            owner_id, since_ms - self.lease_seconds * 1000, _SINCE_CANDIDATES)
        if not candidates:
            return self.latest_seq(owner_id)
        seq = min(document["seq"] for document in candidates) - 1
        if seq < self.changes.trimmed_seq(owner_id):
            raise reset_required("Changes that old are no longer kept.")
        return seq

    def _give_up_if_stale(self, document: dict) -> dict | None:
        """The pending change as settled now (uncertain if its lease ran out), or None if it is
        still in flight."""
        cutoff_ms = self._now_ms() - self.lease_seconds * 1000
        if document["at_ms"] > cutoff_ms:
            return None
        if self.changes.expire(document["_id"], cutoff_ms):
            log.warning("a change outlived its lease; delivering it as uncertain",
                        extra={"change_id": document["_id"]})
        settled = self.changes.find(document["_id"])
        return settled if settled is not None and settled["state"] != PENDING else None

    def _check_cursor(self, owner_id: str, after_seq: int, *, is_empty: bool) -> None:
        # After the page was read: gc raises the floor before it deletes anything.
        if after_seq < self.changes.trimmed_seq(owner_id):
            raise reset_required("This cursor is older than the changes kept.")
        if is_empty and after_seq > self.changes.last_seq(owner_id):
            raise reset_required("This cursor does not belong to this server's history.")

    # epochs

    def epoch(self) -> FeedEpoch:
        """The current epoch; the first one is created on first use."""
        document = self.changes.epoch()
        if document is None:
            document = self.changes.insert_epoch(new_epoch_id(), started_ms=0, is_first=True)
        return FeedEpoch(document["epoch"], document["started_ms"], document["is_first"])

    def start_epoch(self) -> FeedEpoch:
        """After a restore (or to make every sync client start over): from now on, every
        cursor issued before gets 410 `reset`, and so does `since` before now."""
        epoch = FeedEpoch(new_epoch_id(), self._now_ms(), is_first=False)
        self.changes.replace_epoch(epoch.id, started_ms=epoch.started_ms, is_first=False)
        return epoch

    def _epoch_of(self, cursor: ChangeCursor) -> FeedEpoch:
        epoch = self.epoch()
        if cursor.epoch != epoch.id and not (cursor.epoch is None and epoch.is_first):
            raise reset_required(_RESTORED)
        return epoch

    # retention

    def trim(self, *, dry_run: bool = False) -> int:
        """Delete settled changes older than the retention period; returns how many."""
        cutoff_ms = self._now_ms() - self.retention_seconds * 1000
        removed = 0
        for owner_id in self.changes.owners_with_changes_before(cutoff_ms):
            trimmed = self.changes.trimmed_seq(owner_id)
            floor = self._trimmable_up_to(owner_id, trimmed, cutoff_ms, dry_run=dry_run)
            if dry_run:
                removed += floor - trimmed
            elif floor > 0:
                self.changes.raise_floor(owner_id, floor)  # first: readers then see the floor
                removed += self.changes.delete_up_to(owner_id, floor)
        return removed

    def _trimmable_up_to(self, owner_id: str, trimmed: int, cutoff_ms: int, *,
                         dry_run: bool) -> int:
        """The highest seq such that every change up to it is settled and older than the
        cutoff, the owner's newest excepted."""
        last = self.changes.last_seq(owner_id)
        floor = trimmed
        while True:
            batch = self.changes.after(owner_id, floor, _TRIM_BATCH)
            for document in batch:
                if document["seq"] >= last or document["at_ms"] >= cutoff_ms:
                    return floor
                if document["state"] == PENDING and (
                        dry_run or self._give_up_if_stale(document) is None):
                    return floor
                floor = document["seq"]
            if len(batch) < _TRIM_BATCH:
                return floor

    def _now_ms(self) -> int:
        return now_ms(self.clock)


def _entry(document: dict) -> dict:
    entry = {"file_id": document["file_id"], "op": document["op"],
             "at": from_ms(document["at_ms"])}
    entry.update({name: document.get(name) for name in DETAIL_FIELDS})
    return entry

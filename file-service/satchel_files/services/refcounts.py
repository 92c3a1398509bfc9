"""Reference counting for blobs and file objects without multi-document transactions.

Neither nx-27017 nor a standalone mongod offers transactions, so every step below is a single
document write, and the steps are ordered so that a crash or a race at any point can only leave a
count too HIGH (a leak that `fsck --repair` and `gc` clean up), never too low (data loss).

Documents
    blobs          {_id: chunk sha256, ref_count, rev, state: present|deleting, zero_since_ms, ...}
                   ref_count = chunk references from file objects (with multiplicity), from the
                   verified chunks of chunked uploads in progress (user_files with status
                   uploading/failed, see uploads.py) plus those held by in-flight requests.
    file_objects   {_id, hash (unique), chunks, ref_count, rev, state: live|deleting, ...}
                   ref_count = user files pointing at it plus in-flight requests' references.
    ref_intents    {_id, blob_refs: [...], file_object_refs: [...], heartbeat_ms}
                   one per request that changes references: every reference it may hold (or is
                   about to give up) that no file object / user file shows. A ref is written here
                   BEFORE it is counted and the intent is deleted only AFTER the ref is either
                   owned by a document or uncounted, so fsck, which counts intents, never sees
                   fewer holders than counts it must keep.
    `rev` grows with every ref_count change; fsck repairs a count only if `rev` did not move while
    it was counting (see services/maintenance.py).

Acquire a blob (per chunk, during an upload)
    1. intent.blob_refs += h (heartbeat)
    2. update_one({_id: h, state: present}, {$inc: {ref_count: 1, rev: 1}, $set: {zero_since_ms:
       None}}); nothing matched -> insert it with ref_count 1 (new bytes: done in 2 writes);
       DuplicateKeyError -> read it: a "deleting" doc: back off and retry (or, if its deleter
       went quiet for longer than the lease, finish that deletion ourselves); otherwise it
       appeared meanwhile: retry from 2.
    3. store.put(h, data): idempotent; we hold a ref, so GC cannot delete the bytes after this.
    Several refs may be listed in one write (the intent's insert, or one $push $each) before
    each is counted; a ref listed but never counted only makes fsck count too high.

Acquire a file object for whole-file hash H (after all its chunks are stored)
    1. found live -> intent.file_object_refs += id; $inc ref_count (state live) -> matched: release
       this upload's chunk refs (the file object holds its own) and use it.
    2. found deleting -> back off and retry (finish it if its lease expired).
    3. none -> intent.file_object_refs += new id; insert {ref_count: 1, chunks} (the upload's chunk
       refs move into it); DuplicateKeyError -> retry from 1.
    Then the caller inserts the user_file and deletes the intent.

Release a user file (delete, or content replaced)
    intent.file_object_refs += fo; delete/replace the user_file FIRST; then decrement the file
    object (state live); at 0: mark it deleting (only if still 0 and live) and, only if that
    matched, decrement each chunk blob (one reaching 0 gets zero_since_ms = now by a follow-up
    conditional update), then delete the file object document; then delete the intent.

GC of a blob (maintenance.collect_garbage)
    update_one({_id: h, ref_count: 0, state: present, zero_since_ms <= now - grace}, {$set: {state:
    deleting, deleting_since_ms: now}}) -> only if matched: store.delete(h), then delete the doc
    (conditional on the same deleting_since_ms). An acquirer that finds the doc "deleting" waits
    for it to disappear, so its insert + put always come after the bytes were removed.

Crashes
    - between any two steps of an acquire or release: counts stay too high; the intent remains.
    - a request whose database call fails gives nothing back (open_intent): the write may have
      happened all the same (its reply lost), or an earlier one did, and a document it wrote
      would then own the references. Counts stay too high; the intent remains.
    In both, gc deletes intents whose heartbeat is older than the grace period WITHOUT
    compensating (it cannot know which steps ran); fsck then recomputes the counts from the
    documents.
    - a "deleting" document whose deleter died (deleting_since_ms older than the lease) is finished
      by gc, fsck --repair or the next acquirer: a blob by deleting its bytes then its doc; a file
      object by deleting its doc only, leaving its chunk counts high for fsck to correct.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field

from pymongo.errors import DuplicateKeyError, PyMongoError

from ..repositories import BlobRepository, FileObjectRepository, IntentRepository
from ..repositories.blobs import DELETING as BLOB_DELETING
from ..repositories.file_objects import LIVE
from ..storage import BlobStore
from .clock import Clock, now_ms, utc_datetime

log = logging.getLogger(__name__)


class ReferencesBusy(Exception):
    """A blob or file object stayed in "deleting" for the whole retry budget."""


class IntentLost(Exception):
    """The request's intent was reaped (the request stalled past the grace period)."""


@dataclass
class Intent:
    """One request's in-flight references; `held_*` are those it must give back on failure.
    `is_settled` once it was ended or aborted."""

    id: str
    held_blob_refs: list[str] = field(default_factory=list)
    held_file_object_refs: list[str] = field(default_factory=list)
    is_settled: bool = False


class RefCounts:
    def __init__(
        self,
        blobs: BlobRepository,
        file_objects: FileObjectRepository,
        intents: IntentRepository,
        store: BlobStore,
        *,
        lease_seconds: int,
        clock: Clock = time.time,
        sleep: Callable[[float], None] = time.sleep,
        busy_retries: int = 40,
        backoff_seconds: float = 0.05,
    ):
        self.blobs = blobs
        self.file_objects = file_objects
        self.intents = intents
        self.store = store
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.sleep = sleep
        self.busy_retries = busy_retries
        self.backoff_seconds = backoff_seconds

    def _now_ms(self) -> int:
        return now_ms(self.clock)

    def _lease_expired(self, since_ms: int | None) -> bool:
        return since_ms is None or since_ms <= self._now_ms() - self.lease_seconds * 1000

    def _back_off(self, attempt: int) -> None:
        self.sleep(min(self.backoff_seconds * (attempt + 1), 0.5))

    # intents

    def begin(self, blob_refs: list[str] | None = None) -> Intent:
        """A new intent; `blob_refs` listed in it from the start (before they are counted)."""
        intent = Intent(uuid.uuid4().hex)
        self.intents.insert(intent.id, self._now_ms(), utc_datetime(self.clock),
                            blob_refs=blob_refs)
        return intent

    def open_intent(self) -> AbstractContextManager[Intent]:
        """begin() an intent for the `with` block and settle it when the block is done.

        The block raises: abort(); but a database error gives nothing back, as a write of the
        block may have happened (the intent stays, counts too high, for gc and fsck). The block
        ends: end(), its references being owned by documents now; if end() itself fails,
        nothing is given back either. A block that finds its work not needed aborts the intent
        itself (abort()) and is then left alone."""
        return self._settled(self.begin())

    @contextmanager
    def open_intent_with_stored_blobs(self, chunks: list[tuple[str, int]]) -> Iterator[Intent]:
        """open_intent() then acquire_stored_blobs(chunks), one write fewer: the intent is
        inserted already listing the references (listed before they are counted, as ever)."""
        with self._settled(self.begin([blob_hash for blob_hash, _ in chunks])) as intent:
            self._count_listed_blobs(intent, chunks)
            yield intent

    @contextmanager
    def _settled(self, intent: Intent) -> Iterator[Intent]:
        try:
            yield intent
        except PyMongoError:
            raise  # a document written may own the references: see open_intent
        except BaseException:
            self.abort(intent)
            raise
        self.end(intent)

    def end(self, intent: Intent) -> None:
        """The request's references are all owned by documents now (or given back). Once an
        intent is settled (ended or aborted), settling it again does nothing."""
        if intent.is_settled:
            return
        intent.is_settled = True
        self.intents.delete(intent.id)
        intent.held_blob_refs.clear()
        intent.held_file_object_refs.clear()

    def abort(self, intent: Intent) -> None:
        """Give back every reference the failed request still holds, then drop the intent.

        Best effort: if the database fails half-way, the counts stay high and fsck repairs them.
        """
        if intent.is_settled:
            return
        intent.is_settled = True
        try:
            while intent.held_file_object_refs:
                self.release_file_object(intent.held_file_object_refs.pop())
            while intent.held_blob_refs:
                self.release_blob(intent.held_blob_refs.pop())
            self.intents.delete(intent.id)
        except PyMongoError:
            log.exception("could not release the references of a failed request",
                          extra={"intent_id": intent.id})

    # blobs

    def acquire_blob(self, intent: Intent, blob_hash: str, data: bytes) -> None:
        """Take one reference to the chunk `blob_hash` and make sure its bytes are stored.

        `blob_hash` must have been computed here, from `data`, by the server (never a
        client's claim): the store is told the bytes are verified and does not hash again."""
        self.acquire_stored_blob(intent, blob_hash, len(data))  # counted BEFORE the bytes land
        self.store.put(blob_hash, data, verified=True)

    def acquire_stored_blob(self, intent: Intent, blob_hash: str, size_bytes: int) -> None:
        """Take one reference to the chunk `blob_hash` without writing bytes: they are stored
        already, or the caller stores them next (a verified staging upload promoted AFTER this,
        so GC cannot remove them in between). Chunked uploads use it."""
        self.acquire_stored_blobs(intent, [(blob_hash, size_bytes)])

    def acquire_stored_blobs(self, intent: Intent, chunks: list[tuple[str, int]]) -> None:
        """acquire_stored_blob for every (hash, size_bytes), all listed in one write."""
        if not self.intents.add_blob_refs(intent.id, [h for h, _ in chunks], self._now_ms()):
            raise IntentLost(intent.id)
        self._count_listed_blobs(intent, chunks)

    def _count_listed_blobs(self, intent: Intent, chunks: list[tuple[str, int]]) -> None:
        for blob_hash, size_bytes in chunks:
            self._increment_blob(blob_hash, size_bytes)
            intent.held_blob_refs.append(blob_hash)

    def release_held_blob(self, intent: Intent, blob_hash: str) -> None:
        """Give back one reference this request took (the intent still lists it: harmless)."""
        intent.held_blob_refs.remove(blob_hash)
        self.release_blob(blob_hash)

    def hand_over_blob_refs(self, intent: Intent, blob_hashes: list[str]) -> None:
        """A document written now holds these references this request took: an abort must
        not give them back."""
        for blob_hash in blob_hashes:
            intent.held_blob_refs.remove(blob_hash)

    def _increment_blob(self, blob_hash: str, size_bytes: int) -> None:
        for attempt in range(self.busy_retries):
            if self.blobs.increment_present(blob_hash):
                return
            try:  # no present blob: usually none at all (new bytes), so insert without looking
                self.blobs.insert_referenced(blob_hash, size_bytes, utc_datetime(self.clock))
                return
            except DuplicateKeyError:
                pass
            doc = self.blobs.find(blob_hash)
            if doc is not None and doc.get("state") == BLOB_DELETING:
                since = doc.get("deleting_since_ms")
                if self._lease_expired(since):
                    self.finish_blob_deletion(blob_hash, since)
                else:
                    self._back_off(attempt)
        raise ReferencesBusy(f"blob {blob_hash} is being deleted")

    def release_blob(self, blob_hash: str) -> None:
        doc = self.blobs.decrement(blob_hash)
        if doc is None:
            log.warning("released a blob that has no document", extra={"blob": blob_hash})
        elif doc["ref_count"] <= 0:
            if doc["ref_count"] < 0:
                log.error("blob ref_count went negative", extra={"blob": blob_hash})
            self.blobs.mark_zero_since(blob_hash, self._now_ms())

    def release_blobs(self, blob_hashes: list[str]) -> None:
        """release_blob() for each of `blob_hashes` (with multiplicity), in a write per
        repeat of a hash rather than one per hash; a count that reached 0 is stamped after."""
        counts = Counter(blob_hashes)
        for repeat in range(1, max(counts.values(), default=0) + 1):
            hashes = [blob_hash for blob_hash, count in counts.items() if count >= repeat]
            if self.blobs.decrement_many(hashes) != len(hashes):
                log.warning("released blobs that have no document", extra={"blobs": hashes})
        if counts:
            self.blobs.mark_zero_since_many(list(counts), self._now_ms())

    def finish_blob_deletion(self, blob_hash: str, seen_since_ms: int | None) -> bool:
        """Take over a deletion whose deleter went quiet; True if we finished it."""
        claimed_at = self._now_ms()
        if not self.blobs.take_over_deleting(blob_hash, seen_since_ms, claimed_at):
            return False
        self.store.delete(blob_hash)
        self.blobs.delete_deleting(blob_hash, claimed_at)
        return True

    # file objects

    def acquire_file_object(self, intent: Intent, new_object: dict,
                            chunk_refs: Iterable[str]) -> dict:
        """Take a reference to the file object with `new_object["hash"]`, creating it from
        `new_object` (whose chunk refs this request holds, `chunk_refs`) if there is none.

        Returns the file object document, as it is after our increment.
        """
        chunk_refs = list(chunk_refs)
        file_hash = new_object["hash"]
        for attempt in range(self.busy_retries):
            existing = self.file_objects.find_by_hash(file_hash)
            if existing is not None and existing.get("state") == LIVE:
                self._note_file_object_ref(intent, existing["_id"])
                if self.file_objects.increment_live(existing["_id"]):
                    intent.held_file_object_refs.append(existing["_id"])
                    self._give_back_blob_refs(intent, chunk_refs)
                    return {**existing, "ref_count": existing["ref_count"] + 1}
                continue
            if existing is not None:  # deleting
                if self._lease_expired(existing.get("deleting_since_ms")):
                    # Its chunk counts stay high (we cannot tell which were decremented): a leak.
                    self.file_objects.delete_deleting(existing["_id"])
                else:
                    self._back_off(attempt)
                continue
            document = {**new_object, "_id": str(uuid.uuid4()), "ref_count": 1, "rev": 1,
                        "state": LIVE, "deleting_since_ms": None,
                        "created_at": utc_datetime(self.clock)}
            self._note_file_object_ref(intent, document["_id"])
            try:
                self.file_objects.insert(document)
            except DuplicateKeyError:
                continue
            intent.held_file_object_refs.append(document["_id"])
            for blob_hash in chunk_refs:  # now owned by the file object
                intent.held_blob_refs.remove(blob_hash)
            self._note_in_blobs(document)
            return document
        raise ReferencesBusy(f"file object {file_hash} is being deleted")

    def _note_in_blobs(self, file_object: dict) -> None:
        """List a new file object in its chunks' blob documents (repositories/blobs.py): only a
        hint for chunked registrations, so a failure costs a chunk sent again, not the upload."""
        try:
            self.blobs.note_file_object(file_object["chunks"], file_object["_id"])
        except PyMongoError:
            log.warning("could not note file object %s in its chunks' blob documents",
                        file_object["_id"], exc_info=True)

    def reuse_file_object(self, intent: Intent, file_object_id: str) -> bool:
        """Take a reference to an existing file object if it is still live (False if not: it
        is being deleted). Needs no chunk references: the file object holds its own."""
        self._note_file_object_ref(intent, file_object_id)
        if not self.file_objects.increment_live(file_object_id):
            return False
        intent.held_file_object_refs.append(file_object_id)
        return True

    def _note_file_object_ref(self, intent: Intent, file_object_id: str) -> None:
        if not self.intents.add_file_object_ref(intent.id, file_object_id, self._now_ms()):
            raise IntentLost(intent.id)

    def _give_back_blob_refs(self, intent: Intent, chunk_refs: list[str]) -> None:
        for blob_hash in chunk_refs:
            self.release_blob(blob_hash)
            intent.held_blob_refs.remove(blob_hash)

    def note_release(self, intent: Intent, file_object_id: str) -> None:
        """Before a user file stops pointing at `file_object_id`: keep fsck counting that ref."""
        self._note_file_object_ref(intent, file_object_id)

    def note_blob_releases(self, intent: Intent, blob_hashes: list[str]) -> None:
        """Before a document stops holding references to `blob_hashes` (an upload's verified
        chunks, given back by release_blobs after): keep fsck counting them until then. They
        are not this request's to give back on abort: the document may still hold them."""
        if blob_hashes and not self.intents.add_blob_refs(intent.id, blob_hashes,
                                                          self._now_ms()):
            raise IntentLost(intent.id)

    def hand_over_file_object_refs(self, intent: Intent) -> None:
        """The user files now hold the references this request took."""
        intent.held_file_object_refs.clear()

    def release_file_object(self, file_object_id: str) -> None:
        doc = self.file_objects.decrement_live(file_object_id)
        if doc is None:
            log.warning("released a file object that is not live",
                        extra={"file_object_id": file_object_id})
            return
        if doc["ref_count"] > 0:
            return
        if not self.file_objects.mark_deleting(file_object_id, self._now_ms()):
            return  # someone took a new reference in between
        for blob_hash in doc["chunks"]:
            self.release_blob(blob_hash)
        self.file_objects.delete_deleting(file_object_id)

    def release_unreferenced_file_object(self, file_object_id: str) -> bool:
        """fsck found (and set) a live file object with no references: release its chunks.
        False if someone took a reference (or deleted it) meanwhile: nothing to do."""
        doc = self.file_objects.find(file_object_id)
        if doc is None or doc["ref_count"] > 0:
            return False
        if not self.file_objects.mark_deleting(file_object_id, self._now_ms()):
            return False
        for blob_hash in doc["chunks"]:
            self.release_blob(blob_hash)
        self.file_objects.delete_deleting(file_object_id)
        return True

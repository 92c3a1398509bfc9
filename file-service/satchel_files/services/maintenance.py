"""fsck (recount every reference, report and optionally repair) and gc (remove what nothing uses).

fsck counts holders in this order, per kind of count:
    file objects:  snapshot {id: (ref_count, rev)}  ->  live intents  ->  user files
    blobs:         snapshot {hash: (ref_count, rev)} ->  live intents  ->  file objects
A reference moves from an intent to a document by writing the document first and dropping the
intent after, so scanning intents before documents sees every moving reference at least once.
Holders are of two kinds. Documents hold references for sure (user files, live file objects,
uploads' verified chunks); requests may hold them (live intents list a reference before counting
it and until after giving it back, and a file object being deleted gives its chunks back one by
one). So a count is right anywhere from what documents hold to that plus what requests may hold:
only below the first is it too low (and a missing blob or document a real loss), only above the
sum too high. A repair sets the sum, the safe side.
A repair is a conditional write on the snapshot's `rev`: if any acquire or release touched the
count while fsck was counting, that count is left alone (reported as "changed_during_check").
So `fsck --repair` is safe on a live system; what it cannot see as in flight are intents whose
heartbeat is older than the grace period, which it treats (like gc) as left by a dead process.

The list (`file_listing`, repositories/listing.py): an entry is written before its file becomes
available and deleted after the file is deleted, so the only damage a crash leaves is a stale
entry. fsck scans available user files FIRST and the listing after, so a file listed by a write
that finished before the scan is seen with its entry; every candidate is read again before it is
reported. It reports available files without an entry ("unlisted_file"; `--repair` inserts the
entry: this is also how a database from before the listing existed gets one, so no start-up
migration is needed) and entries whose file is missing, not available, or at another position
("stale_listing_entry", only once older than the grace period, as a newer one may be a write in
flight; `--repair` deletes them, as gc does).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pymongo.errors import DuplicateKeyError

from ..repositories import BlobRepository, FileObjectRepository, IntentRepository, UserFileRepository
from ..repositories.blobs import DELETING as BLOB_DELETING
from ..repositories.file_objects import DELETING as FO_DELETING
from ..repositories.listing import FileListingRepository, listing_document_for, listing_key
from ..repositories.user_files import AVAILABLE
from ..repositories.usage import UsageRepository
from ..storage import BlobStore
from .clock import Clock, from_ms, now_ms, to_ms, utc_datetime
from .changes import ChangeFeed
from .refcounts import RefCounts

if TYPE_CHECKING:
    from .uploads import UploadService

log = logging.getLogger(__name__)

_LISTING_BATCH = 500


@dataclass
class Problem:
    kind: str
    id: str
    detail: str
    fixed: bool = False


@dataclass
class FsckReport:
    problems: list[Problem] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def is_clean(self) -> bool:
        return all(problem.fixed for problem in self.problems)

    def add(self, kind: str, id: str, detail: str, fixed: bool = False) -> Problem:
        problem = Problem(kind, id, detail, fixed)
        self.problems.append(problem)
        return problem

    def as_dict(self) -> dict:
        return {"clean": self.is_clean, "checked": self.checked,
                "problems": [asdict(problem) for problem in self.problems]}


@dataclass
class GcReport:
    dry_run: bool
    removed: dict[str, int] = field(default_factory=Counter)
    removed_bytes: int = 0

    def as_dict(self) -> dict:
        return {"dry_run": self.dry_run, "removed": dict(self.removed),
                "removed_bytes": self.removed_bytes}


class Maintenance:
    def __init__(self, blobs: BlobRepository, file_objects: FileObjectRepository,
                 intents: IntentRepository, user_files: UserFileRepository, store: BlobStore,
                 refcounts: RefCounts, *, grace_seconds: int, changes: ChangeFeed,
                 uploads: "UploadService", listing: FileListingRepository,
                 usage: UsageRepository, clock: Clock = time.time):
        self.blobs = blobs
        self.file_objects = file_objects
        self.intents = intents
        self.user_files = user_files
        self.store = store
        self.refcounts = refcounts
        self.grace_seconds = grace_seconds
        self.changes = changes
        self.uploads = uploads  # chunked uploads in progress hold blob refs too
        self.listing = listing
        self.usage = usage  # quota counts (services/quota.py)
        self.clock = clock

    def _cutoff_ms(self, grace_seconds: int | None = None) -> int:
        return now_ms(self.clock) - 1000 * (self.grace_seconds if grace_seconds is None
                                            else grace_seconds)

    # fsck

    def fsck(self, *, repair: bool = False) -> FsckReport:
        report = FsckReport()
        cutoff_ms = self._cutoff_ms()
        self._check_stuck_and_stale(report, cutoff_ms, repair)
        self._check_file_object_counts(report, cutoff_ms, repair)
        self._check_blob_counts(report, cutoff_ms, repair)
        self._check_listing(report, cutoff_ms, repair)
        self._check_usage(report, cutoff_ms, repair)
        return report

    def end_all_intents(self) -> int:
        """After a restore, before any file service runs: every intent is a request that was
        in flight at the snapshot, and none is now. Deleting them all is what gc does to
        stale ones, without waiting for the grace period; fsck --repair then recounts. Never
        while a file service runs: a live request's intent keeps its bytes from gc."""
        ended = 0
        for intent in list(self.intents.all()):
            self.intents.delete(intent["_id"])
            ended += 1
        return ended

    def _is_referenced_now(self, file_object_id: str) -> bool:
        """A file object fsck saw at 0 that a request took meanwhile: no longer a problem."""
        doc = self.file_objects.find(file_object_id)
        return doc is not None and doc["ref_count"] > 0

    def _check_usage(self, report: FsckReport, cutoff_ms: int, repair: bool) -> None:
        """Each owner's quota count against what their files take (services/quota.py). A count
        too high that changed within the grace period is work in flight (a request between its
        reservation and its write), not a problem; one too low always is. A count that
        changed while this summed is not judged (an upload that reserved and wrote meanwhile
        would look like a count too low): the next fsck looks again. A repair sets the count
        only if it did not change while this summed."""
        counts = {doc["_id"]: doc for doc in self.usage.all()}  # first: their revs
        totals = self.user_files.total_size_by_owner()
        report.checked["usage_counts"] = len(counts)
        for owner_id, count in sorted(counts.items()):
            total = totals.get(owner_id, 0)
            if count["bytes"] == total or (count["bytes"] > total
                                           and count["updated_ms"] > cutoff_ms):
                continue
            now = self.usage.find(owner_id)
            if now is None or now["rev"] != count["rev"]:
                report.checked["usage_counts_changing"] = \
                    report.checked.get("usage_counts_changing", 0) + 1
                continue
            problem = report.add("usage_count", owner_id,
                                 f"counted {count['bytes']} bytes; the files take {total}")
            if repair and self.usage.set_if_rev(owner_id, count["rev"], total,
                                                now_ms(self.clock)):
                problem.fixed = True

    def _check_listing(self, report: FsckReport, cutoff_ms: int, repair: bool) -> None:
        files = {doc["_id"]: doc for doc in self.user_files.available_positions()}  # first
        entries = list(self.listing.all())
        listed = {entry["_id"] for entry in entries}
        report.checked["listing_entries"] = len(entries)
        for user_file_id in sorted(files):
            doc = files[user_file_id]
            if listing_key(doc["owner_id"], doc["created_ms"], user_file_id) in listed:
                continue
            current = self.user_files.find(user_file_id)  # deleted since the scan?
            if current is None or current.get("status") != AVAILABLE:
                continue
            entry = listing_document_for(current)
            if self.listing.find(entry["_id"]) is not None:
                continue
            problem = report.add("unlisted_file", user_file_id,
                                 "an available file missing from the list (file_listing)")
            if repair:
                self.listing.insert(entry)
                problem.fixed = True
        for entry in self._stale_listing_entries(entries, cutoff_ms):
            problem = report.add("stale_listing_entry", entry["_id"],
                                 f"lists {entry['user_file_id']}, which is not an available "
                                 f"file at that position")
            if repair:
                self.listing.delete_if_same(entry)
                problem.fixed = True

    def _stale_listing_entries(self, entries: Iterable[dict], cutoff_ms: int) -> Iterator[dict]:
        """Those of `entries` older than `cutoff_ms` (younger ones may be a write in flight,
        their file about to become available) whose file is missing, not available, or
        elsewhere, as the user files read now say (in batches)."""
        batch: list[dict] = []

        def stale_in(entries: list[dict]) -> list[dict]:
            found = self.user_files.find_many([entry["user_file_id"] for entry in entries])
            return [entry for entry in entries
                    if not _lists(found.get(entry["user_file_id"]), entry)]

        for entry in entries:
            if entry["created_ms"] <= cutoff_ms:
                batch.append(entry)
                if len(batch) >= _LISTING_BATCH:
                    yield from stale_in(batch)
                    batch = []
        if batch:
            yield from stale_in(batch)

    def _collect_stale_listing(self, cutoff_ms: int, dry_run: bool) -> int:
        return sum(1 for entry in self._stale_listing_entries(list(self.listing.all()), cutoff_ms)
                   if dry_run or self.listing.delete_if_same(entry))

    def _live_intents(self, cutoff_ms: int) -> dict[str, dict]:
        return {intent["_id"]: intent for intent in self.intents.all()
                if intent["heartbeat_ms"] > cutoff_ms}

    def _live_intents_around(self, before: dict[str, dict], cutoff_ms: int) -> list[dict]:
        """The live intents read before a scan of documents, merged with those read after it.
        Both reads are needed: a request lists a reference in its intent BEFORE its document
        stops holding it, which may fall between the first read and the scan (then only the
        second read sees it); a request that finished meanwhile is only in the first."""
        return list({**before, **self._live_intents(cutoff_ms)}.values())

    def _check_stuck_and_stale(self, report: FsckReport, cutoff_ms: int, repair: bool) -> None:
        for intent in list(self.intents.stale(cutoff_ms)):
            fixed = repair and self.intents.delete_if_stale(intent["_id"], cutoff_ms)
            report.add("stale_intent", intent["_id"],
                       f"a request that died holding {len(intent['blob_refs'])} blob and "
                       f"{len(intent['file_object_refs'])} file object references", fixed)
        for doc in list(self.file_objects.stuck_deleting(cutoff_ms)):
            if repair:  # its chunk counts stay high; the blob pass below corrects them
                self.file_objects.delete_deleting(doc["_id"])
            report.add("stuck_deleting_file_object", doc["_id"],
                       "release stopped half-way", repair)
        for doc in list(self.blobs.stuck_deleting(cutoff_ms)):
            fixed = repair and self.refcounts.finish_blob_deletion(
                doc["_id"], doc.get("deleting_since_ms"))
            report.add("stuck_deleting_blob", doc["_id"], "deletion stopped half-way", fixed)

    def _check_file_object_counts(self, report: FsckReport, cutoff_ms: int, repair: bool) -> None:
        snapshot = {doc["_id"]: doc for doc in self.file_objects.all()}
        intents = self._live_intents(cutoff_ms)
        referenced_by_files: Counter[str] = Counter(
            doc["file_object_id"] for doc in self.user_files.all()
            if doc.get("file_object_id") is not None)  # uploads in progress have none
        expected: Counter[str] = Counter()
        for intent in self._live_intents_around(intents, cutoff_ms):
            expected.update(set(intent["file_object_refs"]))
        expected.update(referenced_by_files)
        report.checked["file_objects"] = len(snapshot)
        report.checked["user_files"] = sum(referenced_by_files.values())
        for file_object_id in sorted(set(snapshot) | set(expected)):
            doc = snapshot.get(file_object_id)
            want = expected[file_object_id]
            if doc is None:
                if referenced_by_files[file_object_id]:
                    report.add("missing_file_object", file_object_id,
                               f"{referenced_by_files[file_object_id]} user files point at it")
                continue
            if doc["state"] == FO_DELETING:
                if referenced_by_files[file_object_id]:
                    report.add("referenced_file_object_deleting", file_object_id,
                               "user files point at a file object being deleted")
                continue
            if doc["ref_count"] == want == 0:  # a release died before marking it deleting
                problem = report.add("unreferenced_file_object", file_object_id,
                                     "ref_count 0 but live, so nothing would ever release it")
                if repair:
                    problem.fixed = self.refcounts.release_unreferenced_file_object(
                        file_object_id) or self._is_referenced_now(file_object_id)
                continue
            if referenced_by_files[file_object_id] <= doc["ref_count"] <= want:
                continue
            problem = report.add("file_object_ref_count", file_object_id, _count_detail(
                doc["ref_count"], referenced_by_files[file_object_id], want))
            if repair:
                problem.fixed = self.file_objects.set_count_if_unchanged(
                    file_object_id, doc["rev"], want)
                if not problem.fixed:
                    problem.detail += "; changed during check, not repaired"
                elif want == 0:
                    self.refcounts.release_unreferenced_file_object(file_object_id)

    def _check_blob_counts(self, report: FsckReport, cutoff_ms: int, repair: bool) -> None:
        snapshot = {doc["_id"]: doc for doc in self.blobs.all()}
        intents = self._live_intents(cutoff_ms)
        in_flight: Counter[str] = Counter()  # what requests may hold
        held: Counter[str] = Counter()  # what documents hold
        # after intents, before file objects: references move that way
        held_by_uploads = self.uploads.held_blob_refs()
        held.update(held_by_uploads)
        report.checked["upload_chunk_refs"] = sum(held_by_uploads.values())
        chunk_users: dict[str, list[str]] = {}
        for file_object in self.file_objects.all():
            is_live = file_object["state"] != FO_DELETING
            (held if is_live else in_flight).update(file_object["chunks"])
            for chunk in set(file_object["chunks"]):
                chunk_users.setdefault(chunk, []).append(file_object["_id"])
        for intent in self._live_intents_around(intents, cutoff_ms):
            in_flight.update(intent["blob_refs"])
        expected = held + in_flight
        stored = {info.hash: info for info in self.store.iter_blobs()}
        report.checked["blobs"] = len(snapshot)
        report.checked["stored_blobs"] = len(stored)
        now = now_ms(self.clock)
        for blob_hash in sorted(set(snapshot) | set(expected)):
            doc = snapshot.get(blob_hash)
            want = expected[blob_hash]
            if held[blob_hash] and blob_hash not in stored \
                    and (doc is None or doc["state"] != BLOB_DELETING):
                for file_object_id in chunk_users.get(blob_hash, []):
                    report.add("file_object_missing_blob", file_object_id,
                               f"chunk {blob_hash} is not in the blob store")
                report.add("missing_blob", blob_hash, "referenced but not in the blob store")
            if doc is None:
                if held[blob_hash]:
                    problem = report.add("missing_blob_document", blob_hash,
                                         f"{want} references but no document")
                    if repair and blob_hash in stored:
                        problem.fixed = self._recreate_blob_doc(blob_hash, stored[blob_hash], want)
                continue
            if doc["state"] == BLOB_DELETING:
                if held[blob_hash]:
                    report.add("referenced_blob_deleting", blob_hash,
                               f"{want} references to a blob being deleted")
                continue
            if not held[blob_hash] <= doc["ref_count"] <= want:
                problem = report.add("blob_ref_count", blob_hash,
                                     _count_detail(doc["ref_count"], held[blob_hash], want))
                if repair:
                    problem.fixed = self.blobs.set_count_if_unchanged(blob_hash, doc["rev"], want, now)
                    if not problem.fixed:
                        problem.detail += "; changed during check, not repaired"
            elif want == 0 and doc.get("zero_since_ms") is None:
                problem = report.add("unreferenced_blob_without_timestamp", blob_hash,
                                     "ref_count 0 but no zero_since_ms, so gc would never see it")
                if repair:
                    self.blobs.mark_zero_since(blob_hash, now)
                    problem.fixed = True
        for blob_hash, info in stored.items():
            if blob_hash not in snapshot and not expected[blob_hash] \
                    and to_ms(info.modified_at) <= cutoff_ms:
                problem = report.add("orphan_blob", blob_hash,
                                     f"{info.size_bytes} stored bytes with no document")
                if repair:
                    problem.fixed = self._delete_orphan(blob_hash, info.size_bytes)

    def _recreate_blob_doc(self, blob_hash: str, info, ref_count: int) -> bool:
        try:
            self.blobs.insert_referenced(blob_hash, info.size_bytes, utc_datetime(self.clock),
                                         ref_count=ref_count)
        except DuplicateKeyError:
            return False
        return True

    def _delete_orphan(self, blob_hash: str, size_bytes: int) -> bool:
        """Claim the hash with a "deleting" document first, so no upload can reuse the bytes."""
        claimed_at = now_ms(self.clock)
        try:
            self.blobs.insert_deleting(blob_hash, size_bytes, claimed_at, utc_datetime(self.clock))
        except DuplicateKeyError:
            return False
        self.store.delete(blob_hash)
        self.blobs.delete_deleting(blob_hash, claimed_at)
        return True

    # gc

    def gc(self, *, grace_seconds: int | None = None, dry_run: bool = False) -> GcReport:
        """`grace_seconds` applies to unreferenced blobs; requests, writes and deletions that may
        be in flight (intents, temp files, staging, "deleting" docs) always get at least the
        configured grace (their lease) before being called dead."""
        report = GcReport(dry_run)
        cutoff_ms = self._cutoff_ms(grace_seconds)
        lease_cutoff_ms = self._cutoff_ms()
        now = now_ms(self.clock)
        if not dry_run:
            report.removed["zero_counts_stamped"] = self.blobs.stamp_unstamped_zeros(now)
        for intent in list(self.intents.stale(lease_cutoff_ms)):
            if dry_run or self.intents.delete_if_stale(intent["_id"], lease_cutoff_ms):
                report.removed["stale_intents"] += 1
        live_upload_keys: set[str] = set()
        # before blobs: expiring releases refs, and leaves the staging bytes to collect
        report.removed["expired_uploads"] = self.uploads.expire_abandoned(dry_run=dry_run)
        live_upload_keys = self.uploads.live_upload_keys()
        for doc in list(self.file_objects.stuck_deleting(lease_cutoff_ms)):
            if not dry_run:
                self.file_objects.delete_deleting(doc["_id"])
            report.removed["stuck_file_objects"] += 1
        for doc in list(self.blobs.stuck_deleting(lease_cutoff_ms)):
            if dry_run or self.refcounts.finish_blob_deletion(doc["_id"], doc.get("deleting_since_ms")):
                self._count_blob(report, "stuck_blobs", doc.get("size_bytes", 0))
        for doc in list(self.blobs.collectable(cutoff_ms)):
            if dry_run or self.collect_blob(doc["_id"], cutoff_ms):
                self._count_blob(report, "blobs", doc.get("size_bytes", 0))
        known = {doc["_id"] for doc in self.blobs.all()}
        for info in list(self.store.iter_blobs()):
            if info.hash not in known and to_ms(info.modified_at) <= cutoff_ms:
                if dry_run or self._delete_orphan(info.hash, info.size_bytes):
                    self._count_blob(report, "orphan_blobs", info.size_bytes)
        for staging in list(self.store.iter_staging()):  # may be uploads in flight: lease
            if staging.upload_key in live_upload_keys:
                continue  # an upload in progress owns it until it expires
            if to_ms(staging.modified_at) <= min(cutoff_ms, lease_cutoff_ms):
                if not dry_run:
                    self.store.delete_staging(staging.upload_key)
                self._count_blob(report, "staging_objects", staging.size_bytes)
        if not dry_run:
            count, size = self.store.remove_stale_temp(from_ms(min(cutoff_ms, lease_cutoff_ms)))
            report.removed["temp_files"] = count
            report.removed_bytes += size
        # an entry may precede its file by a write: the lease too
        report.removed["stale_listing_entries"] = self._collect_stale_listing(
            min(cutoff_ms, lease_cutoff_ms), dry_run)
        report.removed["changes"] = self.changes.trim(dry_run=dry_run)  # its own retention
        return report

    def collect_blob(self, blob_hash: str, cutoff_ms: int) -> bool:
        """Delete an unreferenced blob whose grace period is over; False if it was taken back."""
        marked_at = now_ms(self.clock)
        if not self.blobs.mark_deleting(blob_hash, cutoff_ms, marked_at):
            return False
        self.store.delete(blob_hash)
        self.blobs.delete_deleting(blob_hash, marked_at)
        return True

    @staticmethod
    def _count_blob(report: GcReport, kind: str, size_bytes: int) -> None:
        report.removed[kind] += 1
        report.removed_bytes += size_bytes


def _count_detail(ref_count: int, held: int, may_hold: int) -> str:
    """A count outside [held, may_hold]: what documents hold, plus what requests may hold."""
    if ref_count < held:
        return f"ref_count {ref_count}, references {held} (UNDER-counted)"
    return f"ref_count {ref_count}, references {may_hold} (over-counted)"


def _lists(user_file: dict | None, entry: dict) -> bool:
    """Whether `entry` is the listing entry of `user_file` as it is (available)."""
    return (user_file is not None and user_file.get("status") == AVAILABLE
            and user_file["owner_id"] == entry["owner_id"]
            and entry["_id"] == listing_key(user_file["owner_id"], user_file["created_ms"],
                                            user_file["_id"]))


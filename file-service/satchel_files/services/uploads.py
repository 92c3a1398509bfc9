"""Chunked uploads straight to blob storage (seed 000): register, PUT to pre-signed URLs, report.

    POST  /api/v1/files        register: declared size, hash and chunk list -> a URL per chunk
                               still needed (chunks this user already holds are skipped)
    PUT   <upload_url>         the client sends one chunk to S3 / the gateway (never through us)
    PATCH /api/v1/files/{id}   "chunks i, j... are uploaded" -> each verified (size, SHA-256,
                               promoted to its blob) or failed with a reason and a fresh URL,
                               checked 4 at a time and recorded 32 to a write; when all are
                               verified and the whole-file hash matches, the file is available
    GET   /api/v1/files/{id}   state, with fresh URLs for the chunks still needed (resume)
    DELETE                     abort: references released, staged bytes removed

References (see refcounts.py): a verified chunk entry of an upload holds one blob reference,
taken through an intent before its bytes are promoted from staging; the intent is dropped only
after the upload document shows the chunk verified (fsck scans intents, then uploads, then file
objects). On completion a live file object with this content is reused (it holds its own chunk
refs); otherwise one is acquired as the multipart path does (chunk refs through an intent, then
the file object by whole hash). The upload's own chunk refs are released only after the entry
became available, so counts are never too low.

The whole-file SHA-256 is computed as chunks are verified, not at the end (upload_digest.py):
completion reads back only the chunks the running digest has not reached.
"""
from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import timedelta

from pymongo.errors import PyMongoError
from satchel_shared.errors import ApiError

from .. import schemas
from ..repositories import (BlobRepository, FileObjectRepository, UserFileRepository,
                            as_utc)
from ..repositories.file_objects import LIVE
from ..repositories.uploads import (CHUNK_FAILED, FAILED, IN_PROGRESS, PENDING, UPLOADING,
                                    VERIFIED, UploadRepository)
from ..repositories.user_files import AVAILABLE
from ..storage import BlobStore
from ..storage.base import BlobHashMismatch, BlobNotFound, KeptBytes, StorageError
from . import mime
from .clock import Clock, from_ms, now_ms, to_ms, utc_datetime
from .files import FileService, available_user_file, chunk_sizes
from .quota import Quota
from .refcounts import Intent, RefCounts
from .upload_digest import DIGEST_FIELD, RunningDigest, feed_chunks, stored_digest

log = logging.getLogger(__name__)

_WRITE_RETRIES = 20
_LOOKUPS_ONE_BY_ONE = 16  # candidate file objects asked about one by one (_owned_file_objects)
_DIGEST_CATCH_UP_BYTES = 128 * 1024 * 1024  # chunks a PATCH may read back for the digest
# Chunks checked at once (_BatchCheck), by a PATCH and by all of a process's PATCHes together:
# on 2 cores 4 keep both busy (a 1 GiB PATCH of 128 chunks: 1.8-1.9 s one at a time, 1.1-1.5 s
# 4 at a time).
_VERIFIERS = 4
# Outcomes recorded per write: a PATCH of many chunks shows (and keeps) its progress every
# _CHUNKS_PER_WRITE chunks, not only at its end.
_CHUNKS_PER_WRITE = 32


@dataclass(frozen=True)
class UploadSettings:
    upload_url_ttl_seconds: int
    upload_ttl_seconds: int


def new_upload_key() -> str:
    """Random and unguessable, one per chunk per attempt: the staging object's name."""
    return secrets.token_urlsafe(24)


class UploadService:
    def __init__(self, uploads: UploadRepository, files: FileService, settings: UploadSettings,
                 *, blobs: BlobRepository, clock: Clock = time.time):
        self.uploads = uploads
        self.files = files
        self.blobs = blobs  # which file objects hold a chunk (repositories/blobs.py)
        self.settings = settings
        self.clock = clock
        # The threads that check staged chunks, for all PATCHes of this process together.
        self.verifiers = ThreadPoolExecutor(max_workers=_VERIFIERS,
                                            thread_name_prefix="chunk-verify")

    @property
    def refcounts(self) -> RefCounts:
        return self.files.refcounts

    @property
    def store(self) -> BlobStore:
        return self.files.store

    @property
    def quota(self) -> Quota:
        return self.files.quota

    @property
    def user_files(self) -> UserFileRepository:
        return self.files.user_files

    @property
    def file_objects(self) -> FileObjectRepository:
        return self.files.file_objects

    def _expires_ms(self) -> int:
        return now_ms(self.clock) + 1000 * self.settings.upload_ttl_seconds

    # register

    def register(self, owner_id: str, request: dict) -> dict:
        """POST /api/v1/files: a new upload (201), or at once an available file when this user
        already has a file with exactly this content."""
        chunk_size = self.files.settings.chunk_size_bytes
        size_bytes, file_hash, declared = request["size_bytes"], request["hash"], request["chunks"]
        # Refused before any work if it cannot fit as of now; `admitting` below decides.
        self.quota.meter(owner_id)(size_bytes)
        _check_chunking(size_bytes, chunk_size, declared)
        filename = schemas.clean_filename(request["filename"])
        declared_type = mime.normalize(request.get("mime_type"))
        chunk_hashes = [chunk["hash"] for chunk in declared]

        existing = self._own_file_object(owner_id, file_hash, size_bytes, chunk_hashes)
        if existing is not None:
            done = self._reuse_own_content(owner_id, existing, filename, declared_type)
            if done is not None:
                return done

        owned = self._owned_chunk_hashes(owner_id, set(chunk_hashes))
        with self.refcounts.open_intent() as intent:  # ended when the upload holds the refs
            chunks = []
            for chunk in declared:
                is_held = chunk["hash"] in owned and self._take_owned_chunk(intent, chunk)
                chunks.append({"index": chunk["index"], "hash": chunk["hash"],
                               "size_bytes": chunk["size_bytes"],
                               "status": VERIFIED if is_held else PENDING,
                               "upload_key": None if is_held else new_upload_key(),
                               "reason": None})
            now = utc_datetime(self.clock)
            document = {
                "_id": str(uuid.uuid4()), "owner_id": owner_id, "filename": filename,
                "file_object_id": None, "hash": file_hash, "size_bytes": size_bytes,
                "mime_type": declared_type, "status": UPLOADING, "version": 1,
                "created_at": now, "created_ms": to_ms(now), "updated_at": now,
                "chunk_size": chunk_size, "chunks": chunks, "upload_rev": 1,
                "upload_expires_ms": self._expires_ms(), "failure": None,
            }
            # Registrations by the same user can race: the check that counts reserves the
            # size in one atomic write before the upload is written (services/quota.py).
            with self.quota.admitting(owner_id, adding_bytes=size_bytes):
                self.uploads.insert(document)
        if all(chunk["status"] == VERIFIED for chunk in chunks):
            document = self._complete(document)
        return self._describe(document)

    def _own_file_object(self, owner_id: str, file_hash: str, size_bytes: int,
                         chunk_hashes: list[str]) -> dict | None:
        """A live file object with exactly this content that one of the owner's files uses and
        whose bytes are all stored (if some were lost, the ordinary path asks for them again)."""
        file_object = self.file_objects.find_by_hash(file_hash)
        if (file_object is None or file_object.get("state") != LIVE
                or file_object["chunks"] != chunk_hashes or file_object["size_bytes"] != size_bytes):
            return None
        if not self.user_files.owner_has_file_object(owner_id, file_object["_id"]):
            return None
        sizes = chunk_sizes(size_bytes, file_object["chunk_size"], len(chunk_hashes))
        if not self.files.chunks_stored(zip(chunk_hashes, sizes)):
            return None
        return file_object

    def _reuse_own_content(self, owner_id: str, file_object: dict, filename: str,
                           declared_type: str) -> dict | None:
        mime_type = mime.choose(self._head(file_object["chunks"]), declared=declared_type,
                                filename=filename)
        with self.refcounts.open_intent() as intent:
            if not self.refcounts.reuse_file_object(intent, file_object["_id"]):
                self.refcounts.abort(intent)
                return None  # being deleted right now: take the ordinary path
            document = available_user_file(str(uuid.uuid4()), owner_id, filename, file_object,
                                           mime_type, utc_datetime(self.clock))
            with self.quota.admitting(owner_id, adding_bytes=file_object["size_bytes"]):
                self.files.mark_available([document])
            self.refcounts.hand_over_file_object_refs(intent)
        return self.files.describe(document)

    def _owned_chunk_hashes(self, owner_id: str, wanted: set[str]) -> set[str]:
        """Which of `wanted` this user already holds as verified content: chunks of their
        available files and verified chunks of their own uploads. Nobody else's count."""
        owned: set[str] = set()
        for entry in self.uploads.in_progress_for_owner(owner_id):
            owned.update(c["hash"] for c in entry.get("chunks", ()) if c["status"] == VERIFIED)
        # From the chunks to the file objects made with them (noted in the chunks' blob
        # documents), then to whether this owner has one of those: reads by key, never a scan
        # of every file object (nx-27017).
        candidates = self.file_objects.live_chunks(self.blobs.file_objects_holding(wanted))
        for file_object_id in self._owned_file_objects(owner_id, set(candidates)):
            owned.update(candidates[file_object_id])
        return owned & wanted

    def _owned_file_objects(self, owner_id: str, file_object_ids: set[str]) -> set[str]:
        """Which of `file_object_ids` one of the owner's available files points at. A few (the
        usual case) are looked up one by one, an index read each; more, by one query over the
        owner's files. Intersected here too: which bytes a user may skip sending is not left
        to a database's reading of a filter."""
        if len(file_object_ids) <= _LOOKUPS_ONE_BY_ONE:
            return {file_object_id for file_object_id in file_object_ids
                    if self.user_files.owner_has_file_object(owner_id, file_object_id)}
        return self.user_files.file_object_ids_owned(owner_id, sorted(file_object_ids)) \
            & file_object_ids

    def _take_owned_chunk(self, intent, chunk: dict) -> bool:
        """A reference to a chunk the user holds; False (nothing held) if its bytes are gone."""
        self.refcounts.acquire_stored_blob(intent, chunk["hash"], chunk["size_bytes"])
        if self.files.chunks_stored([(chunk["hash"], chunk["size_bytes"])]):
            return True
        self.refcounts.release_held_blob(intent, chunk["hash"])
        return False

    # report

    def report_chunks(self, owner_id: str, user_file_id: str, reports: list[dict]) -> dict:
        """PATCH: verify every chunk reported uploaded; idempotent (verified stays verified)."""
        upload = self._load_owned(owner_id, user_file_id)
        if upload["status"] == AVAILABLE:
            return self.files.describe(upload)
        count = len(upload["chunks"])
        bad = sorted({report["index"] for report in reports if report["index"] >= count})
        if bad:
            raise ApiError(400, "invalid_chunk_index",
                           f"This upload has chunks 0..{count - 1}.", {"indexes": bad})
        reported = {report["index"] for report in reports}
        is_written = False
        if upload["status"] == UPLOADING:
            digest = RunningDigest.resume(upload, allowance_bytes=_DIGEST_CATCH_UP_BYTES)
            waiting = sorted(reported)
            for start in range(0, len(waiting), _CHUNKS_PER_WRITE):
                indexes = waiting[start:start + _CHUNKS_PER_WRITE]
                batch = [upload["chunks"][index] for index in indexes  # as written last:
                         if upload["chunks"][index]["status"] != VERIFIED]  # maybe meanwhile
                if batch:
                    upload, is_written = self._verify_chunks(upload, batch, digest), True
                if upload["status"] != UPLOADING:
                    break
        if upload["status"] == UPLOADING and all(c["status"] == VERIFIED for c in upload["chunks"]):
            upload = self._complete(upload)
        elif upload["status"] in IN_PROGRESS and not is_written:
            upload = self.uploads.touch(upload, self._expires_ms())
        return self._describe(upload, urls_for=reported)

    def _verify_chunks(self, upload: dict, chunks: list[dict],
                       digest: RunningDigest | None) -> dict:
        """Check the staged bytes of `chunks` (in index order) and record every outcome in one
        write; the upload as it is now. The whole-file `digest` advances over them on the way.

        One intent lists the references of all the chunks whose sizes are right, taken before
        their bytes are promoted; those the write shows verified then belong to the upload,
        the others (bad bytes, or a chunk a concurrent report settled first) are given back.
        If the batch fails half-way, the failures found so far are still recorded: their
        staged bytes are gone, and the client must learn why."""
        outcomes: dict[int, tuple[str, str, str | None]] = {}  # index -> (attempt key, status, reason)
        sized = []
        for chunk in chunks:
            key, staged = chunk["upload_key"], self.store.staging_size(chunk["upload_key"])
            if staged is None:
                outcomes[chunk["index"]] = (key, CHUNK_FAILED, "No bytes were received for "
                                            "this chunk; PUT them to upload_url.")
            elif staged != chunk["size_bytes"]:
                self.store.delete_staging(key)
                outcomes[chunk["index"]] = (key, CHUNK_FAILED, f"Received {staged} bytes; "
                                            f"this chunk has {chunk['size_bytes']}.")
            else:
                sized.append(chunk)
        if not sized:
            return self._record(upload, outcomes, None)[0]
        try:
            with self.refcounts.open_intent_with_stored_blobs(
                    [(chunk["hash"], chunk["size_bytes"]) for chunk in sized]) as intent:
                check = _BatchCheck(self, upload, digest, intent, outcomes)
                check.run(sized)
                written, changed = self._record(upload, outcomes, digest)
                check.hand_over(changed)
        except Exception:
            self._keep_failures(upload, outcomes)
            raise
        # Only now: a concurrent report of these chunks that looked before this point found the
        # bytes (and verified them again); one that looks after finds the chunks verified.
        for chunk in check.promoted:
            self._discard_staging(chunk["upload_key"])
        return written

    def _keep_failures(self, upload: dict, outcomes: dict) -> None:
        failures = {index: outcome for index, outcome in outcomes.items()
                    if outcome[1] == CHUNK_FAILED}
        if failures:
            try:
                self._record(upload, failures, None)
            except (ApiError, PyMongoError):
                log.warning("could not record failed chunks", exc_info=True,
                            extra={"user_file_id": upload["_id"]})

    def _promote(self, chunk: dict, keep_bytes: bool) -> tuple[str | None, KeptBytes | None]:
        """Promote one staged chunk: (None if verified, else why not (_TAKEN if a concurrent
        report of the same chunk took the bytes); with `keep_bytes`, those verified)."""
        try:
            return None, self.store.promote_staging(chunk["upload_key"], chunk["hash"],
                                                    keep_bytes=keep_bytes)
        except BlobHashMismatch:
            return "The bytes received do not have this chunk's SHA-256.", None
        except BlobNotFound:
            return _TAKEN, None

    def _discard_staging(self, key: str) -> None:
        try:
            self.store.delete_staging(key)
        except StorageError:  # gc removes staging objects of settled attempts
            log.warning("could not delete a promoted staging object", extra={"upload_key": key})

    def _record(self, upload: dict, outcomes: dict[int, tuple[str, str, str | None]],
                digest: RunningDigest | None) -> tuple[dict, set[int]]:
        """Set each chunk of `outcomes` still at its attempt key, and not verified, to its
        status, in one compare-and-set replace: (the upload as it is now, the indexes this
        write set). Nothing left to write: (the upload as read, none). A failed chunk gets a
        new attempt key.
        The `digest` is written along, advanced first over verified chunks next in line."""
        for _ in range(_WRITE_RETRIES):
            current = self.uploads.find(upload["_id"])
            if current is None:
                raise ApiError(404, "not_found", "No such file.")
            if current["status"] != UPLOADING:
                return current, set()
            chunks = list(current["chunks"])
            changed = []
            for index, (key, status, reason) in sorted(outcomes.items()):
                chunk = chunks[index]
                if chunk["upload_key"] == key and chunk["status"] != VERIFIED:
                    chunks[index] = {**chunk, "status": status, "reason": reason,
                                     "upload_key": None if status == VERIFIED else new_upload_key()}
                    changed.append(index)
            if not changed:
                return current, set()
            replacement = {**current, "chunks": chunks, "upload_rev": current["upload_rev"] + 1,
                           "upload_expires_ms": self._expires_ms()}
            if digest is not None:
                digest.adopt_further(current)
                for index in changed:
                    digest.catch_up(self.store, chunks, index)
                if digest.fits(chunks):
                    replacement[DIGEST_FIELD] = digest.document()
            if self.uploads.replace_if_rev(current, replacement):
                return replacement, set(changed)
        raise ApiError(409, "conflict", "The upload is changing too often; retry.")

    # complete

    def _complete(self, upload: dict) -> dict:
        """Every chunk is verified: check the whole-file hash, then make the file available."""
        chunk_hashes = [chunk["hash"] for chunk in upload["chunks"]]
        known = self.file_objects.find_by_hash(upload["hash"])
        if known is not None and (known["chunks"] != chunk_hashes
                                  or known["size_bytes"] != upload["size_bytes"]):
            known = None
        # A file object's hash was verified when it was made; the same verified chunks in the
        # same order are the same bytes, so they need no second read.
        if known is None:
            actual = self._whole_file_hash(upload)
            if actual != upload["hash"]:
                return self._fail(upload, "file_hash_mismatch",
                                  f"The chunks put together have SHA-256 {actual}, not the "
                                  f"declared {upload['hash']}.")
        try:
            mime_type = mime.choose(self._head(chunk_hashes), declared=upload["mime_type"],
                                    filename=upload["filename"])
        except ApiError as exc:
            return self._fail(upload, exc.code, exc.message)
        with self.refcounts.open_intent() as intent:
            file_object = self._take_file_object(intent, upload, known, mime_type)
            document = available_user_file(upload["_id"], upload["owner_id"], upload["filename"],
                                           file_object, mime_type, utc_datetime(self.clock))
            # The upload's own chunk refs: listed before the write that stops it holding them.
            self.refcounts.note_blob_releases(intent, chunk_hashes)
            if not self.files.mark_available(
                    [document], write=lambda: self.uploads.replace_if_rev(upload, document)):
                self.refcounts.abort(intent)  # finished, aborted or expired meanwhile
                return self.uploads.find(upload["_id"]) or upload
            self.refcounts.hand_over_file_object_refs(intent)
            self.refcounts.release_blobs(chunk_hashes)  # no document holds them now
        return document

    def _take_file_object(self, intent: Intent, upload: dict, known: dict | None,
                          mime_type: str) -> dict:
        """A reference to the file object with the upload's content: `known` (a live one with
        these chunks, which holds its own chunk refs) if it is still live, else one found or
        made with chunk refs taken as multipart takes them."""
        if known is not None and known.get("state") == LIVE and \
                self.refcounts.reuse_file_object(intent, known["_id"]):
            return {**known, "ref_count": known["ref_count"] + 1}
        chunk_hashes = [chunk["hash"] for chunk in upload["chunks"]]
        self.refcounts.acquire_stored_blobs(
            intent, [(chunk["hash"], chunk["size_bytes"]) for chunk in upload["chunks"]])
        return self.refcounts.acquire_file_object(intent, {
            "hash": upload["hash"], "size_bytes": upload["size_bytes"], "mime_type": mime_type,
            "chunk_size": upload["chunk_size"], "chunks": chunk_hashes}, chunk_hashes)

    def _fail(self, upload: dict, code: str, message: str) -> dict:
        """The whole file is wrong (not a chunk): terminal; DELETE it or let it expire."""
        replacement = {**upload, "status": FAILED, "upload_rev": upload["upload_rev"] + 1,
                       "failure": {"code": code, "message": message}}
        if self.uploads.replace_if_rev(upload, replacement):
            return replacement
        return self.uploads.find(upload["_id"]) or upload

    def _whole_file_hash(self, upload: dict) -> str:
        """SHA-256 of the verified chunks in order. Those the running digest has not hashed
        yet are read back from the store (normally none, or the last one or two)."""
        chunk_hashes = [chunk["hash"] for chunk in upload["chunks"]]
        hasher, through = stored_digest(upload) or (hashlib.sha256(), 0)
        feed_chunks(self.store, hasher, chunk_hashes[through:])
        if hasher.hexdigest() == upload["hash"] or not through:
            return hasher.hexdigest()
        # Never fail an upload on a saved state alone: hash it all again to be sure.
        log.warning("whole-file hash from a saved digest did not match; hashing again",
                    extra={"user_file_id": upload["_id"]})
        hasher = hashlib.sha256()
        feed_chunks(self.store, hasher, chunk_hashes)
        return hasher.hexdigest()

    def _head(self, chunk_hashes: list[str]) -> bytes:
        if not chunk_hashes:
            return b""
        head = bytearray()
        for piece in self.store.open(chunk_hashes[0], 0, mime.SNIFF_BYTES):
            head += piece
        return bytes(head)

    # read, resume, abort

    def get_file(self, owner_id: str, user_file_id: str) -> dict:
        """GET: an available file's detail, or an upload's state with fresh URLs (resume)."""
        upload = self._load_owned(owner_id, user_file_id)
        if upload["status"] == AVAILABLE:
            return self.files.describe(upload)
        return self._describe(self.uploads.touch(upload, self._expires_ms()))

    def delete_file(self, owner_id: str, user_file_id: str) -> None:
        """DELETE: an upload in progress is aborted; an available file is deleted as usual."""
        for _ in range(_WRITE_RETRIES):
            upload = self._load_owned(owner_id, user_file_id)
            if upload["status"] == AVAILABLE:
                self.files.delete_file(owner_id, user_file_id)
                return
            if self._discard(upload):
                return
        raise ApiError(409, "conflict", "The upload is changing too often; retry.")

    def _discard(self, upload: dict, *, expired_by_ms: int | None = None) -> bool:
        """Delete the upload, then give back its chunk refs and staged bytes."""
        verified = [chunk["hash"] for chunk in upload["chunks"] if chunk["status"] == VERIFIED]
        with self.refcounts.open_intent() as intent, \
                self.quota.releasing(upload["owner_id"]) as freed:
            self.refcounts.note_blob_releases(intent, verified)  # before the doc stops holding
            if not self.uploads.delete_if_rev(upload, expired_by_ms=expired_by_ms):
                return False
            freed(upload["size_bytes"])
            self.refcounts.release_blobs(verified)
        for chunk in upload["chunks"]:
            if chunk["status"] != VERIFIED and chunk["upload_key"]:
                self.store.delete_staging(chunk["upload_key"])
        return True

    # maintenance

    def expire_abandoned(self, *, dry_run: bool = False) -> int:
        """gc: uploads untouched for UPLOAD_TTL_SECONDS are discarded like a DELETE."""
        removed = 0
        now = now_ms(self.clock)
        for upload in list(self.uploads.expired(now)):
            if dry_run or self._discard(upload, expired_by_ms=now):
                removed += 1
        return removed

    def live_upload_keys(self) -> set[str]:
        """Staging names of uploads still in progress (gc leaves their bytes alone)."""
        return {chunk["upload_key"] for upload in self.uploads.in_progress()
                for chunk in upload.get("chunks", ()) if chunk.get("upload_key")}

    def held_blob_refs(self) -> Counter:
        """The blob references uploads in progress hold (fsck): one per verified chunk entry."""
        held: Counter[str] = Counter()
        for upload in self.uploads.in_progress():
            held.update(c["hash"] for c in upload.get("chunks", ()) if c["status"] == VERIFIED)
        return held

    # shapes

    def _load_owned(self, owner_id: str, user_file_id: str) -> dict:
        entry = self.uploads.find(user_file_id) if schemas.is_user_file_id(user_file_id) else None
        if entry is None:
            raise ApiError(404, "not_found", "No such file.")
        if entry["owner_id"] != owner_id:
            raise ApiError(403, "forbidden", "This file belongs to another user.")
        return entry

    def _describe(self, upload: dict, urls_for: set[int] | None = None) -> dict:
        """The upload's state; an upload URL for every chunk still needed, or (`urls_for`,
        PATCH) only for those of the reported chunks that still need one."""
        if upload["status"] == AVAILABLE:
            return self.files.describe(upload)
        ttl = self.settings.upload_url_ttl_seconds
        url_expires_at = utc_datetime(self.clock) + timedelta(seconds=ttl)
        chunks = []
        for chunk in upload["chunks"]:
            entry = {"index": chunk["index"], "hash": chunk["hash"],
                     "size_bytes": chunk["size_bytes"], "status": chunk["status"]}
            if chunk["reason"]:
                entry["reason"] = chunk["reason"]
            if upload["status"] == UPLOADING and chunk["status"] != VERIFIED and (
                    urls_for is None or chunk["index"] in urls_for):
                entry["upload_url"] = self.store.presign_put_staging(
                    chunk["upload_key"], size_bytes=chunk["size_bytes"], expires_seconds=ttl)
                entry["upload_expires_at"] = url_expires_at
            chunks.append(entry)
        return {
            "user_file_id": upload["_id"], "file_object_id": None,
            "filename": upload["filename"], "size_bytes": upload["size_bytes"],
            "mime_type": upload["mime_type"] or mime.OCTET_STREAM, "hash": upload["hash"],
            "status": upload["status"],
            "chunk_size": upload["chunk_size"], "chunks": chunks, "version": upload["version"],
            "created_at": as_utc(upload["created_at"]), "updated_at": as_utc(upload["updated_at"]),
            "upload_expires_at": from_ms(upload["upload_expires_ms"]),
            "failure": upload.get("failure"), "ref_count": 0, "storage_saved_bytes": 0,
            "storage_path": None, "uploaded_at": None, "download_url": None,
        }



_TAKEN = "taken"  # _promote: a concurrent report of the same chunk took its staged bytes


class _BatchCheck:
    """The chunks of one PATCH batch promoted _VERIFIERS at a time on the process's checking
    threads (hashing releases the GIL, fsync waits on the disk), their results taken on the
    request's thread in index order: the outcome noted, the reference of a chunk not verified
    given back, and a verified one hashed into the whole-file digest, if it is next in line,
    from the bytes its check verified (kept until then). The bytes kept count against the
    process's upload buffer budget, as a multipart upload's buffers do: a check waits for room
    only when it holds none."""

    def __init__(self, service: UploadService, upload: dict, digest: RunningDigest | None,
                 intent: Intent, outcomes: dict):
        self.service, self.upload, self.digest = service, upload, digest
        self.intent, self.outcomes = intent, outcomes
        self.promoted: list[dict] = []

    def run(self, chunks: list[dict]) -> None:
        in_flight: deque[tuple[dict, Future]] = deque()
        try:
            for chunk in chunks:
                if len(in_flight) == _VERIFIERS:
                    self._take(*in_flight.popleft())
                while not self._hold(chunk, wait=not in_flight):
                    self._take(*in_flight.popleft())
                in_flight.append((chunk, self.service.verifiers.submit(
                    self.service._promote, chunk, self.digest is not None)))
            while in_flight:
                self._take(*in_flight.popleft())
        finally:  # failed: no check of ours may still run once the intent gives refs back
            for _, promoting in in_flight:
                promoting.cancel()
            wait([promoting for _, promoting in in_flight])
            for chunk, promoting in in_flight:
                self._let_go(chunk, _kept_by(promoting))

    def _hold(self, chunk: dict, *, wait: bool) -> bool:
        return self.digest is None or self.service.files.buffers.reserve(chunk["size_bytes"],
                                                                         wait=wait)

    def _let_go(self, chunk: dict, kept: KeptBytes | None) -> None:
        try:
            if kept is not None:
                kept.release()
        finally:
            if self.digest is not None:
                self.service.files.buffers.give_back(chunk["size_bytes"])

    def _take(self, chunk: dict, promoting: Future) -> None:
        kept = None
        try:
            why_not, kept = promoting.result()
            self._settle(chunk, why_not, kept)
        finally:
            if kept is None:  # result() may not have returned: the check may still be running
                promoting.cancel()
                wait([promoting])
                kept = _kept_by(promoting)
            self._let_go(chunk, kept)

    def _settle(self, chunk: dict, why_not: str | None, kept: KeptBytes | None) -> None:
        key, index = chunk["upload_key"], chunk["index"]
        if why_not is not None:
            self.service.refcounts.release_held_blob(self.intent, chunk["hash"])
            if why_not != _TAKEN:
                self.outcomes[index] = (key, CHUNK_FAILED, why_not)
            return
        self.outcomes[index] = (key, VERIFIED, None)
        self.promoted.append(chunk)
        if self.digest is not None:
            self.digest.catch_up(self.service.store, self.upload["chunks"], index)
            self.digest.take(index, kept.pieces)

    def hand_over(self, changed: set[int]) -> None:
        """The write showed `changed` verified: those references are the upload's now; the
        other verified chunks were settled by someone else, or the upload went on without
        us, so their references are given back."""
        self.service.refcounts.hand_over_blob_refs(
            self.intent, [chunk["hash"] for chunk in self.promoted if chunk["index"] in changed])
        for chunk in self.promoted:
            if chunk["index"] not in changed:
                self.service.refcounts.release_held_blob(self.intent, chunk["hash"])


def _kept_by(promoting: Future) -> KeptBytes | None:
    """The bytes a check that has ended kept (to be released), if it ran and kept any."""
    if promoting.cancelled() or promoting.exception() is not None:
        return None
    return promoting.result()[1]


def _check_chunking(size_bytes: int, chunk_size: int, chunks: list[dict]) -> None:
    """(size_bytes is at most MAX_UPLOAD_BYTES here, so the expected list stays small.)"""
    count = -(-size_bytes // chunk_size)
    last = size_bytes - chunk_size * (count - 1) if count else None
    if len(chunks) == count and [(c["index"], c["size_bytes"]) for c in chunks] == list(
            enumerate(chunk_sizes(size_bytes, chunk_size, count))):
        return
    raise ApiError(400, "invalid_chunking",
                   f"Split the file into chunks of exactly {chunk_size} bytes (the last one "
                   f"holds the rest): {count} chunks for {size_bytes} bytes, listed in order "
                   f"with indexes 0..{count - 1}.",
                   {"chunk_size": chunk_size, "expected_chunks": count,
                    "expected_last_chunk_bytes": last})

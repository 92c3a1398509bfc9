"""The rules for a user's files: upload with dedup, list, read, replace, rename, delete."""
from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta

from pymongo.errors import PyMongoError

from satchel_shared.errors import ApiError

from .. import schemas
from ..multipart import FieldPart, FilePart
from ..repositories import FileObjectRepository, UserFileRepository, as_utc
from ..repositories.listing import FileListingRepository, listing_document_for
from ..repositories.user_files import AVAILABLE
from ..storage import BlobStore
from ..storage.base import is_blob_hash
from ..storage.signed_urls import SignedBlobUrls
from . import mime
from .changes import CHANGE_SEQ_FIELD, CREATED, DELETED, RENAMED, UPDATED, ChangeFeed
from .clock import Clock, to_ms, utc_datetime
from .ingest import BufferPool, FileIngest, IngestedFile
from .quota import Adjustment, Quota
from .refcounts import Intent, RefCounts

log = logging.getLogger(__name__)

UPLOAD_FIELD = "files"
REPLACE_FILE_FIELD = "file"
RENAME_FIELD = "filename"
_UPDATE_RETRIES = 5
_LIST_SLACK = 16   # listing entries read beyond a page, for stale ones the join drops
_LIST_ROUNDS = 8   # listing reads per page at most; then a short page with a next link
_LIST_MAX_BATCH = 4096


@dataclass(frozen=True)
class FileSettings:
    chunk_size_bytes: int
    download_url_ttl_seconds: int  # the limits on size are Quota's


@dataclass(frozen=True)
class _Received:
    filename: str
    mime_type: str
    content: IngestedFile


@dataclass(frozen=True)
class Content:
    """What the content endpoint needs to answer for one user file."""

    user_file_id: str
    hash: str
    size_bytes: int
    mime_type: str
    filename: str
    chunks: list[tuple[str, int]]  # (chunk hash, size_bytes) in order

    @property
    def etag(self) -> str:
        return self.hash

    @property
    def single_blob(self) -> str | None:
        return self.chunks[0][0] if len(self.chunks) == 1 else None


def chunk_sizes(size_bytes: int, chunk_size: int, count: int) -> list[int]:
    return [chunk_size] * (count - 1) + [size_bytes - chunk_size * (count - 1)] if count else []


def available_user_file(user_file_id: str, owner_id: str, filename: str, file_object: dict,
                        mime_type: str, now: datetime) -> dict:
    """A new user file with the content of `file_object`, as every upload path writes it
    (created_at = when it became available)."""
    return {"_id": user_file_id, "owner_id": owner_id, "filename": filename,
            "file_object_id": file_object["_id"], "hash": file_object["hash"],
            "size_bytes": file_object["size_bytes"], "mime_type": mime_type,
            "status": AVAILABLE, "version": 1, "created_at": now,
            "created_ms": to_ms(now), "updated_at": now}


class FileService:
    def __init__(self, user_files: UserFileRepository, file_objects: FileObjectRepository,
                 refcounts: RefCounts, store: BlobStore, settings: FileSettings, *,
                 content_urls: SignedBlobUrls, changes: ChangeFeed,
                 listing: FileListingRepository, quota: Quota, buffers: BufferPool,
                 clock: Clock = time.time):
        self.user_files = user_files
        self.listing = listing
        self.quota = quota
        self.buffers = buffers
        self.file_objects = file_objects
        self.refcounts = refcounts
        self.store = store
        self.settings = settings
        self.content_urls = content_urls
        self.changes = changes
        self.clock = clock

    # upload

    def refuse_oversized(self, request_bytes: int) -> None:
        """413 before a byte is read if the request's declared length is over the limit."""
        self.quota.check_request_size(request_bytes)

    def upload(self, owner_id: str, parts: Iterable[FieldPart | FilePart]) -> list[dict]:
        """All or nothing: every file of the request is stored, or none is (4xx or 5xx)."""
        with self.refcounts.open_intent() as intent:
            received = self._receive_uploads(owner_id, parts, intent)
            return self._commit_uploads(owner_id, received, intent)

    def _receive_uploads(self, owner_id: str, parts, intent: Intent) -> list[_Received]:
        count = self.quota.meter(owner_id)
        received: list[_Received] = []

        for part in parts:
            if not isinstance(part, FilePart) or part.name != UPLOAD_FIELD:
                raise _unexpected_field(part.name, f"send files in the {UPLOAD_FIELD!r} field")
            received.append(self._receive_file(part, intent, count, part.filename))
        if not received:
            raise ApiError(400, "no_file", f"No file was sent in the {UPLOAD_FIELD!r} field.")
        return received

    def _receive_file(self, part: FilePart, intent: Intent, count: Callable[[int], None],
                      display_name: str) -> _Received:
        if not part.filename:
            raise ApiError(400, "empty_file_field", "A file field was sent without a file.")
        filename = schemas.clean_filename(display_name)
        detected: dict[str, str] = {}

        def check_type(head: bytes) -> None:
            detected["mime_type"] = mime.choose(
                head, declared=part.content_type, filename=schemas.clean_filename(part.filename))

        ingest = FileIngest(self.refcounts, intent, self.settings.chunk_size_bytes, self.buffers,
                            on_head=check_type, on_bytes=count)
        content = ingest.ingest(part)
        return _Received(filename, detected["mime_type"], content)

    def _acquire_content(self, intent: Intent, item: _Received) -> dict:
        content = item.content
        return self.refcounts.acquire_file_object(intent, {
            "hash": content.hash, "size_bytes": content.size_bytes, "mime_type": item.mime_type,
            "chunk_size": self.settings.chunk_size_bytes, "chunks": content.chunks,
        }, content.chunks)

    def _commit_uploads(self, owner_id: str, received: list[_Received], intent: Intent) -> list[dict]:
        now = utc_datetime(self.clock)
        documents, results = [], []
        for item in received:
            file_object = self._acquire_content(intent, item)
            document = available_user_file(str(uuid.uuid4()), owner_id, item.filename,
                                           file_object, item.mime_type, now)
            documents.append(document)
            results.append({"filename": item.filename, "file_object_id": file_object["_id"],
                            "user_file_id": document["_id"], "hash": item.content.hash,
                            "size_bytes": item.content.size_bytes, "mime_type": item.mime_type})
        # Uploads by the same user can race: the check that counts reserves the room in one
        # atomic write before the files are written (services/quota.py).
        adding = sum(item.content.size_bytes for item in received)
        with self.quota.admitting(owner_id, adding_bytes=adding) as reservation:
            try:
                self.mark_available(documents)
            except PyMongoError:
                try:
                    self.user_files.delete_ids([doc["_id"] for doc in documents])
                except PyMongoError:  # some may exist and own their refs: leave the counts high
                    self.refcounts.hand_over_file_object_refs(intent)
                else:  # after the files are gone; then their refs are surely ours to give back
                    self._unlist([listing_document_for(document) for document in documents])
                    self.refcounts.abort(intent)
                    reservation.give_back()
                raise
        self.refcounts.hand_over_file_object_refs(intent)
        return results

    def mark_available(self, user_files: list[dict], *,
                       write: Callable[[], bool] | None = None) -> bool:
        """THE moment user files become available, on every upload path: one write, by
        default inserting `user_files`; or `write()`, which turns a chunked upload into its
        user file and is False if the upload was finished, aborted or expired by someone else
        first (nothing changed). A "created" change of each file is recorded around the write.

        The files' `file_listing` entries are inserted first (repositories/listing.py): a crash
        right after, or losing the race, leaves stale entries that the list skips and gc
        removes after the grace period, never an available file missing from the list. They
        are not deleted here on a lost race: a racer that completed in the same millisecond
        wrote the very same entry. Quota is the caller's to check."""
        self.listing.insert_many([listing_document_for(user_file) for user_file in user_files])
        with ExitStack() as recordings:  # one change per file, opened before the write
            opened = []
            for user_file in user_files:
                change = recordings.enter_context(self.changes.recording(
                    user_file["owner_id"], user_file["_id"], CREATED, details=user_file))
                user_file[CHANGE_SEQ_FIELD] = change.seq
                opened.append(change)
            if write is None:
                self.user_files.insert_many(user_files)
                return True
            if write():
                return True
            for change in opened:
                change.discard()
            return False

    # read

    def list_files(self, owner_id: str, *, limit: int,
                   cursor: tuple[int, str] | None = None) -> tuple[list[dict], str | None]:
        """A page of the owner's files, newest first, and the cursor of the next page (or None).

        A range of the owner's `file_listing` entries, joined to `user_files` by `_id`: O(page)
        on every engine (repositories/listing.py says why). Entries whose file is gone, not
        available, or elsewhere (a crash between the two writes, or a write in flight) are
        skipped and the range read further, at most _LIST_ROUNDS times; if stale entries fill
        all of those, the page is short and its next cursor resumes after the last entry read.
        """
        rows, position, has_more = self._listed(owner_id, limit + 1, cursor)
        next_cursor = None
        if len(rows) > limit:
            rows = rows[:limit]
            next_cursor = schemas.encode_cursor(rows[-1]["created_ms"], rows[-1]["_id"])
        elif has_more:
            next_cursor = schemas.encode_cursor(*position)
        file_objects = self.file_objects.find_many(row["file_object_id"] for row in rows)
        return [self._summary(row, file_objects.get(row["file_object_id"])) for row in rows], next_cursor

    def _listed(self, owner_id: str, want: int, after: tuple[int, str] | None
                ) -> tuple[list[dict], tuple[int, str] | None, bool]:
        """Up to `want` available files in list order after `after`; the position of the last
        entry read, and whether the listing may hold more after it."""
        rows: list[dict] = []
        batch = want + _LIST_SLACK
        for _ in range(_LIST_ROUNDS):
            entries = self.listing.page(owner_id, limit=batch, after=after)
            found = self.user_files.find_many([entry["user_file_id"] for entry in entries])
            for entry in entries:
                user_file = found.get(entry["user_file_id"])
                if (user_file is not None and user_file.get("status") == AVAILABLE
                        and user_file["owner_id"] == owner_id == entry["owner_id"]
                        and user_file["created_ms"] == entry["created_ms"]):
                    rows.append(user_file)
            if len(entries) < batch:
                return rows, after, False  # the end of the owner's listing
            after = (entries[-1]["created_ms"], entries[-1]["user_file_id"])
            if len(rows) >= want:
                return rows, after, True
            batch = min(batch * 2, _LIST_MAX_BATCH)
        return rows, after, True

    def _unlist(self, entries: list[dict]) -> None:
        """Delete listing entries AFTER their files were deleted; if that fails, the entries
        are stale: the list skips them and gc removes them."""
        try:
            self.listing.delete_ids([entry["_id"] for entry in entries])
        except PyMongoError:
            log.warning("could not delete listing entries; gc will",
                        extra={"entries": [entry["_id"] for entry in entries]})

    def get_file(self, owner_id: str, user_file_id: str) -> dict:
        return self.describe(self._load_owned(owner_id, user_file_id))

    def _summary(self, user_file: dict, file_object: dict | None) -> dict:
        ref_count = file_object["ref_count"] if file_object else 0
        chunks = file_object["chunks"] if file_object else []
        return {
            "user_file_id": user_file["_id"],
            "file_object_id": user_file["file_object_id"],
            "filename": user_file["filename"],
            "size_bytes": user_file["size_bytes"],
            "mime_type": user_file["mime_type"],
            "ref_count": ref_count,
            "storage_path": self._storage_path(chunks),
            "uploaded_at": as_utc(user_file["created_at"]),
            "storage_saved_bytes": user_file["size_bytes"] * max(ref_count - 1, 0),
        }

    def _storage_path(self, chunks: list[str]) -> str | None:
        """A single-chunk file's blob location; for a multi-chunk file, where its chunk blobs
        live (their exact hashes are in GET /files/{id}); None for an empty file."""
        if not chunks:
            return None
        return self.store.location(chunks[0] if len(chunks) == 1 else None)

    def describe(self, user_file: dict) -> dict:
        """The detail of an available file; if it changed since `user_file` was read, as it
        is now (404 if it is gone)."""
        user_file, file_object = self._with_file_object(user_file)
        content = self._content(user_file, file_object)  # 500 if the file object is missing
        ttl = self.settings.download_url_ttl_seconds
        return {
            **self._summary(user_file, file_object),
            "hash": user_file["hash"],
            "status": user_file["status"],
            "chunks": [{"index": index, "hash": chunk, "size_bytes": size, "status": "verified",
                        "download_url": self.store.presign_get(chunk, expires_seconds=ttl)}
                       for index, (chunk, size) in enumerate(content.chunks)],
            # the size these chunks were cut to, even if CHUNK_SIZE_BYTES changed since
            "chunk_size": file_object["chunk_size"],
            "version": user_file["version"],
            "created_at": as_utc(user_file["created_at"]),
            "updated_at": as_utc(user_file["updated_at"]),
            "etag": f'"{entry_tag(user_file)}"',
            "download_url": self._download_url(content, ttl),
            "download_url_expires_at": utc_datetime(self.clock) + timedelta(seconds=ttl),
        }

    def _download_url(self, content: Content, ttl: int) -> str:
        if content.single_blob:
            return self.store.presign_get(content.single_blob, expires_seconds=ttl,
                                          filename=content.filename, content_type=content.mime_type)
        return self.content_urls.presign("GET", content_path(content.user_file_id),
                                         {"hash": content.hash}, ttl)

    # content

    def content_for_owner(self, owner_id: str, user_file_id: str) -> Content:
        return self._content(*self._with_file_object(self._load_owned(owner_id, user_file_id)))

    def content_for_signed_url(self, user_file_id: str, query: dict[str, str]) -> Content:
        """The content a signed URL names; 403 unless it is a valid, unexpired signature for
        this path, 410 if the file's content changed since the URL was signed."""
        if not self.content_urls.verify("GET", content_path(user_file_id), query):
            raise ApiError(403, "forbidden", "The download link is invalid or has expired.")
        user_file, file_object = self._with_file_object(self._find_available(user_file_id))
        if user_file["hash"] != query.get("hash"):
            raise ApiError(410, "gone", "The file has changed since this download link was made.")
        return self._content(user_file, file_object)

    def _with_file_object(self, user_file: dict) -> tuple[dict, dict | None]:
        """(the available file, its file object). A concurrent replace or delete may free that
        file object between the two reads: the entry has moved on then, so it is read again
        (404 if it is gone). None only if the entry still points at a missing file object."""
        for _ in range(_UPDATE_RETRIES):
            file_object = self.file_objects.find(user_file["file_object_id"])
            if file_object is not None:
                return user_file, file_object
            fresh = self._find_available(user_file["_id"])
            if fresh["file_object_id"] == user_file["file_object_id"]:
                return fresh, None
            user_file = fresh
        return user_file, None

    def _content(self, user_file: dict, file_object: dict | None) -> Content:
        if file_object is None:
            log.error("user file points at a missing file object",
                      extra={"user_file_id": user_file["_id"]})
            raise ApiError(500, "internal_error", "The file's content is missing.")
        sizes = chunk_sizes(file_object["size_bytes"], file_object["chunk_size"],
                            len(file_object["chunks"]))
        return Content(user_file["_id"], user_file["hash"], user_file["size_bytes"],
                       user_file["mime_type"], user_file["filename"],
                       list(zip(file_object["chunks"], sizes)))

    def chunks_stored(self, chunks: Iterable[tuple[str, int]]) -> bool:
        """Every (chunk hash, size_bytes) is a blob in the store, at its size."""
        return all(is_blob_hash(chunk_hash) and self.store.size(chunk_hash) == size
                   for chunk_hash, size in chunks)

    def open_content(self, content: Content, start: int, end: int) -> Iterator[bytes]:
        """Bytes [start, end) of the file, read chunk by chunk; the first blob is opened now, so
        a missing blob fails before any byte is sent."""
        pieces = []
        offset = 0
        for chunk_hash, size in content.chunks:
            lo, hi = max(start - offset, 0), min(end - offset, size)
            if lo < hi:
                pieces.append((chunk_hash, lo, hi))
            offset += size
        if not pieces:
            return iter(())
        first = self.store.open(*pieces[0])

        def stream() -> Iterator[bytes]:
            yield from first
            for chunk_hash, lo, hi in pieces[1:]:
                yield from self.store.open(chunk_hash, lo, hi)

        return stream()

    # change

    def update_file(self, owner_id: str, user_file_id: str, parts: Iterable[FieldPart | FilePart],
                    *, if_match: Callable[[str], bool] | None = None) -> dict:
        """New content (`file` part) and/or new name (`filename` field); version + 1."""
        current = self._load_owned(owner_id, user_file_id)
        _check_precondition(current, if_match)
        with self.refcounts.open_intent() as intent:
            new_name, received = self._receive_update(owner_id, current, parts, intent)
            file_object = self._acquire_content(intent, received) if received else None
            with self.quota.adjusting(owner_id) as room, \
                    self.changes.recording(owner_id, user_file_id,
                                           UPDATED if received else RENAMED) as change:
                updated, replaced = self._replace(owner_id, current, new_name, received,
                                                  file_object, intent, if_match, change, room)
                change.details(**updated)
            self.refcounts.hand_over_file_object_refs(intent)
            if received is not None:
                self.refcounts.release_file_object(replaced["file_object_id"])
        return self.describe(updated)

    def _receive_update(self, owner_id: str, current: dict, parts, intent: Intent):
        count = self.quota.meter(owner_id, freeing_bytes=current["size_bytes"])
        new_name: str | None = None
        received: _Received | None = None

        for part in parts:
            if isinstance(part, FilePart) and part.name == REPLACE_FILE_FIELD:
                if received is not None:
                    raise ApiError(400, "too_many_files", "Send at most one 'file' part.")
                received = self._receive_file(part, intent, count, current["filename"])
            elif isinstance(part, FieldPart) and part.name == RENAME_FIELD:
                new_name = schemas.clean_filename(part.value)
            else:
                raise _unexpected_field(part.name, "send a 'file' part and/or a 'filename' field")
        if received is None and new_name is None:
            raise ApiError(400, "nothing_to_update",
                           "Send new content (a 'file' part), a new 'filename', or both.")
        return new_name, received

    def _replace(self, owner_id, current, new_name, received, file_object, intent, if_match,
                 change, room: Adjustment):
        """Rewrite `current` (compare-and-set, reloaded while others change it): (the new
        document, the one it replaced). `room` gets each attempt's size change first."""
        for _ in range(_UPDATE_RETRIES):
            change.follow(current)
            replacement = {**current, "version": current["version"] + 1,
                           "updated_at": utc_datetime(self.clock), CHANGE_SEQ_FIELD: change.seq}
            if new_name is not None:
                replacement["filename"] = new_name
            if received is not None:
                replacement.update(file_object_id=file_object["_id"], hash=received.content.hash,
                                   size_bytes=received.content.size_bytes,
                                   mime_type=received.mime_type)
                self.refcounts.note_release(intent, current["file_object_id"])
            room.to(replacement["size_bytes"] - current["size_bytes"])
            if self.user_files.replace_if_unchanged(current, replacement):
                return replacement, current
            current = self._load_owned(owner_id, current["_id"])
            if if_match is not None:
                raise _precondition_failed()
        raise ApiError(409, "conflict", "The file is changing too often; retry.")

    def delete_file(self, owner_id: str, user_file_id: str) -> None:
        current = self._load_owned(owner_id, user_file_id)
        with self.refcounts.open_intent() as intent, self.quota.releasing(owner_id) as freed:
            with self.changes.recording(owner_id, user_file_id, DELETED) as change:
                for _ in range(_UPDATE_RETRIES):
                    change.follow(current)
                    self.refcounts.note_release(intent, current["file_object_id"])
                    if self.user_files.delete_if_unchanged(current):
                        break
                    current = self._load_owned(owner_id, user_file_id)
                else:
                    raise ApiError(409, "conflict", "The file is changing too often; retry.")
                change.details(filename=current["filename"], version=current["version"])
            freed(current["size_bytes"])
            self._unlist([listing_document_for(current)])  # after the file is gone
            self.refcounts.release_file_object(current["file_object_id"])

    # lookups

    def _find_available(self, user_file_id: str) -> dict:
        user_file = self.user_files.find(user_file_id) if schemas.is_user_file_id(user_file_id) else None
        if user_file is None or user_file.get("status") != AVAILABLE:
            raise ApiError(404, "not_found", "No such file.")
        return user_file

    def _load_owned(self, owner_id: str, user_file_id: str) -> dict:
        user_file = self._find_available(user_file_id)
        if user_file["owner_id"] != owner_id:
            raise ApiError(403, "forbidden", "This file belongs to another user.")
        return user_file


def content_path(user_file_id: str) -> str:
    return f"/api/v1/files/{user_file_id}/content"


def _unexpected_field(name: str, hint: str) -> ApiError:
    return ApiError(400, "unexpected_field", f"Unexpected form field {name!r}: {hint}.",
                    {"field": name})


def _precondition_failed() -> ApiError:
    return ApiError(412, "precondition_failed",
                    "The file has changed since you read it (If-Match does not match its ETag).")


def entry_tag(user_file: dict) -> str:
    """The file entry's entity tag: changes with every version (content or name).

    The bytes at /content carry the plain content hash as their ETag instead, so caches of
    unchanged bytes survive a rename; If-Match on PUT guards the entry, so it uses this one.
    """
    return f"{user_file['hash']}.v{user_file['version']}"


def _check_precondition(user_file: dict, if_match: Callable[[str], bool] | None) -> None:
    if if_match is not None and not if_match(entry_tag(user_file)):
        raise _precondition_failed()

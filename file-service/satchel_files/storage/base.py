"""The blob store interface: content-addressed chunks plus a staging area for direct uploads."""

from __future__ import annotations

import abc
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

READ_PIECE_BYTES = 1024 * 1024
MAX_URL_TTL_SECONDS = 7 * 24 * 3600  # the S3 limit for SigV4 pre-signed URLs

_BLOB_HASH = re.compile(r"[0-9a-f]{64}")
_UPLOAD_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")


class StorageError(Exception):
    """Base class of every error a blob store raises on purpose."""


class BlobNotFound(StorageError):
    """The blob (or staging object) does not exist."""


class BlobHashMismatch(StorageError):
    """Bytes offered under a hash do not hash to it; nothing was stored."""


class StorageUnavailable(StorageError):
    """The backend cannot be reached or used (missing bucket, unwritable directory, ...)."""


@dataclass(frozen=True)
class BlobInfo:
    hash: str
    size_bytes: int
    modified_at: datetime  # UTC


@dataclass(frozen=True)
class StagingInfo:
    upload_key: str
    size_bytes: int
    modified_at: datetime  # UTC


def validate_blob_hash(blob_hash: object) -> str:
    """Return `blob_hash` if it is a lowercase hex SHA-256, else raise ValueError."""
    if not isinstance(blob_hash, str) or not _BLOB_HASH.fullmatch(blob_hash):
        raise ValueError(f"invalid blob hash: {blob_hash!r}")
    return blob_hash


def validate_upload_key(upload_key: object) -> str:
    """Return `upload_key` if it is 16-128 chars of [A-Za-z0-9_-], else raise ValueError."""
    if not isinstance(upload_key, str) or not _UPLOAD_KEY.fullmatch(upload_key):
        raise ValueError(f"invalid upload key: {upload_key!r}")
    return upload_key


def blob_relative_path(blob_hash: str) -> str:
    """Where a blob lives below a store's blob root, in every backend and in the gateway's
    blob locations: `<hash[:2]>/<hash>` (256 directories, none too large to list)."""
    validate_blob_hash(blob_hash)
    return f"{blob_hash[:2]}/{blob_hash}"


def is_blob_hash(name: str) -> bool:
    return bool(_BLOB_HASH.fullmatch(name))


def is_upload_key(name: str) -> bool:
    return bool(_UPLOAD_KEY.fullmatch(name))


def validate_ttl(expires_seconds: object) -> int:
    if (
        not isinstance(expires_seconds, int)
        or isinstance(expires_seconds, bool)
        or not 0 < expires_seconds <= MAX_URL_TTL_SECONDS
    ):
        raise ValueError(f"expires_seconds must be an int in 1..{MAX_URL_TTL_SECONDS}")
    return expires_seconds


def validate_size_bytes(size_bytes: object) -> int:
    """Return `size_bytes` if it is an int >= 0, else raise ValueError."""
    if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes < 0:
        raise ValueError(f"invalid size_bytes: {size_bytes!r}")
    return size_bytes


def validate_range(start: object, end: object) -> None:
    """Check a [start, end) request: `end` past the blob is clipped, `end < start` is an error."""
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise ValueError(f"invalid range start: {start!r}")
    if end is not None and (not isinstance(end, int) or isinstance(end, bool) or end < start):
        raise ValueError(f"invalid range end: {end!r}")


def ensure_hash_matches(blob_hash: str, data: bytes, *, verified: bool = False) -> None:
    """Refuse bytes that do not hash to `blob_hash`; `verified` means the caller just computed
    `blob_hash` from these very bytes (the ingest does), so a second SHA-256 pass is skipped."""
    if verified:
        return
    actual = hashlib.sha256(data).hexdigest()
    if actual != blob_hash:
        raise BlobHashMismatch(f"bytes hash to {actual}, not {blob_hash}")


def sha256_of_pieces(pieces: Iterable[bytes],
                     each_piece: Callable[[bytes], object] | None = None) -> str:
    """The hex SHA-256 of the pieces joined; `each_piece` is given each piece, in order."""
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
        if each_piece is not None:
            each_piece(piece)
    return digest.hexdigest()


class KeptBytes:
    """Bytes a store has just verified, lent to the caller until `release()`: `pieces`, in
    order, as buffers (the local store's are a mapping of the file, not a copy). They must not
    be used after release(), which may be called more than once."""

    def __init__(self, pieces: list, on_release: Callable[[], object] | None = None):
        self.pieces = pieces
        self._on_release = on_release

    def release(self) -> None:
        self.pieces = []
        on_release, self._on_release = self._on_release, None
        if on_release is not None:
            on_release()


class BlobStore(abc.ABC):
    """Chunks stored once under their SHA-256; see each method for the contract."""

    @abc.abstractmethod
    def put(self, blob_hash: str, data: bytes, *, verified: bool = False) -> None:
        """Store `data` under `blob_hash` atomically; an existing blob is left untouched.

        Raises BlobHashMismatch (and stores nothing) if sha256(data) != blob_hash.
        """

    def exists(self, blob_hash: str) -> bool:
        return self.size(blob_hash) is not None

    @abc.abstractmethod
    def size(self, blob_hash: str) -> int | None:
        """The blob's size in bytes, or None if it is not stored."""

    @abc.abstractmethod
    def open(self, blob_hash: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """Stream bytes [start, end) in pieces of at most 1 MiB; BlobNotFound is raised at call
        time, not on first iteration."""

    @abc.abstractmethod
    def delete(self, blob_hash: str) -> None:
        """Remove the blob; a missing blob is not an error."""

    @abc.abstractmethod
    def iter_blobs(self) -> Iterator[BlobInfo]:
        """Every stored blob (staging and temporary objects excluded), in no particular order."""

    @abc.abstractmethod
    def presign_get(
        self,
        blob_hash: str,
        *,
        expires_seconds: int,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> str:
        """A URL that serves the blob's bytes without a token until it expires."""

    @abc.abstractmethod
    def presign_put_staging(self, upload_key: str, *, size_bytes: int, expires_seconds: int) -> str:
        """A URL a client PUTs exactly `size_bytes` bytes to; they land in staging `upload_key`."""

    @abc.abstractmethod
    def open_staging(self, upload_key: str) -> Iterator[bytes]:
        """Stream a staging object in pieces of at most 1 MiB; raises BlobNotFound at call time."""

    @abc.abstractmethod
    def staging_size(self, upload_key: str) -> int | None:
        """The staging object's size in bytes, or None if there is none."""

    @abc.abstractmethod
    def promote_staging(self, upload_key: str, blob_hash: str, *,
                        keep_bytes: bool = False) -> KeptBytes | None:
        """Store the staging object's bytes as the blob `blob_hash`; the staging object stays.

        The backend re-hashes the very bytes it stores (a PUT to the same URL meanwhile cannot
        change them): on a mismatch the staging object is discarded, nothing is stored and
        BlobHashMismatch is raised, so success always means "this upload carried these bytes".
        If the blob already exists it is left untouched. A missing staging object raises
        BlobNotFound, even if the blob exists.

        The caller deletes the staging object (`delete_staging`) once it has recorded the chunk
        verified: until then a concurrent report of the same chunk still finds the bytes and
        promotes them again (harmless), instead of finding nothing and calling the chunk failed.

        With `keep_bytes`, the bytes just verified are returned, from the same read that
        hashed them, for the caller to hash further (a chunked upload's whole-file SHA-256);
        the caller must release() them. Otherwise None.
        """

    @abc.abstractmethod
    def delete_staging(self, upload_key: str) -> None:
        """Remove a staging object; a missing one is not an error."""

    @abc.abstractmethod
    def iter_staging(self) -> Iterator[StagingInfo]:
        """Every staging object, for garbage collection of abandoned uploads."""

    def location(self, blob_hash: str | None = None) -> str:
        """Where a blob lives (or, without a hash, where all blobs live), for people to read."""
        return f"blob:{validate_blob_hash(blob_hash)}" if blob_hash else "blob:"

    def remove_stale_temp(self, older_than: datetime) -> tuple[int, int]:
        """Delete in-flight leftovers (not blobs, not staging) older than `older_than`.

        Returns (count, bytes). Backends that write blobs atomically have none.
        """
        return 0, 0

    @abc.abstractmethod
    def check(self) -> None:
        """Raise StorageUnavailable unless the backend is ready to store and serve blobs."""

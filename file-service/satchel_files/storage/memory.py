"""An in-memory BlobStore for unit tests of the layers above; same contract, same URL signing."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timezone

from .base import (
    READ_PIECE_BYTES,
    BlobHashMismatch,
    BlobInfo,
    BlobNotFound,
    BlobStore,
    KeptBytes,
    StagingInfo,
    ensure_hash_matches,
    sha256_of_pieces,
    validate_blob_hash,
    validate_range,
    validate_upload_key,
)
from .signed_urls import SignedBlobUrls, SignsOwnUrls


class MemoryBlobStore(SignsOwnUrls, BlobStore):
    def __init__(
        self,
        *,
        url_secret: bytes = b"memory-blob-store-secret",
        base_url: str = "memory://satchel",
    ):
        self._blobs: dict[str, tuple[bytes, datetime]] = {}
        self._staging: dict[str, tuple[bytes, datetime]] = {}
        self._lock = threading.Lock()
        self._urls = SignedBlobUrls(base_url, url_secret)

    def put(self, blob_hash: str, data: bytes, *, verified: bool = False) -> None:
        validate_blob_hash(blob_hash)
        ensure_hash_matches(blob_hash, data, verified=verified)
        with self._lock:
            self._blobs.setdefault(blob_hash, (bytes(data), _now()))

    def size(self, blob_hash: str) -> int | None:
        entry = self._blobs.get(validate_blob_hash(blob_hash))
        return None if entry is None else len(entry[0])

    def open(self, blob_hash: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        validate_blob_hash(blob_hash)
        validate_range(start, end)
        data = self._get(self._blobs, blob_hash)
        return _pieces(data[start:end])

    def delete(self, blob_hash: str) -> None:
        with self._lock:
            self._blobs.pop(validate_blob_hash(blob_hash), None)

    def iter_blobs(self) -> Iterator[BlobInfo]:
        for blob_hash, (data, modified_at) in list(self._blobs.items()):
            yield BlobInfo(blob_hash, len(data), modified_at)


    def put_staging(self, upload_key: str, data: bytes) -> None:
        """Test hook: what a client's PUT to a presigned staging URL would do."""
        with self._lock:
            self._staging[validate_upload_key(upload_key)] = (bytes(data), _now())

    def open_staging(self, upload_key: str) -> Iterator[bytes]:
        return _pieces(self._get(self._staging, validate_upload_key(upload_key)))

    def staging_size(self, upload_key: str) -> int | None:
        entry = self._staging.get(validate_upload_key(upload_key))
        return None if entry is None else len(entry[0])

    def promote_staging(self, upload_key: str, blob_hash: str, *,
                        keep_bytes: bool = False) -> KeptBytes | None:
        validate_upload_key(upload_key)
        validate_blob_hash(blob_hash)
        with self._lock:
            entry = self._staging.get(upload_key)
            if entry is None:
                raise BlobNotFound(f"no staging object {upload_key}")
            pieces: list[bytes] = []
            actual = sha256_of_pieces(_pieces(entry[0]), pieces.append if keep_bytes else None)
            if actual != blob_hash:
                del self._staging[upload_key]
                raise BlobHashMismatch(f"staged bytes hash to {actual}, not {blob_hash}")
            self._blobs.setdefault(blob_hash, (entry[0], _now()))
        return KeptBytes(pieces) if keep_bytes else None

    def delete_staging(self, upload_key: str) -> None:
        with self._lock:
            self._staging.pop(validate_upload_key(upload_key), None)

    def iter_staging(self) -> Iterator[StagingInfo]:
        for upload_key, (data, modified_at) in list(self._staging.items()):
            yield StagingInfo(upload_key, len(data), modified_at)

    def location(self, blob_hash: str | None = None) -> str:
        return f"memory://blobs/{validate_blob_hash(blob_hash)}" if blob_hash else "memory://blobs/"

    def check(self) -> None:
        return None

    @staticmethod
    def _get(objects: dict[str, tuple[bytes, datetime]], name: str) -> bytes:
        entry = objects.get(name)
        if entry is None:
            raise BlobNotFound(f"no object {name}")
        return entry[0]


def _pieces(data: bytes) -> Iterator[bytes]:
    for offset in range(0, len(data), READ_PIECE_BYTES):
        yield data[offset : offset + READ_PIECE_BYTES]


def _now() -> datetime:
    return datetime.now(timezone.utc)

"""One file's bytes, as they stream in, cut into server-sized chunks that are hashed and stored.

At most one chunk (plus one network read) is in memory; nothing is written anywhere but the blob
store, and each chunk is referenced (see refcounts.py) before its bytes are put.
"""
from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from .mime import SNIFF_BYTES
from .refcounts import Intent, RefCounts


@dataclass(frozen=True)
class IngestedFile:
    hash: str
    size_bytes: int
    chunks: list[str]
    head: bytes  # the first bytes, for content type detection


class _WholeFileDigest:
    """SHA-256 of the whole stream, computed on a helper thread while the request thread
    buffers, hashes and stores chunks (hashlib releases the GIL for large buffers, so on a
    multi-core machine the two passes overlap). Pieces are hashed in order; at most
    `max_pending` wait, so memory stays bounded if hashing ever falls behind."""

    def __init__(self, max_pending: int = 16):
        self._digest = hashlib.sha256()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-digest")
        self._pending: deque[Future] = deque()
        self._max_pending = max_pending

    def update(self, piece: bytes) -> None:
        self._pending.append(self._executor.submit(self._digest.update, piece))
        while len(self._pending) > self._max_pending:
            self._pending.popleft().result()

    def hexdigest(self) -> str:
        try:
            while self._pending:
                self._pending.popleft().result()
            return self._digest.hexdigest()
        finally:
            self.close()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


_STORERS = 2  # chunks stored at once: one chunk's fsync wait overlaps the next one's write


class FileIngest:
    """Cuts a stream into chunks and stores them, overlapping the network with the storage.

    One buffer fills from the request while up to `_STORERS` full chunks are hashed, referenced
    and written by storing threads (a chunk's place in the list is fixed when it is handed over,
    so the order never depends on which thread finishes first). Memory is bounded by
    `_STORERS + 1` chunks; a storing error is raised in the request thread when its buffer is
    needed again or at `finish`.
    """

    def __init__(self, refcounts: RefCounts, intent: Intent, chunk_size: int, *,
                 on_head: Callable[[bytes], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None):
        """`on_head(first bytes)` runs once before the first chunk is stored (it may reject the
        file); `on_bytes(n)` after every piece received (it may enforce size limits)."""
        self._refcounts = refcounts
        self._intent = intent
        self._chunk_size = chunk_size
        self._on_head = on_head
        self._on_bytes = on_bytes
        self._free = [memoryview(bytearray(chunk_size)) for _ in range(_STORERS + 1)]
        self._view = self._free.pop()
        self._filled = 0
        self._in_flight: deque[tuple[Future, memoryview]] = deque()
        self._storer = ThreadPoolExecutor(max_workers=_STORERS, thread_name_prefix="chunk-store")
        self._digest = _WholeFileDigest()
        self._size = 0
        self._chunks: list[str | None] = []
        self._head: bytes | None = None

    def write_all(self, pieces: Iterable[bytes]) -> IngestedFile:
        try:
            for piece in pieces:
                self.write(piece)
            return self.finish()
        finally:
            self.close()

    def write(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._on_bytes is not None:
            self._on_bytes(len(piece))
        self._digest.update(piece)
        offset = 0
        while offset < len(piece):
            taken = min(len(piece) - offset, self._chunk_size - self._filled)
            self._view[self._filled:self._filled + taken] = piece[offset:offset + taken]
            self._filled += taken
            offset += taken
            if self._filled == self._chunk_size:
                self._hand_over(self._view)

    def finish(self) -> IngestedFile:
        if self._filled or self._head is None:
            self._hand_over(self._view[:self._filled])
        while self._in_flight:
            self._wait_for_oldest()
        return IngestedFile(self._digest.hexdigest(), self._size, list(self._chunks),
                            self._head or b"")

    def close(self) -> None:
        """Stop the helper threads; chunks being stored are finished first (their references
        are already recorded in the intent, so an aborted request releases them)."""
        self._storer.shutdown(wait=True, cancel_futures=True)
        self._digest.close()

    def _hand_over(self, chunk: memoryview) -> None:
        """Queue a full (or the last) chunk for storing and go on filling a free buffer."""
        if self._head is None:
            self._head = bytes(chunk[:SNIFF_BYTES])
            if self._on_head is not None:
                self._on_head(self._head)  # may reject the file before anything is stored
        self._filled = 0
        if not chunk:  # an empty file has no chunks
            return
        index = len(self._chunks)
        self._chunks.append(None)
        self._in_flight.append((self._storer.submit(self._store, index, chunk), self._view))
        if not self._free:
            self._wait_for_oldest()
        self._view = self._free.pop()

    def _wait_for_oldest(self) -> None:
        storing, buffer = self._in_flight.popleft()
        storing.result()
        self._free.append(buffer)

    def _store(self, index: int, chunk: memoryview) -> None:
        chunk_hash = hashlib.sha256(chunk).hexdigest()
        self._refcounts.acquire_blob(self._intent, chunk_hash, chunk)
        self._chunks[index] = chunk_hash

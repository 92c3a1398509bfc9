"""One file's bytes, as they stream in, cut into server-sized chunks that are hashed and stored.

At most one chunk (plus one network read) is in memory; nothing is written anywhere but the blob
store, and each chunk is referenced (see refcounts.py) before its bytes are put.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .mime import SNIFF_BYTES
from .refcounts import Intent, RefCounts


@dataclass(frozen=True)
class IngestedFile:
    hash: str
    size_bytes: int
    chunks: list[str]
    head: bytes  # the first bytes, for content type detection


class FileIngest:
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
        self._buffer = bytearray()
        self._digest = hashlib.sha256()
        self._size = 0
        self._chunks: list[str] = []
        self._head: bytes | None = None

    def write_all(self, pieces: Iterable[bytes]) -> IngestedFile:
        for piece in pieces:
            self.write(piece)
        return self.finish()

    def write(self, piece: bytes) -> None:
        self._size += len(piece)
        if self._on_bytes is not None:
            self._on_bytes(len(piece))
        self._digest.update(piece)
        self._buffer += piece
        while len(self._buffer) >= self._chunk_size:
            chunk = bytes(self._buffer[: self._chunk_size])
            del self._buffer[: self._chunk_size]
            self._store(chunk)

    def finish(self) -> IngestedFile:
        if self._buffer or self._head is None:
            chunk = bytes(self._buffer)
            self._buffer.clear()
            self._store(chunk)
        return IngestedFile(self._digest.hexdigest(), self._size, list(self._chunks),
                            self._head or b"")

    def _store(self, chunk: bytes) -> None:
        if self._head is None:
            self._head = chunk[:SNIFF_BYTES]
            if self._on_head is not None:
                self._on_head(self._head)
        if not chunk:  # an empty file has no chunks
            return
        chunk_hash = hashlib.sha256(chunk).hexdigest()
        self._refcounts.acquire_blob(self._intent, chunk_hash, chunk)
        self._chunks.append(chunk_hash)

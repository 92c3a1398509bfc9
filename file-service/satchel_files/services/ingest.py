"""One file's bytes, as they stream in, cut into server-sized chunks that are hashed and stored.

At most `_STORERS + 1` chunks are in memory; nothing is written anywhere but the blob store, and
each chunk is referenced (see refcounts.py) before its bytes are put.
"""
from __future__ import annotations

import hashlib
import mmap
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from .mime import SNIFF_BYTES
from .refcounts import Intent, RefCounts


@dataclass(frozen=True)
class IngestedFile:
    hash: str
    size_bytes: int
    chunks: list[str]
    head: bytes  # the first bytes, for content type detection


class _WholeFileDigest:
    """SHA-256 of the whole file, computed on a helper thread, one chunk after the other, while
    the request thread receives and the storing threads hash and write (hashlib releases the
    GIL for large buffers, so on a multi-core machine the passes overlap)."""

    def __init__(self):
        self._digest = hashlib.sha256()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="file-digest")

    def update(self, chunk: memoryview) -> Future:
        return self._executor.submit(self._digest.update, chunk)

    def hexdigest(self) -> str:
        return self._digest.hexdigest()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


class BufferPool:
    """The chunk buffers of all uploads in one process, within a memory budget (chunked
    uploads' checks count the chunks they hold against it too: uploads._BatchCheck).

    Each upload gets its first buffer even if it has to wait for one (it cannot go on without
    it, and whoever holds the budget is making progress); the buffers that let it overlap
    storing with receiving are taken only if the budget has room. So many large uploads at
    once slow down instead of taking a worker past its memory limit.
    """

    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self._in_use = 0
        self._changed = threading.Condition()

    @property
    def in_use_bytes(self) -> int:
        return self._in_use

    def acquire(self, size: int, *, wait: bool) -> mmap.mmap | None:
        """A zeroed, page-aligned buffer of `size` bytes; None if `wait` is False and the
        budget is spent."""
        if not self.reserve(size, wait=wait):
            return None
        try:
            return mmap.mmap(-1, size)
        except BaseException:
            self.give_back(size)
            raise

    def reserve(self, size: int, *, wait: bool) -> bool:
        """Count `size` bytes the caller is about to hold against the budget; False if `wait`
        is False and the budget is spent. A reservation larger than the whole budget is
        still granted when nothing else is out. give_back(size) when they are freed."""
        with self._changed:
            while self._in_use and self._in_use + size > self.budget_bytes:
                if not wait:
                    return False
                self._changed.wait()
            self._in_use += size
        return True

    def release(self, buffer: mmap.mmap) -> None:
        size = len(buffer)
        try:
            buffer.close()
        except BufferError:  # a view is still out: the memory goes when the last one does
            pass
        self.give_back(size)

    def give_back(self, size: int) -> None:
        with self._changed:
            self._in_use -= size
            self._changed.notify_all()


class ChunkSource(Protocol):
    """Where a file's bytes come from: multipart.FilePart."""

    lookahead: int

    def read_into(self, buffer, want: int) -> int:
        """Fill buffer[:n] with the next n bytes, n < want only at the end."""


# Chunks stored at once. Storing one is a hash, three small MongoDB writes (its reference) and a
# direct write with fsync, mostly waiting: with 2 a 1 GiB upload took 1.7-2.1 s at one busy core,
# with 4 1.35-1.5 s. Each large upload then holds up to 5 chunk buffers (40 MiB at 8 MiB chunks).
_STORERS = 4


class FileIngest:
    """Cuts a file into chunks and stores them, overlapping the network with the storage.

    The request thread reads each chunk straight into a buffer of its own (page-aligned
    anonymous memory, so the local store can write it with O_DIRECT); full buffers go to the
    whole-file digest thread and to one of `_STORERS` storing threads, which hash, reference
    and write the chunk (a chunk's place in the list is fixed when it is handed over, so the
    order never depends on which thread finishes first). Memory is bounded by `_STORERS + 1`
    chunks; a storing error is raised in the request thread when its buffer is needed again
    or at the end. Buffers come from the process's BufferPool: under memory pressure an upload
    works with fewer of them, down to one.
    """

    def __init__(self, refcounts: RefCounts, intent: Intent, chunk_size: int, buffers: BufferPool,
                 *, on_head: Callable[[bytes], None] | None = None,
                 on_bytes: Callable[[int], None] | None = None):
        """`on_head(first bytes)` runs once before the first chunk is stored (it may reject the
        file); `on_bytes(n)` after every chunk received (it may enforce size limits)."""
        self._refcounts = refcounts
        self._intent = intent
        self._chunk_size = chunk_size
        self._on_head = on_head
        self._on_bytes = on_bytes
        self._pool = buffers
        self._buffers: list[mmap.mmap] = []
        self._free: list[mmap.mmap] = []
        self._in_flight: deque[tuple[Future, Future, mmap.mmap]] = deque()
        self._storer = ThreadPoolExecutor(max_workers=_STORERS, thread_name_prefix="chunk-store")
        self._digest = _WholeFileDigest()
        self._chunks: list[str | None] = []

    def ingest(self, source: ChunkSource) -> IngestedFile:
        try:
            size, head = 0, None
            while True:
                buffer = self._free_buffer(source.lookahead)
                count = source.read_into(buffer, self._chunk_size)
                size += count
                if self._on_bytes is not None:
                    self._on_bytes(count)
                if head is None:
                    head = bytes(buffer[:min(count, SNIFF_BYTES)])
                    if self._on_head is not None:
                        self._on_head(head)  # may reject the file before anything is stored
                if count:
                    self._hand_over(buffer, count)
                else:
                    self._free.append(buffer)
                if count < self._chunk_size:
                    break
            while self._in_flight:
                self._wait_for_oldest()
            return IngestedFile(self._digest.hexdigest(), size, list(self._chunks), head)
        finally:
            self.close()

    def close(self) -> None:
        """Stop the helper threads; chunks being stored are finished first (their references
        are already recorded in the intent, so an aborted request releases them)."""
        self._storer.shutdown(wait=True, cancel_futures=True)
        self._digest.close()
        self._in_flight.clear()
        for buffer in self._buffers:
            self._pool.release(buffer)
        self._free = self._buffers = []

    def _free_buffer(self, lookahead: int) -> mmap.mmap:
        if not self._free and len(self._buffers) <= _STORERS:
            buffer = self._pool.acquire(self._chunk_size + lookahead, wait=not self._buffers)
            if buffer is not None:
                self._buffers.append(buffer)
                self._free.append(buffer)
        while not self._free:
            self._wait_for_oldest()
        return self._free.pop()

    def _hand_over(self, buffer: mmap.mmap, count: int) -> None:
        chunk = memoryview(buffer)[:count]
        index = len(self._chunks)
        self._chunks.append(None)
        self._in_flight.append((self._digest.update(chunk),
                                self._storer.submit(self._store, index, chunk), buffer))

    def _wait_for_oldest(self) -> None:
        digesting, storing, buffer = self._in_flight.popleft()
        digesting.result()
        storing.result()
        self._free.append(buffer)

    def _store(self, index: int, chunk: memoryview) -> None:
        chunk_hash = hashlib.sha256(chunk).hexdigest()
        self._refcounts.acquire_blob(self._intent, chunk_hash, chunk)
        self._chunks[index] = chunk_hash

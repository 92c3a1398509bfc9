"""Cutting a stream into stored chunks, and the process-wide budget of chunk buffers."""
import hashlib
import io
import os
import threading

import pytest

from satchel_files.api.body import StreamBody
from satchel_files.multipart import iter_parts
from satchel_files.services.ingest import _STORERS, BufferPool, FileIngest
from satchel_shared.errors import ApiError

CHUNK = 64 * 1024
BOUNDARY = "ingest-boundary"


class RecordingRefCounts:
    """What FileIngest asks of RefCounts: take a reference to each chunk and store it."""

    def __init__(self, pool=None):
        self.stored = {}
        self.pool = pool
        self.peak_in_use = 0
        self.lock = threading.Lock()

    def acquire_blob(self, intent, blob_hash, data):
        with self.lock:
            self.stored[blob_hash] = bytes(data)
            if self.pool is not None:
                self.peak_in_use = max(self.peak_in_use, self.pool.in_use_bytes)


def file_part(data):
    body = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"f.bin\"\r\n\r\n").encode() + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    return next(iter_parts(StreamBody(io.BytesIO(body)),
                           f"multipart/form-data; boundary={BOUNDARY}"))


def ingest(data, pool, **callbacks):
    refcounts = RecordingRefCounts(pool)
    result = FileIngest(refcounts, None, CHUNK, pool, **callbacks).ingest(file_part(data))
    return result, refcounts


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 7 * CHUNK + 5])
def test_a_file_becomes_its_chunks_in_order_with_the_whole_file_hash(size):
    data = os.urandom(size)
    pool = BufferPool(64 * CHUNK)
    result, refcounts = ingest(data, pool)
    pieces = [data[i:i + CHUNK] for i in range(0, size, CHUNK)]
    assert result.chunks == [hashlib.sha256(p).hexdigest() for p in pieces]
    assert result.hash == hashlib.sha256(data).hexdigest() and result.size_bytes == size
    assert all(refcounts.stored[h] == p for h, p in zip(result.chunks, pieces))
    assert result.head == data[:len(result.head)]
    assert pool.in_use_bytes == 0


def test_a_large_file_overlaps_up_to_storers_plus_one_buffers():
    pool = BufferPool(64 * CHUNK)
    _, refcounts = ingest(os.urandom(20 * CHUNK), pool)
    assert 0 < refcounts.peak_in_use <= (_STORERS + 1) * (CHUNK + 64)


def test_with_the_budget_spent_an_upload_goes_on_with_a_single_buffer():
    pool = BufferPool(2 * CHUNK + 200)
    held = pool.acquire(CHUNK + 100, wait=False)  # another upload holds half the budget
    data = os.urandom(9 * CHUNK + 3)
    result, refcounts = ingest(data, pool)
    assert result.hash == hashlib.sha256(data).hexdigest()
    assert refcounts.peak_in_use <= 2 * CHUNK + 200
    pool.release(held)
    assert pool.in_use_bytes == 0


def test_a_refused_file_gives_its_buffers_back():
    pool = BufferPool(64 * CHUNK)

    seen = []

    def refuse_after_three_chunks(count):
        seen.append(count)
        if sum(seen) > 3 * CHUNK:
            raise ApiError(413, "payload_too_large", "too large")

    with pytest.raises(ApiError):
        ingest(os.urandom(10 * CHUNK), pool, on_bytes=refuse_after_three_chunks)
    assert pool.in_use_bytes == 0


def test_the_pool_gives_within_its_budget_and_makes_the_first_buffer_wait():
    pool = BufferPool(3 * CHUNK)
    first, second = pool.acquire(2 * CHUNK, wait=False), pool.acquire(CHUNK, wait=False)
    assert len(first) == 2 * CHUNK and pool.in_use_bytes == 3 * CHUNK
    assert pool.acquire(1, wait=False) is None
    got = []
    waiter = threading.Thread(target=lambda: got.append(pool.acquire(CHUNK, wait=True)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and got == []  # waiting for room
    pool.release(second)
    waiter.join(5)
    assert len(got) == 1 and pool.in_use_bytes == 3 * CHUNK
    pool.release(first)
    pool.release(got[0])
    assert pool.in_use_bytes == 0


def test_one_buffer_larger_than_the_budget_is_given_when_nothing_else_is_out():
    pool = BufferPool(CHUNK)
    big = pool.acquire(2 * CHUNK, wait=True)
    assert len(big) == 2 * CHUNK
    pool.release(big)
    assert pool.in_use_bytes == 0

"""The resumable SHA-256: hashlib's answers, across a save and restore, at hashlib's speed."""
import hashlib
import mmap
import os
import random
import threading
import time
import tracemalloc

import pytest

from satchel_files import resumable_sha256
from satchel_files.resumable_sha256 import ResumableSha256


def test_it_is_available_here():
    """The chunked-upload tests prove the incremental digest only if it is not falling back."""
    assert resumable_sha256.AVAILABLE


@pytest.mark.parametrize("size", [0, 1, 55, 56, 63, 64, 65, 127, 1000, 65_537, 1_048_583])
def test_it_equals_hashlib_on_random_data_cut_anywhere_and_restored(size):
    rng = random.Random(size)
    data = os.urandom(size)
    cuts = sorted(rng.randrange(size + 1) for _ in range(4))
    hasher = ResumableSha256()
    start = 0
    for cut in [*cuts, size]:
        hasher.update(data[start:cut])
        hasher = ResumableSha256.from_state(hasher.state())  # as if in another process
        assert hasher.length_bytes == cut
        start = cut
    assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()


def test_the_state_is_the_plain_midstate_and_digest_leaves_the_hash_usable():
    hasher = ResumableSha256()
    hasher.update(b"a" * 70)
    state = hasher.state()
    assert len(state) == 40 + 6 and state[40:] == b"a" * 6
    assert int.from_bytes(state[32:40], "big") == 70
    assert hasher.hexdigest() == hashlib.sha256(b"a" * 70).hexdigest()
    hasher.update(b"b")  # hexdigest() did not finish it
    assert hasher.hexdigest() == hashlib.sha256(b"a" * 70 + b"b").hexdigest()


def test_a_copy_is_independent():
    hasher = ResumableSha256()
    hasher.update(b"common ")
    copy = hasher.copy()
    copy.update(b"copy")
    hasher.update(b"original")
    assert copy.hexdigest() == hashlib.sha256(b"common copy").hexdigest()
    assert hasher.hexdigest() == hashlib.sha256(b"common original").hexdigest()


@pytest.mark.parametrize("state", [b"", b"\0" * 39, b"\0" * 40 + b"x",  # tail without length
                                   b"\0" * 32 + (5).to_bytes(8, "big") + b"abc"])
def test_a_state_that_cannot_be_one_is_refused(state):
    with pytest.raises(ValueError):
        ResumableSha256.from_state(state)


def test_other_threads_run_while_it_hashes():
    """The GIL is released for the call: Python code in another thread keeps running."""
    data = bytes(256 << 20)
    hashing, ticks = threading.Event(), []

    def count():
        hashing.wait()
        while hashing.is_set():
            ticks.append(None)
            time.sleep(0)

    counter = threading.Thread(target=count)
    counter.start()
    hasher = ResumableSha256()
    hashing.set()
    time.sleep(0.01)
    before = len(ticks)
    hasher.update(data)  # one call, about 0.1 s
    during = len(ticks) - before
    hashing.clear()
    counter.join()
    assert during > 10


def _mapped(path, data: bytes):
    path.write_bytes(data)
    with open(path, "rb") as file:
        return mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_COPY)


def test_it_hashes_any_buffer_as_hashlib_does(tmp_path):
    data = os.urandom(100_003)
    mapped = _mapped(tmp_path / "chunk", data)
    every_other = bytearray(2 * len(data))
    every_other[::2] = data
    for pieces in ([memoryview(mapped)[:5000], memoryview(mapped)[5000:]],  # a local chunk
                   [bytearray(data)],
                   [memoryview(data)],                                  # read-only: copied
                   [memoryview(bytearray(data[:100_000])).cast("I"), data[100_000:]],
                   [memoryview(every_other)[::2]],                      # not contiguous: copied
                   [bytearray(), memoryview(b""), data]):
        hasher = ResumableSha256()
        for piece in pieces:
            hasher.update(piece)
        assert hasher.hexdigest() == hashlib.sha256(data).hexdigest()
    mapped.close()  # every piece above let go of it


def test_a_writable_buffer_is_hashed_in_place_not_copied():
    data = bytearray(os.urandom(32 << 20))
    tracemalloc.start()
    try:
        ResumableSha256().update(memoryview(data)[1:])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20

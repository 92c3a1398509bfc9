"""The BlobStore contract, proved against every backend (local disk, S3 via moto, memory)."""

import hashlib
from datetime import timedelta

import pytest

from satchel_files.storage import BlobHashMismatch, BlobNotFound, BlobStore

MIB = 1024 * 1024
HELLO = b"hello world"
HELLO_HASH = hashlib.sha256(HELLO).hexdigest()
EMPTY_HASH = hashlib.sha256(b"").hexdigest()
UPLOAD_KEY = "upload_0123456789-abcdef"
OTHER_KEY = "upload_fedcba9876543210"

BAD_HASHES = [
    "../etc/passwd",
    "../../" + "a" * 58,
    "a" * 63,
    "a" * 65,
    "A" * 64,
    "g" * 64,
    "a" * 63 + "/",
    "a" * 64 + "\n",
    "",
    None,
    123,
]
BAD_UPLOAD_KEYS = [
    "../../files/ab/" + "a" * 16,
    "short",
    "a" * 129,
    "has space in it here",
    "slash/in/the/key/abc",
    "dots..in..the..key",
    "a" * 16 + "\n",
    "",
    None,
]


def sha256_hex(data):
    return hashlib.sha256(data).hexdigest()


def read(chunks):
    return b"".join(chunks)


def test_every_backend_implements_the_interface(store):
    assert isinstance(store, BlobStore)


def test_check_passes_for_a_ready_backend(store):
    store.check()


# blobs


def test_put_then_exists_size_and_open_return_the_bytes(store):
    store.put(HELLO_HASH, HELLO)

    assert store.exists(HELLO_HASH)
    assert store.size(HELLO_HASH) == len(HELLO)
    assert read(store.open(HELLO_HASH)) == HELLO


def test_missing_blob_does_not_exist_and_open_raises_at_call_time(store):
    assert not store.exists(HELLO_HASH)
    assert store.size(HELLO_HASH) is None
    with pytest.raises(BlobNotFound):
        store.open(HELLO_HASH)  # not only when iterated
    with pytest.raises(BlobNotFound):
        store.open(HELLO_HASH, 0, 0)


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (0, None, HELLO),
        (0, 5, b"hello"),
        (6, None, b"world"),
        (2, 5, b"llo"),
        (10, 11, b"d"),
        (5, 5, b""),
        (0, 0, b""),
        (3, 1000, HELLO[3:]),
        (11, None, b""),
        (11, 20, b""),
        (20, 30, b""),
        (20, None, b""),
    ],
)
def test_open_streams_the_byte_range_end_exclusive_and_clipped(store, start, end, expected):
    store.put(HELLO_HASH, HELLO)

    assert read(store.open(HELLO_HASH, start, end)) == expected


@pytest.mark.parametrize(("start", "end"), [(0, None), (0, 0), (0, 10), (5, None)])
def test_open_of_an_empty_blob_yields_no_bytes(store, start, end):
    store.put(EMPTY_HASH, b"")

    assert store.size(EMPTY_HASH) == 0
    assert read(store.open(EMPTY_HASH, start, end)) == b""


@pytest.mark.parametrize(("start", "end"), [(-1, None), (5, 4), ("0", None), (0, 1.5)])
def test_open_rejects_a_malformed_range(store, start, end):
    store.put(HELLO_HASH, HELLO)

    with pytest.raises(ValueError):
        store.open(HELLO_HASH, start, end)


def test_open_streams_pieces_of_at_most_one_mib(store):
    data = bytes(range(256)) * (MIB // 256) * 2 + b"tail"
    blob_hash = sha256_hex(data)
    store.put(blob_hash, data)

    pieces = list(store.open(blob_hash))
    assert all(0 < len(piece) <= MIB for piece in pieces)
    assert b"".join(pieces) == data
    ranged = list(store.open(blob_hash, MIB - 10, 2 * MIB + 2))
    assert all(len(piece) <= MIB for piece in ranged)
    assert b"".join(ranged) == data[MIB - 10 : 2 * MIB + 2]


def test_put_of_the_same_blob_twice_keeps_one_copy(store):
    store.put(HELLO_HASH, HELLO)
    store.put(HELLO_HASH, HELLO)

    assert [info.hash for info in store.iter_blobs()] == [HELLO_HASH]
    assert read(store.open(HELLO_HASH)) == HELLO


def test_put_of_bytes_that_do_not_match_the_hash_stores_nothing(store):
    with pytest.raises(BlobHashMismatch):
        store.put(HELLO_HASH, b"hello there")

    assert not store.exists(HELLO_HASH)
    assert list(store.iter_blobs()) == []


def test_put_of_wrong_bytes_never_overwrites_an_existing_blob(store):
    store.put(HELLO_HASH, HELLO)

    with pytest.raises(BlobHashMismatch):
        store.put(HELLO_HASH, b"evil bytes!")

    assert read(store.open(HELLO_HASH)) == HELLO


def test_delete_removes_the_blob_and_deleting_a_missing_blob_is_fine(store):
    store.put(HELLO_HASH, HELLO)
    store.put(EMPTY_HASH, b"")

    store.delete(HELLO_HASH)
    store.delete(HELLO_HASH)

    assert not store.exists(HELLO_HASH)
    assert store.exists(EMPTY_HASH)
    with pytest.raises(BlobNotFound):
        store.open(HELLO_HASH)


def test_iter_blobs_lists_every_blob_with_its_size_and_a_utc_time(store):
    blobs = {sha256_hex(data): data for data in (HELLO, b"", b"x" * 1000, b"another")}
    for blob_hash, data in blobs.items():
        store.put(blob_hash, data)

    listed = {info.hash: info for info in store.iter_blobs()}

    assert {h: info.size_bytes for h, info in listed.items()} == {
        h: len(d) for h, d in blobs.items()
    }
    assert all(info.modified_at.utcoffset() == timedelta(0) for info in listed.values())


def test_iter_blobs_ignores_staging_temp_files_and_names_that_are_not_hashes(backend):
    if backend.write_raw is None:
        pytest.skip("the memory backend has no namespace to put junk in")
    store = backend.store
    store.put(HELLO_HASH, HELLO)
    backend.write_staging(UPLOAD_KEY, HELLO)
    for junk in [
        f"files/tmp/upload-{HELLO_HASH}",
        f"files/tmp/{HELLO_HASH}",
        "files/ab/not-a-hash",
        f"files/{HELLO_HASH[:2]}/{HELLO_HASH.upper()}",
        f"files/{HELLO_HASH[:2]}/{HELLO_HASH}.part",
        f"files/zz/{EMPTY_HASH}",  # a hash in the wrong shard
        f"files/{EMPTY_HASH}",
        "files/README",
    ]:
        backend.write_raw(junk, b"junk")

    assert [info.hash for info in store.iter_blobs()] == [HELLO_HASH]


def test_iter_blobs_of_an_empty_store_yields_nothing(store):
    assert list(store.iter_blobs()) == []
    assert list(store.iter_staging()) == []


@pytest.mark.parametrize(
    "call",
    [
        lambda s, h: s.put(h, b"x"),
        lambda s, h: s.exists(h),
        lambda s, h: s.size(h),
        lambda s, h: s.open(h),
        lambda s, h: s.delete(h),
        lambda s, h: s.presign_get(h, expires_seconds=60),
        lambda s, h: s.promote_staging(UPLOAD_KEY, h),
    ],
    ids=["put", "exists", "size", "open", "delete", "presign_get", "promote_staging"],
)
def test_a_malformed_blob_hash_is_rejected_before_touching_storage(backend, call):
    backend.write_staging(UPLOAD_KEY, b"x")

    for bad_hash in BAD_HASHES:
        with pytest.raises(ValueError):
            call(backend.store, bad_hash)

    assert backend.store.staging_size(UPLOAD_KEY) == 1


# staging


def test_staged_bytes_can_be_sized_read_and_promoted_to_a_blob(backend):
    store = backend.store
    backend.write_staging(UPLOAD_KEY, HELLO)

    assert store.staging_size(UPLOAD_KEY) == len(HELLO)
    assert read(store.open_staging(UPLOAD_KEY)) == HELLO
    store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    assert read(store.open(HELLO_HASH)) == HELLO
    assert store.staging_size(UPLOAD_KEY) == len(HELLO)  # until the caller has recorded it
    store.delete_staging(UPLOAD_KEY)
    assert store.staging_size(UPLOAD_KEY) is None
    assert list(store.iter_staging()) == []


def test_promote_keeps_the_bytes_it_verified_until_they_are_released(backend):
    data = bytes(range(256)) * (3 * MIB // 256) + b"tail"
    backend.write_staging(UPLOAD_KEY, data)

    kept = backend.store.promote_staging(UPLOAD_KEY, sha256_hex(data), keep_bytes=True)
    backend.write_staging(UPLOAD_KEY, b"x" * len(data))  # a PUT to the same URL meanwhile

    assert b"".join(bytes(piece) for piece in kept.pieces) == data
    kept.release()
    kept.release()
    assert kept.pieces == []
    assert read(backend.store.open(sha256_hex(data))) == data


def test_promote_keeps_nothing_unless_asked_or_when_the_bytes_are_wrong(backend):
    backend.write_staging(UPLOAD_KEY, HELLO)
    assert backend.store.promote_staging(UPLOAD_KEY, HELLO_HASH) is None

    backend.write_staging(OTHER_KEY, b"not hello")
    with pytest.raises(BlobHashMismatch):
        backend.store.promote_staging(OTHER_KEY, sha256_hex(b"hello?"), keep_bytes=True)


def test_promote_of_an_empty_staged_chunk_stores_the_empty_blob(backend):
    backend.write_staging(UPLOAD_KEY, b"")

    kept = backend.store.promote_staging(UPLOAD_KEY, EMPTY_HASH, keep_bytes=True)

    assert b"".join(kept.pieces) == b""
    kept.release()
    assert backend.store.size(EMPTY_HASH) == 0


def test_missing_staging_object_has_no_size_and_cannot_be_opened(store):
    assert store.staging_size(UPLOAD_KEY) is None
    with pytest.raises(BlobNotFound):
        store.open_staging(UPLOAD_KEY)


def test_open_staging_streams_pieces_of_at_most_one_mib(backend):
    data = b"s" * (MIB + 1)
    backend.write_staging(UPLOAD_KEY, data)

    pieces = list(backend.store.open_staging(UPLOAD_KEY))

    assert [len(piece) for piece in pieces] == [MIB, 1]


def test_promote_into_an_existing_blob_keeps_the_blob(backend):
    store = backend.store
    store.put(HELLO_HASH, HELLO)
    (before,) = list(store.iter_blobs())
    backend.write_staging(UPLOAD_KEY, HELLO)

    store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    assert list(store.iter_blobs()) == [before]


def test_two_uploads_of_the_same_bytes_promote_to_one_blob(backend):
    store = backend.store
    backend.write_staging(UPLOAD_KEY, HELLO)
    backend.write_staging(OTHER_KEY, HELLO)

    store.promote_staging(UPLOAD_KEY, HELLO_HASH)
    store.promote_staging(OTHER_KEY, HELLO_HASH)

    assert [info.hash for info in store.iter_blobs()] == [HELLO_HASH]


def test_promote_of_bytes_that_do_not_match_the_hash_stores_nothing_and_discards_them(backend):
    store = backend.store
    backend.write_staging(UPLOAD_KEY, b"not hello")

    with pytest.raises(BlobHashMismatch):
        store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    assert not store.exists(HELLO_HASH)
    assert store.staging_size(UPLOAD_KEY) is None


def test_promote_of_wrong_bytes_onto_an_existing_blob_fails_and_keeps_the_blob(backend):
    store = backend.store
    store.put(HELLO_HASH, HELLO)
    backend.write_staging(UPLOAD_KEY, b"claiming a hash I do not have")

    with pytest.raises(BlobHashMismatch):
        store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    assert read(store.open(HELLO_HASH)) == HELLO


def test_promote_without_a_staging_object_raises_even_if_the_blob_exists(store):
    store.put(HELLO_HASH, HELLO)

    with pytest.raises(BlobNotFound):
        store.promote_staging(UPLOAD_KEY, HELLO_HASH)


def test_promote_twice_is_harmless_and_after_delete_staging_raises(backend):
    """Two reports of one chunk racing both promote it: one blob, the same bytes."""
    backend.write_staging(UPLOAD_KEY, HELLO)
    backend.store.promote_staging(UPLOAD_KEY, HELLO_HASH)
    backend.store.promote_staging(UPLOAD_KEY, HELLO_HASH)
    assert [info.hash for info in backend.store.iter_blobs()] == [HELLO_HASH]

    backend.store.delete_staging(UPLOAD_KEY)
    with pytest.raises(BlobNotFound):
        backend.store.promote_staging(UPLOAD_KEY, HELLO_HASH)
    assert read(backend.store.open(HELLO_HASH)) == HELLO


def test_delete_staging_removes_it_and_deleting_a_missing_one_is_fine(backend):
    backend.write_staging(UPLOAD_KEY, HELLO)
    backend.write_staging(OTHER_KEY, b"keep")

    backend.store.delete_staging(UPLOAD_KEY)
    backend.store.delete_staging(UPLOAD_KEY)

    assert backend.store.staging_size(UPLOAD_KEY) is None
    assert backend.store.staging_size(OTHER_KEY) == 4


def test_iter_staging_lists_uploads_with_size_and_utc_time(backend):
    backend.write_staging(UPLOAD_KEY, HELLO)
    backend.write_staging(OTHER_KEY, b"")
    backend.store.put(EMPTY_HASH, b"")

    listed = {info.upload_key: info for info in backend.store.iter_staging()}

    assert {key: info.size_bytes for key, info in listed.items()} == {UPLOAD_KEY: 11, OTHER_KEY: 0}
    assert all(info.modified_at.tzinfo is not None for info in listed.values())
    assert all(info.modified_at.utcoffset().total_seconds() == 0 for info in listed.values())


def test_iter_staging_ignores_names_that_are_not_upload_keys(backend):
    if backend.write_raw is None:
        pytest.skip("the memory backend has no namespace to put junk in")
    backend.write_staging(UPLOAD_KEY, HELLO)
    backend.write_raw("staging/short", b"junk")
    backend.write_raw("staging/.hidden-0123456789abcdef", b"junk")

    assert [info.upload_key for info in backend.store.iter_staging()] == [UPLOAD_KEY]


@pytest.mark.parametrize(
    "call",
    [
        lambda s, k: s.presign_put_staging(k, size_bytes=1, expires_seconds=60),
        lambda s, k: s.open_staging(k),
        lambda s, k: s.staging_size(k),
        lambda s, k: s.promote_staging(k, HELLO_HASH),
        lambda s, k: s.delete_staging(k),
    ],
    ids=["presign_put", "open_staging", "staging_size", "promote_staging", "delete_staging"],
)
def test_a_malformed_upload_key_is_rejected(store, call):
    for bad_key in BAD_UPLOAD_KEYS:
        with pytest.raises(ValueError):
            call(store, bad_key)


# pre-signed URLs


def test_presign_get_names_the_blob(store):
    store.put(HELLO_HASH, HELLO)

    url = store.presign_get(
        HELLO_HASH, expires_seconds=300, filename="a.txt", content_type="text/plain"
    )

    assert f"files/{HELLO_HASH[:2]}/{HELLO_HASH}" in url


def test_presign_put_staging_names_the_staging_key(store):
    url = store.presign_put_staging(UPLOAD_KEY, size_bytes=11, expires_seconds=300)

    assert f"staging/{UPLOAD_KEY}" in url


@pytest.mark.parametrize("ttl", [0, -5, 7 * 24 * 3600 + 1, 1.5, "60", None])
def test_presigning_rejects_a_ttl_outside_one_second_to_seven_days(store, ttl):
    with pytest.raises(ValueError):
        store.presign_get(HELLO_HASH, expires_seconds=ttl)
    with pytest.raises(ValueError):
        store.presign_put_staging(UPLOAD_KEY, size_bytes=1, expires_seconds=ttl)


@pytest.mark.parametrize("size_bytes", [-1, 1.0, None, True])
def test_presign_put_staging_rejects_a_bad_size(store, size_bytes):
    with pytest.raises(ValueError):
        store.presign_put_staging(UPLOAD_KEY, size_bytes=size_bytes, expires_seconds=60)


@pytest.mark.parametrize("content_type", ["text/plain\r\nSet-Cookie: a=b", "tëxt/plain", ""])
def test_presign_get_rejects_a_content_type_that_could_inject_headers(store, content_type):
    with pytest.raises(ValueError):
        store.presign_get(HELLO_HASH, expires_seconds=60, content_type=content_type)

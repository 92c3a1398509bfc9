"""The local backend's own promises: signed gateway URLs, on-disk layout, atomic writes."""

import hashlib
import mmap
import os
import tracemalloc
from urllib.parse import parse_qsl, unquote, urlsplit

import pytest

from files_testing import gateway_accepts
from satchel_files.storage import (
    BlobHashMismatch,
    BlobNotFound,
    LocalBlobStore,
    MemoryBlobStore,
    StorageUnavailable,
    canonical_string,
    content_disposition,
    response_headers,
)

PUBLIC_BASE_URL = "http://gateway.test:8080"
URL_SECRET = b"test-url-secret-0123456789abcdef"
MIB = 1 << 20
HELLO = b"hello world"
HELLO_HASH = hashlib.sha256(HELLO).hexdigest()
OTHER_HASH = hashlib.sha256(b"other").hexdigest()
UPLOAD_KEY = "upload_0123456789-abcdef"


def split_url(url):
    parts = urlsplit(url)
    return parts.path, dict(parse_qsl(parts.query, keep_blank_values=True))


def files_under(root):
    return sorted(
        str(path.relative_to(root)) for path in root.rglob("*") if not path.is_dir()
    )


@pytest.fixture
def local_store(tmp_path):
    return LocalBlobStore(tmp_path / "data", public_base_url=PUBLIC_BASE_URL, url_secret=URL_SECRET)


@pytest.fixture(params=["local", "memory"])
def signing_store(request, tmp_path):
    """Backends whose URLs the file service signs and the gateway has verified."""
    if request.param == "local":
        return LocalBlobStore(tmp_path, public_base_url=PUBLIC_BASE_URL, url_secret=URL_SECRET)
    return MemoryBlobStore(url_secret=URL_SECRET)


@pytest.fixture
def get_url(signing_store):
    return signing_store.presign_get(
        HELLO_HASH, expires_seconds=300, filename="report €.pdf", content_type="application/pdf"
    )


# signed URLs


def test_get_url_points_at_the_blob_under_the_public_base_url(local_store):
    url = local_store.presign_get(HELLO_HASH, expires_seconds=300)

    assert url.startswith(f"{PUBLIC_BASE_URL}/blobs/files/{HELLO_HASH[:2]}/{HELLO_HASH}?")
    assert set(split_url(url)[1]) == {"expires", "signature"}


def test_put_url_points_at_the_staging_key_and_carries_the_size(local_store):
    url = local_store.presign_put_staging(UPLOAD_KEY, size_bytes=11, expires_seconds=300)

    path, query = split_url(url)
    assert url.startswith(f"{PUBLIC_BASE_URL}/blobs/staging/{UPLOAD_KEY}?")
    assert query["size_bytes"] == "11"
    assert gateway_accepts(local_store, "PUT", path, query)


def test_a_signed_get_url_verifies(signing_store, get_url):
    path, query = split_url(get_url)

    assert gateway_accepts(signing_store, "GET", path, query)
    assert gateway_accepts(signing_store, "HEAD", path, query)


def test_a_get_url_for_another_blob_path_fails(signing_store, get_url):
    _, query = split_url(get_url)

    other_path = f"/blobs/files/{OTHER_HASH[:2]}/{OTHER_HASH}"

    assert not gateway_accepts(signing_store, "GET", other_path, query)
    assert not gateway_accepts(signing_store, "GET", f"/blobs/staging/{UPLOAD_KEY}", query)


def test_a_get_url_with_a_later_expiry_fails(signing_store, get_url):
    path, query = split_url(get_url)

    later = {**query, "expires": str(int(query["expires"]) + 3600)}

    assert not gateway_accepts(signing_store, "GET", path, later)


def test_a_get_url_with_another_filename_or_content_type_fails(signing_store, get_url):
    path, query = split_url(get_url)

    renamed = {**query, "response-content-disposition": content_disposition("invoice.exe")}
    retyped = {**query, "response-content-type": "text/html"}
    assert not gateway_accepts(signing_store, "GET", path, renamed)
    assert not gateway_accepts(signing_store, "GET", path, retyped)


def test_a_get_url_with_a_param_added_or_removed_fails(signing_store, get_url):
    path, query = split_url(get_url)
    without_type = {k: v for k, v in query.items() if k != "response-content-type"}

    assert not gateway_accepts(signing_store, "GET", path, {**query, "extra": "1"})
    assert not gateway_accepts(signing_store, "GET", path, without_type)


def test_a_get_url_used_with_another_method_fails(signing_store, get_url):
    path, query = split_url(get_url)

    assert not gateway_accepts(signing_store, "PUT", path, query)
    assert not gateway_accepts(signing_store, "DELETE", path, query)


def test_a_put_url_used_for_get_or_another_size_fails(signing_store):
    url = signing_store.presign_put_staging(UPLOAD_KEY, size_bytes=11, expires_seconds=300)
    path, query = split_url(url)

    assert not gateway_accepts(signing_store, "GET", path, query)
    assert not gateway_accepts(signing_store, "PUT", path, {**query, "size_bytes": "999999"})


@pytest.mark.parametrize(
    "signature",
    [None, "", "0" * 64, "zz", "é" * 64, "DEADBEEF"],
    ids=["missing", "empty", "zeros", "short", "non-ascii", "wrong"],
)
def test_a_get_url_with_a_missing_or_garbled_signature_fails(signing_store, get_url, signature):
    path, query = split_url(get_url)
    query.pop("signature")
    if signature is not None:
        query["signature"] = signature

    assert not gateway_accepts(signing_store, "GET", path, query)


def test_an_uppercased_signature_fails(signing_store, get_url):
    path, query = split_url(get_url)

    shouted = {**query, "signature": query["signature"].upper()}

    assert not gateway_accepts(signing_store, "GET", path, shouted)


@pytest.mark.parametrize("expires", [None, "", "soon", "-1", "1e10", "１２３"])
def test_a_get_url_with_a_missing_or_malformed_expiry_fails(signing_store, get_url, expires):
    path, query = split_url(get_url)
    query.pop("expires")
    if expires is not None:
        query["expires"] = expires

    assert not gateway_accepts(signing_store, "GET", path, query)


def test_a_url_signed_with_another_secret_fails(tmp_path, get_url):
    other_secret = b"another-secret-0123456789"
    other = LocalBlobStore(tmp_path, public_base_url=PUBLIC_BASE_URL, url_secret=other_secret)
    path, query = split_url(get_url)

    assert not gateway_accepts(other, "GET", path, query)


def test_a_secret_shorter_than_16_bytes_is_refused(tmp_path):
    with pytest.raises(ValueError):
        LocalBlobStore(tmp_path, public_base_url=PUBLIC_BASE_URL, url_secret=b"short")
    with pytest.raises(ValueError):
        LocalBlobStore(tmp_path, public_base_url=PUBLIC_BASE_URL, url_secret="str, not bytes!!")


def test_canonical_string_is_independent_of_param_order_and_excludes_the_signature():
    a = canonical_string("GET", "/blobs/x", {"expires": "1", "b": "2", "signature": "s"})
    b = canonical_string("get", "/blobs/x", {"b": "2", "expires": "1"})

    assert a == b == "satchel-url-v1\nGET\n/blobs/x\nb=2&expires=1"


def test_canonical_string_escapes_values_so_no_line_can_be_forged():
    forged = canonical_string("GET", "/blobs/x", {"a": "1\nGET"})

    assert forged.count("\n") == 3
    assert canonical_string("GET", "/blobs/x\nPUT", {}).count("\n") == 3


def test_response_headers_come_from_the_signed_params(get_url):
    _, query = split_url(get_url)

    assert response_headers(query) == {
        "Content-Disposition": (
            "attachment; filename=\"report _.pdf\"; filename*=UTF-8''report%20%E2%82%AC.pdf"
        ),
        "Content-Type": "application/pdf",
    }


@pytest.mark.parametrize(
    ("filename", "fallback"),
    [
        ("notes.txt", "notes.txt"),
        ("naïve café.txt", "naive cafe.txt"),
        ('quote"and\\slash.txt', "quote_and_slash.txt"),
        ("crlf\r\nSet-Cookie: x.txt", "crlf__Set-Cookie_ x.txt"),
        ("100%.txt", "100_.txt"),
        ("日本語", "___"),
        ("", "download"),
    ],
)
def test_content_disposition_has_a_safe_ascii_fallback_and_the_exact_utf8_name(filename, fallback):
    header = content_disposition(filename)

    assert header.startswith(f'attachment; filename="{fallback}"; filename*=UTF-8\'\'')
    assert all(32 <= ord(c) < 127 for c in header)
    assert unquote(header.split("''", 1)[1]) == filename


# on-disk layout and atomic writes


def test_blobs_land_at_files_shard_hash_and_nowhere_else(local_store):
    local_store.put(HELLO_HASH, HELLO)

    assert files_under(local_store.data_dir) == [f"files/{HELLO_HASH[:2]}/{HELLO_HASH}"]
    assert (local_store.data_dir / "files" / HELLO_HASH[:2] / HELLO_HASH).read_bytes() == HELLO


def test_promoted_staging_bytes_move_to_the_blob_path_and_leave_nothing_behind(local_store):
    local_store.check()
    (local_store.data_dir / "staging" / UPLOAD_KEY).write_bytes(HELLO)

    local_store.promote_staging(UPLOAD_KEY, HELLO_HASH)
    local_store.delete_staging(UPLOAD_KEY)

    assert files_under(local_store.data_dir) == [f"files/{HELLO_HASH[:2]}/{HELLO_HASH}"]


def test_a_put_to_the_same_url_during_a_promote_never_changes_the_stored_bytes(local_store,
                                                                                monkeypatch):
    """The gateway replaces the staging name (temp file + rename) on every PUT; the bytes
    verified and published are the inode linked when the promote began."""
    from satchel_files.storage import local
    local_store.check()
    staging = local_store.data_dir / "staging" / UPLOAD_KEY
    staging.write_bytes(HELLO)
    real_mapped_file = local._MappedFile

    def map_while_a_put_lands(path):
        replacement = staging.with_name("put.tmp")
        replacement.write_bytes(b"evil bytes, same length?")
        os.replace(replacement, staging)
        return real_mapped_file(path)

    monkeypatch.setattr(local, "_MappedFile", map_while_a_put_lands)
    local_store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    assert local_store.blob_path(HELLO_HASH).read_bytes() == HELLO


def _mapped_from(data_dir) -> list[str]:
    with open("/proc/self/maps") as maps:
        return [line for line in maps if str(data_dir) in line]


def _open_under(data_dir) -> list[str]:
    fds = [os.path.join("/proc/self/fd", fd) for fd in os.listdir("/proc/self/fd")]
    return [target for target in (_readlink(fd) for fd in fds) if str(data_dir) in target]


def _readlink(path):
    try:
        return os.readlink(path)
    except OSError:
        return ""


def test_kept_bytes_are_the_mapped_file_until_released_then_its_pages_are_dropped(local_store,
                                                                                   monkeypatch):
    """Dropping a file's pages while it is mapped does nothing: the advice comes after."""
    local_store.check()
    data = os.urandom(3 * mmap.PAGESIZE + 5)
    (local_store.data_dir / "staging" / UPLOAD_KEY).write_bytes(data)
    advised = []
    real_fadvise = os.posix_fadvise
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: (
        advised.append((advice, _mapped_from(local_store.data_dir))),
        real_fadvise(fd, offset, length, advice))[1])

    kept = local_store.promote_staging(UPLOAD_KEY, hashlib.sha256(data).hexdigest(),
                                       keep_bytes=True)

    assert [bytes(piece) for piece in kept.pieces] == [data]
    assert len(_mapped_from(local_store.data_dir)) == 1 and advised == []
    kept.release()
    assert _mapped_from(local_store.data_dir) == [] and _open_under(local_store.data_dir) == []
    assert advised == [(os.POSIX_FADV_DONTNEED, [])]


def test_a_promote_starts_the_chunks_writeback_before_it_hashes_and_works_without_it(
        local_store, monkeypatch):
    from satchel_files.storage import local
    local_store.check()
    calls = []
    real_sha256, real_fsync = local.hashlib.sha256, os.fsync
    real_sync_file_range = local._sync_file_range
    monkeypatch.setattr(local, "_sync_file_range", lambda fd: calls.append(("writeback", fd)))
    monkeypatch.setattr(local.hashlib, "sha256", lambda data=b"": (
        calls.append(("hash", None)), real_sha256(data))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", fd)), real_fsync(fd))[1])
    (local_store.data_dir / "staging" / UPLOAD_KEY).write_bytes(HELLO)

    local_store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    (_, chunk_fd), _, (_, synced_fd) = calls[:3]
    if real_sync_file_range is not None:  # the real call is accepted by this kernel
        with open(local_store.blob_path(HELLO_HASH), "rb") as blob:
            assert real_sync_file_range(blob.fileno()) == 0
    assert [name for name, _ in calls[:3]] == ["writeback", "hash", "fsync"]
    assert chunk_fd == synced_fd

    monkeypatch.setattr(local, "_sync_file_range", None)  # a kernel without sync_file_range
    (local_store.data_dir / "staging" / UPLOAD_KEY).write_bytes(b"other bytes")
    local_store.promote_staging(UPLOAD_KEY, hashlib.sha256(b"other bytes").hexdigest())
    assert b"".join(local_store.open(hashlib.sha256(b"other bytes").hexdigest())) == b"other bytes"


def test_the_whole_file_digest_hashes_kept_bytes_where_they_are_without_a_copy(local_store):
    from satchel_files.resumable_sha256 import ResumableSha256
    local_store.check()
    data = os.urandom(4 * MIB)
    (local_store.data_dir / "staging" / UPLOAD_KEY).write_bytes(data)
    kept = local_store.promote_staging(UPLOAD_KEY, hashlib.sha256(data).hexdigest(),
                                       keep_bytes=True)
    digest = ResumableSha256()
    tracemalloc.start()
    try:
        for piece in kept.pieces:
            digest.update(piece)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        kept.release()
    assert digest.hexdigest() == hashlib.sha256(data).hexdigest()
    assert peak < MIB


@pytest.mark.parametrize("keep_bytes", [False, True])
def test_a_promote_that_fails_or_keeps_nothing_leaves_nothing_mapped_or_open(local_store,
                                                                            monkeypatch,
                                                                            keep_bytes):
    local_store.check()
    staging = local_store.data_dir / "staging"
    (staging / UPLOAD_KEY).write_bytes(HELLO)
    (staging / "upload_wrong-bytes-0000").write_bytes(b"not hello")
    (staging / "upload_unpublished-0000").write_bytes(HELLO)

    assert local_store.promote_staging(UPLOAD_KEY, HELLO_HASH) is None
    with pytest.raises(BlobHashMismatch):
        local_store.promote_staging("upload_wrong-bytes-0000", HELLO_HASH, keep_bytes=keep_bytes)
    local_store.delete(HELLO_HASH)
    def failing_publish(*args):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local_store, "_publish", failing_publish)
    with pytest.raises(OSError):
        local_store.promote_staging("upload_unpublished-0000", HELLO_HASH, keep_bytes=keep_bytes)

    assert _mapped_from(local_store.data_dir) == [] and _open_under(local_store.data_dir) == []


def test_a_promote_whose_temp_file_cannot_be_removed_leaves_nothing_mapped_or_open(
        local_store, monkeypatch):
    local_store.check()
    (local_store.data_dir / "staging" / UPLOAD_KEY).write_bytes(HELLO)
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if "promote-" in str(path) and os.path.exists(path) and os.stat(path).st_nlink > 1:
            raise PermissionError(13, "Permission denied")  # the cleanup, once it is the blob
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(PermissionError):
        local_store.promote_staging(UPLOAD_KEY, HELLO_HASH, keep_bytes=True)

    assert _mapped_from(local_store.data_dir) == [] and _open_under(local_store.data_dir) == []


def test_a_second_put_leaves_the_existing_file_untouched(local_store):
    local_store.put(HELLO_HASH, HELLO)
    path = local_store.data_dir / "files" / HELLO_HASH[:2] / HELLO_HASH
    before = path.stat()

    local_store.put(HELLO_HASH, HELLO)

    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_write_that_fails_midway_leaves_no_temp_file_and_no_blob(local_store, monkeypatch):
    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)

    with pytest.raises(OSError):
        local_store.put(HELLO_HASH, HELLO)

    assert files_under(local_store.data_dir) == []
    assert not local_store.exists(HELLO_HASH)


def test_a_publish_that_fails_leaves_no_temp_file_and_no_blob(local_store, monkeypatch):
    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "link", failing)
    monkeypatch.setattr(os, "replace", failing)

    with pytest.raises(OSError):
        local_store.put(HELLO_HASH, HELLO)

    assert files_under(local_store.data_dir) == []


def test_put_falls_back_to_rename_on_a_filesystem_without_hard_links(local_store, monkeypatch):
    def no_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)

    local_store.put(HELLO_HASH, HELLO)

    assert files_under(local_store.data_dir) == [f"files/{HELLO_HASH[:2]}/{HELLO_HASH}"]
    assert b"".join(local_store.open(HELLO_HASH)) == HELLO


def test_a_promote_that_fails_midway_leaves_no_temp_file_and_no_blob(local_store, monkeypatch):
    local_store.check()
    (local_store.data_dir / "staging" / UPLOAD_KEY).write_bytes(HELLO)

    def failing(*args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "link", failing)
    monkeypatch.setattr(os, "replace", failing)

    with pytest.raises(OSError):
        local_store.promote_staging(UPLOAD_KEY, HELLO_HASH)

    assert not local_store.exists(HELLO_HASH)
    assert not list((local_store.data_dir / "files" / "tmp").iterdir())


def test_a_directory_in_place_of_a_blob_is_not_a_blob(local_store):
    (local_store.data_dir / "files" / HELLO_HASH[:2] / HELLO_HASH).mkdir(parents=True)

    assert local_store.size(HELLO_HASH) is None
    assert list(local_store.iter_blobs()) == []
    with pytest.raises(BlobNotFound):
        local_store.open(HELLO_HASH)


def test_check_creates_the_directories(local_store):
    local_store.check()

    assert (local_store.data_dir / "files" / "tmp").is_dir()
    assert (local_store.data_dir / "staging").is_dir()
    assert files_under(local_store.data_dir) == []


def test_check_raises_storage_unavailable_when_the_data_dir_is_unusable(tmp_path):
    not_a_dir = tmp_path / "data"
    not_a_dir.write_bytes(b"a file where the data dir should be")
    store = LocalBlobStore(not_a_dir, public_base_url=PUBLIC_BASE_URL, url_secret=URL_SECRET)

    with pytest.raises(StorageUnavailable, match="not writable"):
        store.check()


# --- O_DIRECT writes of page-aligned chunks -------------------------------------------------------

@pytest.mark.parametrize("length", [0, 1, 4095, 4096, 4097, 3 * 4096 + 17])
@pytest.mark.parametrize("aligned", [True, False])
def test_put_stores_every_byte_whether_or_not_the_buffer_allows_o_direct(local_store, length,
                                                                         aligned):
    data = os.urandom(length)
    buffer = mmap.mmap(-1, max(length, 1) + 1)  # page-aligned, as the ingest's buffers are
    offset = 0 if aligned else 1
    buffer[offset:offset + length] = data
    chunk = memoryview(buffer)[offset:offset + length]
    blob_hash = hashlib.sha256(data).hexdigest()
    local_store.put(blob_hash, chunk, verified=True)
    assert local_store.blob_path(blob_hash).read_bytes() == data


def test_direct_io_is_used_for_the_aligned_part_only(monkeypatch, tmp_path):
    from satchel_files.storage import local
    buffer = mmap.mmap(-1, 3 * 4096)
    buffer[:] = os.urandom(3 * 4096)
    assert local._direct_io_length(memoryview(buffer)[:2 * 4096 + 5]) == 2 * 4096
    assert local._direct_io_length(memoryview(buffer)[1:]) == 0       # not aligned
    assert local._direct_io_length(memoryview(bytes(8192))) == 0      # read-only
    assert local._direct_io_length(memoryview(buffer)[:100]) == 0     # under a page


def test_a_filesystem_that_refuses_o_direct_gets_an_ordinary_write(monkeypatch, local_store):
    from satchel_files.storage import local
    real_fcntl = local.fcntl.fcntl

    def refuse(fd, command, *args):
        if command == local.fcntl.F_SETFL and args and args[0] & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_fcntl(fd, command, *args)

    monkeypatch.setattr(local.fcntl, "fcntl", refuse)
    buffer = mmap.mmap(-1, 3 * 4096)
    data = os.urandom(2 * 4096 + 10)
    buffer[:len(data)] = data
    blob_hash = hashlib.sha256(data).hexdigest()
    local_store.put(blob_hash, memoryview(buffer)[:len(data)], verified=True)
    assert local_store.blob_path(blob_hash).read_bytes() == data


def test_a_direct_write_refused_at_write_time_is_redone_buffered(monkeypatch, local_store):
    from satchel_files.storage import local
    real_write, calls = local.os.write, []

    def write(fd, data):
        calls.append(len(data))
        if len(calls) == 1:
            raise OSError(22, "Invalid argument")
        return real_write(fd, data)

    monkeypatch.setattr(local.os, "write", write)
    buffer = mmap.mmap(-1, 2 * 4096)
    data = os.urandom(2 * 4096)
    buffer[:] = data
    blob_hash = hashlib.sha256(data).hexdigest()
    local_store.put(blob_hash, memoryview(buffer), verified=True)
    assert local_store.blob_path(blob_hash).read_bytes() == data
    assert calls[0] == 2 * 4096 and sum(calls[1:]) == 2 * 4096

"""What the file service's tests share besides fixtures (conftest.py has those). A module of
its own, uniquely named: `conftest` is a name every tests/ directory has, so importing from it
depends on which suite pytest collected first."""
import hashlib
from urllib.parse import urlencode

from satchel_files.schemas import encode_change_cursor
from satchel_files.change_cursor import ChangeCursor
from satchel_files.storage.signed_urls import BlobUrlRefused

KID = "test-key"
CHUNK = 64 * 1024  # the smallest chunk size the config allows, so tests see multi-chunk files
GRACE = 3600  # GC_GRACE_SECONDS default (the test app does not set it)


class FakeClock:
    """Unix seconds that only move when a test says so."""

    def __init__(self, start: float = 1_800_000_000.0):
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def sha(data):
    return hashlib.sha256(data).hexdigest()


def code(response):
    """The error code of a JSON error answer."""
    return response.get_json()["error"]["code"]


def declare(data, filename="big.bin", chunk=CHUNK, **extra):
    pieces = [data[i:i + chunk] for i in range(0, len(data), chunk)]
    return {"filename": filename, "size_bytes": len(data), "hash": sha(data),
            "mime_type": "application/octet-stream",
            "chunks": [{"index": i, "hash": sha(p), "size_bytes": len(p)}
                       for i, p in enumerate(pieces)], **extra}


def pieces_of(data):
    return [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]


def legacy_change_cursor(seq):
    """A `c1` change cursor, as issued before the feed had epochs."""
    return encode_change_cursor(ChangeCursor(None, seq))


def blob_refs(db, blob_hash):
    """A blob's ref_count; 0 when it has no document at all."""
    doc = db.blobs.find_one({"_id": blob_hash})
    return 0 if doc is None else doc["ref_count"]


def gateway_accepts(store, method, path, query, content_length=None):
    """Whether the gateway's check of a blob URL (verify_blob_request: what nginx's
    auth_request asks) lets `method path?query` through; a PUT sends its signed size unless
    `content_length` says otherwise."""
    if content_length is None and method.upper() == "PUT":
        content_length = query.get("size_bytes")
    try:
        store.verify_blob_request(method, f"{path}?{urlencode(query)}", content_length)
    except BlobUrlRefused:
        return False
    return True

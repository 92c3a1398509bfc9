"""A chunked upload's running whole-file SHA-256, kept in the upload document between requests.

    digest: {through: n, sha256_state: base64}   SHA-256 of chunks 0..n-1 in order, unfinished
                                                 (resumable_sha256's state)

It advances as chunks are verified, so that completion only hashes what is left (normally
nothing, or the last chunk or two):
- a chunk next in line (n == its index) is hashed into it from the bytes the read that
  checked the chunk's own SHA-256 kept (promote_staging's `keep_bytes`; the local store's are
  mapped, not copied) until the PATCH's thread takes the chunks' results in index order:
  each byte read once, hashed twice;
- verified chunks next in line that were reported out of order, or skipped because the user
  already held them, are read back from the store, up to an allowance per request, by the
  request whose chunk let the run reach them. That request writes its progress in the same
  replace that shows its chunk verified, so whoever sees the chunk verified sees the progress
  too, and two requests seldom read the same chunk.

It is written with the chunk statuses, in uploads._record's compare-and-set replace; a lost race
loses progress, never correctness: every state was computed from bytes whose chunk hash had just
been checked (or from verified blobs), a stored one that does not fit the document (a chunk not
verified, a length that is not the chunks', garbage) is ignored, and a whole-file hash that does
not match is recomputed from the start before the upload fails (uploads._whole_file_hash).
"""
from __future__ import annotations

import base64
import binascii
import logging

from .. import resumable_sha256
from ..repositories.uploads import VERIFIED
from ..resumable_sha256 import ResumableSha256
from ..storage import BlobStore, StorageError

log = logging.getLogger(__name__)

DIGEST_FIELD = "digest"


def feed_chunks(store: BlobStore, hasher, chunk_hashes: list[str]) -> int:
    """Read the chunks back from the store, in order, into `hasher`; the bytes read."""
    size_bytes = 0
    for chunk_hash in chunk_hashes:
        for piece in store.open(chunk_hash):
            hasher.update(piece)
            size_bytes += len(piece)
    return size_bytes


def stored_digest(upload: dict) -> tuple[ResumableSha256, int] | None:
    """The upload's saved (hash, through), or None if there is none that fits it."""
    saved = upload.get(DIGEST_FIELD)
    if not resumable_sha256.AVAILABLE or not isinstance(saved, dict):
        return None
    through, state, chunks = saved.get("through"), saved.get("sha256_state"), upload["chunks"]
    if (not isinstance(through, int) or isinstance(through, bool)
            or not 0 <= through <= len(chunks) or not isinstance(state, str)
            or not _all_verified(chunks[:through])):
        return None
    try:
        hasher = ResumableSha256.from_state(base64.b64decode(state, validate=True))
    except (ValueError, binascii.Error):
        return None
    if hasher.length_bytes != sum(chunk["size_bytes"] for chunk in chunks[:through]):
        return None
    return hasher, through


class RunningDigest:
    """One request's view of an upload's digest: `through` chunks hashed into `hasher`."""

    def __init__(self, hasher: ResumableSha256, through: int, *, allowance_bytes: int):
        self.hasher = hasher
        self.through = through
        self.allowance_bytes = allowance_bytes  # what catch_up may still read back

    @classmethod
    def resume(cls, upload: dict, *, allowance_bytes: int) -> RunningDigest | None:
        """The upload's saved digest or a new one; None without a resumable SHA-256 (then
        completion hashes every chunk)."""
        if not resumable_sha256.AVAILABLE:
            return None
        hasher, through = stored_digest(upload) or (ResumableSha256(), 0)
        return cls(hasher, through, allowance_bytes=allowance_bytes)

    def adopt_further(self, upload: dict) -> None:
        """Take the saved digest instead of ours when another request got further."""
        stored = stored_digest(upload)
        if stored is not None and stored[1] > self.through:
            self.hasher, self.through = stored

    def take(self, index: int, pieces: list) -> None:
        """Hash in chunk `index`'s bytes, read as it was verified, if it is next in line."""
        if self.through == index:
            for piece in pieces:
                self.hasher.update(piece)
            self.through = index + 1

    def catch_up(self, store: BlobStore, chunks: list[dict], index: int) -> None:
        """Read back the verified chunks next in line, if chunk `index` (this request's) is
        what the run waited for: every chunk from `through` up to it is verified (it may
        itself not be yet, to be hashed next by `take`)."""
        if self.through > index + 1 or not _all_verified(chunks[self.through:index]):
            return
        while self.through < len(chunks) and chunks[self.through]["status"] == VERIFIED:
            chunk = chunks[self.through]
            if chunk["size_bytes"] > self.allowance_bytes:
                return
            self.allowance_bytes -= chunk["size_bytes"]
            hasher = self.hasher.copy()
            try:
                size_bytes = feed_chunks(store, hasher, [chunk["hash"]])
            except StorageError:
                log.warning("could not read chunk %s back; completion will", chunk["hash"],
                            exc_info=True)
                return
            if size_bytes != chunk["size_bytes"]:
                log.error("blob %s has %d bytes, not %d", chunk["hash"], size_bytes,
                          chunk["size_bytes"])
                return
            self.hasher, self.through = hasher, self.through + 1

    def fits(self, chunks: list[dict]) -> bool:
        """Whether a document with `chunks` may carry this digest: all it hashed is verified
        there (not so if a racer failed this request's chunk before it could record it)."""
        return _all_verified(chunks[:self.through])

    def document(self) -> dict:
        return {"through": self.through,
                "sha256_state": base64.b64encode(self.hasher.state()).decode("ascii")}


def _all_verified(chunks: list[dict]) -> bool:
    return all(chunk["status"] == VERIFIED for chunk in chunks)

"""The test file and streaming request bodies.

The payload is os.urandom output written 1 MiB at a time (~450 MiB/s here), so no two chunks of any
size are alike and dedup cannot make an upload cheap. Request bodies are iterables with a length:
requests then sends an explicit Content-Length and urllib3 passes each piece to sendall() as is;
the file is read piece by piece, never held in memory.
"""
from __future__ import annotations

import hashlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .registry import BenchError

MIB = 1 << 20
PIECE = MIB  # client-side read/send size


@dataclass(frozen=True)
class Payload:
    path: Path
    size: int
    sha256: str

    @property
    def mib(self) -> float:
        return self.size / MIB


def generate(path: Path, size: int) -> Payload:
    digest = hashlib.sha256()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        remaining = size
        while remaining > 0:  # bounded: remaining shrinks by >= 1 each pass
            block = os.urandom(min(PIECE, remaining))
            digest.update(block)
            handle.write(block)
            remaining -= len(block)
    return Payload(path, size, digest.hexdigest())


class StreamingBody:
    """prefix bytes + `size` bytes of a file from `offset` (read in PIECE pieces) + suffix bytes,
    with a known length."""

    def __init__(self, path: Path, size: int, prefix: bytes = b"", suffix: bytes = b"",
                 piece: int = PIECE, offset: int = 0):
        self.path, self.size, self.prefix, self.suffix, self.piece = path, size, prefix, suffix, piece
        self.offset = offset
        self.sent = 0

    def __len__(self) -> int:
        return len(self.prefix) + self.size + len(self.suffix)

    def __iter__(self) -> Iterator[bytes]:
        if self.prefix:
            self.sent += len(self.prefix)
            yield self.prefix
        remaining = self.size
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            while remaining > 0:
                block = handle.read(min(self.piece, remaining))
                if not block:
                    raise BenchError(f"{self.path} is shorter than {self.offset + self.size} bytes")
                remaining -= len(block)
                self.sent += len(block)
                yield block
        if self.suffix:
            self.sent += len(self.suffix)
            yield self.suffix


def multipart_body(payload: Payload, field: str = "files",
                   filename: str | None = None) -> tuple[StreamingBody, str]:
    """One-file multipart/form-data body, streamed from disk; returns (body, Content-Type)."""
    boundary = f"satchel-bench-{secrets.token_hex(16)}"
    filename = filename or payload.path.name
    prefix = (f"--{boundary}\r\n"
              f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n").encode()
    suffix = f"\r\n--{boundary}--\r\n".encode()
    return (StreamingBody(payload.path, payload.size, prefix, suffix),
            f"multipart/form-data; boundary={boundary}")


def file_sha256(path: Path, piece: int = 8 * MIB) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    buffer = bytearray(piece)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        while True:
            n = handle.readinto(buffer)
            if not n:
                break
            digest.update(view[:n])
            size += n
    return digest.hexdigest(), size

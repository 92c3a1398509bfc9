"""The request body as a `readinto(view) -> n` source, read straight from gunicorn's socket
when it can be.

Under gunicorn, `wsgi.input` hands out `bytes` that went through several in-memory buffers on
the way (its read-ahead buffer, `Body`'s buffer, the slices of both): about five copies of
every byte before the application sees it, which was the largest cost of a 1 GiB upload after
hashing. `request_body()` reads a plain Content-Length body with `recv_into` into the caller's
buffer instead: one copy, kernel to the buffer that is hashed and stored.

It does so only when the request is exactly what that needs (gunicorn's `Body` over a
`LengthReader` over the connection's `SocketUnreader`, nothing read yet) and otherwise reads
`wsgi.input` (the test client, chunked transfer encoding, HTTP/2, another WSGI server). It
keeps gunicorn's own accounting true: bytes read ahead past this body are handed back, and
`LengthReader.length` counts down, so after the request gunicorn drains what is left or
reuses the connection exactly as if it had read the body itself.
"""
from __future__ import annotations

from typing import Protocol

from gunicorn.http.body import Body, LengthReader
from gunicorn.http.unreader import SocketUnreader

from satchel_shared.errors import ApiError


class BodySource(Protocol):
    def readinto(self, view: memoryview) -> int:
        """Fill the start of `view`; the number of bytes, 0 only at the end of the body."""


class StreamBody:
    """Any file-like body (`wsgi.input`, a BytesIO in tests)."""

    def __init__(self, stream):
        self._stream = stream

    def readinto(self, view: memoryview) -> int:
        data = self._stream.read(len(view))
        view[:len(data)] = data
        return len(data)


class SocketBody:
    """A Content-Length body on gunicorn's connection: what gunicorn read ahead with the headers,
    then `recv_into` for the rest, never past the body's last byte. Holds nothing itself, so a
    request that stops reading early leaves gunicorn exactly what it has not taken."""

    def __init__(self, sock, unreader, reader):
        self._sock = sock
        self._unreader = unreader
        self._reader = reader  # gunicorn's LengthReader: .length is what the body still holds

    def readinto(self, view: memoryview) -> int:
        want = min(len(view), self._reader.length)
        if want <= 0:
            return 0
        read_ahead = self._unreader.take_buffered()
        if read_ahead:
            count = min(want, len(read_ahead))
            view[:count] = read_ahead[:count]
            if len(read_ahead) > count:  # the rest of the body, or a pipelined next request
                self._unreader.unread(read_ahead[count:])
        else:
            try:
                count = self._sock.recv_into(view, want)
            except OSError as exc:  # the client (or the gateway) went away mid-body
                raise ApiError(400, "incomplete_body",
                               f"The request body could not be read to its end: {exc}.") from None
            if count == 0:
                return 0
        self._reader.length -= count
        return count


def request_body(environ: dict) -> BodySource:
    socket_body = _gunicorn_socket_body(environ)
    return socket_body if socket_body is not None else StreamBody(environ["wsgi.input"])


def _gunicorn_socket_body(environ: dict) -> SocketBody | None:
    sock, body = environ.get("gunicorn.socket"), environ.get("wsgi.input")
    if sock is None or not isinstance(body, Body) or not isinstance(body.reader, LengthReader):
        return None
    unreader = body.reader.unreader
    if not isinstance(unreader, SocketUnreader) or unreader.sock is not sock:
        return None
    if sock.gettimeout() == 0.0:  # non-blocking: recv_into could fail for want of data
        return None
    if body.buf.tell() != 0:  # someone read from wsgi.input already
        return None
    return SocketBody(sock, unreader, body.reader)

"""Reading the request body from gunicorn's socket, with gunicorn's own reader classes."""
import io
import os
import socket
import threading

import pytest
from gunicorn.http.body import Body, ChunkedReader, LengthReader
from gunicorn.http.unreader import SocketUnreader

from satchel_files.api.body import SocketBody, StreamBody, request_body
from satchel_shared.errors import ApiError

NEXT_REQUEST = b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.fixture
def connection():
    """(server socket, send(bytes)): a loopback TCP pair, as gunicorn gets from nginx."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    server, _ = listener.accept()
    listener.close()
    senders = []

    def send(data):
        sender = threading.Thread(target=client.sendall, args=(data,))
        sender.start()
        senders.append(sender)

    yield server, send
    for sender in senders:
        sender.join()
    client.close()
    server.close()


def gunicorn_environ(server, body_length, read_ahead=b""):
    """What gunicorn's worker hands the app: Body(LengthReader(SocketUnreader)), with the
    bytes its header parsing read past the headers pushed back into the unreader."""
    unreader = SocketUnreader(server)
    if read_ahead:
        unreader.unread(read_ahead)
    body = Body(LengthReader(unreader, body_length))
    return {"gunicorn.socket": server, "wsgi.input": body}, unreader, body


def read_all(source, step):
    out = bytearray()
    view = memoryview(bytearray(step))
    while count := source.readinto(view):
        out += view[:count]
    return bytes(out)


@pytest.mark.parametrize("ahead", [0, 10, 5000])
def test_the_whole_body_comes_off_the_socket_and_the_next_request_is_left(connection, ahead):
    server, send = connection
    payload = os.urandom(3_000_000)
    environ, unreader, body = gunicorn_environ(server, len(payload), payload[:ahead])
    send(payload[ahead:] + NEXT_REQUEST)
    source = request_body(environ)
    assert isinstance(source, SocketBody)
    assert read_all(source, 1 << 20) == payload
    assert body.read() == b""  # gunicorn sees the body as read to its end
    assert unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST


def test_read_ahead_past_the_body_is_given_back_to_gunicorn(connection):
    server, _ = connection
    payload = b"short body"
    environ, unreader, body = gunicorn_environ(server, len(payload), payload + NEXT_REQUEST)
    assert read_all(request_body(environ), 4) == payload
    assert unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST


def test_stopping_early_leaves_gunicorn_the_rest_to_drain(connection):
    server, send = connection
    payload = os.urandom(200_000)
    environ, unreader, body = gunicorn_environ(server, len(payload), payload[:100])
    send(payload[100:] + NEXT_REQUEST)
    source = request_body(environ)
    view = memoryview(bytearray(1000))
    first = source.readinto(view[:30])  # less than gunicorn had read ahead
    assert bytes(view[:first]) == payload[:first]
    rest = body.read()  # what gunicorn does before reusing the connection
    assert payload[:first] + rest == payload
    assert unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST


def test_a_connection_closed_mid_body_ends_the_body_short(connection):
    server, send = connection
    environ, _, _ = gunicorn_environ(server, 1000)
    send(b"x" * 10)
    source = request_body(environ)
    view = memoryview(bytearray(1000))
    assert source.readinto(view) == 10
    server.shutdown(socket.SHUT_RD)
    assert source.readinto(view) == 0


def test_a_reset_connection_is_a_400(connection):
    server, _ = connection
    environ, _, _ = gunicorn_environ(server, 1000)
    server.close()
    with pytest.raises(ApiError) as raised:
        request_body(environ).readinto(memoryview(bytearray(10)))
    assert raised.value.status == 400 and raised.value.code == "incomplete_body"


def test_anything_else_is_read_through_wsgi_input(connection):
    server, _ = connection
    assert isinstance(request_body({"wsgi.input": io.BytesIO(b"abc")}), StreamBody)
    chunked = {"gunicorn.socket": server,
               "wsgi.input": Body(ChunkedReader(None, SocketUnreader(server)))}
    assert isinstance(request_body(chunked), StreamBody)
    environ, _, body = gunicorn_environ(server, 10, b"0123456789")
    body.read(3)  # someone read from wsgi.input already: its buffer holds the rest
    assert isinstance(request_body(environ), StreamBody)
    server.setblocking(False)
    environ, _, _ = gunicorn_environ(server, 10)
    assert isinstance(request_body(environ), StreamBody)


def test_stream_body_reads_a_file_like_object():
    assert read_all(StreamBody(io.BytesIO(b"x" * 10_000)), 3000) == b"x" * 10_000


def test_a_request_answered_before_reading_leaves_the_whole_body_to_gunicorn(connection):
    server, send = connection
    payload = os.urandom(5000)
    environ, unreader, body = gunicorn_environ(server, len(payload), payload[:3000])
    send(payload[3000:] + NEXT_REQUEST)
    request_body(environ)  # made, then the request is refused (404, 403) without reading
    assert body.read() == payload
    assert unreader.read(len(NEXT_REQUEST)) == NEXT_REQUEST

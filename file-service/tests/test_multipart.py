"""The streaming multipart parser, on its own: every way a body can be cut into reads."""
import io
import os
import random

import pytest
from werkzeug.sansio.multipart import Data, Epilogue, Field, File, MultipartDecoder, NEED_DATA

from satchel_files.api.body import StreamBody
from satchel_files.multipart import (MAX_FIELD_BYTES, MAX_HEADER_BYTES, MAX_PARTS, FieldPart,
                                     iter_parts)
from satchel_shared.errors import ApiError

BOUNDARY = "b0und4ry"
CONTENT_TYPE = f"multipart/form-data; boundary={BOUNDARY}"


class Trickle:
    """A body source that hands out at most `step` bytes per read (or random amounts)."""

    def __init__(self, data: bytes, step: int | None = None, seed: int = 0):
        self._stream = io.BytesIO(data)
        self._step = step
        self._rng = random.Random(seed)
        self.reads = 0

    def readinto(self, view):
        self.reads += 1
        size = self._step or self._rng.randint(1, 4096)
        data = self._stream.read(min(size, len(view)))
        view[:len(data)] = data
        return len(data)


def part(name, data=b"", filename=None, content_type=None, boundary=BOUNDARY):
    disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
    head = f"--{boundary}\r\nContent-Disposition: {disposition}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    return head.encode() + b"\r\n" + data + b"\r\n"


def body(*parts, boundary=BOUNDARY, preamble=b"", epilogue=b""):
    return preamble + b"".join(parts) + f"--{boundary}--\r\n".encode() + epilogue


def parse(data, source=None, *, want=None, content_type=CONTENT_TYPE):
    """[(kind, name, filename, content_type, bytes)] read through read_into(want)."""
    out = []
    for item in iter_parts(source or StreamBody(io.BytesIO(data)), content_type):
        if isinstance(item, FieldPart):
            out.append(("field", item.name, None, None, item.value.encode()))
            continue
        step = want or 1000
        buffer = bytearray(step + item.lookahead)
        received = bytearray()
        while True:
            count = item.read_into(buffer, step)
            received += buffer[:count]
            if count < step:
                break
        out.append(("file", item.name, item.filename, item.content_type, bytes(received)))
    return out


def werkzeug_parse(data):
    decoder = MultipartDecoder(BOUNDARY.encode(), max_form_memory_size=None)
    decoder.receive_data(data)
    decoder.receive_data(None)
    out, current = [], None
    while (event := decoder.next_event()) is not NEED_DATA:
        if isinstance(event, Epilogue):
            break
        if isinstance(event, File):
            current = ["file", event.name, event.filename, event.headers.get("Content-Type"), b""]
        elif isinstance(event, Field):
            current = ["field", event.name, None, None, b""]
        elif isinstance(event, Data):
            current[4] += event.data
            if not event.more_data:
                out.append(tuple(current))
    return out


def test_files_and_fields_come_out_in_order_with_their_bytes():
    data = body(part("files", b"hello", "a.txt", "text/plain"), part("note", b"hi there"),
                part("files", os.urandom(5000), "b.bin"))
    parsed = parse(data)
    assert [p[:4] for p in parsed] == [("file", "files", "a.txt", "text/plain"),
                                       ("field", "note", None, None),
                                       ("file", "files", "b.bin", None)]
    assert parsed == werkzeug_parse(data)


@pytest.mark.parametrize("seed", range(40))
def test_random_bodies_cut_into_random_reads_parse_like_werkzeug(seed):
    rng = random.Random(seed)
    near_miss = f"\r\n--{BOUNDARY}"[:rng.randint(1, len(BOUNDARY) + 3)].encode()
    parts = []
    for index in range(rng.randint(1, 5)):
        content = bytearray(rng.randbytes(rng.choice([0, 1, 2, 63, 64, 65, 999, 4096, 20000])))
        for _ in range(rng.randint(0, 3)):  # the boundary's own prefixes inside the content
            at = rng.randint(0, len(content))
            content[at:at] = near_miss
        # A prefix followed by the right bytes would be the delimiter itself: not content.
        content = content.replace(f"\r\n--{BOUNDARY}".encode(), b"\r\n-")
        if rng.random() < 0.3:
            parts.append(part(f"f{index}", bytes(content.hex()[:50], "ascii")))
        else:
            parts.append(part("files", bytes(content), f"{index}.bin"))
    data = body(*parts, preamble=rng.choice([b"", b"ignored preamble\r\n"]),
                epilogue=rng.choice([b"", b"ignored epilogue"]))
    expected = werkzeug_parse(data)
    want = rng.choice([1, 7, 64, 1000, 1 << 16])
    assert parse(data, Trickle(data, seed=seed), want=want) == expected
    assert parse(data, Trickle(data, step=1), want=want) == expected


@pytest.mark.parametrize("split", range(0, 40))
def test_a_delimiter_cut_at_any_byte_by_the_reads_or_by_want_is_still_found(split):
    content = b"x" * 30
    data = body(part("files", content, "a.bin"))
    start = data.index(content)
    parsed = parse(data, Trickle(data[:start + split] + data[start + split:], step=split + 1),
                   want=max(1, split))
    assert parsed[0][4] == content


def test_a_file_exactly_want_bytes_long_ends_with_an_empty_read():
    data = body(part("files", b"a" * 64, "a.bin"))
    item = next(iter_parts(StreamBody(io.BytesIO(data)), CONTENT_TYPE))
    buffer = bytearray(64 + item.lookahead)
    assert item.read_into(buffer, 64) == 64 and bytes(buffer[:64]) == b"a" * 64
    assert item.read_into(buffer, 64) == 0


def test_reads_go_no_further_than_the_lookahead_past_want():
    data = body(part("files", os.urandom(100_000), "a.bin"))
    item = next(iter_parts(StreamBody(io.BytesIO(data)), CONTENT_TYPE))
    with pytest.raises(ValueError):
        item.read_into(bytearray(1000), 1000)  # no room to look past `want`


def test_transport_padding_after_a_boundary_is_allowed():
    data = part("files", b"abc", "a.bin").replace(f"--{BOUNDARY}\r\n".encode(),
                                                  f"--{BOUNDARY} \t \r\n".encode())
    assert parse(data + f"--{BOUNDARY}--".encode())[0][4] == b"abc"


def test_an_empty_part_may_share_the_line_break_before_its_delimiter():
    data = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename=\"e.txt\"\r\n\r\n--{BOUNDARY}--\r\n").encode()  # werkzeug's test client
    assert parse(data) == [("file", "files", "e.txt", None, b"")]


def test_a_part_left_unread_is_skipped():
    data = body(part("files", os.urandom(300_000), "a.bin"), part("files", b"second", "b.bin"))
    items = iter_parts(StreamBody(io.BytesIO(data)), CONTENT_TYPE)
    first = next(items)
    second = next(items)
    buffer = bytearray(100 + second.lookahead)
    assert second.filename == "b.bin" and bytes(buffer[:second.read_into(buffer, 100)]) == b"second"
    with pytest.raises(RuntimeError):
        first.read_into(bytearray(2000), 1000)


def test_windows_paths_in_filenames_keep_their_backslashes():
    data = body(part("files", b"x", "C:\\dir\\a.txt"))
    assert parse(data)[0][2] == "C:\\dir\\a.txt"


def test_rfc5987_filenames_are_decoded():
    data = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"files\"; "
            f"filename*=UTF-8''%C3%A9t%C3%A9.txt\r\n\r\nx\r\n--{BOUNDARY}--\r\n").encode()
    assert parse(data)[0][2] == "été.txt"


@pytest.mark.parametrize("data, detail", [
    (b"no boundary anywhere", "does not occur"),
    (part("files", b"abc", "a.bin"), "ended inside a part"),  # no closing delimiter
    (part("files", b"abc", "a.bin")[:40], "ended inside a part's headers"),
    (f"--{BOUNDARY}".encode(), "ended inside a boundary"),
    (f"--{BOUNDARY}xx\r\n".encode(), "not followed by a line break"),
    (f"--{BOUNDARY}\r\nX-Other: 1\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode(), "Content-Disposition"),
    (f"--{BOUNDARY}\r\nno colon here\r\n\r\nabc\r\n--{BOUNDARY}--\r\n".encode(), "header line"),
    (f"--{BOUNDARY}\r\nContent-Disposition: \xff\r\n\r\na\r\n--{BOUNDARY}--\r\n".encode("latin-1"),
     "not UTF-8"),
])
def test_malformed_bodies_are_400s_that_say_why(data, detail):
    with pytest.raises(ApiError) as raised:
        parse(data)
    assert raised.value.status == 400 and raised.value.code == "invalid_multipart"
    assert detail in raised.value.message


@pytest.mark.parametrize("content_type", [None, "text/plain", "multipart/form-data",
                                          "multipart/form-data; boundary=" + "x" * 201])
def test_a_content_type_without_a_usable_boundary_is_a_400(content_type):
    with pytest.raises(ApiError) as raised:
        parse(body(part("files", b"a", "a.bin")), content_type=content_type)
    assert raised.value.status == 400


def test_oversized_headers_fields_and_part_counts_are_413s():
    huge_header = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"f\"\r\nX-Pad: "
                   + "p" * MAX_HEADER_BYTES + f"\r\n\r\nv\r\n--{BOUNDARY}--\r\n").encode()
    big_field = body(part("note", b"v" * (MAX_FIELD_BYTES + 1)))
    many = body(*[part(f"n{i}", b"v") for i in range(MAX_PARTS + 1)])
    for data in (huge_header, big_field, many):
        with pytest.raises(ApiError) as raised:
            parse(data)
        assert raised.value.status == 413


def test_a_field_that_is_not_utf8_is_a_400():
    with pytest.raises(ApiError) as raised:
        parse(body(part("note", b"\xff\xfe")))
    assert raised.value.status == 400 and "not UTF-8" in raised.value.message


def test_fields_just_under_the_limit_are_read_whole():
    value = b"v" * MAX_FIELD_BYTES
    assert parse(body(part("note", value))) == [("field", "note", None, None, value)]

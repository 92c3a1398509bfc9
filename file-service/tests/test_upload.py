import io
import os

import pytest

from files_testing import CHUNK, code, sha

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + os.urandom(200)
ELF = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 200


def test_upload_returns_201_with_the_seed_fields(upload):
    response = upload("alice", ("hello.txt", b"hello world", "text/plain; charset=utf-8"))

    assert response.status_code == 201
    [item] = response.get_json()
    assert set(item) == {"filename", "file_object_id", "user_file_id", "hash", "size_bytes",
                         "mime_type"}
    assert item["filename"] == "hello.txt"
    assert item["hash"] == sha(b"hello world")
    assert item["size_bytes"] == 11
    assert item["mime_type"] == "text/plain"


def test_several_files_in_one_request_are_all_stored(upload, client, token_for):
    response = upload("alice", ("a.txt", b"aaa"), ("b.png", PNG, "image/png"))

    assert response.status_code == 201
    assert [item["filename"] for item in response.get_json()] == ["a.txt", "b.png"]
    assert response.get_json()[1]["mime_type"] == "image/png"
    assert len(client.get("/api/v1/files", headers=token_for("alice")).get_json()) == 2


def test_second_upload_of_same_bytes_shares_the_file_object_and_blobs(upload, db, store):
    data = os.urandom(CHUNK * 2 + 10)
    first = upload("alice", ("one.bin", data)).get_json()[0]
    blobs_before = sorted(info.hash for info in store.iter_blobs())

    second = upload("bob", ("two.bin", data)).get_json()[0]

    assert second["file_object_id"] == first["file_object_id"]
    assert second["user_file_id"] != first["user_file_id"]
    assert db.file_objects.find_one({"_id": first["file_object_id"]})["ref_count"] == 2
    assert sorted(info.hash for info in store.iter_blobs()) == blobs_before
    assert [doc["ref_count"] for doc in db.blobs.find()] == [1, 1, 1]
    assert db.ref_intents.count_documents({}) == 0


def test_a_large_file_is_cut_into_server_sized_chunks(upload, db, store):
    data = os.urandom(CHUNK * 3 + 1)
    item = upload("alice", ("big.bin", data)).get_json()[0]

    file_object = db.file_objects.find_one({"_id": item["file_object_id"]})
    expected = [sha(data[i:i + CHUNK]) for i in range(0, len(data), CHUNK)]
    assert file_object["chunks"] == expected
    assert file_object["chunk_size"] == CHUNK
    assert all(store.exists(h) for h in expected)


def test_repeated_chunks_inside_one_file_are_counted_with_multiplicity(upload, db, maintenance):
    block = os.urandom(CHUNK)
    upload("alice", ("rep.bin", block * 3))

    [blob] = list(db.blobs.find())
    assert blob["ref_count"] == 3
    assert maintenance.fsck().is_clean


def test_an_empty_file_is_a_file(upload, client, token_for):
    item = upload("alice", ("empty.txt", b"", "text/plain")).get_json()[0]

    assert item["size_bytes"] == 0 and item["hash"] == sha(b"")
    content = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=token_for("alice"))
    assert content.status_code == 200 and content.data == b""


@pytest.mark.parametrize("name, expected", [
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\me\\report.pdf", "report.pdf"),
    ("e\u0301t\u00e9.txt", "\u00e9t\u00e9.txt"),
    ("bad\x00\x1fname\u202e.txt", "badname.txt"),
])
def test_filenames_are_cleaned_for_display(upload, name, expected):
    response = upload("alice", (name, b"x"))
    assert response.status_code == 201
    assert response.get_json()[0]["filename"] == expected


def test_long_filenames_are_cut_to_255_utf8_bytes_keeping_the_extension(upload):
    name = "é" * 300 + ".txt"
    filename = upload("alice", (name, b"x")).get_json()[0]["filename"]

    assert len(filename.encode("utf-8")) <= 255
    assert filename.endswith(".txt") and filename.startswith("éé")


@pytest.mark.parametrize("name", ["/", "..", "a/\x01"])
def test_a_filename_that_cleans_to_nothing_is_a_400(upload, db, name):
    response = upload("alice", (name, b"x"))
    assert response.status_code == 400 and code(response) == "invalid_filename"
    assert db.user_files.count_documents({}) == 0


def test_no_file_is_a_400(client, token_for):
    response = client.post("/api/v1/files/upload", data={}, content_type="multipart/form-data",
                           headers=token_for("alice"))
    assert response.status_code == 400 and code(response) == "no_file"


def test_an_empty_files_field_is_a_400(client, token_for):
    response = client.post("/api/v1/files/upload",
                           data={"files": (io.BytesIO(b""), "")},
                           content_type="multipart/form-data", headers=token_for("alice"))
    assert response.status_code == 400 and code(response) == "empty_file_field"


def test_a_wrong_field_name_is_a_400(upload):
    response = upload("alice", ("a.txt", b"x"), field="file")
    assert response.status_code == 400 and code(response) == "unexpected_field"


@pytest.mark.parametrize("content_type, body", [
    ("application/json", b'{"files": []}'),
    ("multipart/form-data", b"--x\r\n"),  # no boundary parameter
    ("multipart/form-data; boundary=xyz", b"garbage without any boundary"),
    ("multipart/form-data; boundary=xyz",
     b'--xyz\r\nContent-Disposition: form-data; name="files"; filename="a"\r\n\r\nabc'),
    ("multipart/form-data; boundary=xyz", b'--xyz\r\nX-No-Disposition: 1\r\n\r\nabc\r\n--xyz--\r\n'),
])
def test_bad_bodies_are_400s_and_leave_nothing(client, token_for, db, store, content_type, body):
    response = client.post("/api/v1/files/upload", data=body, content_type=content_type,
                           headers=token_for("alice"))
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] in ("invalid_multipart", "no_file")
    assert db.user_files.count_documents({}) == 0
    assert all(doc["ref_count"] == 0 for doc in db.blobs.find())
    assert db.ref_intents.count_documents({}) == 0


def test_upload_requires_a_token(client):
    response = client.post("/api/v1/files/upload", data={"files": (io.BytesIO(b"x"), "a")},
                           content_type="multipart/form-data")
    assert response.status_code == 401


@pytest.mark.parametrize("declared, name, data", [
    ("image/png", "pic.png", b"<!DOCTYPE html><html><script>alert(1)</script></html>"),
    ("image/png", "pic.png", ELF),
    ("application/octet-stream", "pic.jpg", b"MZ\x90\x00" + b"\x00" * 100),
    ("image/gif", "x.gif", b"#!/bin/sh\nrm -rf /\n"),
    ("text/plain", "notes.txt", b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>"),
])
def test_content_that_contradicts_a_harmless_claim_is_a_400(upload, db, declared, name, data):
    response = upload("alice", (name, data, declared))

    assert response.status_code == 400 and code(response) == "content_type_mismatch"
    assert db.user_files.count_documents({}) == 0 and db.file_objects.count_documents({}) == 0
    assert all(doc["ref_count"] == 0 for doc in db.blobs.find())


@pytest.mark.parametrize("declared, name, data, expected", [
    ("application/octet-stream", "pic.png", PNG, "image/png"),
    ("application/octet-stream", "noext", PNG, "image/png"),
    ("image/jpeg", "pic.jpg", PNG, "image/png"),  # mislabelled but harmless: the bytes win
    ("text/csv; charset=utf-8", "t.csv", b"a,b\n1,2\n", "text/csv"),
    ("Text/Plain; Charset=UTF-8", "t.txt", "héllo".encode(), "text/plain"),
    ("application/octet-stream", "page.html", b"<html><body>hi</body></html>", "text/html"),
    ("application/octet-stream", "tool", ELF, "application/x-executable"),
    ("application/x-custom-thing", "data.custom", b"\x00\x01\x02binary", "application/x-custom-thing"),
    ("application/octet-stream", "data.bin", b"\x00\x01\x02binary", "application/octet-stream"),
])
def test_mime_type_is_detected_from_the_content(upload, declared, name, data, expected):
    response = upload("alice", (name, data, declared))
    assert response.status_code == 201, response.get_json()
    assert response.get_json()[0]["mime_type"] == expected


def test_a_multi_file_request_with_one_bad_file_stores_nothing(upload, db, client, token_for):
    response = upload("alice", ("good.txt", b"fine"), ("evil.png", ELF, "image/png"))

    assert response.status_code == 400
    assert client.get("/api/v1/files", headers=token_for("alice")).get_json() == []
    assert db.file_objects.count_documents({}) == 0
    assert [doc["ref_count"] for doc in db.blobs.find()] == [0]  # good.txt's chunk, for gc
    assert db.ref_intents.count_documents({}) == 0



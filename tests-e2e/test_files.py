"""The files API through the gateway: uploads, dedup, downloads, replace, delete, isolation."""
import os
import re
import threading
from urllib.parse import quote

import pytest
import requests

from satchel_e2e import CHUNK_SIZE, MAX_UPLOAD, USER_QUOTA, sha256, upload



def test_config_announces_the_chunk_size_without_auth(api):
    config = api.get("/api/v1/config").json()
    assert config["chunk_size_bytes"] == CHUNK_SIZE
    assert config["max_upload_bytes"] == MAX_UPLOAD


def test_upload_returns_seed_fields_and_the_true_hash(api, user):
    data = os.urandom(5000)
    response = upload(api, user["headers"], ("notes.bin", data))
    assert response.status_code == 201, response.text
    [entry] = response.json()
    assert entry["filename"] == "notes.bin"
    assert entry["hash"] == sha256(data)
    assert entry["size_bytes"] == 5000
    assert set(entry) >= {"file_object_id", "user_file_id", "mime_type"}


def test_several_files_in_one_request(api, user):
    response = upload(api, user["headers"], ("a.txt", b"alpha\n", "text/plain"),
                      ("b.txt", b"beta\n", "text/plain; charset=utf-8"))
    assert response.status_code == 201
    assert [e["filename"] for e in response.json()] == ["a.txt", "b.txt"]
    assert all(e["mime_type"] == "text/plain" for e in response.json())


def test_same_bytes_from_two_users_share_one_file_object(api, user, new_user, login):
    data = os.urandom(3 * CHUNK_SIZE + 17)  # multi-chunk
    first = upload(api, user["headers"], ("x.bin", data)).json()[0]
    email, _ = new_user()
    other = {"Authorization": f"Bearer {login(email)['token']}"}
    second = upload(api, other, ("y.bin", data)).json()[0]
    assert second["file_object_id"] == first["file_object_id"]
    assert second["user_file_id"] != first["user_file_id"]
    [listed] = [f for f in api.get("/api/v1/files", headers=other).json()
                if f["user_file_id"] == second["user_file_id"]]
    assert listed["ref_count"] == 2
    assert listed["storage_saved_bytes"] == len(data)
    assert re.match(r"^\d{4}-\d\d-\d\dT.*[+-]\d\d:\d\d$", listed["uploaded_at"])


def test_list_is_newest_first_and_paginated_with_a_link_header(api, user):
    names = [f"page-{i}.txt" for i in range(5)]
    for name in names:
        assert upload(api, user["headers"], (name, name.encode(), "text/plain")).status_code == 201
    seen, path = [], "/api/v1/files?limit=2"
    while path:
        response = api.get(path, headers=user["headers"])
        assert response.status_code == 200
        assert len(response.json()) <= 2
        seen += [f["filename"] for f in response.json()]
        link = response.headers.get("Link")
        path = re.search(r"<[^>]*?(/api/v1/files\?[^>]*)>;\s*rel=\"next\"", link).group(1) if link else None
    assert seen == list(reversed(names))


def test_bad_cursor_is_a_400(api, user):
    assert api.get("/api/v1/files?cursor=garbage!", headers=user["headers"]).status_code == 400


def test_content_round_trip_with_download_headers(api, user):
    data = os.urandom(2 * CHUNK_SIZE + 5)
    entry = upload(api, user["headers"], ("résumé final.pdf", data, "application/octet-stream")).json()[0]
    response = api.get(f"/api/v1/files/{entry['user_file_id']}/content", headers=user["headers"])
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["ETag"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment")
    assert "filename*=UTF-8''" + quote("résumé final.pdf") in disposition


@pytest.mark.parametrize("size", [1000, 3 * CHUNK_SIZE + 100])  # single chunk (nginx), multi-chunk
def test_ranges(api, user, size):
    data = os.urandom(size)
    entry = upload(api, user["headers"], ("r.bin", data)).json()[0]
    path = f"/api/v1/files/{entry['user_file_id']}/content"
    start, end = size // 2 - 10, size // 2 + 10  # straddles a chunk boundary when multi-chunk
    if size > CHUNK_SIZE:
        start, end = CHUNK_SIZE - 10, CHUNK_SIZE + 10
    partial = api.get(path, headers={**user["headers"], "Range": f"bytes={start}-{end}"})
    assert partial.status_code == 206
    assert partial.content == data[start:end + 1]
    assert partial.headers["Content-Range"] == f"bytes {start}-{end}/{size}"
    suffix = api.get(path, headers={**user["headers"], "Range": "bytes=-7"})
    assert suffix.status_code == 206 and suffix.content == data[-7:]
    beyond = api.get(path, headers={**user["headers"], "Range": f"bytes={size + 10}-"})
    assert beyond.status_code == 416


def test_if_none_match_gives_304(api, user):
    entry = upload(api, user["headers"], ("e.txt", b"etag me", "text/plain")).json()[0]
    path = f"/api/v1/files/{entry['user_file_id']}/content"
    etag = api.get(path, headers=user["headers"]).headers["ETag"]
    again = api.get(path, headers={**user["headers"], "If-None-Match": etag})
    assert again.status_code == 304


@pytest.mark.parametrize("size", [1000, 2 * CHUNK_SIZE + 1])
def test_metadata_download_url_works_without_a_token_and_not_when_altered(api, user, size):
    data = os.urandom(size)
    entry = upload(api, user["headers"], ("d.bin", data)).json()[0]
    meta = api.get(f"/api/v1/files/{entry['user_file_id']}", headers=user["headers"]).json()
    assert meta["status"] == "available"
    assert [c["index"] for c in meta["chunks"]] == list(range(len(meta["chunks"])))
    assert sum(c["size_bytes"] for c in meta["chunks"]) == size
    assert meta["download_url_expires_at"]
    fetched = requests.get(meta["download_url"], timeout=30)
    assert fetched.status_code == 200, fetched.text
    assert fetched.content == data
    tampered = re.sub(r"expires=(\d+)", lambda m: f"expires={int(m.group(1)) + 1000}",
                      meta["download_url"])
    refused = requests.get(tampered, timeout=30)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"]


def test_rename_and_replace_bump_the_version(api, user):
    entry = upload(api, user["headers"], ("old.txt", b"version one", "text/plain")).json()[0]
    path = f"/api/v1/files/{entry['user_file_id']}"
    renamed = api.put(path, headers=user["headers"], files={"filename": (None, "new.txt")})
    assert renamed.status_code == 200, renamed.text
    assert renamed.json()["filename"] == "new.txt" and renamed.json()["version"] == 2
    replaced = api.put(path, headers=user["headers"],
                       files={"file": ("new.txt", b"version two", "text/plain")})
    assert replaced.status_code == 200
    assert replaced.json()["hash"] == sha256(b"version two")
    assert replaced.json()["version"] == 3
    content = api.get(f"{path}/content", headers=user["headers"])
    assert content.content == b"version two"


def test_put_with_a_stale_etag_is_412_and_changes_nothing(api, user):
    entry = upload(api, user["headers"], ("c.txt", b"first", "text/plain")).json()[0]
    path = f"/api/v1/files/{entry['user_file_id']}"
    stale = api.get(path, headers=user["headers"]).json()["etag"]
    api.put(path, headers=user["headers"], files={"filename": (None, "moved.txt")})
    response = api.put(path, headers={**user["headers"], "If-Match": stale},
                       files={"file": ("c.txt", b"clobber", "text/plain")})
    assert response.status_code == 412
    assert api.get(f"{path}/content", headers=user["headers"]).content == b"first"


def test_put_with_neither_file_nor_filename_is_400(api, user):
    entry = upload(api, user["headers"], ("n.txt", b"n", "text/plain")).json()[0]
    response = api.put(f"/api/v1/files/{entry['user_file_id']}", headers=user["headers"],
                       files={"other": (None, "x")})
    assert response.status_code == 400


def test_delete_then_gone(api, user):
    entry = upload(api, user["headers"], ("gone.txt", b"bye", "text/plain")).json()[0]
    path = f"/api/v1/files/{entry['user_file_id']}"
    assert api.delete(path, headers=user["headers"]).status_code == 204
    assert api.get(path, headers=user["headers"]).status_code == 404
    assert api.delete(path, headers=user["headers"]).status_code == 404


def test_other_users_files_are_403_everywhere(api, user, new_user, login):
    entry = upload(api, user["headers"], ("mine.txt", b"private", "text/plain")).json()[0]
    email, _ = new_user()
    intruder = {"Authorization": f"Bearer {login(email)['token']}"}
    path = f"/api/v1/files/{entry['user_file_id']}"
    assert api.get(path, headers=intruder).status_code == 403
    assert api.get(f"{path}/content", headers=intruder).status_code == 403
    assert api.put(path, headers=intruder, files={"filename": (None, "x")}).status_code == 403
    assert api.delete(path, headers=intruder).status_code == 403
    assert api.get(f"{path}/content", headers=user["headers"]).content == b"private"
    assert entry["user_file_id"] not in [f["user_file_id"] for f in
                                         api.get("/api/v1/files", headers=intruder).json()]


def test_unknown_and_malformed_ids_are_404(api, user):
    for file_id in ("00000000-0000-0000-0000-000000000000", "not-an-id", "..%2F..%2Fetc"):
        assert api.get(f"/api/v1/files/{file_id}", headers=user["headers"]).status_code == 404


@pytest.mark.parametrize("make_request", [
    lambda api, h: api.post("/api/v1/files/upload", headers=h),
    lambda api, h: api.post("/api/v1/files/upload", headers=h, json={"files": "x"}),
    lambda api, h: upload(api, h, ("a.txt", b"a"), field="wrong"),
    lambda api, h: upload(api, h, ("", b"a")),
    lambda api, h: api.post("/api/v1/files/upload", data=b"--x\r\nbroken",
                            headers={**h, "Content-Type": "multipart/form-data; boundary=x"}),
])
def test_malformed_uploads_are_400_and_store_nothing(api, user, make_request):
    before = api.get("/api/v1/files", headers=user["headers"]).json()
    response = make_request(api, user["headers"])
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"]
    assert api.get("/api/v1/files", headers=user["headers"]).json() == before


def test_upload_over_the_size_limit_is_413_and_leaves_nothing(api, user):
    response = upload(api, user["headers"], ("big.bin", os.urandom(MAX_UPLOAD + 1)))
    assert response.status_code == 413
    assert api.get("/api/v1/files", headers=user["headers"]).json() == []


def test_upload_over_the_quota_is_413_with_a_clear_message(api, user):
    per_file = MAX_UPLOAD - 1000
    for _ in range(USER_QUOTA // per_file):
        assert upload(api, user["headers"], ("q.bin", os.urandom(per_file))).status_code == 201
    response = upload(api, user["headers"], ("q.bin", os.urandom(per_file)))
    assert response.status_code == 413
    assert "quota" in response.json()["error"]["message"].lower()


def test_declared_image_that_is_really_html_is_rejected(api, user):
    response = upload(api, user["headers"],
                      ("cat.png", b"<!DOCTYPE html><html><script>alert(1)</script></html>",
                       "image/png"))
    assert response.status_code == 400


def test_filenames_are_cleaned_for_display(api, user):
    response = upload(api, user["headers"], ("../../etc/pass\x07wd", b"x", "text/plain"))
    assert response.status_code == 201
    assert response.json()[0]["filename"] == "pass" + "wd"


@pytest.mark.parametrize("size", [CHUNK_SIZE - 1, CHUNK_SIZE, 2 * CHUNK_SIZE + 1, 5 * CHUNK_SIZE])
def test_files_around_chunk_boundaries_come_back_byte_for_byte(api, user, size):
    data = os.urandom(size)
    response = upload(api, user["headers"], ("edge.bin", data))
    assert response.status_code == 201, response.text
    [entry] = response.json()
    assert entry["hash"] == sha256(data) and entry["size_bytes"] == size
    content = api.get(f"/api/v1/files/{entry['user_file_id']}/content", headers=user["headers"])
    assert content.status_code == 200 and content.content == data


def test_an_upload_sent_with_chunked_transfer_encoding_is_stored(api, user):
    data = os.urandom(3 * CHUNK_SIZE + 77)
    boundary = "e2e-chunked-boundary"
    pieces = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
              f"filename=\"streamed.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
              .encode(), data[:1000], data[1000:], f"\r\n--{boundary}--\r\n".encode()]
    response = api.post("/api/v1/files/upload", data=iter(pieces),  # no length: chunked
                        headers={**user["headers"],
                                 "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert response.status_code == 201, response.text
    assert response.json()[0]["hash"] == sha256(data)


def test_requests_that_stop_reading_early_never_upset_the_next_on_the_connection(api, user):
    """The file service reads upload bodies straight off gunicorn's socket; a request it answers
    before reading everything (a rename, a refused body) must leave the pooled gateway ->
    service connection exactly at the next request, or that one gets a 502."""
    [entry] = upload(api, user["headers"], ("a.txt", b"first")).json()
    url = f"/api/v1/files/{entry['user_file_id']}"
    [gone] = upload(api, user["headers"], ("gone.txt", b"gone")).json()
    assert api.delete(f"/api/v1/files/{gone['user_file_id']}",
                      headers=user["headers"]).status_code == 204
    for round_ in range(15):
        missing = api.put(f"/api/v1/files/{gone['user_file_id']}", headers=user["headers"],
                          files={"file": ("x.bin", os.urandom(3000))})  # 404, body unread
        assert missing.status_code == 404, missing.text
        renamed = api.put(url, headers=user["headers"],
                          files={"filename": (None, f"name-{round_}.txt")})
        assert renamed.status_code == 200, renamed.text
        refused = api.post("/api/v1/files/upload", data=b"--x\r\nno end" + b"z" * 5000,
                           headers={**user["headers"],
                                    "Content-Type": "multipart/form-data; boundary=x"})
        assert refused.status_code == 400, refused.text
        stored = upload(api, user["headers"], (f"r{round_}.bin", os.urandom(100 + round_)))
        assert stored.status_code == 201, stored.text
    assert api.get(url, headers=user["headers"]).json()["filename"] == "name-14.txt"


def test_racing_uploads_by_one_user_never_take_it_over_quota(api, user):
    size = MAX_UPLOAD - 1000
    fits = USER_QUOTA // size
    racers = fits + 5
    barrier = threading.Barrier(racers, timeout=30)  # a racer that died breaks it, no hang
    statuses = []

    def race(n):
        data = os.urandom(size)
        barrier.wait()
        response = upload(api, user["headers"], (f"race-{n}.bin", data))
        statuses.append((response.status_code, response.json()))

    threads = [threading.Thread(target=race, args=(n,), daemon=True) for n in range(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a racer hung"
    codes = sorted(status for status, _ in statuses)
    assert codes == [201] * fits + [413] * (racers - fits), statuses
    assert all(body["error"]["code"] == "quota_exceeded" for status, body in statuses
               if status == 413)
    listed = api.get("/api/v1/files", headers=user["headers"]).json()
    assert len(listed) == fits and sum(f["size_bytes"] for f in listed) <= USER_QUOTA


def test_a_multi_chunk_file_comes_back_whole_with_its_headers(api, user, stack):
    """Under `make run` with nginx's echo and headers-more modules, the gateway sends the chunk
    blobs itself (gateway/satchel-concat.conf.template); otherwise the service streams them.
    Either way: the same bytes and headers."""
    from satchel_devstack.stack import has_concat_modules
    if stack is not None and has_concat_modules():
        assert stack.path("run", "nginx", "satchel.d", "concat.conf").is_file()
    data = os.urandom(5 * CHUNK_SIZE + 123)
    [entry] = upload(api, user["headers"], ("multi.bin", data)).json()
    url = f"/api/v1/files/{entry['user_file_id']}/content"
    response = api.get(url, headers=user["headers"])
    assert response.status_code == 200 and response.content == data
    assert response.headers["Content-Length"] == str(len(data))
    assert "Transfer-Encoding" not in response.headers
    assert response.headers["ETag"] == f'"{sha256(data)}"'
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert response.headers["Content-Disposition"].startswith("attachment;")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Accept-Ranges"] == "bytes"
    head = api.head(url, headers=user["headers"])
    assert head.status_code == 200 and head.headers["Content-Length"] == str(len(data))
    ranged = api.get(url, headers={**user["headers"], "Range": "bytes=100-200000"})
    assert ranged.status_code == 206 and ranged.content == data[100:200001]
    cached = api.get(url, headers={**user["headers"], "If-None-Match": f'"{sha256(data)}"'})
    assert cached.status_code == 304

import dataclasses
import io
import os
import uuid
from datetime import datetime
from urllib.parse import parse_qsl, urlsplit

import pytest

from files_testing import CHUNK, code, gateway_accepts, sha


@pytest.fixture
def alice(token_for):
    return token_for("alice")


@pytest.fixture
def uploaded(upload):
    def do(user, name, data, content_type="application/octet-stream"):
        response = upload(user, (name, data, content_type))
        assert response.status_code == 201, response.get_json()
        return response.get_json()[0]
    return do


def put(client, headers, user_file_id, *, data=None, filename=None, extra=None, hdrs=None):
    form = {}
    if data is not None:
        form["file"] = (io.BytesIO(data), "new.bin", "application/octet-stream")
    if filename is not None:
        form["filename"] = filename
    form.update(extra or {})
    return client.put(f"/api/v1/files/{user_file_id}", data=form, content_type="multipart/form-data",
                      headers={**headers, **(hdrs or {})})


# list


def test_list_has_the_seed_fields_and_dedup_statistics(client, alice, uploaded, store):
    item = uploaded("alice", "a.txt", b"shared bytes", "text/plain")
    uploaded("bob", "b.txt", b"shared bytes", "text/plain")

    [entry] = client.get("/api/v1/files", headers=alice).get_json()

    assert entry["user_file_id"] == item["user_file_id"]
    assert entry["ref_count"] == 2
    assert entry["storage_saved_bytes"] == len(b"shared bytes")
    assert entry["storage_path"] == store.location(item["hash"])
    assert entry["storage_path"].endswith(f"/files/{item['hash'][:2]}/{item['hash']}")
    assert datetime.fromisoformat(entry["uploaded_at"]).utcoffset() is not None


def test_multi_chunk_files_report_where_their_chunks_live(client, alice, uploaded, store):
    uploaded("alice", "big.bin", os.urandom(CHUNK + 1))
    [entry] = client.get("/api/v1/files", headers=alice).get_json()
    assert entry["storage_path"] == store.location()


def all_pages(client, headers, url) -> list[str]:
    """The user_file_ids of every page, following the Link: rel="next" header."""
    seen = []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200
        seen += [entry["user_file_id"] for entry in response.get_json()]
        link = response.headers.get("Link")
        assert not link or link.endswith('rel="next"')
        url = link[1:link.index(">")] if link else None
    return seen


def test_list_pages_newest_first_with_a_keyset_cursor(client, alice, uploaded, clock):
    ids = []
    for index in range(5):
        ids.append(uploaded("alice", f"{index}.txt", f"file {index}".encode())["user_file_id"])
        clock.advance(1 if index != 2 else 0)  # two files share a timestamp
    seen = all_pages(client, alice, "/api/v1/files?limit=2")
    assert len(seen) == 5 and set(seen) == set(ids)
    assert seen[0] == ids[4] and seen[-1] == ids[0]


def test_many_files_in_one_millisecond_page_exactly_once(client, alice, uploaded, clock):
    """More same-millisecond entries than the keyset query's first fetch takes (16 spare)."""
    ids = {uploaded("alice", f"{index}.txt", f"tie {index}".encode())["user_file_id"]
           for index in range(45)}  # the clock does not move: all share one created_ms
    seen = all_pages(client, alice, "/api/v1/files?limit=4")
    assert len(seen) == len(ids) and set(seen) == ids
    assert seen == sorted(seen, reverse=True)  # ties ordered by id, newest-first by convention


def test_a_page_that_ends_the_list_has_no_next_link(client, alice, uploaded):
    uploaded("alice", "a.txt", b"a")
    response = client.get("/api/v1/files?limit=1", headers=alice)
    assert "Link" not in response.headers


@pytest.mark.parametrize("cursor", ["nope", "djE6eDp5", "%%%", "A" * 500])
def test_a_bad_cursor_is_a_400(client, alice, cursor):
    response = client.get(f"/api/v1/files?cursor={cursor}", headers=alice)
    assert response.status_code == 400 and "cursor" in response.get_json()["error"]["details"]


def test_users_only_list_their_own_files(client, token_for, uploaded):
    uploaded("alice", "a.txt", b"a")
    assert client.get("/api/v1/files", headers=token_for("bob")).get_json() == []


# metadata


def test_metadata_reports_the_chunk_size_the_file_was_cut_to(app, client, alice, uploaded):
    """After CHUNK_SIZE_BYTES changes, older files keep describing their own chunks."""
    data = os.urandom(2 * CHUNK + 5)
    item = uploaded("alice", "a.bin", data)
    files = app.extensions["satchel.files"]
    files.settings = dataclasses.replace(files.settings, chunk_size_bytes=4 * CHUNK)
    body = client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice).get_json()
    assert body["chunk_size"] == CHUNK
    assert [c["size_bytes"] for c in body["chunks"]] == [CHUNK, CHUNK, 5]


def test_metadata_has_chunks_versions_etag_and_a_download_url(client, alice, uploaded, store):
    data = os.urandom(CHUNK + 5)
    item = uploaded("alice", "big.bin", data)

    meta = client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice).get_json()

    assert meta["status"] == "available" and meta["version"] == 1
    assert [{k: c[k] for k in ("index", "hash", "size_bytes", "status")}
            for c in meta["chunks"]] == [
        {"index": 0, "hash": sha(data[:CHUNK]), "size_bytes": CHUNK, "status": "verified"},
        {"index": 1, "hash": sha(data[CHUNK:]), "size_bytes": 5, "status": "verified"}]
    for chunk in meta["chunks"]:  # seed 000's per-chunk links
        link = urlsplit(chunk["download_url"])
        assert link.path.endswith(chunk["hash"])
        assert gateway_accepts(store, "GET", link.path, dict(parse_qsl(link.query)))
    assert meta["etag"] == f'"{item["hash"]}.v1"'
    url = urlsplit(meta["download_url"])
    assert url.path == f"/api/v1/files/{item['user_file_id']}/content"
    assert datetime.fromisoformat(meta["download_url_expires_at"]) > datetime.fromisoformat(
        meta["created_at"])
    # the signed URL works without a token
    signed = client.get(f"{url.path}?{url.query}")
    assert signed.status_code == 200 and signed.data == data


def test_single_chunk_files_get_a_presigned_blob_url(client, alice, uploaded, store):
    item = uploaded("alice", "a.txt", b"hello", "text/plain")
    meta = client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice).get_json()
    url = urlsplit(meta["download_url"])
    assert url.path == f"/blobs/files/{item['hash'][:2]}/{item['hash']}"
    query = dict(parse_qsl(url.query))
    assert gateway_accepts(store, "GET", url.path, query)
    assert query["response-content-type"] == "text/plain"
    assert "a.txt" in query["response-content-disposition"]


def test_a_tampered_or_expired_content_url_is_refused(client, alice, uploaded, clock):
    item = uploaded("alice", "big.bin", os.urandom(CHUNK + 1))
    url = urlsplit(client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice)
                   .get_json()["download_url"])
    other = uploaded("alice", "other.bin", os.urandom(CHUNK + 1))
    assert client.get(f"/api/v1/files/{other['user_file_id']}/content?{url.query}").status_code == 403
    assert client.get(f"{url.path}?{url.query.replace('signature=', 'signature=0')}").status_code == 403
    clock.advance(901)
    assert client.get(f"{url.path}?{url.query}").status_code == 403


def test_a_content_url_stops_working_when_the_content_changes(client, alice, uploaded):
    item = uploaded("alice", "big.bin", os.urandom(CHUNK + 1))
    url = urlsplit(client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice)
                   .get_json()["download_url"])
    put(client, alice, item["user_file_id"], data=b"new content")
    assert client.get(f"{url.path}?{url.query}").status_code == 410


@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_another_users_file_is_a_403(client, token_for, uploaded, method):
    item = uploaded("alice", "a.txt", b"secret")
    kwargs = {"data": {"filename": "x"}, "content_type": "multipart/form-data"} if method == "put" else {}
    response = getattr(client, method)(f"/api/v1/files/{item['user_file_id']}",
                                       headers=token_for("mallory"), **kwargs)
    assert response.status_code == 403 and code(response) == "forbidden"
    content = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=token_for("mallory"))
    assert content.status_code == 403


@pytest.mark.parametrize("user_file_id", [str(uuid.uuid4()), "not-a-uuid", "../../etc"])
@pytest.mark.parametrize("method", ["get", "put", "delete"])
def test_unknown_or_malformed_ids_are_404(client, alice, user_file_id, method):
    kwargs = {"data": {"filename": "x"}, "content_type": "multipart/form-data"} if method == "put" else {}
    response = getattr(client, method)(f"/api/v1/files/{user_file_id}", headers=alice, **kwargs)
    assert response.status_code == 404


# content


def test_content_streams_the_bytes_with_download_headers(client, alice, uploaded):
    data = os.urandom(CHUNK * 2 + 7)
    item = uploaded("alice", "résumé.pdf", data, "application/octet-stream")

    response = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice,
                          buffered=False)

    assert response.is_streamed
    assert response.status_code == 200 and response.data == data
    assert response.headers["Content-Length"] == str(len(data))
    assert response.headers["ETag"] == f'"{item["hash"]}"'
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Accept-Ranges"] == "bytes"
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith("attachment;") and "filename*=UTF-8''r%C3%A9sum%C3%A9.pdf" in disposition


@pytest.mark.parametrize("header, start, stop", [
    ("bytes=0-9", 0, 10),
    (f"bytes={CHUNK - 5}-{CHUNK + 4}", CHUNK - 5, CHUNK + 5),  # across a chunk boundary
    ("bytes=-100", 2 * CHUNK + 7 - 100, 2 * CHUNK + 7),
    (f"bytes={2 * CHUNK}-", 2 * CHUNK, 2 * CHUNK + 7),
    ("bytes=5-999999999", 5, 2 * CHUNK + 7),
])
def test_a_single_range_is_a_206(client, alice, uploaded, header, start, stop):
    data = os.urandom(CHUNK * 2 + 7)
    item = uploaded("alice", "a.bin", data)
    response = client.get(f"/api/v1/files/{item['user_file_id']}/content",
                          headers={**alice, "Range": header})
    assert response.status_code == 206
    assert response.data == data[start:stop]
    assert response.headers["Content-Range"] == f"bytes {start}-{stop - 1}/{len(data)}"


def test_an_unsatisfiable_range_is_a_416(client, alice, uploaded):
    item = uploaded("alice", "a.bin", b"0123456789")
    response = client.get(f"/api/v1/files/{item['user_file_id']}/content",
                          headers={**alice, "Range": "bytes=10-20"})
    assert response.status_code == 416
    assert response.headers["Content-Range"] == "bytes */10"


def test_a_malformed_range_is_ignored(client, alice, uploaded):
    item = uploaded("alice", "a.bin", b"0123456789")
    response = client.get(f"/api/v1/files/{item['user_file_id']}/content",
                          headers={**alice, "Range": "bytes=9-3"})
    assert response.status_code == 200 and response.data == b"0123456789"


def test_if_range_with_an_old_etag_sends_the_whole_file(client, alice, uploaded):
    item = uploaded("alice", "a.bin", b"0123456789")
    response = client.get(f"/api/v1/files/{item['user_file_id']}/content",
                          headers={**alice, "Range": "bytes=0-1", "If-Range": '"old"'})
    assert response.status_code == 200 and response.data == b"0123456789"


def test_if_none_match_is_a_304(client, alice, uploaded):
    item = uploaded("alice", "a.bin", b"0123456789")
    response = client.get(f"/api/v1/files/{item['user_file_id']}/content",
                          headers={**alice, "If-None-Match": f'"{item["hash"]}"'})
    assert response.status_code == 304 and response.data == b""


def test_content_needs_a_token_or_a_signature(client, uploaded):
    item = uploaded("alice", "a.bin", b"x")
    assert client.get(f"/api/v1/files/{item['user_file_id']}/content").status_code == 401


def test_a_missing_blob_is_a_logged_500_not_a_crash(client, alice, uploaded, store):
    item = uploaded("alice", "a.bin", b"x")
    store.delete(item["hash"])
    response = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice)
    assert response.status_code == 500 and code(response) == "internal_error"


class TestAccelRedirect:
    @pytest.fixture
    def config_overrides(self):
        return {"accel_redirect": True}

    def test_local_single_chunk_files_are_handed_to_nginx(self, client, alice, uploaded):
        item = uploaded("alice", "a.txt", b"hello", "text/plain")
        h = item["hash"]
        response = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice)
        assert response.status_code == 200 and response.data == b""
        assert response.headers["X-Accel-Redirect"] == f"/_satchel_blobs/{h[:2]}/{h}"
        assert response.headers["Content-Type"] == "text/plain"
        assert response.headers["ETag"] == f'"{h}"'
        assert response.headers["Content-Disposition"].startswith("attachment;")

    def test_multi_chunk_files_are_streamed_by_the_service(self, client, alice, uploaded):
        data = os.urandom(CHUNK + 1)
        item = uploaded("alice", "a.bin", data)
        response = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice)
        assert "X-Accel-Redirect" not in response.headers and response.data == data


class TestAccelConcat:
    """With ACCEL_CONCAT_LOCATION, nginx sends a whole multi-chunk file itself."""

    @pytest.fixture
    def config_overrides(self):
        return {"accel_redirect": True, "accel_concat_location": "/_satchel_concat"}

    def test_a_whole_multi_chunk_file_is_handed_to_nginx_chunk_by_chunk(self, client, alice,
                                                                         uploaded, db):
        data = os.urandom(2 * CHUNK + 7)
        item = uploaded("alice", "a.bin", data)
        chunks = db.file_objects.find_one({"_id": item["file_object_id"]})["chunks"]
        response = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice)
        assert response.status_code == 200 and response.data == b""
        assert response.headers["X-Accel-Redirect"] == (
            f"/_satchel_concat?len={len(data)}&chunks="
            + ",".join(f"{h[:2]}/{h}" for h in chunks))
        assert len(chunks) == 3
        assert response.headers["ETag"] == f'"{item["hash"]}"'
        assert response.headers["Content-Disposition"].startswith("attachment;")

    def test_ranges_and_head_stay_with_the_service(self, client, alice, uploaded):
        data = os.urandom(2 * CHUNK + 7)
        url = f"/api/v1/files/{uploaded('alice', 'a.bin', data)['user_file_id']}/content"
        ranged = client.get(url, headers={**alice, "Range": f"bytes={CHUNK - 2}-{CHUNK + 2}"})
        assert ranged.status_code == 206 and ranged.data == data[CHUNK - 2:CHUNK + 3]
        assert "X-Accel-Redirect" not in ranged.headers
        head = client.head(url, headers=alice)
        assert "X-Accel-Redirect" not in head.headers
        assert head.headers["Content-Length"] == str(len(data))

    def test_a_missing_chunk_blob_is_never_handed_to_nginx(self, client, alice, uploaded, db,
                                                         store):
        data = os.urandom(2 * CHUNK + 7)
        item = uploaded("alice", "a.bin", data)
        chunks = db.file_objects.find_one({"_id": item["file_object_id"]})["chunks"]
        store.delete(chunks[1])
        response = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice)
        assert "X-Accel-Redirect" not in response.headers
        # said before any byte, not a 200 whose body breaks off after the first chunk
        assert response.status_code == 500 and response.get_json()["error"]["message"] == \
            "The file's content is missing; run fsck."

    def test_single_chunk_files_still_use_the_blob_location(self, client, alice, uploaded):
        item = uploaded("alice", "a.txt", b"hello", "text/plain")
        response = client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice)
        assert response.headers["X-Accel-Redirect"].startswith("/_satchel_blobs/")


# update


def test_put_with_new_content_makes_a_new_version(client, alice, uploaded, db):
    item = uploaded("alice", "a.txt", b"old content", "text/plain")

    response = put(client, alice, item["user_file_id"], data=b"new content")

    assert response.status_code == 200
    meta = response.get_json()
    assert meta["version"] == 2 and meta["hash"] == sha(b"new content")
    assert meta["filename"] == "a.txt" and meta["file_object_id"] != item["file_object_id"]
    assert db.file_objects.find_one({"_id": item["file_object_id"]}) is None
    assert client.get(f"/api/v1/files/{item['user_file_id']}/content", headers=alice).data == b"new content"


def test_put_to_content_someone_else_has_dedups(client, alice, uploaded, db):
    item = uploaded("alice", "a.txt", b"mine")
    theirs = uploaded("bob", "b.txt", b"theirs")

    meta = put(client, alice, item["user_file_id"], data=b"theirs").get_json()

    assert meta["file_object_id"] == theirs["file_object_id"] and meta["ref_count"] == 2


def test_put_with_only_a_filename_renames(client, alice, uploaded):
    item = uploaded("alice", "a.txt", b"content")
    meta = put(client, alice, item["user_file_id"], filename="sub/dir/b.txt").get_json()
    assert meta["filename"] == "b.txt" and meta["version"] == 2
    assert meta["hash"] == item["hash"]


def test_put_with_both_replaces_and_renames(client, alice, uploaded):
    item = uploaded("alice", "a.txt", b"content")
    meta = put(client, alice, item["user_file_id"], data=b"other", filename="c.txt").get_json()
    assert meta["filename"] == "c.txt" and meta["hash"] == sha(b"other") and meta["version"] == 2


def test_put_with_neither_is_a_400(client, alice, uploaded):
    item = uploaded("alice", "a.txt", b"content")
    response = client.put(f"/api/v1/files/{item['user_file_id']}", data={},
                          content_type="multipart/form-data", headers=alice)
    assert response.status_code == 400 and code(response) == "nothing_to_update"


@pytest.mark.parametrize("extra", [{"other": "x"}, {"files": (io.BytesIO(b"x"), "x.txt")}])
def test_put_with_an_unknown_field_is_a_400_and_changes_nothing(client, alice, uploaded, db, extra):
    item = uploaded("alice", "a.txt", b"content")
    response = put(client, alice, item["user_file_id"], data=b"new", extra=extra)
    assert response.status_code == 400
    assert db.user_files.find_one({"_id": item["user_file_id"]})["version"] == 1
    assert db.file_objects.count_documents({}) == 1


def test_put_with_a_stale_if_match_is_a_412_and_changes_nothing(client, alice, uploaded, db):
    item = uploaded("alice", "a.txt", b"content")
    response = put(client, alice, item["user_file_id"], data=b"new", filename="z.txt",
                   hdrs={"If-Match": '"0000"'})
    assert response.status_code == 412
    doc = db.user_files.find_one({"_id": item["user_file_id"]})
    assert doc["version"] == 1 and doc["filename"] == "a.txt"
    assert db.file_objects.count_documents({}) == 1


def test_put_with_the_current_etag_succeeds(client, alice, uploaded):
    item = uploaded("alice", "a.txt", b"content")
    etag = client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice).get_json()["etag"]
    response = put(client, alice, item["user_file_id"], data=b"new", hdrs={"If-Match": etag})
    assert response.status_code == 200


def test_an_etag_read_before_a_rename_is_stale(client, alice, uploaded, db):
    item = uploaded("alice", "a.txt", b"content")
    before = client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice).get_json()["etag"]
    assert put(client, alice, item["user_file_id"], filename="b.txt").status_code == 200
    response = put(client, alice, item["user_file_id"], data=b"clobber", hdrs={"If-Match": before})
    assert response.status_code == 412
    assert db.user_files.find_one({"_id": item["user_file_id"]})["hash"] == item["hash"]


def test_put_rejects_dangerous_content_under_a_harmless_name(client, alice, uploaded):
    item = uploaded("alice", "photo.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "image/png")
    response = client.put(f"/api/v1/files/{item['user_file_id']}",
                          data={"file": (io.BytesIO(b"<html><script>x</script>"), "photo.png", "image/png")},
                          content_type="multipart/form-data", headers=alice)
    assert response.status_code == 400


# delete


def test_delete_keeps_shared_content_until_the_last_reference(client, token_for, uploaded, db):
    mine = uploaded("alice", "a.txt", b"shared")
    theirs = uploaded("bob", "b.txt", b"shared")

    assert client.delete(f"/api/v1/files/{mine['user_file_id']}", headers=token_for("alice")).status_code == 204
    assert db.file_objects.find_one({"_id": mine["file_object_id"]})["ref_count"] == 1
    assert client.get(f"/api/v1/files/{theirs['user_file_id']}/content",
                      headers=token_for("bob")).data == b"shared"

    assert client.delete(f"/api/v1/files/{theirs['user_file_id']}", headers=token_for("bob")).status_code == 204
    assert db.file_objects.count_documents({}) == 0
    [blob] = list(db.blobs.find())
    assert blob["ref_count"] == 0 and blob["zero_since_ms"] is not None
    assert client.get(f"/api/v1/files/{mine['user_file_id']}", headers=token_for("alice")).status_code == 404


def test_deleting_twice_is_a_404(client, alice, uploaded):
    item = uploaded("alice", "a.txt", b"x")
    assert client.delete(f"/api/v1/files/{item['user_file_id']}", headers=alice).status_code == 204
    assert client.delete(f"/api/v1/files/{item['user_file_id']}", headers=alice).status_code == 404


# public config and internal verify


def test_public_config_needs_no_token(client, config):
    body = client.get("/api/v1/config").get_json()
    assert body == {"chunk_size_bytes": config.chunk_size_bytes,
                    "max_upload_bytes": config.max_upload_bytes,
                    "user_quota_bytes": config.user_quota_bytes,
                    "download_url_ttl_seconds": 900, "hash_algorithm": "sha256"}


def test_readyz_checks_storage(client):
    assert client.get("/readyz").get_json()["checks"] == {"mongo": "ok", "storage": "ok"}


def test_gateway_verify_accepts_a_signed_blob_url(client, alice, uploaded):
    item = uploaded("alice", "a.txt", b"hello", "text/plain")
    url = urlsplit(client.get(f"/api/v1/files/{item['user_file_id']}", headers=alice)
                   .get_json()["download_url"])
    uri = f"{url.path}?{url.query}"

    ok = client.get("/internal/blobs/verify", headers={"X-Original-Method": "GET", "X-Original-URI": uri})
    assert ok.status_code == 204
    assert ok.headers["X-Satchel-Content-Type"] == "text/plain"
    assert ok.headers["X-Satchel-Content-Disposition"].startswith("attachment;")
    for method, bad_uri in [("GET", uri.replace("signature=", "signature=f")), ("PUT", uri),
                            ("GET", uri + "&expires=1"), ("GET", url.path), ("GET", "")]:
        refused = client.get("/internal/blobs/verify",
                             headers={"X-Original-Method": method, "X-Original-URI": bad_uri})
        assert refused.status_code == 403, (method, bad_uri)


def test_gateway_verify_checks_the_size_of_a_staging_put(client, store):
    url = urlsplit(store.presign_put_staging("k" * 20, size_bytes=5, expires_seconds=60))
    uri = f"{url.path}?{url.query}"
    headers = {"X-Original-Method": "PUT", "X-Original-URI": uri}
    assert client.get("/internal/blobs/verify",
                      headers={**headers, "X-Original-Content-Length": "5"}).status_code == 204
    assert client.get("/internal/blobs/verify",
                      headers={**headers, "X-Original-Content-Length": "6"}).status_code == 403


def test_gateway_verify_answers_subrequests_sent_with_the_original_method(client, store):
    url = urlsplit(store.presign_put_staging("k" * 20, size_bytes=5, expires_seconds=60))
    response = client.put("/internal/blobs/verify", headers={
        "X-Original-Method": "PUT", "X-Original-URI": f"{url.path}?{url.query}",
        "X-Original-Content-Length": "5"})
    assert response.status_code == 204

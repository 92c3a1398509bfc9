"""Requests that fail half-way: nothing they started may be left behind (no file, no reference,
no over- or under-count), and what the user had before stays as it was."""
import io
import os
import threading

import pytest
from pymongo.errors import AutoReconnect

from files_testing import CHUNK, blob_refs, code, declare, pieces_of, sha
from satchel_files.storage import StorageUnavailable


def replace_content(client, headers, user_file_id, data):
    form = {"file": (io.BytesIO(data), "new.bin", "application/octet-stream")}
    return client.put(f"/api/v1/files/{user_file_id}", data=form,
                      content_type="multipart/form-data", headers=headers)


def assert_fsck_clean(maintenance):
    report = maintenance.fsck()
    assert report.is_clean and report.problems == [], report.as_dict()


# 1. replacing a file's content with too much


@pytest.mark.parametrize("config_overrides", [{"max_upload_bytes": 3 * CHUNK,
                                               "user_quota_bytes": 4 * CHUNK}])
@pytest.mark.parametrize("other_files, new_size, expected", [
    (1, 3 * CHUNK, "quota_exceeded"),         # within the size limit, but 2 + 2 - 2 + 3 > 4 chunks
    (0, 3 * CHUNK + 1, "payload_too_large"),  # within the quota, but over max_upload_bytes
])
def test_replacing_content_past_a_limit_is_a_413_that_leaves_the_file_as_it_was(
        client, token_for, upload, db, store, maintenance, config_overrides, other_files,
        new_size, expected):
    alice = token_for("alice")
    old = os.urandom(2 * CHUNK)
    created = upload("alice", ("a.bin", old))
    assert created.status_code == 201
    for _ in range(other_files):
        assert upload("alice", ("b.bin", os.urandom(2 * CHUNK))).status_code == 201
    file_id = created.get_json()[0]["user_file_id"]
    before = db.user_files.find_one({"_id": file_id})
    new = os.urandom(new_size)

    response = replace_content(client, alice, file_id, new)

    assert response.status_code == 413 and code(response) == expected, response.get_json()
    after = db.user_files.find_one({"_id": file_id})
    assert after == before  # version, hash, size, file object: untouched
    detail = client.get(f"/api/v1/files/{file_id}", headers=alice).get_json()
    assert detail["version"] == 1 and detail["hash"] == sha(old)
    assert client.get(f"/api/v1/files/{file_id}/content", headers=alice).data == old
    # The chunks of the rejected bytes that were received before the limit hit (their refs
    # were taken and their bytes stored) hold no refs now.
    assert db.blobs.count_documents({"_id": {"$in": [sha(p) for p in pieces_of(new)]}}) >= 2
    for piece in pieces_of(new):
        assert blob_refs(db, sha(piece)) == 0
    assert db.file_objects.count_documents({"hash": sha(new)}) == 0
    assert db.file_objects.count_documents({}) == 1 + other_files
    assert all(blob_refs(db, sha(piece)) == 1 for piece in pieces_of(old))
    assert db.ref_intents.count_documents({}) == 0
    assert_fsck_clean(maintenance)


# 2. a chunked upload whose bytes contradict its declared type


def test_a_chunked_upload_of_html_declared_as_a_png_fails_and_makes_no_file(
        chunked, client, token_for, db, maintenance):
    data = b"<html><script>alert(1)</script>"
    body = declare(data, "photo.png", mime_type="image/png")
    registered = chunked.register("alice", body)
    assert registered.status_code == 201, registered.get_json()
    upload = registered.get_json()
    chunked.put(upload["chunks"][0], data)

    response = chunked.report("alice", upload["user_file_id"], [0])

    assert response.status_code == 200, response.get_json()
    result = response.get_json()
    assert result["status"] == "failed"
    assert result["failure"]["code"] == "content_type_mismatch"
    assert result["file_object_id"] is None and result["download_url"] is None
    assert db.file_objects.count_documents({"hash": sha(data)}) == 0
    assert db.user_files.find_one({"_id": upload["user_file_id"]})["status"] == "failed"
    assert client.get("/api/v1/files", headers=token_for("alice")).get_json() == []
    detail = chunked.get("alice", upload["user_file_id"]).get_json()
    assert detail["status"] == "failed" and detail["failure"]["code"] == "content_type_mismatch"
    assert_fsck_clean(maintenance)


# 3. the blob store goes away in the middle of an upload


def before_each_put(monkeypatch, store, hook):
    """Wrap store.put so that hook(n) runs before the n-th put (from 1), under a lock: an
    upload's chunks are stored by several threads at once. The hashes put, in order."""
    real_put, calls, lock = store.put, [], threading.Lock()

    def put(blob_hash, data, **kwargs):
        with lock:
            calls.append(blob_hash)
            hook(len(calls))
        return real_put(blob_hash, data, **kwargs)

    monkeypatch.setattr(store, "put", put)
    return calls


def test_a_blob_store_outage_on_the_second_chunk_is_a_503_that_leaves_nothing(
        upload, db, store, maintenance, monkeypatch):
    def fail_the_second(n):
        if n == 2:
            raise StorageUnavailable("the blob store went away")

    calls = before_each_put(monkeypatch, store, fail_the_second)
    data = os.urandom(3 * CHUNK + 5)

    response = upload("alice", ("big.bin", data))

    assert response.status_code == 503, response.get_json()
    assert len(calls) >= 2
    assert db.user_files.count_documents({"owner_id": "alice"}) == 0
    assert db.file_objects.count_documents({}) == 0
    assert db.ref_intents.count_documents({}) == 0
    assert db.blobs.count_documents({}) >= 1  # references were taken, then given back
    assert all(doc["ref_count"] == 0 for doc in db.blobs.find())
    assert_fsck_clean(maintenance)


# 4. the request's intent is reaped while it runs


def test_an_upload_whose_intent_disappears_is_a_503_with_counts_fsck_can_settle(
        upload, db, store, maintenance, monkeypatch):
    reaped = []

    def reap_before_the_first(n):  # as gc / fsck --repair does to an intent past the grace
        if n == 1:
            reaped.append(db.ref_intents.delete_many({}).deleted_count)

    before_each_put(monkeypatch, store, reap_before_the_first)
    data = os.urandom(2 * CHUNK + 5)

    response = upload("alice", ("big.bin", data))

    assert reaped == [1]  # the request's own intent was there, and was removed
    assert response.status_code == 503, response.get_json()
    assert db.user_files.count_documents({}) == 0
    assert db.file_objects.count_documents({}) == 0
    assert db.ref_intents.count_documents({}) == 0
    maintenance.fsck(repair=True)
    assert_fsck_clean(maintenance)
    assert all(doc["ref_count"] == 0 for doc in db.blobs.find())


def test_a_chunked_completion_whose_intent_disappears_is_a_503_and_a_retry_completes(
        chunked, db, app, maintenance, monkeypatch):
    """Reaped just before completion lists the upload's own chunk refs (note_blob_releases):
    the file is not made available, the upload keeps its refs, nothing is counted low."""
    data = os.urandom(2 * CHUNK + 5)
    body = chunked.register("alice", declare(data)).get_json()
    for entry, piece in zip(body["chunks"], pieces_of(data)):
        chunked.put(entry, piece)
    intents = app.extensions["satchel.files"].refcounts.intents
    real_add, calls = intents.add_blob_refs, []

    def reaped_before_the_second(intent_id, blob_hashes, now_ms):
        calls.append(list(blob_hashes))
        if len(calls) == 2:  # the first listed the new file object's chunk refs
            db.ref_intents.delete_many({})
        return real_add(intent_id, blob_hashes, now_ms)

    monkeypatch.setattr(intents, "add_blob_refs", reaped_before_the_second)
    response = chunked.report("alice", body["user_file_id"], [0, 1, 2])
    assert response.status_code == 503, response.get_json()
    assert len(calls) == 2
    upload = db.user_files.find_one({"_id": body["user_file_id"]})
    assert upload["status"] == "uploading"
    assert [c["status"] for c in upload["chunks"]] == ["verified"] * 3
    assert [blob_refs(db, sha(piece)) for piece in pieces_of(data)] == [1, 1, 1]

    monkeypatch.undo()
    done = chunked.report("alice", body["user_file_id"], [2]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert_fsck_clean(maintenance)


# 5. a chunk the user "holds" whose bytes are gone


def test_a_held_chunk_whose_bytes_are_gone_is_asked_for_again(
        upload, chunked, store, db):
    old = os.urandom(2 * CHUNK)
    assert upload("alice", ("old.bin", old)).status_code == 201
    lost, kept = pieces_of(old)
    store.delete(sha(lost))
    assert blob_refs(db, sha(lost)) == 1
    new = lost + os.urandom(CHUNK)  # shares the lost chunk, but is not the same file

    registered = chunked.register("alice", declare(new))

    assert registered.status_code == 201
    body = registered.get_json()
    first, second = body["chunks"]
    assert first["hash"] == sha(lost)
    assert first["status"] == "pending" and first["upload_url"]
    assert second["status"] == "pending"
    assert db.user_files.find_one({"_id": body["user_file_id"]})["chunks"][0]["status"] \
        == "pending"
    assert blob_refs(db, sha(lost)) == 1  # the reference taken to check it was given back
    assert db.ref_intents.count_documents({}) == 0

    # Sending the bytes again completes the upload and brings the chunk back.
    for entry, piece in zip(body["chunks"], pieces_of(new)):
        chunked.put(entry, piece)
    done = chunked.report("alice", body["user_file_id"], [0, 1]).get_json()
    assert done["status"] == "available"
    assert store.size(sha(lost)) == CHUNK
    assert blob_refs(db, sha(lost)) == 2  # the old file object and the new one


@pytest.mark.parametrize("lost_index", [0, 1])
def test_registering_the_same_content_again_asks_for_a_chunk_whose_bytes_are_gone(
        upload, chunked, store, db, lost_index):
    data = os.urandom(2 * CHUNK)
    assert upload("alice", ("old.bin", data)).status_code == 201
    lost = pieces_of(data)[lost_index]
    store.delete(sha(lost))

    registered = chunked.register("alice", declare(data, "again.bin"))

    assert registered.status_code == 201, registered.get_json()
    body = registered.get_json()
    assert body["status"] == "uploading", body
    chunk = body["chunks"][lost_index]
    assert chunk["status"] == "pending" and chunk["upload_url"]
    assert blob_refs(db, sha(lost)) == 1


# 6. the database fails after a write that gave documents the request's references (its reply
#    lost, or a later call failing): the request answers 5xx, but may give nothing back


def lost_reply(monkeypatch, owner, name, *, when=lambda *args: True):
    """`owner.name` writes, then fails as if the connection dropped before the reply."""
    real = getattr(owner, name)

    def write_then_fail(*args, **kwargs):
        result = real(*args, **kwargs)
        if when(*args):
            raise AutoReconnect("connection closed")
        return result

    monkeypatch.setattr(owner, name, write_then_fail)


def assert_nothing_under_counted(app, maintenance, clock):
    """While the failed request's intent is live, and once it is stale: counts may be too high,
    never below what documents hold, and no blob or file object a document names is gone."""
    for _ in range(2):
        bad = [p for p in maintenance.fsck().problems
               if "UNDER" in p.detail or "missing" in p.kind]
        assert not bad, bad
        clock.advance(app.config["SATCHEL"].gc_grace_seconds + 1)
    assert maintenance.fsck(repair=True).is_clean
    assert_fsck_clean(maintenance)


def test_a_replace_whose_reply_is_lost_keeps_the_new_content(
        app, client, token_for, upload, db, maintenance, clock, monkeypatch):
    item = upload("alice", ("a.bin", os.urandom(CHUNK))).get_json()[0]
    lost_reply(monkeypatch, app.extensions["satchel.files"].user_files, "replace_if_unchanged")
    new = os.urandom(CHUNK)

    assert replace_content(client, token_for("alice"), item["user_file_id"], new).status_code \
        == 503
    content = client.get(f"/api/v1/files/{item['user_file_id']}/content",
                         headers=token_for("alice"))
    assert content.status_code == 200 and content.data == new
    assert_nothing_under_counted(app, maintenance, clock)


@pytest.mark.parametrize("step", ["register", "verify", "complete"])
def test_a_chunked_upload_whose_reply_is_lost_keeps_the_references_it_wrote(
        app, client, token_for, upload, chunked, db, maintenance, clock, monkeypatch, step):
    shared = os.urandom(CHUNK)
    assert upload("alice", ("old.bin", shared + b"tail")).status_code == 201
    data = shared + os.urandom(CHUNK)  # chunk 0 is alice's already: verified at registration
    uploads = app.extensions["satchel.uploads"].uploads
    if step == "register":
        lost_reply(monkeypatch, uploads, "insert")
        assert chunked.register("alice", declare(data)).status_code == 503
        [body] = db.user_files.find({"status": "uploading"})
        assert body["chunks"][0]["status"] == "verified"
    else:
        body = chunked.register("alice", declare(data)).get_json()
        chunked.put(body["chunks"][1], pieces_of(data)[1])
        lost_reply(monkeypatch, uploads, "replace_if_rev",
                   when=lambda upload, replacement: (replacement["status"] == "available")
                   == (step == "complete"))
        assert chunked.report("alice", body["user_file_id"], [1]).status_code == 503
    monkeypatch.undo()
    assert_nothing_under_counted(app, maintenance, clock)
    if step != "register":  # what was written stays written, and the upload completes
        done = chunked.report("alice", body["user_file_id"], [1]).get_json()
        assert done["status"] == "available", done
        content = client.get(f"/api/v1/files/{body['user_file_id']}/content",
                             headers=token_for("alice"))
        assert content.status_code == 200 and content.data == data


# reads racing a replace or a delete


def between_the_reads(app, monkeypatch, action):
    """Run `action()` once, between a request's read of a file entry and of its file object."""
    file_objects = app.extensions["satchel.files"].file_objects
    real_find, done = file_objects.find, []

    def find(file_object_id):
        if not done:
            done.append(True)
            action()
        return real_find(file_object_id)

    monkeypatch.setattr(file_objects, "find", find)


READS = {
    "detail": lambda client, headers, file_id, link: client.get(f"/api/v1/files/{file_id}",
                                                                headers=headers),
    "content": lambda client, headers, file_id, link: client.get(
        f"/api/v1/files/{file_id}/content", headers=headers),
    "signed link": lambda client, headers, file_id, link: client.get(link),
}


@pytest.mark.parametrize("change, read, expected", [
    ("replace", "detail", 200), ("replace", "content", 200), ("replace", "signed link", 410),
    ("delete", "detail", 404), ("delete", "content", 404), ("delete", "signed link", 404),
])
def test_a_read_racing_a_change_answers_the_file_as_it_is_now_not_500(
        app, client, token_for, upload, monkeypatch, change, read, expected):
    """The change frees the file object the read found the entry pointing at."""
    alice = token_for("alice")
    new = os.urandom(CHUNK + 5)
    file_id = upload("alice", ("a.bin", os.urandom(2 * CHUNK))).get_json()[0]["user_file_id"]
    link = client.get(f"/api/v1/files/{file_id}", headers=alice).get_json()["download_url"]

    def make_change():
        if change == "replace":
            assert replace_content(client, alice, file_id, new).status_code == 200
        else:
            assert client.delete(f"/api/v1/files/{file_id}", headers=alice).status_code == 204

    between_the_reads(app, monkeypatch, make_change)
    response = READS[read](client, alice, file_id, link)
    assert response.status_code == expected, response.get_json()
    if expected == 200:
        assert response.get_json()["hash"] == sha(new) if read == "detail" else \
            response.data == new

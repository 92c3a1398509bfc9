"""fsck --repair while requests give references back: it must never set a count below what
documents will hold once the requests finish (found in review: both lost data before).

Each test pauses a real request (in a thread) between the write that stops a document holding
a reference and the decrement that follows, at the moment fsck is between its reads. Only one
thread runs at a time (mongomock is not thread-safe).
"""
import os
import threading

from files_testing import CHUNK, GRACE, declare, sha



def assert_downloads(client, headers, user_file_id, data):
    content = client.get(f"/api/v1/files/{user_file_id}/content", headers=headers)
    assert content.status_code == 200 and content.data == data


class Paused:
    """Wraps `owner.name` so that the request calling it waits there until released."""

    def __init__(self, monkeypatch, owner, name):
        self.reached, self.go = threading.Event(), threading.Event()
        real = getattr(owner, name)

        def paused(*args, **kwargs):
            self.reached.set()
            assert self.go.wait(10)
            return real(*args, **kwargs)

        monkeypatch.setattr(owner, name, paused)


def repair_during(monkeypatch, maintenance, owner, name, request, pause: Paused) -> list:
    """fsck --repair, whose first call of `owner.name` (one of its reads) first runs `request`
    in a thread up to `pause`; the request then finishes. What the request returned."""
    real = getattr(owner, name)
    results = []
    thread = threading.Thread(target=lambda: results.append(request()))

    def read_after_the_request_started(*args, **kwargs):
        monkeypatch.setattr(owner, name, real)
        thread.start()
        assert pause.reached.wait(10), "the request never reached its pause"
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, read_after_the_request_started)
    maintenance.fsck(repair=True)
    pause.go.set()
    thread.join(10)
    assert not thread.is_alive()
    return results


def test_fsck_during_a_delete_keeps_a_shared_file_object(
        app, client, token_for, upload, db, maintenance, monkeypatch):
    data = os.urandom(100)
    mine = upload("alice", ("a.bin", data)).get_json()[0]
    theirs = upload("bob", ("b.bin", data)).get_json()[0]
    file_object_id = mine["file_object_id"]
    assert db.file_objects.find_one({"_id": file_object_id})["ref_count"] == 2
    pause = Paused(monkeypatch, app.extensions["satchel.files"].refcounts, "release_file_object")
    # fsck reads the intents, then the user files: alice's DELETE lists its reference and
    # removes her file in between, and waits before its decrement
    results = repair_during(
        monkeypatch, maintenance, maintenance.user_files, "all",
        lambda: client.delete(f"/api/v1/files/{mine['user_file_id']}",
                              headers=token_for("alice")).status_code, pause)
    assert results == [204]
    assert db.file_objects.find_one({"_id": file_object_id})["ref_count"] == 1
    assert_downloads(client, token_for("bob"), theirs['user_file_id'], data)


def test_fsck_during_an_upload_abort_keeps_a_chunk_a_file_still_uses(
        app, client, token_for, upload, chunked, db, maintenance, clock, monkeypatch):
    data = os.urandom(CHUNK)
    item = upload("alice", ("a.bin", data)).get_json()[0]
    registered = chunked.register("alice", declare(data + b"tail", "b.bin")).get_json()
    assert registered["chunks"][0]["status"] == "verified"  # held: the upload takes a ref
    assert db.blobs.find_one({"_id": sha(data)})["ref_count"] == 2
    uploads = app.extensions["satchel.uploads"]
    pause = Paused(monkeypatch, uploads.refcounts, "release_blobs")
    # fsck reads the intents, then the uploads' verified chunks: the abort lists its
    # references and deletes the upload in between, and waits before its decrement
    results = repair_during(
        monkeypatch, maintenance, uploads, "held_blob_refs",
        lambda: client.delete(f"/api/v1/files/{registered['user_file_id']}",
                              headers=token_for("alice")).status_code, pause)
    assert results == [204]
    assert db.blobs.find_one({"_id": sha(data)})["ref_count"] == 1
    clock.advance(GRACE + 1)
    maintenance.gc()
    assert_downloads(client, token_for("alice"), item['user_file_id'], data)


def test_fsck_during_an_upload_completion_keeps_its_chunks(
        app, client, token_for, upload, chunked, db, maintenance, clock, monkeypatch):
    data = os.urandom(CHUNK)
    upload("alice", ("a.bin", data))
    body = data + os.urandom(10)
    registered = chunked.register("alice", declare(body, "b.bin")).get_json()
    assert registered["chunks"][0]["status"] == "verified"
    chunked.put(registered["chunks"][1], body[CHUNK:])
    uploads = app.extensions["satchel.uploads"]
    pause = Paused(monkeypatch, uploads.refcounts, "release_blobs")
    # the final PATCH: the upload becomes the user file (its file object takes its own chunk
    # refs), then the upload's refs are given back; fsck reads in between
    results = repair_during(
        monkeypatch, maintenance, uploads, "held_blob_refs",
        lambda: chunked.report("alice", registered["user_file_id"], [1]).get_json()["status"],
        pause)
    assert results == ["available"]
    assert db.blobs.find_one({"_id": sha(data)})["ref_count"] == 2  # the two files' objects
    clock.advance(GRACE + 1)
    maintenance.gc()
    assert maintenance.fsck().problems == []
    assert_downloads(client, token_for("alice"), registered['user_file_id'], body)


def test_fsck_repair_during_an_uploads_last_write_keeps_its_file_object(
        app, upload, db, maintenance, monkeypatch):
    """The upload's intent is live when fsck first reads intents, its user file lands after
    fsck scanned them and its intent is gone by fsck's second read: only the first read shows
    the reference, and a repair must not set the count to 0 (gc would then delete it)."""
    user_files = app.extensions["satchel.files"].user_files
    reached, go, finished = threading.Event(), threading.Event(), threading.Event()
    real_insert, statuses = user_files.insert_many, []

    def paused_insert(documents):
        reached.set()
        assert go.wait(10)
        return real_insert(documents)

    monkeypatch.setattr(user_files, "insert_many", paused_insert)
    uploader = threading.Thread(target=lambda: (
        statuses.append(upload("alice", ("a.bin", os.urandom(100))).status_code),
        finished.set()))
    uploader.start()
    assert reached.wait(10)
    real_intents, reads = maintenance.intents.all, []

    def intents_all():
        reads.append(True)
        if len(reads) == 2:  # fsck has scanned the user files: the upload finishes now
            go.set()
            assert finished.wait(10)
        return real_intents()

    monkeypatch.setattr(maintenance.intents, "all", intents_all)
    maintenance.fsck(repair=True)
    go.set()
    uploader.join(10)
    assert statuses == [201] and len(reads) >= 2
    [file_object] = db.file_objects.find()
    assert file_object["ref_count"] == 1 and maintenance.fsck().is_clean

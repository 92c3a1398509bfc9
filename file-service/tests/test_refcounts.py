"""Reference counting step by step: crashes between steps, GC racing uploads, fsck and gc."""
import json
import os
import threading

import pytest
from click.testing import CliRunner
from pymongo.errors import AutoReconnect

from files_testing import CHUNK, GRACE, sha
from satchel_files.cli import cli
from satchel_files.services.refcounts import ReferencesBusy



def kinds(report):
    return sorted({problem.kind for problem in report.problems})


def blob(db, h):
    return db.blobs.find_one({"_id": h})


def new_object(data):
    h = sha(data)
    return {"hash": h, "size_bytes": len(data), "mime_type": "text/plain", "chunk_size": 65536,
            "chunks": [h]}


def test_a_clean_system_passes_fsck(upload, maintenance):
    upload("alice", ("a.txt", b"a"), ("b.txt", b"b"))
    upload("bob", ("a.txt", b"a"))
    report = maintenance.fsck()
    assert report.is_clean and report.problems == []


def test_a_new_chunk_is_referenced_in_three_writes_and_no_read(refcounts, db, monkeypatch):
    """The per-chunk cost of every upload: list the ref in the intent, try the increment,
    insert; the blob's document is only read when it exists and is not present."""
    calls = []
    for name in ("find", "increment_present", "insert_referenced"):
        real = getattr(refcounts.blobs, name)
        def counted(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)
        monkeypatch.setattr(refcounts.blobs, name, counted)
    intent = refcounts.begin()
    refcounts.acquire_blob(intent, sha(b"new"), b"new")
    assert calls == ["increment_present", "insert_referenced"]
    calls.clear()
    refcounts.acquire_blob(intent, sha(b"new"), b"new")
    assert calls == ["increment_present"]
    assert blob(db, sha(b"new"))["ref_count"] == 2


# crashes between steps: only over-counts, which fsck reports and repairs


def test_crash_after_acquiring_a_chunk_leaves_an_over_count_that_fsck_repairs(
        refcounts, maintenance, db, clock, store):
    intent = refcounts.begin()
    refcounts.acquire_blob(intent, sha(b"chunk"), b"chunk")
    # -- crash: no file object, intent left behind

    assert maintenance.fsck().is_clean  # a fresh intent looks like an upload in flight
    clock.advance(GRACE + 1)
    report = maintenance.fsck()
    assert kinds(report) == ["blob_ref_count", "stale_intent"] and not report.is_clean

    assert maintenance.fsck(repair=True).is_clean
    assert blob(db, sha(b"chunk"))["ref_count"] == 0
    assert maintenance.fsck().problems == []
    clock.advance(GRACE + 1)
    assert maintenance.gc().removed["blobs"] == 1
    assert not store.exists(sha(b"chunk"))


def test_crash_after_the_file_object_before_the_user_file(refcounts, maintenance, db, clock):
    intent = refcounts.begin()
    refcounts.acquire_blob(intent, sha(b"data"), b"data")
    doc = refcounts.acquire_file_object(intent, new_object(b"data"), [sha(b"data")])
    # -- crash: the file object exists with ref_count 1, no user file points at it
    clock.advance(GRACE + 1)

    assert "file_object_ref_count" in kinds(maintenance.fsck())
    assert maintenance.fsck(repair=True).is_clean
    assert db.file_objects.find_one({"_id": doc["_id"]}) is None  # released: nothing uses it
    assert blob(db, sha(b"data"))["ref_count"] == 0
    assert maintenance.fsck().problems == []


def test_crash_mid_delete_between_user_file_and_file_object(upload, app, maintenance, db, clock):
    item = upload("alice", ("a.txt", b"data")).get_json()[0]
    files = app.extensions["satchel.files"]
    current = db.user_files.find_one({"_id": item["user_file_id"]})
    intent = files.refcounts.begin()
    files.refcounts.note_release(intent, current["file_object_id"])
    files.user_files.delete_if_unchanged(current)
    # -- crash before the file object is decremented
    assert maintenance.fsck().is_clean  # in flight
    clock.advance(GRACE + 1)
    assert maintenance.fsck(repair=True).is_clean
    assert db.file_objects.count_documents({}) == 0
    assert blob(db, item["hash"])["ref_count"] == 0


def test_crash_mid_release_leaves_a_stuck_file_object_that_repair_finishes(
        upload, refcounts, maintenance, db, clock):
    data = os.urandom(65536 * 2)
    item = upload("alice", ("a.bin", data)).get_json()[0]
    db.user_files.delete_many({})
    doc = refcounts.file_objects.decrement_live(item["file_object_id"])
    refcounts.file_objects.mark_deleting(item["file_object_id"], refcounts._now_ms())
    refcounts.release_blob(doc["chunks"][0])
    # -- crash: one of two chunks decremented, file object stuck in "deleting"
    clock.advance(GRACE + 1)

    report = maintenance.fsck()
    assert "stuck_deleting_file_object" in kinds(report)
    # the chunk it gave back is no under-count: a file object being deleted may hold its chunks
    assert "blob_ref_count" not in kinds(report)
    assert maintenance.fsck(repair=True).is_clean
    assert db.file_objects.count_documents({}) == 0
    assert [d["ref_count"] for d in db.blobs.find()] == [0, 0]


def test_refs_a_dead_request_listed_but_never_counted_are_no_missing_blob(
        refcounts, maintenance, clock):
    """An intent lists references before they are counted and their bytes stored: until it is
    stale, fsck must not call them missing blobs or lost documents (nothing points at them)."""
    intent = refcounts.begin()
    refcounts.intents.add_blob_refs(intent.id, [sha(b"a"), sha(b"b")], refcounts._now_ms())
    # -- crash before the first count
    assert maintenance.fsck().problems == []  # in flight, as far as fsck can tell
    clock.advance(GRACE + 1)
    assert kinds(maintenance.fsck()) == ["stale_intent"]
    assert maintenance.fsck(repair=True).is_clean
    assert maintenance.fsck().problems == []


def test_a_release_that_died_before_dropping_its_intent_is_no_under_count(
        upload, app, client, token_for, refcounts, maintenance, db, clock, monkeypatch):
    """A delete gives its reference back, then drops its intent: in between (or if it dies
    there), the intent still lists a reference nobody holds. That is no count too low."""
    upload("alice", ("a.txt", b"shared"))
    item = upload("bob", ("b.txt", b"shared")).get_json()[0]

    def delete(intent_id):
        raise AutoReconnect("crash before the intent is dropped")
    monkeypatch.setattr(refcounts.intents, "delete", delete)
    deleted = client.delete(f"/api/v1/files/{item['user_file_id']}", headers=token_for("bob"))
    assert deleted.status_code == 503
    monkeypatch.undo()
    assert db.ref_intents.count_documents({}) == 1
    assert maintenance.fsck().problems == []  # as far as fsck can tell, a delete in flight
    clock.advance(GRACE + 1)
    assert kinds(maintenance.fsck()) == ["stale_intent"]
    assert maintenance.fsck(repair=True).is_clean
    assert db.file_objects.find_one({"_id": item["file_object_id"]})["ref_count"] == 1


def test_crash_between_the_last_release_and_marking_deleting_is_released_by_repair(
        upload, app, client, token_for, refcounts, maintenance, db, clock, store, monkeypatch):
    """A file object at 0 that is still live: nothing would ever release it or its chunks."""
    item = upload("alice", ("a.txt", b"data")).get_json()[0]

    def mark_deleting(*args):
        raise AutoReconnect("crash before the file object is marked deleting")
    monkeypatch.setattr(refcounts.file_objects, "mark_deleting", mark_deleting)
    deleted = client.delete(f"/api/v1/files/{item['user_file_id']}", headers=token_for("alice"))
    assert deleted.status_code == 503
    monkeypatch.undo()
    assert db.file_objects.find_one({"_id": item["file_object_id"]})["ref_count"] == 0
    clock.advance(GRACE + 1)

    report = maintenance.fsck()
    assert "unreferenced_file_object" in kinds(report) and not report.is_clean
    assert maintenance.fsck(repair=True).is_clean
    assert db.file_objects.count_documents({}) == 0
    assert blob(db, item["hash"])["ref_count"] == 0
    clock.advance(GRACE + 1)
    assert maintenance.gc().removed["blobs"] == 1
    assert not store.exists(item["hash"])


def stuck_deleting_blob(refcounts, clock, data):
    """A blob whose deleter marked it deleting, then crashed before deleting its bytes."""
    intent = refcounts.begin()
    refcounts.acquire_blob(intent, sha(data), data)
    refcounts.abort(intent)
    clock.advance(GRACE + 1)
    refcounts.blobs.mark_deleting(sha(data), refcounts._now_ms(), refcounts._now_ms())


def test_a_stuck_deleting_blob_is_finished_by_gc(refcounts, maintenance, db, clock, store):
    stuck_deleting_blob(refcounts, clock, b"x")
    assert maintenance.gc().removed["blobs"] == 0
    clock.advance(GRACE + 1)
    assert maintenance.gc().removed["stuck_blobs"] == 1
    assert blob(db, sha(b"x")) is None and not store.exists(sha(b"x"))


def test_an_under_count_is_reported_loudly_and_repaired(upload, maintenance, db):
    item = upload("alice", ("a.txt", b"x")).get_json()[0]
    db.blobs.update_one({"_id": item["hash"]}, {"$set": {"ref_count": 0}})
    report = maintenance.fsck()
    assert "UNDER" in report.problems[0].detail
    assert maintenance.fsck(repair=True).is_clean
    assert blob(db, item["hash"])["ref_count"] == 1


def test_a_lost_blob_document_is_recreated_with_the_true_count(upload, maintenance, db):
    """A chunk two different files share, its document gone (a partial restore, say)."""
    shared = os.urandom(65536)  # one whole chunk at the tests' chunk size
    upload("alice", ("a.bin", shared + b"tail one"))
    upload("bob", ("b.bin", shared + b"tail two"))
    db.blobs.delete_one({"_id": sha(shared)})
    report = maintenance.fsck()
    assert kinds(report) == ["missing_blob_document"] and not report.is_clean
    assert maintenance.fsck(repair=True).is_clean
    recreated = blob(db, sha(shared))
    assert (recreated["ref_count"], recreated["state"]) == (2, "present")
    assert maintenance.fsck().problems == []


def test_a_repair_skips_counts_that_changed_while_fsck_was_counting(upload, maintenance, db, app):
    item = upload("alice", ("a.txt", b"x")).get_json()[0]
    db.blobs.update_one({"_id": item["hash"]}, {"$set": {"ref_count": 7}})
    blobs = maintenance.blobs
    original = blobs.all

    def all_then_someone_acquires():
        docs = list(original())
        app.extensions["satchel.files"].refcounts.blobs.increment_present(item["hash"])
        return iter(docs)

    blobs.all = all_then_someone_acquires
    report = maintenance.fsck(repair=True)
    blobs.all = original
    [problem] = [p for p in report.problems if p.kind == "blob_ref_count"]
    assert not problem.fixed and "changed during check" in problem.detail
    assert blob(db, item["hash"])["ref_count"] == 8


def test_missing_bytes_and_orphans_are_found(upload, maintenance, store, db, clock):
    item = upload("alice", ("a.txt", b"referenced")).get_json()[0]
    store.delete(item["hash"])
    store.put(sha(b"orphan"), b"orphan")
    clock.advance(GRACE + 1)
    os.utime(store.blob_path(sha(b"orphan")), (clock.now - GRACE - 1,) * 2)

    report = maintenance.fsck()
    assert kinds(report) == ["file_object_missing_blob", "missing_blob", "orphan_blob"]
    repaired = maintenance.fsck(repair=True)
    assert not repaired.is_clean  # lost bytes cannot be repaired
    assert not store.exists(sha(b"orphan")) and blob(db, sha(b"orphan")) is None


# GC racing an upload of the same bytes


def test_gc_that_marked_first_makes_the_upload_wait_and_store_fresh_bytes(
        app, refcounts, maintenance, store, db, clock):
    data = b"racy bytes"
    h = sha(data)
    intent = refcounts.begin()
    refcounts.acquire_blob(intent, h, data)
    refcounts.abort(intent)  # ref 0, bytes still stored
    clock.advance(GRACE + 1)

    upload_waiting, gc_done = threading.Event(), threading.Event()

    def sleep(_seconds):
        upload_waiting.set()
        assert gc_done.wait(5)

    refcounts.sleep = sleep
    real_delete = store.delete
    result = {}

    def upload_same_bytes():
        intent = refcounts.begin()
        refcounts.acquire_blob(intent, h, data)
        result["doc"] = refcounts.acquire_file_object(intent, new_object(data), [h])
        refcounts.end(intent)

    def delete_while_upload_arrives(blob_hash):
        # GC has marked the blob "deleting"; now the upload tries to take a reference.
        thread = threading.Thread(target=upload_same_bytes)
        thread.start()
        assert upload_waiting.wait(5)
        real_delete(blob_hash)
        result["thread"] = thread

    store.delete = delete_while_upload_arrives
    report = maintenance.gc()
    store.delete = real_delete
    gc_done.set()
    result["thread"].join(5)

    assert report.removed["blobs"] == 1
    assert store.exists(h)  # the upload stored the bytes again after GC removed them
    assert blob(db, h)["ref_count"] == 1 and blob(db, h)["state"] == "present"
    assert result["doc"]["chunks"] == [h]
    clock.advance(GRACE + 1)
    assert maintenance.gc().removed["blobs"] == 0
    db.user_files.insert_one({"_id": "u", "owner_id": "x", "file_object_id": result["doc"]["_id"]})
    assert maintenance.fsck().is_clean


def test_an_upload_that_took_the_ref_first_makes_gc_back_off(refcounts, maintenance, store, db, clock):
    data = b"bytes"
    h = sha(data)
    intent = refcounts.begin()
    refcounts.acquire_blob(intent, h, data)
    refcounts.abort(intent)
    clock.advance(GRACE + 1)
    original = maintenance.blobs.collectable

    def listed_then_uploaded(cutoff_ms):
        docs = list(original(cutoff_ms))
        refcounts.acquire_blob(refcounts.begin(), h, data)  # the upload wins the race
        return iter(docs)

    maintenance.blobs.collectable = listed_then_uploaded
    report = maintenance.gc()
    assert report.removed["blobs"] == 0
    assert store.exists(h) and blob(db, h)["ref_count"] == 1


def test_an_upload_gives_up_with_a_503_while_a_deletion_is_in_progress(refcounts, app, upload, db, clock):
    data = b"busy"
    db.blobs.insert_one({"_id": sha(data), "size_bytes": 4, "ref_count": 0, "rev": 0,
                         "state": "deleting", "zero_since_ms": 0,
                         "deleting_since_ms": int(clock.now * 1000)})
    refcounts.sleep = lambda seconds: None
    response = upload("alice", ("a.txt", data))
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert db.user_files.count_documents({}) == 0 and db.ref_intents.count_documents({}) == 0
    with pytest.raises(ReferencesBusy):
        refcounts._increment_blob(sha(data), 4)


def test_gc_dry_run_changes_nothing(upload, client, token_for, maintenance, store, clock):
    item = upload("alice", ("a.txt", b"x")).get_json()[0]
    client.delete(f"/api/v1/files/{item['user_file_id']}", headers=token_for("alice"))
    clock.advance(GRACE + 1)
    assert maintenance.gc(dry_run=True).removed["blobs"] == 1
    assert store.exists(item["hash"])
    report = maintenance.gc()
    assert report.removed["blobs"] == 1 and report.removed_bytes == 1


def test_gc_removes_stale_staging_and_temp_files(maintenance, store, clock, tmp_path):
    tmp_file = tmp_path / "data" / "files" / "tmp" / "upload-leftover"
    tmp_file.parent.mkdir(parents=True, exist_ok=True)
    tmp_file.write_bytes(b"half")
    staging = tmp_path / "data" / "staging" / ("k" * 20)
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(b"staged")
    clock.advance(GRACE + 1)
    os.utime(tmp_file, (clock.now - GRACE - 10,) * 2)
    os.utime(staging, (clock.now - GRACE - 10,) * 2)
    report = maintenance.gc()
    assert report.removed["temp_files"] == 1 and report.removed["staging_objects"] == 1
    assert not tmp_file.exists() and not staging.exists()


# the CLI


def test_cli_fsck_exit_codes_and_json(app, refcounts, clock):
    runner = CliRunner()
    assert runner.invoke(cli, ["fsck"], obj={"app": app}).exit_code == 0
    refcounts.acquire_blob(refcounts.begin(), sha(b"c"), b"c")
    clock.advance(GRACE + 1)
    found = runner.invoke(cli, ["fsck", "--json"], obj={"app": app})
    assert found.exit_code == 1
    assert {p["kind"] for p in json.loads(found.output)["problems"]} == {"blob_ref_count", "stale_intent"}
    repaired = runner.invoke(cli, ["fsck", "--repair"], obj={"app": app})
    assert repaired.exit_code == 0 and "[fixed]" in repaired.output
    gc = runner.invoke(cli, ["gc", "--grace-seconds", "0"], obj={"app": app})
    assert gc.exit_code == 0 and "1 blobs" in gc.output and "(1 bytes)" in gc.output


def test_flask_cli_commands_are_registered(app):
    assert {"fsck", "gc"} <= set(app.cli.commands)


# problems fsck cannot repair are reported and stay reported; the others are repaired


def test_a_file_whose_file_object_is_gone_is_reported_even_after_repair(upload, maintenance, db):
    item = upload("alice", ("a.txt", b"lost")).get_json()[0]
    db.file_objects.delete_one({"_id": item["file_object_id"]})
    for repair in (False, True):
        report = maintenance.fsck(repair=repair)
        assert "missing_file_object" in kinds(report) and not report.is_clean


@pytest.mark.parametrize("collection, kind", [
    ("file_objects", "referenced_file_object_deleting"),
    ("blobs", "referenced_blob_deleting"),
])
def test_references_to_something_being_deleted_are_reported(
        upload, refcounts, maintenance, db, collection, kind):
    item = upload("alice", ("a.txt", b"in use")).get_json()[0]
    key = item["file_object_id"] if collection == "file_objects" else item["hash"]  # one chunk
    db[collection].update_one({"_id": key}, {"$set": {"state": "deleting",
                                                      "deleting_since_ms": refcounts._now_ms()}})
    for repair in (False, True):
        report = maintenance.fsck(repair=repair)
        assert kind in kinds(report) and not report.is_clean


def test_an_unreferenced_blob_without_a_timestamp_is_stamped_so_gc_collects_it(
        refcounts, maintenance, db, clock, store):
    intent = refcounts.begin()
    refcounts.acquire_blob(intent, sha(b"y"), b"y")
    refcounts.abort(intent)
    db.blobs.update_one({"_id": sha(b"y")}, {"$set": {"zero_since_ms": None}})
    assert "unreferenced_blob_without_timestamp" in kinds(maintenance.fsck())
    assert maintenance.fsck(repair=True).is_clean
    assert blob(db, sha(b"y"))["zero_since_ms"] is not None
    clock.advance(GRACE + 1)
    maintenance.gc()
    assert blob(db, sha(b"y")) is None and not store.exists(sha(b"y"))


def test_fsck_repair_finishes_a_stuck_blob_deletion(refcounts, maintenance, db, clock, store):
    stuck_deleting_blob(refcounts, clock, b"z")  # and its lease runs out:
    clock.advance(GRACE + 1)
    assert "stuck_deleting_blob" in kinds(maintenance.fsck())
    assert maintenance.fsck(repair=True).is_clean
    assert blob(db, sha(b"z")) is None and not store.exists(sha(b"z"))


def test_end_intents_after_a_restore_lets_repair_recount_at_once(app, upload, refcounts,
                                                                  maintenance, db):
    item = upload("alice", ("a.txt", b"kept"))
    assert item.status_code == 201
    intent = refcounts.begin()  # a request in flight at the snapshot, gone after the restore
    refcounts.acquire_blob(intent, sha(b"x"), b"x")
    assert maintenance.fsck().problems == []  # as far as fsck can tell: in flight
    result = CliRunner().invoke(cli, ["end-intents"], obj={"app": app})
    assert result.exit_code == 0 and "ended 1 requests" in result.output, result.output
    assert db.ref_intents.count_documents({}) == 0
    assert "blob_ref_count" in kinds(maintenance.fsck())  # no grace period to wait for
    assert maintenance.fsck(repair=True).is_clean
    assert blob(db, sha(b"x"))["ref_count"] == 0
    assert blob(db, item.get_json()[0]["hash"])["ref_count"] == 1


def test_releasing_an_unreferenced_file_object_loses_to_a_reuse_and_keeps_its_chunks(
        upload, db, refcounts, monkeypatch):
    """gc's release of a file object at 0 races a new upload of the same content: if the
    upload takes it first, the file object is live again and its chunks stay counted."""
    item = upload("alice", ("a.bin", os.urandom(2 * CHUNK))).get_json()[0]
    file_object_id = item["file_object_id"]
    db.file_objects.update_one({"_id": file_object_id}, {"$set": {"ref_count": 0}})
    real_mark = refcounts.file_objects.mark_deleting

    def reused_first(file_object_id, now_ms):
        db.file_objects.update_one({"_id": file_object_id}, {"$inc": {"ref_count": 1}})
        return real_mark(file_object_id, now_ms)

    monkeypatch.setattr(refcounts.file_objects, "mark_deleting", reused_first)
    assert refcounts.release_unreferenced_file_object(file_object_id) is False
    assert [blob["ref_count"] for blob in db.blobs.find()] == [1, 1]
    assert db.file_objects.find_one({"_id": file_object_id})["ref_count"] == 1

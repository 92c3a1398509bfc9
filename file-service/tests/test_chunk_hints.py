"""Which chunks a chunked registration may skip: found through the file objects noted in the
chunks' blob documents (repositories/blobs.py), a hint that never grants bytes by itself."""
import os

from pymongo.errors import AutoReconnect

from files_testing import CHUNK, declare, pieces_of, sha
from satchel_files.repositories.blobs import FILE_OBJECTS_KEPT


def statuses(response):
    return [chunk["status"] for chunk in response.get_json()["chunks"]]


def test_a_user_skips_the_chunks_of_a_file_they_hold(chunked, upload):
    data = os.urandom(2 * CHUNK)
    assert upload("alice", ("a.bin", data)).status_code == 201
    again = chunked.register("alice", declare(data + os.urandom(10), "b.bin"))
    assert statuses(again) == ["verified", "verified", "pending"]


def test_a_new_file_object_is_noted_in_each_chunk_once(upload, db):
    piece = os.urandom(CHUNK)
    item = upload("alice", ("twice.bin", piece + piece)).get_json()[0]  # the same chunk twice
    assert db.blobs.find_one({"_id": item["hash"]}) is None  # multi-chunk: the file's own hash
    [blob] = db.blobs.find({})
    assert blob["file_objects"] == [item["file_object_id"]]


def test_a_file_object_not_noted_only_costs_the_chunks_again(chunked, upload, db):
    data = os.urandom(2 * CHUNK)
    upload("alice", ("a.bin", data))
    db.blobs.update_many({}, {"$unset": {"file_objects": ""}})  # made before the notes existed
    body = chunked.register("alice", declare(data + b"tail", "b.bin"))
    assert statuses(body) == ["pending", "pending", "pending"]
    done = chunked.upload("alice", data + b"tail", "b.bin")
    assert done["status"] == "available"


def test_a_noted_file_object_that_is_gone_grants_nothing(chunked, upload, client, token_for, db):
    data = os.urandom(2 * CHUNK)
    item = upload("alice", ("a.bin", data)).get_json()[0]
    assert client.delete(f"/api/v1/files/{item['user_file_id']}",
                         headers=token_for("alice")).status_code == 204
    assert db.file_objects.count_documents({}) == 0
    assert db.blobs.find_one({})["file_objects"] == [item["file_object_id"]]  # still noted
    assert statuses(chunked.register("alice", declare(data, "b.bin"))) == ["pending", "pending"]


def test_a_noted_file_object_being_deleted_grants_nothing(chunked, upload, db):
    data = os.urandom(2 * CHUNK)
    upload("alice", ("a.bin", data))
    db.file_objects.update_many({}, {"$set": {"state": "deleting"}})  # alice's file still names it
    assert statuses(chunked.register("alice", declare(data + b"x", "b.bin"))) == \
        ["pending", "pending", "pending"]


def test_another_users_noted_file_object_grants_nothing(chunked, upload):
    data = os.urandom(2 * CHUNK)
    upload("bob", ("a.bin", data))
    assert statuses(chunked.register("alice", declare(data, "mine.bin"))) == ["pending", "pending"]


def test_the_notes_keep_the_newest_file_objects(upload, db):
    shared = os.urandom(CHUNK)
    ids = [upload("alice", (f"{i}.bin", shared + os.urandom(8))).get_json()[0]["file_object_id"]
           for i in range(FILE_OBJECTS_KEPT + 2)]
    noted = db.blobs.find_one({"_id": sha(shared)})["file_objects"]
    assert noted == ids[-FILE_OBJECTS_KEPT:]


def test_an_upload_whose_note_fails_is_still_stored(app, upload, db, monkeypatch):
    def note_fails(blob_hashes, file_object_id):
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(app.extensions["satchel.files"].refcounts.blobs, "note_file_object",
                        note_fails)
    data = os.urandom(2 * CHUNK)
    response = upload("alice", ("a.bin", data))
    assert response.status_code == 201
    assert all("file_objects" not in blob for blob in db.blobs.find({}))
    assert len(pieces_of(data)) == db.blobs.count_documents({})


def test_many_candidate_file_objects_are_asked_about_in_one_query(chunked, upload, app,
                                                                   monkeypatch):
    shared = os.urandom(CHUNK)
    for i in range(20):  # 20 file objects share the chunk: more than are asked one by one
        upload("alice", (f"{i}.bin", shared + os.urandom(8)))
    user_files = app.extensions["satchel.uploads"].user_files
    one_by_one = []
    monkeypatch.setattr(user_files, "owner_has_file_object",
                        lambda *args: one_by_one.append(args) or True)
    assert statuses(chunked.register("alice", declare(shared + b"new", "b.bin"))) == \
        ["verified", "pending"]
    assert one_by_one == []  # the many-candidates path answered
    assert statuses(chunked.register("bob", declare(shared + b"new", "c.bin"))) == \
        ["pending", "pending"]

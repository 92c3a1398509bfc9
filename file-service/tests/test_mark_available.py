"""FileService.mark_available: the one place a user file becomes available, for multipart
uploads, chunked uploads and re-registrations of content the user already has."""
import os
from datetime import datetime, timezone

import pytest

from files_testing import CHUNK, pieces_of, sha
from satchel_files.services.files import available_user_file


@pytest.fixture
def files(app):
    return app.extensions["satchel.files"]


def test_every_upload_path_writes_the_same_user_file(upload, chunked, db):  # noqa: F811
    data = os.urandom(2 * CHUNK + 1)
    multipart = upload("alice", ("a.bin", data)).get_json()[0]["user_file_id"]
    completed = chunked.upload("bob", data)["user_file_id"]
    reused = chunked.upload("alice", data, "again.bin")["user_file_id"]
    documents = [db.user_files.find_one({"_id": user_file_id})
                 for user_file_id in (multipart, completed, reused)]
    assert len({tuple(sorted(document)) for document in documents}) == 1
    for document in documents:
        assert (document["status"], document["version"], document["hash"],
                document["size_bytes"]) == ("available", 1, sha(data), len(data))
        assert document["created_at"] == document["updated_at"]
    assert len({document["file_object_id"] for document in documents}) == 1


def test_a_write_that_loses_the_race_makes_nothing_available(files, db):
    file_object = {"_id": "fo-1", "hash": sha(b"x"), "size_bytes": 1}
    document = available_user_file("uf-1", "alice", "x.txt", file_object, "text/plain",
                                   datetime.now(timezone.utc))
    assert files.mark_available([document], write=lambda: False) is False
    assert db.user_files.count_documents({}) == 0
    assert [change["state"] for change in db.changes.find({"file_id": "uf-1"})] == ["aborted"]


def test_a_completion_that_loses_the_race_gives_its_references_back(
        app, chunked, db, maintenance, monkeypatch):  # noqa: F811
    uploads = app.extensions["satchel.uploads"].uploads
    original = uploads.replace_if_rev

    def finished_by_someone_else(current, replacement):
        if replacement.get("status") == "available":
            return False
        return original(current, replacement)

    monkeypatch.setattr(uploads, "replace_if_rev", finished_by_someone_else)
    data = os.urandom(2 * CHUNK)
    assert chunked.upload("alice", data)["status"] == "uploading"
    assert db.ref_intents.count_documents({}) == 0
    assert db.file_objects.count_documents({}) == 0
    assert sorted(blob["ref_count"] for blob in db.blobs.find()) == [1, 1]  # the upload's own
    assert {blob["_id"] for blob in db.blobs.find()} == {sha(piece) for piece in pieces_of(data)}
    assert maintenance.fsck().is_clean

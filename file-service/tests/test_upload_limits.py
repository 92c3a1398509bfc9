import os

import pytest

from files_testing import CHUNK, code


@pytest.fixture
def config_overrides():
    return {"max_upload_bytes": 3 * 64 * 1024, "user_quota_bytes": 4 * 64 * 1024}


def test_a_file_over_max_upload_bytes_is_a_413_and_leaves_nothing(upload, db, maintenance):
    response = upload("alice", ("big.bin", os.urandom(3 * CHUNK + 1)))

    assert response.status_code == 413 and code(response) == "payload_too_large"
    assert db.user_files.count_documents({}) == 0 and db.file_objects.count_documents({}) == 0
    assert all(doc["ref_count"] == 0 for doc in db.blobs.find())
    assert maintenance.fsck().is_clean


def test_a_request_whose_files_together_exceed_the_limit_is_a_413(upload, db):
    response = upload("alice", ("a.bin", os.urandom(2 * CHUNK)), ("b.bin", os.urandom(2 * CHUNK)))
    assert response.status_code == 413
    assert db.user_files.count_documents({}) == 0


def test_a_declared_content_length_over_the_limit_is_refused_before_reading(client, token_for):
    response = client.post("/api/v1/files/upload", data=b"x" * 10, headers=token_for("alice"),
                           content_type="multipart/form-data; boundary=b",
                           environ_overrides={"CONTENT_LENGTH": str(10 ** 12)})
    assert response.status_code == 413


def test_going_over_the_quota_is_a_413_with_a_clear_message(upload, db):
    assert upload("alice", ("a.bin", os.urandom(3 * CHUNK))).status_code == 201

    response = upload("alice", ("b.bin", os.urandom(CHUNK + 1)))

    assert response.status_code == 413
    error = response.get_json()["error"]
    assert error["code"] == "quota_exceeded" and "quota" in error["message"]
    assert db.user_files.count_documents({"owner_id": "alice"}) == 1
    # another user is not affected
    assert upload("bob", ("b.bin", os.urandom(CHUNK + 1))).status_code == 201

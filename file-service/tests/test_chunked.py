"""Chunked uploads: register, PUT to pre-signed staging URLs (simulated), PATCH, complete."""
import base64
import os
from collections import Counter
from urllib.parse import parse_qsl, urlsplit

import pytest

from satchel_files.storage import StorageError

from files_testing import CHUNK, blob_refs, code, declare, gateway_accepts, pieces_of, sha

UPLOAD_TTL = 86400


# happy paths


def test_register_answers_a_signed_put_url_per_chunk(chunked, store):
    data = os.urandom(2 * CHUNK + 100)
    response = chunked.register("alice", declare(data))
    assert response.status_code == 201
    body = response.get_json()
    assert body["status"] == "uploading" and body["chunk_size"] == CHUNK
    assert [c["status"] for c in body["chunks"]] == ["pending"] * 3
    for chunk in body["chunks"]:
        url = urlsplit(chunk["upload_url"])
        query = dict(parse_qsl(url.query))
        assert url.path.startswith("/blobs/staging/")
        assert query["size_bytes"] == str(chunk["size_bytes"])
        assert gateway_accepts(store, "PUT", url.path, query)
        assert not gateway_accepts(store, "PUT", url.path + "x", query)
        assert chunk["upload_expires_at"]
    keys = {urlsplit(c["upload_url"]).path for c in body["chunks"]}
    assert len(keys) == 3  # one unguessable staging key per chunk


def test_single_and_multi_chunk_uploads_become_available_with_download_links(
        chunked, client, token_for):
    for data in (b"hello chunked world", os.urandom(3 * CHUNK + 7)):
        done = chunked.upload("alice", data)
        assert done["status"] == "available"
        assert done["hash"] == sha(data) and done["file_object_id"]
        detail = chunked.get("alice", done["user_file_id"]).get_json()
        assert detail["status"] == "available" and detail["download_url"]
        assert all(c["status"] == "verified" and c["download_url"] for c in detail["chunks"])
        content = client.get(f"/api/v1/files/{done['user_file_id']}/content",
                             headers=token_for("alice"))
        assert content.data == data


def test_hashes_in_upper_case_are_the_same_hashes(chunked, upload):
    """Hex is case-insensitive: an upper-case declaration names the same content, so it is
    stored (and deduplicated) under the lower-case hash."""
    data = os.urandom(CHUNK + 3)
    body = declare(data)
    body["hash"] = body["hash"].upper()
    for chunk in body["chunks"]:
        chunk["hash"] = chunk["hash"].upper()
    registered = chunked.register("alice", body).get_json()
    assert registered["hash"] == sha(data)
    assert [c["hash"] for c in registered["chunks"]] == [sha(p) for p in pieces_of(data)]
    for entry, piece in zip(registered["chunks"], pieces_of(data)):
        chunked.put(entry, piece)
    done = chunked.report("alice", registered["user_file_id"], [0, 1]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert upload("alice", ("same.bin", data)).get_json()[0]["file_object_id"] == \
        done["file_object_id"]


def test_the_same_bytes_by_multipart_and_by_chunks_share_one_file_object(chunked, upload, db):
    data = os.urandom(2 * CHUNK + 1)
    multipart = upload("bob", ("m.bin", data)).get_json()[0]
    done = chunked.upload("alice", data)
    assert done["file_object_id"] == multipart["file_object_id"]
    assert done["ref_count"] == 2
    assert db.file_objects.count_documents({}) == 1
    assert all(blob_refs(db, sha(p)) == 1 for p in pieces_of(data))


@pytest.mark.parametrize("config_overrides", [{"user_quota_bytes": 3 * CHUNK}])
def test_uploads_in_progress_count_toward_the_quota_but_are_not_listed(
        chunked, client, token_for, config_overrides, app, upload, db):
    quota = app.extensions["satchel.files"].quota
    body = chunked.register("alice", declare(os.urandom(2 * CHUNK))).get_json()
    assert body["status"] == "uploading"
    assert client.get("/api/v1/files", headers=token_for("alice")).get_json() == []
    # Nothing of it is stored yet, but its declared size is alice's usage.
    assert quota.usage("alice") == 2 * CHUNK and quota.usage("bob") == 0
    # So what would fit in an empty account no longer fits, by either upload path ...
    response = chunked.register("alice", declare(os.urandom(2 * CHUNK)))
    assert response.status_code == 413 and code(response) == "quota_exceeded"
    response = upload("alice", ("m.bin", os.urandom(2 * CHUNK)))
    assert response.status_code == 413 and code(response) == "quota_exceeded"
    assert db.user_files.count_documents({"owner_id": "alice"}) == 1
    # ... while what fits beside it still does, and another user is not affected.
    assert chunked.register("alice", declare(os.urandom(CHUNK))).status_code == 201
    assert chunked.register("bob", declare(os.urandom(2 * CHUNK))).status_code == 201
    assert quota.usage("alice") == 3 * CHUNK


@pytest.mark.parametrize("config_overrides", [{"user_quota_bytes": 3 * CHUNK}])
def test_declared_size_is_checked_against_the_quota(chunked, config_overrides):
    assert chunked.register("alice", declare(os.urandom(2 * CHUNK))).status_code == 201
    response = chunked.register("alice", declare(os.urandom(2 * CHUNK)))
    assert response.status_code == 413 and code(response) == "quota_exceeded"


# bad declarations


@pytest.mark.parametrize("mangle", [
    lambda b: b["chunks"].pop(),                                      # too few
    lambda b: b["chunks"][0].update(size_bytes=CHUNK - 1),            # wrong size
    lambda b: b["chunks"].reverse(),                                  # out of order
    lambda b: b.update(size_bytes=b["size_bytes"] + 1),               # sizes do not add up
])
def test_chunking_that_does_not_match_the_server_is_a_400_saying_what_is_expected(chunked, mangle):
    body = declare(os.urandom(2 * CHUNK + 5))
    mangle(body)
    response = chunked.register("alice", body)
    assert response.status_code == 400 and code(response) == "invalid_chunking"
    details = response.get_json()["error"]["details"]
    assert details["chunk_size"] == CHUNK and "expected_chunks" in details
    assert str(CHUNK) in response.get_json()["error"]["message"]


def test_invalid_fields_are_a_400(chunked):
    body = declare(b"x")
    body["hash"] = "not-a-hash"
    assert chunked.register("alice", body).status_code in (400, 422)


# skipping


def test_a_second_upload_by_the_same_user_needs_no_chunks(chunked, db):
    data = os.urandom(3 * CHUNK)
    first = chunked.upload("alice", data)
    again = chunked.register("alice", declare(data, "copy.bin"))
    assert again.status_code == 201
    body = again.get_json()
    assert body["status"] == "available" and "upload_url" not in str(body)
    assert body["file_object_id"] == first["file_object_id"] and body["filename"] == "copy.bin"
    assert db.file_objects.find_one({"_id": first["file_object_id"]})["ref_count"] == 2


def test_only_the_changed_chunk_is_requested(chunked, upload):
    data = bytearray(os.urandom(5 * CHUNK))
    upload("alice", ("v1.bin", bytes(data)))
    data[2 * CHUNK + 10] ^= 0xFF
    body = chunked.register("alice", declare(bytes(data))).get_json()
    assert [c["status"] for c in body["chunks"]] == ["verified", "verified", "pending",
                                                     "verified", "verified"]
    chunked.put(body["chunks"][2], pieces_of(bytes(data))[2])
    done = chunked.report("alice", body["user_file_id"], [2]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(bytes(data))


def test_another_users_hash_must_still_be_uploaded_and_looks_like_an_unknown_one(chunked, upload):
    known = os.urandom(2 * CHUNK)
    upload("alice", ("secret.bin", known))
    unknown = os.urandom(2 * CHUNK)
    a = chunked.register("bob", declare(known)).get_json()
    b = chunked.register("bob", declare(unknown)).get_json()

    def shape(body):
        return {k: v for k, v in body.items() if k not in ("user_file_id", "hash", "created_at",
                                                          "updated_at", "upload_expires_at")}, \
            [(c["status"], sorted(c)) for c in body["chunks"]]
    strip = lambda body: (shape({**body, "chunks": []}), shape(body)[1])  # noqa: E731
    assert strip(a) == strip(b)
    assert all(c["status"] == "pending" and c["upload_url"] for c in a["chunks"])


# failures and retries


def test_wrong_bytes_fail_with_a_fresh_url_then_the_right_bytes_verify(chunked, store, db):
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    first = body["chunks"][0]
    chunked.put(first, os.urandom(CHUNK))  # right size, wrong bytes
    chunked.put(body["chunks"][1], pieces_of(data)[1])
    result = chunked.report("alice", body["user_file_id"], [0, 1]).get_json()
    failed = result["chunks"][0]
    assert failed["status"] == "failed" and "SHA-256" in failed["reason"]
    assert failed["upload_url"] != first["upload_url"]
    assert result["chunks"][1]["status"] == "verified"
    assert list(store.iter_staging()) == []  # the bad bytes are gone
    assert not blob_refs(db, sha(pieces_of(data)[0]))
    assert not store.exists(sha(pieces_of(data)[0]))

    chunked.put(failed, pieces_of(data)[0])
    done = chunked.report("alice", body["user_file_id"], [0]).get_json()
    assert done["status"] == "available"


def test_a_wrong_size_or_missing_upload_fails_with_a_reason(chunked, store):
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0][:-1])
    result = chunked.report("alice", body["user_file_id"], [0, 1]).get_json()
    assert [c["status"] for c in result["chunks"]] == ["failed", "failed"]
    assert "bytes" in result["chunks"][0]["reason"]
    assert "No bytes" in result["chunks"][1]["reason"]
    assert list(store.iter_staging()) == []


def test_a_wrong_whole_file_hash_fails_the_upload(chunked):
    data = os.urandom(CHUNK + 3)
    body = declare(data)
    body["hash"] = sha(b"something else")
    registered = chunked.register("alice", body).get_json()
    for entry, piece in zip(registered["chunks"], pieces_of(data)):
        chunked.put(entry, piece)
    result = chunked.report("alice", registered["user_file_id"], [0, 1]).get_json()
    assert result["status"] == "failed"
    assert result["failure"]["code"] == "file_hash_mismatch"


def test_patch_is_idempotent(chunked, db):
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    once = chunked.report("alice", body["user_file_id"], [0]).get_json()
    twice = chunked.report("alice", body["user_file_id"], [0, 0]).get_json()
    assert once["chunks"][0]["status"] == twice["chunks"][0]["status"] == "verified"
    assert blob_refs(db, sha(pieces_of(data)[0])) == 1
    chunked.put(body["chunks"][1], pieces_of(data)[1])
    done = chunked.report("alice", body["user_file_id"], [1]).get_json()
    again = chunked.report("alice", body["user_file_id"], [0, 1])
    assert again.status_code == 200 and again.get_json()["status"] == "available"
    assert again.get_json()["file_object_id"] == done["file_object_id"]
    assert all(blob_refs(db, sha(p)) == 1 for p in pieces_of(data))


def test_two_reports_of_one_chunk_at_the_same_moment_both_see_it_verified(chunked, db, store,
                                                                           monkeypatch):
    """The second report arrives while the first is still verifying the bytes: it must find
    them (and verify them again), not call the chunk failed for want of bytes."""
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    real_promote, inner = store.promote_staging, {}

    def promote_while_another_report_comes_in(*args, **kwargs):
        kept = real_promote(*args, **kwargs)
        if not inner:  # once: the inner report's own promote must not start a third
            inner["started"] = True
            inner["response"] = chunked.report("alice", body["user_file_id"], [0])
        return kept

    monkeypatch.setattr(store, "promote_staging", promote_while_another_report_comes_in)
    outer = chunked.report("alice", body["user_file_id"], [0])
    assert inner["response"].get_json()["chunks"][0]["status"] == "verified"
    assert outer.get_json()["chunks"][0]["status"] == "verified"
    assert blob_refs(db, sha(pieces_of(data)[0])) == 1
    assert store.staging_size(body["chunks"][0]["upload_url"].split("/")[-1].split("?")[0]) is None


def test_verified_bytes_are_not_overwritten_through_a_still_valid_url(chunked, store):
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    chunked.report("alice", body["user_file_id"], [0])
    chunked.put(body["chunks"][0], os.urandom(CHUNK))  # the old URL again
    assert b"".join(store.open(sha(pieces_of(data)[0]))) == pieces_of(data)[0]


def test_a_bad_index_is_a_400_and_changes_nothing(chunked):
    body = chunked.register("alice", declare(os.urandom(CHUNK))).get_json()
    response = chunked.report("alice", body["user_file_id"], [0, 5])
    assert response.status_code == 400 and code(response) == "invalid_chunk_index"
    assert chunked.get("alice", body["user_file_id"]).get_json()["chunks"][0]["status"] == "pending"


def test_other_users_cannot_see_report_or_abort_an_upload(chunked, client, token_for):
    body = chunked.register("alice", declare(os.urandom(CHUNK))).get_json()
    fid = body["user_file_id"]
    assert chunked.get("bob", fid).status_code == 403
    assert chunked.report("bob", fid, [0]).status_code == 403
    assert client.delete(f"/api/v1/files/{fid}", headers=token_for("bob")).status_code == 403


# several chunks in one PATCH


@pytest.fixture
def two_chunks_per_write(monkeypatch):
    """A PATCH records its outcomes every 2 chunks (32 in production)."""
    from satchel_files.services import uploads
    monkeypatch.setattr(uploads, "_CHUNKS_PER_WRITE", 2)


def staged_upload(chunked, data, body=None):
    """alice registers `data` and PUTs every chunk: the POST's answer."""
    registered = chunked.register("alice", body or declare(data)).get_json()
    for entry, piece in zip(registered["chunks"], pieces_of(data)):
        chunked.put(entry, piece)
    return registered


def staging_key(entry):
    return urlsplit(entry["upload_url"]).path.rsplit("/", 1)[1]


def promote_then(store, monkeypatch, key, action):
    """Run `action()` once, right after the staged bytes of attempt `key` are promoted."""
    real_promote, done = store.promote_staging, []

    def promote(upload_key, *args, **kwargs):
        kept = real_promote(upload_key, *args, **kwargs)
        if upload_key == key and not done:
            done.append(True)
            action()
        return kept

    monkeypatch.setattr(store, "promote_staging", promote)


def report_during_promotion(chunked, store, monkeypatch, body, chunk, indexes):
    """alice reports `indexes` once, right after chunk `chunk`'s staged bytes are promoted:
    {"chunks": that report's chunk list}, once it ran."""
    inner = {}
    promote_then(store, monkeypatch, staging_key(body["chunks"][chunk]), lambda: inner.setdefault(
        "chunks", chunked.report("alice", body["user_file_id"], indexes).get_json()["chunks"]))
    return inner


def fail_promoting(store, monkeypatch, key):
    """The blob store fails to promote attempt `key`; undo() puts it right."""
    real_promote = store.promote_staging

    def promote(upload_key, *args, **kwargs):
        if upload_key == key:
            raise StorageError("disk went away")
        return real_promote(upload_key, *args, **kwargs)

    monkeypatch.setattr(store, "promote_staging", promote)
    return lambda: monkeypatch.setattr(store, "promote_staging", real_promote)


def test_a_patch_of_several_chunks_records_every_outcome_in_one_write(chunked, db, store):
    data = os.urandom(4 * CHUNK)
    pieces = pieces_of(data)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces[0])
    chunked.put(body["chunks"][1], os.urandom(CHUNK))  # right size, wrong bytes
    chunked.put(body["chunks"][2], pieces[2][:-1])     # wrong size; chunk 3 never sent
    rev = db.user_files.find_one({"_id": body["user_file_id"]})["upload_rev"]

    result = chunked.report("alice", body["user_file_id"], [3, 2, 1, 0]).get_json()
    assert [c["status"] for c in result["chunks"]] == ["verified", "failed", "failed", "failed"]
    assert [bool(c.get("upload_url")) for c in result["chunks"]] == [False, True, True, True]
    assert db.user_files.find_one({"_id": body["user_file_id"]})["upload_rev"] == rev + 1
    assert blob_refs(db, sha(pieces[0])) == 1
    assert not any(blob_refs(db, sha(piece)) for piece in pieces[1:])
    assert db.ref_intents.count_documents({}) == 0 and list(store.iter_staging()) == []


def test_a_chunk_a_concurrent_report_settles_mid_batch_is_counted_once(
        chunked, db, store, monkeypatch, maintenance):
    data = os.urandom(2 * CHUNK)
    pieces = pieces_of(data)
    body = staged_upload(chunked, data)
    inner = report_during_promotion(chunked, store, monkeypatch, body, 1, [0])

    outer = chunked.report("alice", body["user_file_id"], [0, 1]).get_json()
    assert inner["chunks"][0]["status"] == "verified" and inner["chunks"][1]["status"] == "pending"
    assert outer["status"] == "available" and outer["hash"] == sha(data)
    assert [blob_refs(db, sha(piece)) for piece in pieces] == [1, 1]
    assert db.ref_intents.count_documents({}) == 0 and maintenance.fsck().is_clean


def test_an_upload_aborted_mid_batch_gets_a_404_and_keeps_no_reference(
        chunked, client, token_for, db, store, monkeypatch, maintenance):
    data = os.urandom(2 * CHUNK)
    pieces = pieces_of(data)
    body = staged_upload(chunked, data)
    promote_then(store, monkeypatch, staging_key(body["chunks"][0]), lambda: client.delete(
        f"/api/v1/files/{body['user_file_id']}", headers=token_for("alice")))

    response = chunked.report("alice", body["user_file_id"], [0, 1])
    assert response.status_code == 404 and code(response) == "not_found"
    assert [blob_refs(db, sha(piece)) for piece in pieces] == [0, 0]
    assert db.ref_intents.count_documents({}) == 0 and db.user_files.count_documents({}) == 0
    assert maintenance.fsck().is_clean


def test_a_store_failure_mid_batch_changes_nothing_and_a_retry_completes(
        chunked, db, store, monkeypatch, maintenance):
    data = os.urandom(3 * CHUNK)
    pieces = pieces_of(data)
    body = staged_upload(chunked, data)
    before = db.user_files.find_one({"_id": body["user_file_id"]})
    undo = fail_promoting(store, monkeypatch, staging_key(body["chunks"][1]))
    response = chunked.report("alice", body["user_file_id"], [0, 1, 2])
    assert response.status_code == 503 and code(response) == "service_unavailable"
    assert db.user_files.find_one({"_id": body["user_file_id"]}) == before
    assert not any(blob_refs(db, sha(piece)) for piece in pieces)
    assert db.ref_intents.count_documents({}) == 0

    undo()
    done = chunked.report("alice", body["user_file_id"], [0, 1, 2]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert [blob_refs(db, sha(piece)) for piece in pieces] == [1, 1, 1]
    assert maintenance.fsck().is_clean


def test_a_chunk_verified_by_another_report_before_its_batch_is_skipped(
        chunked, db, store, monkeypatch, maintenance, two_chunks_per_write):
    data = os.urandom(3 * CHUNK)
    pieces = pieces_of(data)
    body = staged_upload(chunked, data)
    inner = report_during_promotion(chunked, store, monkeypatch, body, 0, [2])

    outer = chunked.report("alice", body["user_file_id"], [0, 1, 2])
    assert inner["chunks"][2]["status"] == "verified"
    assert outer.status_code == 200 and outer.get_json()["status"] == "available"
    assert [blob_refs(db, sha(piece)) for piece in pieces] == [1, 1, 1]
    assert maintenance.fsck().is_clean


def test_a_batch_that_fails_half_way_still_records_why_its_bad_chunks_failed(
        chunked, db, store, monkeypatch):
    data = os.urandom(3 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], os.urandom(CHUNK))  # wrong bytes: removed when checked
    chunked.put(body["chunks"][1], pieces_of(data)[1][:-1])  # wrong size: removed at once
    chunked.put(body["chunks"][2], pieces_of(data)[2])
    fail_promoting(store, monkeypatch, staging_key(body["chunks"][2]))

    assert chunked.report("alice", body["user_file_id"], [0, 1, 2]).status_code == 503
    state = chunked.get("alice", body["user_file_id"]).get_json()
    assert [c["status"] for c in state["chunks"]] == ["failed", "failed", "pending"]
    assert "SHA-256" in state["chunks"][0]["reason"] and "bytes" in state["chunks"][1]["reason"]
    assert all(c["upload_url"] for c in state["chunks"])
    assert db.ref_intents.count_documents({}) == 0


def test_a_patch_of_many_chunks_keeps_the_progress_of_each_write(
        chunked, db, store, monkeypatch, maintenance, two_chunks_per_write):
    data = os.urandom(6 * CHUNK)
    pieces = pieces_of(data)
    body = staged_upload(chunked, data)
    undo = fail_promoting(store, monkeypatch, staging_key(body["chunks"][3]))
    assert chunked.report("alice", body["user_file_id"], [0, 1, 2, 3, 4]).status_code == 503
    kept = db.user_files.find_one({"_id": body["user_file_id"]})
    assert [c["status"] for c in kept["chunks"]] == ["verified"] * 2 + ["pending"] * 4
    assert [blob_refs(db, sha(piece)) for piece in pieces[:2]] == [1, 1]
    assert not any(blob_refs(db, sha(piece)) for piece in pieces[2:])

    undo()
    done = chunked.report("alice", body["user_file_id"], [2, 3, 4, 5]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert maintenance.fsck().is_clean


def test_every_chunk_kept_for_the_whole_file_digest_is_let_go_even_when_the_patch_fails(
        chunked, store, monkeypatch):
    """The local store lends each verified chunk's bytes mapped; a failed batch must release
    the checks that finished but were never taken, as a good one releases every chunk."""
    kept, real_promote = [], store.promote_staging

    def promote(*args, **kwargs):
        bytes_kept = real_promote(*args, **kwargs)
        kept.append(bytes_kept)
        return bytes_kept

    monkeypatch.setattr(store, "promote_staging", promote)
    data = os.urandom(6 * CHUNK)
    body = staged_upload(chunked, data)
    undo = fail_promoting(store, monkeypatch, staging_key(body["chunks"][1]))
    assert chunked.report("alice", body["user_file_id"], list(range(6))).status_code == 503
    assert len(kept) >= 2 and all(k is not None and k.pieces == [] for k in kept)

    undo()
    done = chunked.report("alice", body["user_file_id"], list(range(6))).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert len(kept) >= 8 and all(k.pieces == [] for k in kept)


@pytest.mark.parametrize("config_overrides", [{"upload_buffer_bytes": 2 * CHUNK}])
def test_a_patch_holds_no_more_chunks_than_the_upload_buffer_budget(
        app, chunked, store, monkeypatch, config_overrides):
    buffers = app.extensions["satchel.files"].buffers
    most, real_reserve = [0], buffers.reserve

    def reserve(size, *, wait):
        granted = real_reserve(size, wait=wait)
        most[0] = max(most[0], buffers.in_use_bytes)
        return granted

    monkeypatch.setattr(buffers, "reserve", reserve)
    data = os.urandom(6 * CHUNK)
    done = chunked.report("alice", staged_upload(chunked, data)["user_file_id"],
                          list(range(6))).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert most[0] == 2 * CHUNK and buffers.in_use_bytes == 0

    body = staged_upload(chunked, os.urandom(6 * CHUNK))
    fail_promoting(store, monkeypatch, staging_key(body["chunks"][4]))
    assert chunked.report("alice", body["user_file_id"], list(range(6))).status_code == 503
    assert buffers.in_use_bytes == 0


def test_an_upload_changing_under_every_write_is_a_409_that_keeps_no_reference(
        app, chunked, db, monkeypatch, maintenance):
    data = os.urandom(2 * CHUNK)
    body = staged_upload(chunked, data)
    repository = app.extensions["satchel.uploads"].uploads
    monkeypatch.setattr(repository, "replace_if_rev", lambda current, replacement: False)

    response = chunked.report("alice", body["user_file_id"], [0, 1])
    assert response.status_code == 409 and code(response) == "conflict"
    assert not any(blob_refs(db, sha(piece)) for piece in pieces_of(data))
    assert db.ref_intents.count_documents({}) == 0

    monkeypatch.undo()
    done = chunked.report("alice", body["user_file_id"], [0, 1]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert maintenance.fsck().is_clean


# resume, abort, expiry


def test_get_resumes_with_fresh_urls_for_the_chunks_still_needed(chunked, clock):
    data = os.urandom(3 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][1], pieces_of(data)[1])
    chunked.report("alice", body["user_file_id"], [1])
    clock.advance(60)
    resumed = chunked.get("alice", body["user_file_id"]).get_json()
    assert [c["status"] for c in resumed["chunks"]] == ["pending", "verified", "pending"]
    assert "upload_url" not in resumed["chunks"][1]
    assert urlsplit(resumed["chunks"][0]["upload_url"]).path == \
        urlsplit(body["chunks"][0]["upload_url"]).path  # the same attempt, signed again
    for index in (0, 2):
        chunked.put(resumed["chunks"][index], pieces_of(data)[index])
    assert chunked.report("alice", body["user_file_id"], [0, 2]).get_json()["status"] == "available"


def test_delete_aborts_an_upload_releasing_refs_and_staging(chunked, client, token_for, db, store,
                                                            maintenance):
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    chunked.report("alice", body["user_file_id"], [0])
    chunked.put(body["chunks"][1], pieces_of(data)[1])  # staged, never reported
    assert blob_refs(db, sha(pieces_of(data)[0])) == 1
    response = client.delete(f"/api/v1/files/{body['user_file_id']}", headers=token_for("alice"))
    assert response.status_code == 204
    assert chunked.get("alice", body["user_file_id"]).status_code == 404
    assert blob_refs(db, sha(pieces_of(data)[0])) == 0
    assert list(store.iter_staging()) == []
    assert maintenance.fsck().is_clean


def test_untouched_uploads_expire_and_gc_collects_their_bytes(chunked, db, store, clock,
                                                              maintenance):
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    chunked.report("alice", body["user_file_id"], [0])
    chunked.put(body["chunks"][1], pieces_of(data)[1])

    clock.advance(7200)  # past the grace period, not the upload's TTL: its staging stays
    maintenance.gc()
    assert db.user_files.count_documents({}) == 1 and len(list(store.iter_staging())) == 1

    clock.advance(UPLOAD_TTL)
    report = maintenance.gc(grace_seconds=0)
    assert report.removed["expired_uploads"] == 1
    assert db.user_files.count_documents({}) == 0
    assert list(store.iter_staging()) == []
    assert not store.exists(sha(pieces_of(data)[0]))  # unreferenced, collected
    assert maintenance.fsck().is_clean


# fsck


def test_fsck_counts_the_refs_uploads_in_progress_hold(chunked, db, maintenance):
    data = os.urandom(2 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    chunked.report("alice", body["user_file_id"], [0])
    report = maintenance.fsck()
    assert report.is_clean and report.checked["upload_chunk_refs"] == 1

    h = sha(pieces_of(data)[0])
    db.blobs.update_one({"_id": h}, {"$set": {"ref_count": 0}})  # an under-count: fsck sees it
    report = maintenance.fsck(repair=True)
    assert [p.kind for p in report.problems] == ["blob_ref_count"]
    assert blob_refs(db, h) == 1

    chunked.put(body["chunks"][1], pieces_of(data)[1])
    assert chunked.report("alice", body["user_file_id"], [1]).get_json()["status"] == "available"
    assert maintenance.fsck().is_clean and all(blob_refs(db, sha(p)) == 1
                                               for p in pieces_of(data))


# the gateway's check of upload URLs


def test_verify_endpoint_checks_put_urls_and_their_signed_size(chunked, client):
    body = chunked.register("alice", declare(os.urandom(CHUNK))).get_json()
    url = urlsplit(body["chunks"][0]["upload_url"])
    uri = f"{url.path}?{url.query}"

    def verify(uri, length, method="PUT"):
        return client.get("/internal/blobs/verify", headers={
            "X-Original-Method": method, "X-Original-URI": uri,
            "X-Original-Content-Length": length}).status_code

    assert verify(uri, str(CHUNK)) == 204
    assert verify(uri, str(CHUNK + 1)) == 403
    assert verify(uri, "") == 403
    assert verify(uri.replace("size_bytes=", "size_bytes=1"), "1" + str(CHUNK)) == 403
    assert verify(uri, str(CHUNK), method="GET") == 403
    other = uri.replace("/blobs/staging/", "/blobs/staging/x")
    assert verify(other, str(CHUNK)) == 403


def test_absurd_sizes_and_unpaired_surrogates_are_4xx_not_5xx(chunked):
    body = declare(b"x")
    body["size_bytes"] = 6851747816909922304
    assert chunked.register("alice", body).status_code == 413
    body = declare(b"x")
    body["filename"] = "\ud8bf.bin"
    assert chunked.register("alice", body).status_code == 400


# the running whole-file digest


@pytest.fixture
def store_reads(store, monkeypatch):
    """Bytes of whole chunks read back from the blob store, per chunk hash, from now on (not
    ranges: the MIME sniff reads the first bytes of a file)."""
    reads = Counter()
    open_blob = store.open

    def counting_open(blob_hash, start=0, end=None):
        for piece in open_blob(blob_hash, start, end):
            if end is None:
                reads[blob_hash] += len(piece)
            yield piece
    monkeypatch.setattr(store, "open", counting_open)
    return reads


def registered_and_put(chunked, data, body=None):
    return staged_upload(chunked, data, body)["user_file_id"]


def stored_digest_of(db, user_file_id):
    return db.user_files.find_one({"_id": user_file_id}).get("digest")


def test_chunks_reported_in_order_are_hashed_once_and_completion_reads_none_back(
        chunked, db, store_reads):
    data = os.urandom(4 * CHUNK + 123)
    user_file_id = registered_and_put(chunked, data)
    for index in range(4):
        assert chunked.report("alice", user_file_id, [index]).get_json()["status"] == "uploading"
        assert stored_digest_of(db, user_file_id)["through"] == index + 1
    done = chunked.report("alice", user_file_id, [4]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert not store_reads


def test_out_of_order_reports_are_caught_up_and_give_the_right_file(chunked, db, client,
                                                                    token_for, store_reads):
    data = os.urandom(5 * CHUNK - 1)
    user_file_id = registered_and_put(chunked, data)
    for index in (4, 2, 3):
        chunked.report("alice", user_file_id, [index])
        assert stored_digest_of(db, user_file_id)["through"] == 0  # chunk 0 is missing
    chunked.report("alice", user_file_id, [0])
    assert stored_digest_of(db, user_file_id)["through"] == 1
    assert not store_reads
    done = chunked.report("alice", user_file_id, [1]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    parts = pieces_of(data)
    # 2, 3 and 4 were read back once, by the report that let the digest reach them.
    assert store_reads == {sha(parts[i]): len(parts[i]) for i in (2, 3, 4)}
    content = client.get(f"/api/v1/files/{user_file_id}/content", headers=token_for("alice"))
    assert content.data == data


def test_chunks_the_user_already_held_are_hashed_in_too(chunked, upload, db, store_reads):
    data = bytearray(os.urandom(5 * CHUNK))
    upload("alice", ("v1.bin", bytes(data)))
    data[2 * CHUNK] ^= 1
    data = bytes(data)
    body = chunked.register("alice", declare(data)).get_json()
    assert [c["status"] for c in body["chunks"]].count("pending") == 1
    chunked.put(body["chunks"][2], pieces_of(data)[2])
    store_reads.clear()
    done = chunked.report("alice", body["user_file_id"], [2]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    parts = pieces_of(data)
    assert store_reads == {sha(parts[i]): CHUNK for i in (0, 1, 3, 4)}  # once each


def test_a_wrong_whole_file_hash_still_fails_when_the_digest_ran_ahead(chunked, db):
    data = os.urandom(3 * CHUNK)
    user_file_id = registered_and_put(chunked, data, {**declare(data), "hash": sha(b"other")})
    for index in range(3):
        result = chunked.report("alice", user_file_id, [index]).get_json()
    assert result["status"] == "failed"
    assert result["failure"]["code"] == "file_hash_mismatch"
    assert db.file_objects.count_documents({}) == 0


def test_a_failed_then_reuploaded_chunk_joins_the_digest(chunked, db):
    data = os.urandom(3 * CHUNK)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    chunked.put(body["chunks"][1], os.urandom(CHUNK))  # wrong bytes
    result = chunked.report("alice", body["user_file_id"], [0, 1]).get_json()
    assert [c["status"] for c in result["chunks"]] == ["verified", "failed", "pending"]
    assert stored_digest_of(db, body["user_file_id"])["through"] == 1
    chunked.put(result["chunks"][1], pieces_of(data)[1])
    chunked.put(body["chunks"][2], pieces_of(data)[2])
    done = chunked.report("alice", body["user_file_id"], [1, 2]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)


def midstate_of(data):
    from satchel_files.resumable_sha256 import ResumableSha256
    hasher = ResumableSha256()
    hasher.update(data)
    return base64.b64encode(hasher.state()).decode()


@pytest.mark.parametrize("corrupt", [
    lambda data: {"through": 2, "sha256_state": "not base64!"},
    lambda data: {"through": 2, "sha256_state": midstate_of(data[:CHUNK])},   # wrong length
    lambda data: {"through": 3, "sha256_state": midstate_of(data[:3 * CHUNK])},  # 2 not verified
    lambda data: {"through": "2", "sha256_state": midstate_of(data[:2 * CHUNK])},
    lambda data: {"algorithm": "sha3", "state": "?"},                            # unknown
    lambda data: "garbage",
    lambda data: {"through": 2, "sha256_state": midstate_of(os.urandom(2 * CHUNK))},  # fits, wrong
], ids=["base64", "length", "unverified", "type", "unknown", "garbage", "wrong-bytes"])
def test_a_corrupted_or_unknown_stored_digest_falls_back_to_hashing_the_chunks(
        chunked, db, corrupt):
    data = os.urandom(4 * CHUNK)
    user_file_id = registered_and_put(chunked, data)
    chunked.report("alice", user_file_id, [0, 1])
    db.user_files.update_one({"_id": user_file_id}, {"$set": {"digest": corrupt(data)}})
    done = chunked.report("alice", user_file_id, [2, 3]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)


def test_without_a_resumable_sha256_completion_hashes_every_chunk(app, chunked, monkeypatch, db,
                                                                  store, store_reads):
    """...and the checks keep no bytes, so they hold none of the upload buffer budget."""
    from satchel_files import resumable_sha256
    monkeypatch.setattr(resumable_sha256, "AVAILABLE", False)
    buffers, kept_asked, real_promote = app.extensions["satchel.files"].buffers, [], \
        store.promote_staging
    monkeypatch.setattr(store, "promote_staging", lambda *args, keep_bytes=False: (
        kept_asked.append((keep_bytes, buffers.in_use_bytes)),
        real_promote(*args, keep_bytes=keep_bytes))[1])
    data = os.urandom(3 * CHUNK)
    user_file_id = registered_and_put(chunked, data)
    for index in range(3):
        result = chunked.report("alice", user_file_id, [index]).get_json()
    assert result["status"] == "available" and result["hash"] == sha(data)
    assert stored_digest_of(db, user_file_id) is None
    assert sum(store_reads.values()) >= len(data)
    assert kept_asked == [(False, 0)] * 3 and buffers.in_use_bytes == 0


def test_a_file_repeating_a_chunk_keeps_exact_counts_to_completion_and_abort(
        chunked, client, token_for, db, maintenance):
    same = os.urandom(CHUNK)
    data = same * 3 + b"end"
    body = chunked.register("alice", declare(data)).get_json()
    for entry, piece in zip(body["chunks"][:2], pieces_of(data)):
        chunked.put(entry, piece)
    chunked.report("alice", body["user_file_id"], [0, 1])
    assert blob_refs(db, sha(same)) == 2 and maintenance.fsck().is_clean
    assert client.delete(f"/api/v1/files/{body['user_file_id']}",
                         headers=token_for("alice")).status_code == 204
    assert blob_refs(db, sha(same)) == 0 and maintenance.fsck().is_clean
    assert db.blobs.find_one({"_id": sha(same)})["zero_since_ms"] is not None  # gc may take it

    done = chunked.upload("alice", data)
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert blob_refs(db, sha(same)) == 3 and blob_refs(db, sha(b"end")) == 1
    assert maintenance.fsck().is_clean


def test_a_patch_reads_back_a_bounded_amount_and_completion_hashes_the_rest(
        chunked, db, monkeypatch, store_reads):
    from satchel_files.services import uploads
    monkeypatch.setattr(uploads, "_DIGEST_CATCH_UP_BYTES", 2 * CHUNK)
    data = os.urandom(6 * CHUNK)
    user_file_id = registered_and_put(chunked, data)
    chunked.report("alice", user_file_id, [1, 2, 3, 4])
    chunked.report("alice", user_file_id, [0])  # hashes 0 as it checks it, reads back 1 and 2
    assert stored_digest_of(db, user_file_id)["through"] == 3
    assert sum(store_reads.values()) == 2 * CHUNK
    done = chunked.report("alice", user_file_id, [5]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)


def test_chunks_checked_several_at_a_time_are_hashed_in_without_a_read_back(
        chunked, db, monkeypatch, store_reads, two_chunks_per_write):
    """A PATCH's own chunks join the digest from the reads that checked them, whatever the
    allowance for reading back others' chunks, and completion has nothing left to read."""
    from satchel_files.services import uploads
    monkeypatch.setattr(uploads, "_DIGEST_CATCH_UP_BYTES", 0)
    data = os.urandom(6 * CHUNK)
    user_file_id = registered_and_put(chunked, data)
    chunked.report("alice", user_file_id, [0, 1, 2, 3, 4])
    assert stored_digest_of(db, user_file_id)["through"] == 5
    done = chunked.report("alice", user_file_id, [5]).get_json()
    assert done["status"] == "available" and done["hash"] == sha(data)
    assert sum(store_reads.values()) == 0


def test_gc_keeps_an_expired_upload_that_a_get_renewed_after_gc_read_it(
        app, client, token_for, chunked, maintenance, clock, monkeypatch):
    body = chunked.register("alice", declare(os.urandom(CHUNK + 1))).get_json()
    clock.advance(UPLOAD_TTL + 1)
    repository = app.extensions["satchel.uploads"].uploads
    real_expired = repository.expired

    def expired_then_renewed(now_ms):
        found = list(real_expired(now_ms))
        assert chunked.get("alice", body["user_file_id"]).status_code == 200  # a resume
        return iter(found)

    monkeypatch.setattr(repository, "expired", expired_then_renewed)
    maintenance.gc()
    resumed = chunked.get("alice", body["user_file_id"])
    assert resumed.status_code == 200 and resumed.get_json()["status"] == "uploading"


def test_a_resume_whose_touch_comes_after_a_patch_does_not_undo_it(app, chunked, db,
                                                                   monkeypatch):
    """GET refreshes an uploading file's expiry; a PATCH that wrote between the GET's read
    and that write must keep its verified chunk."""
    data = os.urandom(2 * CHUNK)
    body = staged_upload(chunked, data)
    uploads = app.extensions["satchel.uploads"].uploads
    real_touch, patched = uploads.touch, []

    def touch_after_a_patch(current, expires_ms):
        if not patched:
            patched.append(chunked.report("alice", body["user_file_id"], [0]).status_code)
        return real_touch(current, expires_ms)

    monkeypatch.setattr(uploads, "touch", touch_after_a_patch)
    resumed = chunked.get("alice", body["user_file_id"]).get_json()
    assert patched == [200] and resumed["status"] == "uploading"
    stored = db.user_files.find_one({"_id": body["user_file_id"]})
    assert [chunk["status"] for chunk in stored["chunks"]] == ["verified", "pending"]

"""Each user's usage count follows every path that adds or frees bytes, and fsck keeps it true.

The count is what quota decisions read (services/quota.py); what it must equal is the sum of
the owner's user files (available ones and uploads in progress by declared size).
"""
import io
import os

import pytest
from pymongo.errors import AutoReconnect

from files_testing import CHUNK, GRACE, declare



def usage(db, owner="alice"):
    return db.usage.find_one({"_id": owner})["bytes"]


def total(db, owner="alice"):
    return sum(doc["size_bytes"] for doc in db.user_files.find({"owner_id": owner}))


def replace(client, headers, user_file_id, **form):
    data = {key: (io.BytesIO(value), "x.bin") if isinstance(value, bytes) else value
            for key, value in form.items()}
    response = client.put(f"/api/v1/files/{user_file_id}", data=data,
                          content_type="multipart/form-data", headers=headers)
    assert response.status_code == 200, response.get_json()


def test_uploads_replaces_renames_and_deletes_keep_the_count_equal_to_the_files(
        client, token_for, upload, db):
    alice = token_for("alice")
    first = upload("alice", ("a.bin", os.urandom(100)), ("b.bin", os.urandom(20))).get_json()
    assert usage(db) == total(db) == 120
    file_id = first[0]["user_file_id"]
    replace(client, alice, file_id, file=os.urandom(CHUNK + 7))  # larger
    assert usage(db) == total(db) == CHUNK + 27
    replace(client, alice, file_id, file=os.urandom(5))  # smaller
    assert usage(db) == total(db) == 25
    replace(client, alice, file_id, filename="renamed.bin")
    assert usage(db) == total(db) == 25
    assert client.delete(f"/api/v1/files/{file_id}", headers=alice).status_code == 204
    assert usage(db) == total(db) == 20


def test_chunked_uploads_count_from_registration_until_aborted_or_expired(
        client, token_for, chunked, db, maintenance, clock):
    alice = token_for("alice")
    data = os.urandom(2 * CHUNK + 3)
    kept = chunked.upload("alice", data, "kept.bin")  # registered, then completed
    assert kept["status"] == "available"
    assert usage(db) == total(db) == len(data)
    aborted = chunked.register("alice", declare(os.urandom(CHUNK), "aborted.bin")).get_json()
    assert usage(db) == total(db) == len(data) + CHUNK
    assert client.delete(f"/api/v1/files/{aborted['user_file_id']}", headers=alice).status_code \
        == 204
    assert usage(db) == total(db) == len(data)
    chunked.register("alice", declare(os.urandom(CHUNK), "abandoned.bin"))
    assert usage(db) == len(data) + CHUNK
    clock.advance(86400 + 1)  # UPLOAD_TTL_SECONDS
    maintenance.gc()
    assert usage(db) == total(db) == len(data)


def test_a_refused_replace_takes_no_room(client, token_for, upload, db):
    item = upload("alice", ("a.bin", os.urandom(10))).get_json()[0]
    form = {"file": (io.BytesIO(os.urandom(CHUNK)), "x.bin")}
    stale = client.put(f"/api/v1/files/{item['user_file_id']}", data=form,
                       content_type="multipart/form-data",
                       headers={**token_for("alice"), "If-Match": '"not-the-etag"'})
    assert stale.status_code == 412
    assert usage(db) == total(db) == 10


def test_fsck_leaves_a_recent_high_count_alone_and_repairs_an_old_one(upload, db, maintenance,
                                                                       clock):
    upload("alice", ("a.bin", os.urandom(100)))
    db.usage.update_one({"_id": "alice"}, {"$inc": {"bytes": 50}})  # a request in flight
    assert maintenance.fsck().problems == []
    clock.advance(GRACE + 1)  # ... or one that died between its reservation and its write
    report = maintenance.fsck()
    assert [p.kind for p in report.problems] == ["usage_count"] and not report.is_clean
    assert "counted 150 bytes; the files take 100" in report.problems[0].detail
    assert maintenance.fsck(repair=True).is_clean
    assert usage(db) == 100 and maintenance.fsck().problems == []


def test_fsck_repairs_a_count_too_low_at_once(upload, db, maintenance):
    upload("alice", ("a.bin", os.urandom(100)))
    db.usage.update_one({"_id": "alice"}, {"$inc": {"bytes": -60}})
    assert [p.kind for p in maintenance.fsck().problems] == ["usage_count"]
    assert maintenance.fsck(repair=True).is_clean
    assert usage(db) == 100


def test_fsck_does_not_overwrite_a_count_that_changed_while_it_summed(
        app, upload, db, maintenance, clock, monkeypatch):
    upload("alice", ("a.bin", os.urandom(100)))
    db.usage.update_one({"_id": "alice"}, {"$inc": {"bytes": -60}})
    user_files = app.extensions["satchel.files"].user_files
    real_sum = user_files.total_size_by_owner

    def sum_while_an_upload_reserves():
        totals = real_sum()
        app.extensions["satchel.files"].quota.counts.add("alice", 7, 0)  # a reservation lands
        return totals

    monkeypatch.setattr(user_files, "total_size_by_owner", sum_while_an_upload_reserves)
    report = maintenance.fsck(repair=True)
    assert report.problems == [] and report.checked["usage_counts_changing"] == 1
    assert usage(db) == 47  # left for the next fsck, never set from a stale sum

    monkeypatch.setattr(user_files, "total_size_by_owner", real_sum)
    report = maintenance.fsck(repair=True)  # quiet now: judged, and repaired
    assert [(p.kind, p.fixed) for p in report.problems] == [("usage_count", True)]
    assert usage(db) == total(db) == 100


def test_a_read_only_fsck_during_an_upload_sees_no_problem(app, upload, db, maintenance,
                                                          monkeypatch):
    """The counts are read first; an upload that reserves and writes before the files are
    summed must not look like a count too low (the daily read-only fsck would fail)."""
    upload("alice", ("a.bin", os.urandom(100)))
    user_files = app.extensions["satchel.files"].user_files
    real_sum = user_files.total_size_by_owner

    def sum_after_an_upload():
        monkeypatch.setattr(user_files, "total_size_by_owner", real_sum)
        assert upload("alice", ("b.bin", os.urandom(40))).status_code == 201
        return real_sum()

    monkeypatch.setattr(user_files, "total_size_by_owner", sum_after_an_upload)
    report = maintenance.fsck()
    assert report.is_clean and report.checked["usage_counts_changing"] == 1
    assert usage(db) == total(db) == 140


def test_an_upload_whose_insert_reply_is_lost_keeps_its_room(app, upload, db, monkeypatch):
    """The files may exist (the insert went through): a count too high, never too low."""
    user_files = app.extensions["satchel.files"].user_files
    real_insert = user_files.insert_many

    def insert_then_fail(documents):
        real_insert(documents)
        raise AutoReconnect("connection closed")

    def delete_fails(ids):
        raise AutoReconnect("still down")

    monkeypatch.setattr(user_files, "insert_many", insert_then_fail)
    monkeypatch.setattr(user_files, "delete_ids", delete_fails)
    assert upload("alice", ("a.bin", os.urandom(100))).status_code == 503
    assert usage(db) == total(db) == 100


def test_an_upload_whose_files_were_removed_after_a_failure_gives_its_room_back(
        app, upload, db, monkeypatch):
    user_files = app.extensions["satchel.files"].user_files

    def insert_fails(documents):
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(user_files, "insert_many", insert_fails)
    assert upload("alice", ("a.bin", os.urandom(2 * CHUNK))).status_code == 503
    assert usage(db) == total(db) == 0
    # ...and its references: nothing owns them, so nothing may keep them
    assert db.ref_intents.count_documents({}) == 0
    assert [blob["ref_count"] for blob in db.blobs.find()] == [0, 0]



# races with fsck and with other writes of the same file (found in review)


def test_fsck_repair_during_a_delete_never_leaves_the_count_too_low(
        app, client, token_for, upload, db, maintenance, clock, monkeypatch):
    items = upload("alice", ("a.bin", os.urandom(100)), ("b.bin", os.urandom(50))).get_json()
    clock.advance(GRACE + 1)  # the count last changed long ago
    quota = app.extensions["satchel.files"].quota
    real_released = quota.released

    def repair_first(owner_id, freed_bytes):  # the file is gone, its bytes not given back yet
        maintenance.fsck(repair=True)
        real_released(owner_id, freed_bytes)

    monkeypatch.setattr(quota, "released", repair_first)
    assert client.delete(f"/api/v1/files/{items[0]['user_file_id']}",
                         headers=token_for("alice")).status_code == 204
    assert usage(db) == total(db) == 50


def test_a_delete_that_fails_after_removing_the_file_still_gives_its_room_back(
        app, client, token_for, upload, db, monkeypatch):
    user_file_id = upload("alice", ("a.bin", os.urandom(100))).get_json()[0]["user_file_id"]
    refcounts = app.extensions["satchel.files"].refcounts

    def release_fails(file_object_id):
        raise AutoReconnect("connection closed")

    monkeypatch.setattr(refcounts, "release_file_object", release_fails)
    response = client.delete(f"/api/v1/files/{user_file_id}", headers=token_for("alice"))
    assert response.status_code == 503
    assert db.user_files.count_documents({}) == 0  # the file is gone: a retry gets a 404
    assert usage(db) == total(db) == 0


def test_a_delete_while_the_owner_has_no_count_gives_nothing_back_twice(
        app, client, token_for, upload, db, monkeypatch):
    items = upload("alice", ("a.bin", os.urandom(300)), ("b.bin", os.urandom(100))).get_json()
    db.usage.delete_many({})  # an account from before usage counts
    quota = app.extensions["satchel.files"].quota
    user_files = app.extensions["satchel.files"].user_files
    real_delete = user_files.delete_if_unchanged

    def delete_then_first_decision(current):
        deleted = real_delete(current)
        quota.usage("alice")  # another request's first decision sums the files now
        return deleted

    monkeypatch.setattr(user_files, "delete_if_unchanged", delete_then_first_decision)
    assert client.delete(f"/api/v1/files/{items[0]['user_file_id']}",
                         headers=token_for("alice")).status_code == 204
    assert usage(db) == total(db) == 100


@pytest.mark.parametrize("config_overrides", [{"user_quota_bytes": 200}])
def test_a_replace_that_grows_because_another_shrank_first_is_checked_against_the_quota(
        app, client, token_for, upload, db, monkeypatch):
    alice = token_for("alice")
    file_id = upload("alice", ("a.bin", os.urandom(100))).get_json()[0]["user_file_id"]
    user_files = app.extensions["satchel.files"].user_files
    real_replace = user_files.replace_if_unchanged
    raced = []

    def others_first(current, replacement):
        if not raced:
            raced.append(True)  # another PUT shrinks the file, then an upload fills the room
            replace(client, alice, file_id, file=os.urandom(10))
            assert upload("alice", ("b.bin", os.urandom(190))).status_code == 201
        return real_replace(current, replacement)

    monkeypatch.setattr(user_files, "replace_if_unchanged", others_first)
    response = client.put(f"/api/v1/files/{file_id}", headers=alice,
                          data={"file": (io.BytesIO(os.urandom(90)), "x.bin")},
                          content_type="multipart/form-data")
    assert response.status_code == 413  # 90 more than the 10 it now has: 280 > 200
    assert usage(db) == total(db) == 200


def test_a_replace_that_dies_after_its_write_leaves_the_count_high_never_low(
        app, client, token_for, upload, db, monkeypatch):
    alice = token_for("alice")
    file_id = upload("alice", ("a.bin", os.urandom(100))).get_json()[0]["user_file_id"]
    quota = app.extensions["satchel.files"].quota

    def crash(owner_id, freed_bytes):
        raise AutoReconnect("crash after the write")

    # smaller (70 never given back), then larger than before (the growth counted before the
    # write): the count stays high by the 70 the first crash kept
    for size, counted in ((30, 100), (80, 150), (150, 220)):
        monkeypatch.setattr(quota, "released", crash)
        crashed = client.put(f"/api/v1/files/{file_id}", headers=alice,
                             data={"file": (io.BytesIO(os.urandom(size)), "x.bin")},
                             content_type="multipart/form-data")
        assert crashed.status_code == 503  # after its write: the new content stays
        monkeypatch.undo()
        assert total(db) == size and usage(db) == counted


def test_fsck_that_read_a_count_before_a_delete_never_sets_it_from_a_sum_after(
        app, client, token_for, upload, db, maintenance, clock, monkeypatch):
    """The delete's mark (the count's rev) is what makes fsck's compare-and-set fail here:
    fsck read the count, then the delete removed its file, then fsck summed."""
    items = upload("alice", ("a.bin", os.urandom(100)), ("b.bin", os.urandom(50))).get_json()
    db.usage.update_one({"_id": "alice"}, {"$inc": {"bytes": 7}})  # too high: fsck will act
    clock.advance(GRACE + 1)
    quota = app.extensions["satchel.files"].quota
    held_back = []
    monkeypatch.setattr(quota, "released", lambda owner_id, n: held_back.append((owner_id, n)))
    user_files = app.extensions["satchel.files"].user_files
    real_sum = user_files.total_size_by_owner

    def delete_while_summing():
        monkeypatch.setattr(user_files, "total_size_by_owner", real_sum)
        assert client.delete(f"/api/v1/files/{items[0]['user_file_id']}",
                             headers=token_for("alice")).status_code == 204
        return real_sum()

    monkeypatch.setattr(user_files, "total_size_by_owner", delete_while_summing)
    maintenance.fsck(repair=True)
    monkeypatch.undo()
    assert held_back == [("alice", 100)]
    quota.released("alice", 100)  # the delete's give-back lands after fsck
    assert total(db) == 50 and usage(db) == 57  # still the 7 too high: never set to 50 - 100


def test_fsck_that_read_a_count_before_a_shrinking_replace_never_sets_it_below_the_files(
        app, client, token_for, upload, db, maintenance, clock, monkeypatch):
    """A replace that frees bytes marks the count before its write, as a delete does."""
    items = upload("alice", ("a.bin", os.urandom(100)), ("b.bin", os.urandom(50))).get_json()
    db.usage.update_one({"_id": "alice"}, {"$inc": {"bytes": 7}})  # too high, and old:
    clock.advance(GRACE + 1)  # fsck would repair it
    quota = app.extensions["satchel.files"].quota
    held = []  # the replace's give-back, held until fsck is done
    monkeypatch.setattr(quota, "released", lambda owner, freed: held.append((owner, freed)))
    user_files = app.extensions["satchel.files"].user_files
    real_sum = user_files.total_size_by_owner

    def replace_while_summing():
        monkeypatch.setattr(user_files, "total_size_by_owner", real_sum)
        replace(client, token_for("alice"), items[0]["user_file_id"], file=os.urandom(10))
        return real_sum()

    monkeypatch.setattr(user_files, "total_size_by_owner", replace_while_summing)
    maintenance.fsck(repair=True)
    monkeypatch.undo()
    assert held == [("alice", 90)]
    quota.released("alice", 90)
    assert total(db) == 60 and usage(db) >= 60


def test_a_replace_refused_after_its_reservation_gives_the_room_back(
        app, client, token_for, upload, db, monkeypatch):
    file_id = upload("alice", ("a.bin", os.urandom(100))).get_json()[0]["user_file_id"]
    user_files = app.extensions["satchel.files"].user_files

    def deleted_meanwhile(current, replacement):  # the growth is reserved by now
        db.user_files.delete_one({"_id": current["_id"]})
        return False

    monkeypatch.setattr(user_files, "replace_if_unchanged", deleted_meanwhile)
    response = client.put(f"/api/v1/files/{file_id}", headers=token_for("alice"),
                          data={"file": (io.BytesIO(os.urandom(CHUNK)), "x.bin")},
                          content_type="multipart/form-data")
    assert response.status_code == 404
    assert usage(db) == 100  # the file went outside the API; the growth it reserved came back


def test_fsck_repairs_an_old_count_of_an_owner_with_no_files_left(db, maintenance, clock):
    db.usage.insert_one({"_id": "gone", "bytes": 40, "rev": 3,
                         "updated_ms": int(clock() * 1000) - GRACE * 1000})  # exactly as old
    report = maintenance.fsck(repair=True)
    assert [(p.kind, p.id, p.fixed) for p in report.problems] == [("usage_count", "gone", True)]
    assert usage(db, "gone") == 0

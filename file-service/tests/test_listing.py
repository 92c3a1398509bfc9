"""The list's `file_listing` entries: order, stale entries, write order, fsck/gc, isolation."""
import io
import os

import pytest
from pymongo.errors import PyMongoError

from satchel_files.repositories.listing import MAX_MS, listing_document, listing_key
from satchel_files.schemas import decode_cursor, encode_cursor
from satchel_files.services import files as files_module
from files_testing import GRACE, declare, pieces_of



@pytest.fixture
def uploaded(upload):
    def do(user, name, data=None):
        response = upload(user, (name, data if data is not None else name.encode()))
        assert response.status_code == 201, response.get_json()
        return response.get_json()[0]["user_file_id"]
    return do


def pages(client, headers, limit):
    """Every page's user_file_ids, following Link: rel="next"."""
    url, result = f"/api/v1/files?limit={limit}", []
    while url:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_json()
        result.append([entry["user_file_id"] for entry in response.get_json()])
        link = response.headers.get("Link")
        url = link[1:link.index(">")] if link else None
    return result


def flat(page_list):
    return [item for page in page_list for item in page]


def expected_order(db, owner):
    docs = db.user_files.find({"owner_id": owner, "status": "available"})
    return [doc["_id"] for doc in sorted(docs, key=lambda d: (-d["created_ms"], _desc(d["_id"])))]


def _desc(text):
    return [-ord(char) for char in text]


def kinds(report):
    return sorted(problem.kind for problem in report.problems)


# the key


def test_keys_sort_newest_first_then_by_id_descending():
    a, b = "00000000-0000-4000-8000-000000000000", "ffffffff-ffff-4fff-bfff-ffffffffffff"
    assert listing_key("u", 2000, a) < listing_key("u", 1000, b)  # newer first
    assert listing_key("u", 1000, b) < listing_key("u", 1000, a)  # same ms: larger id first
    assert listing_key("u", 0, a).startswith("u:" + str(MAX_MS) + ":")
    assert len(listing_key("u", MAX_MS, a)) == len(listing_key("u", 0, a))
    with pytest.raises(ValueError):
        listing_key("u", MAX_MS + 1, a)


def test_the_list_has_the_indexes_nx_27017_needs(db):
    """(owner_id, pos) serves the page; a single-field owner_id index is what makes nx-27017
    translate the owner equality into SQL an index can serve (repositories/listing.py)."""
    keys = [index["key"] for index in db.file_listing.index_information().values()]
    assert [("owner_id", 1), ("pos", 1)] in keys and [("owner_id", 1)] in keys


def test_the_v1_cursor_format_is_unchanged():
    user_file_id = "12345678-1234-4123-8123-123456789abc"
    assert decode_cursor(encode_cursor(1_800_000_000_123, user_file_id)) == (
        1_800_000_000_123, user_file_id)


# order and completeness


def test_pages_are_complete_and_in_order_with_many_ties(client, token_for, uploaded, clock, db):
    alice = token_for("alice")
    for index in range(60):
        uploaded("alice", f"{index}.txt", f"content {index}".encode())
        if index % 20 == 19:
            clock.advance(0.001)  # three milliseconds of 20 files each
    for limit in (1, 7, 20, 100):
        result = pages(client, alice, limit)
        assert flat(result) == expected_order(db, "alice")
        assert all(len(page) == limit for page in result[:-1])
    assert db.file_listing.count_documents({"owner_id": "alice"}) == 60


def test_rename_and_replace_keep_the_position(client, token_for, uploaded, clock, db,
                                              maintenance):
    alice = token_for("alice")
    first = uploaded("alice", "first.txt")
    clock.advance(1)
    second = uploaded("alice", "second.txt")
    clock.advance(1)
    created = db.user_files.find_one({"_id": first})["created_ms"]
    for form in ({"filename": "renamed.txt"},
                 {"file": (io.BytesIO(b"new content"), "x.bin", "application/octet-stream")}):
        response = client.put(f"/api/v1/files/{first}", data=form,
                              content_type="multipart/form-data", headers=alice)
        assert response.status_code == 200, response.get_json()
    assert db.user_files.find_one({"_id": first})["created_ms"] == created
    assert flat(pages(client, alice, 1)) == [second, first]
    assert db.file_listing.count_documents({}) == 2 and maintenance.fsck().problems == []


def test_delete_removes_the_entry(client, token_for, uploaded, db, maintenance):
    alice = token_for("alice")
    kept, gone = uploaded("alice", "kept.txt"), uploaded("alice", "gone.txt")
    assert client.delete(f"/api/v1/files/{gone}", headers=alice).status_code == 204
    assert flat(pages(client, alice, 10)) == [kept]
    assert [e["user_file_id"] for e in db.file_listing.find()] == [kept]
    assert maintenance.fsck().problems == []


# stale entries (what a crash between the two writes leaves)


def _stale_entries(db, owner, created_ms_values):
    """Entries as a crash leaves them: listed, but no user file (insert crashed)."""
    ids = [f"{index:08x}-0000-4000-8000-000000000000" for index in range(len(created_ms_values))]
    db.file_listing.insert_many([listing_document(owner, user_file_id, created_ms)
                                 for user_file_id, created_ms in zip(ids, created_ms_values)])
    return ids


def test_stale_entries_are_skipped_and_pages_stay_full(client, token_for, uploaded, clock, db):
    alice = token_for("alice")
    ids = []
    for index in range(12):
        ids.append(uploaded("alice", f"{index}.txt"))
        clock.advance(0.002)
    # a file deleted without its entry (crash after the user file was deleted) ...
    db.user_files.delete_one({"_id": ids[5]})
    # ... and entries whose file was never inserted, between and among the real ones
    created = sorted(doc["created_ms"] for doc in db.user_files.find())
    _stale_entries(db, "alice", [ms + 1 for ms in created] + [created[3]] * 30)
    live = [user_file_id for user_file_id in reversed(ids) if user_file_id != ids[5]]

    result = pages(client, alice, 4)
    assert flat(result) == live and [len(page) for page in result] == [4, 4, 3]


def test_a_page_of_only_stale_entries_is_short_with_a_next_link(client, token_for, uploaded,
                                                                clock, db, monkeypatch):
    monkeypatch.setattr(files_module, "_LIST_ROUNDS", 2)
    monkeypatch.setattr(files_module, "_LIST_SLACK", 0)
    alice = token_for("alice")
    older = uploaded("alice", "older.txt")
    clock.advance(1)
    newest = uploaded("alice", "newest.txt")
    middle = db.user_files.find_one({"_id": older})["created_ms"] + 500
    _stale_entries(db, "alice", [middle] * 40)  # far more than two reads of a 3-entry batch

    result = pages(client, alice, 2)
    assert flat(result) == [newest, older]
    assert result[0] == [newest] and [] in result  # short pages that still link onwards


# write order


def test_upload_lists_the_file_before_inserting_it(app, uploaded, db, monkeypatch):
    user_files = app.extensions["satchel.files"].user_files
    original, seen = user_files.insert_many, []

    def insert_many(documents):
        seen.extend(db.file_listing.count_documents({"user_file_id": d["_id"]}) for d in documents)
        return original(documents)

    monkeypatch.setattr(user_files, "insert_many", insert_many)
    uploaded("alice", "a.txt")
    assert seen == [1]


def test_a_failed_upload_insert_leaves_nothing_listed(app, upload, client, token_for, db,
                                                      monkeypatch):
    user_files = app.extensions["satchel.files"].user_files

    def fail(documents):
        raise PyMongoError("boom")

    monkeypatch.setattr(user_files, "insert_many", fail)
    assert upload("alice", ("a.txt", b"a")).status_code >= 500
    assert db.file_listing.count_documents({}) == 0
    monkeypatch.undo()
    assert pages(client, token_for("alice"), 10) == [[]]


def test_delete_unlists_after_the_file_is_gone_and_survives_a_failure(
        app, client, token_for, uploaded, db, monkeypatch, maintenance, clock):
    alice = token_for("alice")
    user_file_id = uploaded("alice", "a.txt")
    listing, seen = app.extensions["satchel.files"].listing, []

    def delete_ids(entry_ids):
        seen.append(db.user_files.count_documents({"_id": user_file_id}))
        raise PyMongoError("crash before the entry was deleted")

    monkeypatch.setattr(listing, "delete_ids", delete_ids)
    assert client.delete(f"/api/v1/files/{user_file_id}", headers=alice).status_code == 204
    assert seen == [0]  # the file was deleted first
    assert db.file_listing.count_documents({}) == 1  # stale, and harmless:
    assert pages(client, alice, 10) == [[]]
    clock.advance(GRACE + 1)
    assert maintenance.gc().removed["stale_listing_entries"] == 1
    assert db.file_listing.count_documents({}) == 0


# fsck and gc


def test_fsck_reports_and_repairs_an_unlisted_file(client, token_for, uploaded, db, maintenance):
    alice = token_for("alice")
    listed, unlisted = uploaded("alice", "listed.txt"), uploaded("alice", "unlisted.txt")
    db.file_listing.delete_one({"user_file_id": unlisted})  # e.g. a database from before
    assert flat(pages(client, alice, 10)) == [listed]

    report = maintenance.fsck()
    assert kinds(report) == ["unlisted_file"] and report.problems[0].id == unlisted
    assert not report.is_clean
    assert maintenance.fsck(repair=True).is_clean
    assert maintenance.fsck().problems == []
    assert set(flat(pages(client, alice, 10))) == {listed, unlisted}


def test_fsck_reports_stale_entries_only_after_the_grace_period(uploaded, db, maintenance, clock):
    uploaded("alice", "a.txt")
    [gone] = _stale_entries(db, "alice", [int(clock() * 1000)])  # an insert in flight, or dead
    assert maintenance.fsck().problems == []
    clock.advance(GRACE + 1)
    report = maintenance.fsck()
    assert kinds(report) == ["stale_listing_entry"] and gone in report.problems[0].detail
    assert maintenance.fsck(repair=True).is_clean
    assert db.file_listing.count_documents({}) == 1 and maintenance.fsck().problems == []


def test_gc_removes_stale_entries_after_the_grace_period_only(
        client, token_for, uploaded, db, maintenance, clock):
    alice = token_for("alice")
    kept = uploaded("alice", "kept.txt")
    deleted = uploaded("alice", "deleted.txt")
    db.user_files.delete_one({"_id": deleted})  # crash: file deleted, entry left
    _stale_entries(db, "alice", [int(clock() * 1000)])  # crash: entry, file never inserted
    assert maintenance.gc(grace_seconds=0).removed["stale_listing_entries"] == 0  # lease holds
    clock.advance(GRACE - 10)
    assert maintenance.gc().removed["stale_listing_entries"] == 0
    clock.advance(20)
    assert maintenance.gc(dry_run=True).removed["stale_listing_entries"] == 2
    assert db.file_listing.count_documents({}) == 3
    assert maintenance.gc().removed["stale_listing_entries"] == 2
    assert [e["user_file_id"] for e in db.file_listing.find()] == [kept]
    assert flat(pages(client, alice, 10)) == [kept]


# chunked uploads


def test_a_chunked_upload_is_listed_when_available_and_not_before(
        chunked, client, token_for, db, maintenance, clock):  # noqa: F811
    alice = token_for("alice")
    data = os.urandom(2 * 64 * 1024 + 7)
    registered = chunked.register("alice", declare(data)).get_json()
    assert db.file_listing.count_documents({}) == 0
    assert pages(client, alice, 10) == [[]]
    parts = pieces_of(data)
    chunked.put(registered["chunks"][0], parts[0])
    chunked.report("alice", registered["user_file_id"], [0])
    assert db.file_listing.count_documents({}) == 0 and pages(client, alice, 10) == [[]]
    for entry in registered["chunks"][1:]:
        chunked.put(entry, parts[entry["index"]])
    done = chunked.report("alice", registered["user_file_id"], [1, 2]).get_json()
    assert done["status"] == "available"
    assert pages(client, alice, 10) == [[registered["user_file_id"]]]
    # the same content again is available at once (a re-upload of own content): listed too,
    # first (a second later: within one millisecond, ties are ordered by id, not by arrival)
    clock.advance(1)
    again = chunked.register("alice", declare(data, "again.bin")).get_json()
    assert again["status"] == "available"
    assert flat(pages(client, alice, 10)) == [again["user_file_id"], registered["user_file_id"]]
    clock.advance(GRACE + 1)
    assert maintenance.fsck().problems == []


def test_mark_available_lists_before_the_file_becomes_available(
        app, chunked, db, monkeypatch):  # noqa: F811
    uploads = app.extensions["satchel.uploads"].uploads
    original, seen = uploads.replace_if_rev, []

    def replace_if_rev(current, replacement):
        if replacement.get("status") == "available":
            seen.append(db.file_listing.count_documents({"user_file_id": current["_id"]}))
        return original(current, replacement)

    monkeypatch.setattr(uploads, "replace_if_rev", replace_if_rev)
    assert chunked.upload("alice", os.urandom(64 * 1024 + 1))["status"] == "available"
    assert seen == [1]


# isolation


@pytest.mark.parametrize("other", ["user10", "user1:x", "user", "user1;"])
def test_another_owners_entries_never_appear(client, token_for, uploaded, other, clock):
    mine = [uploaded("user1", f"mine{index}.txt") for index in range(3)]
    clock.advance(0.001)
    theirs = [uploaded(other, f"theirs{index}.txt") for index in range(3)]
    assert sorted(flat(pages(client, token_for("user1"), 2))) == sorted(mine)
    assert sorted(flat(pages(client, token_for(other), 2))) == sorted(theirs)


def test_a_cursor_cannot_reach_into_another_owners_range(client, token_for, uploaded, db):
    theirs = uploaded("user10", "theirs.txt")
    doc = db.user_files.find_one({"_id": theirs})
    cursor = encode_cursor(doc["created_ms"] + 1, theirs)
    response = client.get(f"/api/v1/files?cursor={cursor}", headers=token_for("user1"))
    assert response.status_code == 200 and response.get_json() == []

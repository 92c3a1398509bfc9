"""The change feed (GET /api/v1/changes): numbering, pending/aborted/uncertain changes, cursors,
retention, long-polls. The concurrency proof against a real stack is tests-e2e/test_changes.py."""
import io
import threading
import time
from datetime import datetime, timezone

import pytest

from files_testing import declare, legacy_change_cursor, pieces_of
from satchel_files.config import Config
from satchel_files.schemas import decode_change_cursor
from satchel_shared.config import ConfigError, load_config
from satchel_shared.errors import ApiError

LEASE = 30
RETENTION = 3600


@pytest.fixture
def config_overrides():
    return {"change_pending_lease_seconds": LEASE, "change_retention_seconds": RETENTION}


@pytest.fixture
def alice(token_for):
    return token_for("alice")


@pytest.fixture
def uploaded(upload):
    def do(name="a.txt", data=b"hello", user="alice"):
        response = upload(user, (name, data, "text/plain"))
        assert response.status_code == 201, response.get_json()
        return response.get_json()[0]["user_file_id"]
    return do


@pytest.fixture
def changes(client, alice):
    """changes(cursor=..., since=..., limit=..., wait=..., headers=...) -> (status, body)."""
    def get(headers=None, **params):
        response = client.get("/api/v1/changes", query_string=params, headers=headers or alice)
        return response.status_code, response.get_json()
    return get


@pytest.fixture
def latest(client, alice):
    def get(headers=None):
        response = client.get("/api/v1/changes/latest", headers=headers or alice)
        assert response.status_code == 200, response.get_json()
        return response.get_json()["cursor"]
    return get


def put(client, headers, user_file_id, *, data=None, filename=None, if_match=None):
    form = {}
    if data is not None:
        form["file"] = (io.BytesIO(data), "new.bin", "application/octet-stream")
    if filename is not None:
        form["filename"] = filename
    extra = {"If-Match": if_match} if if_match else {}
    return client.put(f"/api/v1/files/{user_file_id}", data=form,
                      content_type="multipart/form-data", headers={**headers, **extra})


def ops(body):
    return [(change["file_id"], change["op"]) for change in body["changes"]]


def seq(cursor):
    return decode_change_cursor(cursor).seq


# the basics


def test_a_new_user_starts_at_zero_with_no_changes(changes, latest):
    cursor = latest()
    assert seq(cursor) == 0
    assert changes(cursor=cursor) == (200, {"changes": [], "file_ids": [], "cursor": cursor,
                                            "has_more": False})


def test_every_kind_of_change_is_recorded_in_order(client, alice, changes, latest, uploaded):
    start = latest()
    first = uploaded("a.txt", b"one")
    assert put(client, alice, first, filename="b.txt").status_code == 200
    assert put(client, alice, first, data=b"two").status_code == 200
    assert put(client, alice, first, data=b"three", filename="c.txt").status_code == 200
    second = uploaded("d.txt", b"four")
    assert client.delete(f"/api/v1/files/{first}", headers=alice).status_code == 204

    status, body = changes(cursor=start)
    assert status == 200
    assert ops(body) == [(first, "created"), (first, "renamed"), (first, "updated"),
                         (first, "updated"), (second, "created"), (first, "deleted")]
    assert body["file_ids"] == [first, second]
    assert seq(body["cursor"]) == 6 and body["has_more"] is False
    created, renamed, _, both, _, deleted = body["changes"]
    assert created["filename"] == "a.txt" and created["version"] == 1
    assert created["size_bytes"] == 3 and len(created["hash"]) == 64
    assert renamed["filename"] == "b.txt" and renamed["version"] == 2
    assert both["filename"] == "c.txt" and both["version"] == 4 and both["size_bytes"] == 5
    assert deleted["filename"] == "c.txt"
    assert datetime.fromisoformat(created["at"]).tzinfo is not None
    assert changes(cursor=body["cursor"])[1]["changes"] == []


def test_one_upload_of_several_files_records_one_change_each(client, alice, changes, latest,
                                                             upload):
    start = latest()
    response = upload("alice", ("a.txt", b"1"), ("b.txt", b"2"), ("c.txt", b"3"))
    ids = [item["user_file_id"] for item in response.get_json()]
    assert ops(changes(cursor=start)[1]) == [(file_id, "created") for file_id in ids]


def test_pages_follow_the_cursor_with_has_more(changes, latest, uploaded):
    start = latest()
    ids = [uploaded(f"{n}.txt", bytes([n])) for n in range(5)]
    status, first = changes(cursor=start, limit=2)
    assert [c["file_id"] for c in first["changes"]] == ids[:2] and first["has_more"]
    second = changes(cursor=first["cursor"], limit=2)[1]
    third = changes(cursor=second["cursor"], limit=2)[1]
    assert [c["file_id"] for c in second["changes"] + third["changes"]] == ids[2:]
    assert second["has_more"] and not third["has_more"]


def test_users_see_only_their_own_changes(client, token_for, changes, latest, uploaded):
    bob = token_for("bob")
    bob_start = latest(bob)
    uploaded("alice.txt", b"a", user="alice")
    assert changes(cursor=bob_start, headers=bob)[1]["changes"] == []
    bobs = uploaded("bob.txt", b"b", user="bob")
    assert ops(changes(cursor=bob_start, headers=bob)[1]) == [(bobs, "created")]
    # numbering is per owner: bob's first change is his seq 1, whatever alice did
    assert seq(changes(cursor=bob_start, headers=bob)[1]["cursor"]) == 1


def test_the_feed_needs_a_token(client):
    assert client.get("/api/v1/changes?cursor=" + legacy_change_cursor(0)).status_code == 401
    assert client.get("/api/v1/changes/latest").status_code == 401


# failed and in-flight mutations


def test_a_refused_change_is_passed_over(feed, changes, latest, uploaded, db):
    start = latest()
    with pytest.raises(ApiError):
        with feed.recording("alice", "file-a", "renamed"):
            raise ApiError(409, "conflict", "The file is changing too often; retry.")
    file_id = uploaded()
    body = changes(cursor=start)[1]
    assert ops(body) == [(file_id, "created")]
    assert seq(body["cursor"]) == 2  # past the aborted change (seq 1)
    assert db.changes.find_one({"seq": 1})["state"] == "aborted"


def test_a_precondition_failure_records_nothing(client, alice, changes, latest, uploaded):
    file_id = uploaded()
    start = latest()
    assert put(client, alice, file_id, filename="x.txt", if_match='"stale"').status_code == 412
    assert client.delete(f"/api/v1/files/{file_id}x", headers=alice).status_code == 404
    assert changes(cursor=start)[1]["changes"] == [] and latest() == start


def test_a_reader_never_passes_a_change_still_in_flight(feed, changes, latest, uploaded):
    """Writer A opens seq N and is slow; writer B commits seq N+1: the reader must wait for A."""
    start = latest()
    a = feed.recording("alice", "file-a", "created", {"filename": "a.txt", "version": 1})
    a.__enter__()                                   # A: seq 1 pending, mutation not done
    b_id = uploaded("b.txt", b"b")                  # B: seq 2, committed
    body = changes(cursor=start)[1]
    assert body["changes"] == [] and body["cursor"] == start and not body["has_more"]
    assert latest() == start                        # "now" is before A too
    a.__exit__(None, None, None)                    # A's mutation done: committed
    body = changes(cursor=start)[1]
    assert ops(body) == [("file-a", "created"), (b_id, "created")]


def test_a_change_past_its_lease_is_delivered_and_a_late_commit_is_announced_again(
        feed, changes, latest, uploaded, clock, db):
    start = latest()
    a = feed.recording("alice", "file-a", "renamed", {"filename": "a.txt"})
    a.__enter__()
    b_id = uploaded("b.txt", b"b")
    clock.advance(LEASE + 1)                        # A's writer is dead, or very slow
    body = changes(cursor=start)[1]
    assert ops(body) == [("file-a", "renamed"), (b_id, "created")]
    assert db.changes.find_one({"seq": 1})["state"] == "uncertain"
    a.__exit__(None, None, None)                    # A finishes after all: a new change
    later = changes(cursor=body["cursor"])[1]
    assert ops(later) == [("file-a", "renamed")] and seq(later["cursor"]) == 3


def test_a_writer_that_fails_unexpectedly_leaves_an_uncertain_change(feed, changes, latest, db):
    start = latest()
    with pytest.raises(RuntimeError):
        with feed.recording("alice", "file-a", "deleted"):
            raise RuntimeError("the database went away half-way")
    assert ops(changes(cursor=start)[1]) == [("file-a", "deleted")]
    assert db.changes.find_one({"seq": 1})["state"] == "uncertain"


def test_an_aborted_change_after_its_lease_is_still_delivered(feed, changes, latest, clock):
    """Once a reader delivered it as uncertain, a late abort changes nothing (at least once)."""
    start = latest()
    a = feed.recording("alice", "file-a", "renamed")
    a.__enter__()
    clock.advance(LEASE + 1)
    assert ops(changes(cursor=start)[1]) == [("file-a", "renamed")]
    error = ApiError(409, "conflict", "x")
    assert not a.__exit__(ApiError, error, None)  # re-raised by the `with` of the writer
    assert seq(latest()) == 1


def test_per_file_numbers_follow_the_order_the_mutations_happened(client, alice, feed, changes,
                                                                  latest, uploaded, db):
    """A opens "deleted" (seq 2) but B's rename (seq 3) is applied first: A must take seq 4."""
    start = latest()
    file_id = uploaded()
    a = feed.recording("alice", file_id, "deleted")
    recording = a.__enter__()
    assert recording.seq == 2
    assert put(client, alice, file_id, filename="b.txt").status_code == 200
    user_file = db.user_files.find_one({"_id": file_id})
    assert user_file["change_seq"] == 3
    recording.follow(user_file)
    assert recording.seq == 4
    a.__exit__(None, None, None)
    assert ops(changes(cursor=start)[1]) == [(file_id, "created"), (file_id, "renamed"),
                                             (file_id, "deleted")]
    assert db.changes.find_one({"seq": 2})["state"] == "aborted"


def test_concurrent_claims_get_distinct_contiguous_numbers(feed, db, monkeypatch):
    """Four writers interleaving between reading the last number and inserting the next. A
    unique insert is atomic in MongoDB and nx-27017 but not in mongomock (under load two racing
    inserts of one _id could both "succeed"), so a lock stands in for the database's guarantee;
    the same race against the real server runs in tests-e2e/test_changes.py."""
    atomic, insert = threading.Lock(), feed.changes.insert

    def atomic_insert(document):
        with atomic:
            return insert(document)

    monkeypatch.setattr(feed.changes, "insert", atomic_insert)

    def write(n):
        for i in range(20):
            with feed.recording("alice", f"f{n}-{i}", "created"):
                pass
    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(doc["seq"] for doc in db.changes.find({"owner_id": "alice"})) == list(range(1, 81))


# since


def test_since_accepts_epoch_milliseconds_and_iso_8601(changes, uploaded, clock):
    uploaded("old.txt", b"old")
    clock.advance(LEASE * 4)
    boundary = clock()
    new = uploaded("new.txt", b"new")
    millis = str(int(boundary * 1000))
    iso = datetime.fromtimestamp(boundary, tz=timezone.utc).isoformat()
    for since in (millis, iso, iso.replace("+00:00", "Z"), iso.replace("+", " ")):
        status, body = changes(since=since)
        assert status == 200, (since, body)
        assert ops(body) == [(new, "created")], since


def test_since_includes_changes_opened_within_a_lease_before_it(changes, uploaded, clock):
    early = uploaded("early.txt", b"e")
    clock.advance(LEASE / 2)
    status, body = changes(since=str(int(clock() * 1000)))
    assert ops(body) == [(early, "created")]  # at least once: it may have become visible later


def test_since_after_every_change_is_the_latest_cursor(changes, uploaded, latest, clock):
    uploaded()
    clock.advance(LEASE * 4)
    status, body = changes(since=str(int(clock() * 1000)))
    assert status == 200 and body["changes"] == [] and body["cursor"] == latest()


def test_since_older_than_the_retention_is_a_reset(changes, clock):
    status, body = changes(since=str(int((clock() - RETENTION - 60) * 1000)))
    assert status == 410 and body["error"]["code"] == "reset"


# retention


def test_gc_trims_old_changes_and_old_cursors_get_a_reset(client, alice, changes, latest,
                                                          uploaded, maintenance, clock, db):
    start = latest()
    ids = [uploaded(f"{n}.txt", bytes([n])) for n in range(3)]
    middle = changes(cursor=start, limit=1)[1]["cursor"]
    clock.advance(RETENTION + 60)
    report = maintenance.gc()
    assert report.removed["changes"] == 2            # the newest is kept: numbering goes on
    status, body = changes(cursor=start)
    assert status == 410 and body["error"]["code"] == "reset"
    assert changes(cursor=middle)[0] == 410
    status, body = changes(cursor=legacy_change_cursor(2))  # has seen every trimmed change
    assert status == 200 and ops(body) == [(ids[2], "created")]
    assert client.delete(f"/api/v1/files/{ids[0]}", headers=alice).status_code == 204
    assert seq(changes(cursor=body["cursor"])[1]["cursor"]) == 4
    assert db.change_floors.find_one({"_id": "alice"})["trimmed_seq"] == 2


def test_gc_keeps_changes_younger_than_the_retention(changes, latest, uploaded, maintenance,
                                                     clock):
    start = latest()
    uploaded("a.txt", b"a")
    clock.advance(RETENTION + 60)
    uploaded("b.txt", b"b")
    assert maintenance.gc(dry_run=True).removed["changes"] == 1
    assert maintenance.gc().removed["changes"] == 1
    assert maintenance.gc().removed["changes"] == 0
    assert changes(cursor=start)[0] == 410


def test_a_cursor_ahead_of_the_history_is_a_reset(changes, uploaded):
    uploaded()
    status, body = changes(cursor=legacy_change_cursor(99))
    assert status == 410 and body["error"]["code"] == "reset"


# input


@pytest.mark.parametrize("params, field", [
    ({}, "cursor"),
    ({"cursor": "nope"}, "cursor"),
    ({"cursor": "%%%"}, "cursor"),
    ({"cursor": "A" * 100}, "cursor"),
    ({"cursor": "djE6MTAw"}, "cursor"),              # a file-list style "v1:100"
    ({"cursor": legacy_change_cursor(1) + "="}, "cursor"),
    ({"cursor": legacy_change_cursor(0), "since": "0"}, "cursor"),
    ({"since": "yesterday"}, "since"),
    ({"since": "-5"}, "since"),
    ({"since": "1" * 20}, "since"),
    ({"cursor": legacy_change_cursor(0), "limit": "0"}, "limit"),
    ({"cursor": legacy_change_cursor(0), "limit": "1001"}, "limit"),
    ({"cursor": legacy_change_cursor(0), "limit": "x"}, "limit"),
    ({"cursor": legacy_change_cursor(0), "wait": "61"}, "wait"),
    ({"cursor": legacy_change_cursor(0), "wait": "-1"}, "wait"),
    ({"cursor": legacy_change_cursor(0), "wait": "nan"}, "wait"),
])
def test_bad_parameters_are_a_400_naming_the_field(changes, params, field):
    status, body = changes(**params)
    assert status == 400, body
    assert body["error"]["code"] == "validation_error" and field in body["error"]["details"]


def test_config_refuses_a_long_poll_cap_that_would_use_every_thread():
    base = {"JWKS_URL": "http://x/", "BLOB_URL_SECRET": "0123456789abcdef"}
    with pytest.raises(ConfigError, match="CHANGES_MAX_WAITING"):
        load_config(Config, {**base, "FILE_THREADS": "8", "CHANGES_MAX_WAITING": "8"})
    assert load_config(Config, {**base, "FILE_THREADS": "32"}).max_waiting_long_polls == 24
    assert load_config(Config, {**base, "FILE_THREADS": "4"}).max_waiting_long_polls == 1


# long-poll


def test_a_long_poll_times_out_with_the_same_cursor(changes, latest):
    start = latest()
    began = time.monotonic()
    status, body = changes(cursor=start, wait="0.6")
    assert status == 200 and body["changes"] == [] and body["cursor"] == start
    assert 0.55 <= time.monotonic() - began < 3


def test_a_long_poll_answers_soon_after_a_change(app, alice, latest, uploaded):
    start = latest()
    answer = {}

    def poll():
        with app.test_client() as client:
            began = time.monotonic()
            answer["body"] = client.get(f"/api/v1/changes?cursor={start}&wait=10",
                                        headers=alice).get_json()
            answer["seconds"] = time.monotonic() - began

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(0.5)
    file_id = uploaded()
    poller.join(15)
    assert ops(answer["body"]) == [(file_id, "created")]
    assert answer["seconds"] < 2


class TestLongPollCap:
    @pytest.fixture
    def config_overrides(self):
        return {"file_threads": 2, "changes_max_waiting": 1}

    def test_beyond_the_cap_a_long_poll_answers_at_once_with_retry_after(self, app, alice,
                                                                         latest):
        start = latest()
        holder = threading.Thread(target=lambda: app.test_client().get(
            f"/api/v1/changes?cursor={start}&wait=2", headers=alice))
        holder.start()
        time.sleep(0.3)
        began = time.monotonic()
        response = app.test_client().get(f"/api/v1/changes?cursor={start}&wait=2",
                                         headers=alice)
        assert response.status_code == 200 and response.headers["Retry-After"] == "1"
        assert time.monotonic() - began < 1
        holder.join(5)
        response = app.test_client().get(f"/api/v1/changes?cursor={start}&wait=0.1",
                                         headers=alice)
        assert "Retry-After" not in response.headers


def test_the_openapi_document_lists_the_feed(client):
    paths = client.get("/api/v1/openapi.json").get_json()["paths"]
    assert "/api/v1/changes" in paths and "/api/v1/changes/latest" in paths


# chunked uploads (services/uploads.py): only "became available" is a change


def test_a_chunked_upload_appears_once_available_and_an_aborted_one_never(
        chunked, client, alice, changes, latest):
    start = latest()
    data = b"x" * (2 * 64 * 1024 + 5)
    body = chunked.register("alice", declare(data)).get_json()
    chunked.put(body["chunks"][0], pieces_of(data)[0])
    chunked.report("alice", body["user_file_id"], [0])
    assert changes(cursor=start)[1]["changes"] == []          # uploading: not in the feed
    chunked.put(body["chunks"][1], pieces_of(data)[1])
    chunked.put(body["chunks"][2], pieces_of(data)[2])
    assert chunked.report("alice", body["user_file_id"], [1, 2]).status_code == 200
    page = changes(cursor=start)[1]
    assert ops(page) == [(body["user_file_id"], "created")]
    assert page["changes"][0]["filename"] == "big.bin" and page["changes"][0]["version"] == 1

    other = chunked.register("alice", declare(b"y" * 70000, "gone.bin")).get_json()
    assert client.delete(f"/api/v1/files/{other['user_file_id']}", headers=alice).status_code == 204
    assert changes(cursor=page["cursor"])[1]["changes"] == []  # aborted upload: nothing
    again = chunked.upload("alice", data, filename="again.bin")   # same bytes: no chunks needed
    assert ops(changes(cursor=page["cursor"])[1]) == [(again["user_file_id"], "created")]

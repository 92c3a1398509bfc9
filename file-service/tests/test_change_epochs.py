"""The change feed's epoch (services/changes.py, "Epochs"): a restore starts a new one, and a
cursor of any other epoch gets 410 `reset`, never a page of a history it was not counted in.
tests-e2e/test_backup.py proves it through a real backup and restore."""
import pytest
from click.testing import CliRunner

from files_testing import legacy_change_cursor
from satchel_files.cli import cli
from satchel_files.change_cursor import ChangeCursor
from satchel_files.schemas import decode_change_cursor, encode_change_cursor

OTHER_EPOCH = "0123456789abcdef"


@pytest.fixture
def follow(client, token_for):
    """follow(cursor=... or since=...) -> (status, body) of GET /api/v1/changes as alice."""
    def get(**params):
        response = client.get("/api/v1/changes", query_string=params,
                              headers=token_for("alice"))
        return response.status_code, response.get_json()
    return get


@pytest.fixture
def now_cursor(client, token_for):
    def get():
        response = client.get("/api/v1/changes/latest", headers=token_for("alice"))
        assert response.status_code == 200, response.get_json()
        return response.get_json()["cursor"]
    return get


@pytest.fixture
def write(upload):
    """Uploads `count` files as alice: `count` changes."""
    def do(count=1):
        for n in range(count):
            assert upload("alice", (f"f{n}.txt", bytes([n]))).status_code == 201
    return do


def assert_reset_by_a_restore(status, body):
    assert status == 410, body
    assert body["error"]["code"] == "reset"
    assert "restored or reset" in body["error"]["message"]
    assert "GET /api/v1/changes/latest" in body["error"]["message"]


def restore_point(db):
    """Every collection's documents: what a backup of the files database holds."""
    return {name: list(db[name].find()) for name in db.list_collection_names()}


def restore(db, snapshot):
    """What `mongorestore --drop` (or copying back a snapshot) does to the files database."""
    for name in db.list_collection_names():
        db[name].drop()
    for name, documents in snapshot.items():
        if documents:
            db[name].insert_many(documents)


def test_a_cursor_of_another_epoch_gets_a_410_reset(follow, now_cursor, write):
    write()
    position = decode_change_cursor(now_cursor())
    assert position.epoch is not None and position.epoch != OTHER_EPOCH
    assert follow(cursor=encode_change_cursor(ChangeCursor(position.epoch, 0)))[0] == 200
    assert_reset_by_a_restore(*follow(cursor=encode_change_cursor(ChangeCursor(OTHER_EPOCH, 0))))


def test_the_first_epoch_is_created_once_on_first_use(feed, db):
    assert db.change_feed.count_documents({}) == 0
    first = feed.epoch()
    assert first.is_first and first.started_ms == 0 and len(first.id) == 16
    assert feed.epoch() == first
    assert list(db.change_feed.find()) == [
        {"_id": "epoch", "epoch": first.id, "started_ms": 0, "is_first": True}]
    # two processes creating it at once: both read the one stored first
    assert feed.changes.insert_epoch("f" * 16, started_ms=0, is_first=True)["epoch"] == first.id


def test_a_legacy_c1_cursor_is_followed_in_the_first_epoch_and_gets_a_410_after_a_reset(
        feed, follow, write):
    write(2)
    status, body = follow(cursor=legacy_change_cursor(1))  # issued before epochs existed
    assert status == 200 and len(body["changes"]) == 1
    assert decode_change_cursor(body["cursor"]) == (feed.epoch().id, 2)  # now in the c2 form
    feed.start_epoch()
    assert_reset_by_a_restore(*follow(cursor=legacy_change_cursor(1)))
    assert_reset_by_a_restore(*follow(cursor=legacy_change_cursor(2)))


def test_a_reset_starts_a_new_epoch_and_only_its_cursors_are_followed(feed, follow, now_cursor,
                                                                      write, clock):
    write()
    before = now_cursor()
    first = feed.epoch()
    clock.advance(10)
    started = feed.start_epoch()
    assert not started.is_first and started.id != first.id
    assert started.started_ms == int(clock() * 1000) and feed.epoch() == started
    assert_reset_by_a_restore(*follow(cursor=before))
    after = now_cursor()
    assert decode_change_cursor(after) == (started.id, 1)  # numbering goes on
    write()
    status, body = follow(cursor=after)
    assert status == 200 and len(body["changes"]) == 1
    assert decode_change_cursor(body["cursor"]) == (started.id, 2)


def test_after_a_restore_a_cursor_from_after_the_backup_never_skips_changes(
        feed, db, follow, now_cursor, write):
    """The bug: the restored feed numbers on from the backup's last change, so a cursor taken
    after the backup was accepted once new changes passed its number, skipping those between."""
    write(2)
    now_cursor()                                                  # the epoch is in the backup
    backup = restore_point(db)
    write(3)
    after_backup = now_cursor()                                   # seq 5, not in the backup
    restore(db, backup)
    feed.start_epoch()                                            # what a restore runs
    assert_reset_by_a_restore(*follow(cursor=after_backup))
    write(4)                                                      # seqs 3..6 of the new history
    assert_reset_by_a_restore(*follow(cursor=after_backup))       # not: 200 with seq 6 only
    status, body = follow(cursor=encode_change_cursor(ChangeCursor(feed.epoch().id, 2)))
    assert status == 200 and len(body["changes"]) == 4


def test_a_restore_without_a_new_epoch_would_skip_changes(feed, db, follow, now_cursor, write):
    """Why `reset-feed` is a restore step: the epoch is restored with the database."""
    write(2)
    now_cursor()
    backup = restore_point(db)
    write(3)
    after_backup = now_cursor()
    restore(db, backup)
    write(4)
    status, body = follow(cursor=after_backup)
    assert status == 200 and len(body["changes"]) == 1  # seqs 3..5 of the new history: skipped


def test_a_reset_of_a_database_restored_from_before_epochs_refuses_c1_cursors(feed, db, follow,
                                                                             write):
    write(2)
    db.change_feed.drop()  # a backup taken before the feed had epochs
    started = feed.start_epoch()
    assert db.change_feed.find_one({"_id": "epoch"})["epoch"] == started.id
    assert not feed.epoch().is_first
    assert_reset_by_a_restore(*follow(cursor=legacy_change_cursor(2)))


def test_since_before_the_epoch_began_gets_a_410_and_after_it_is_followed(feed, follow, write,
                                                                          clock):
    write()
    clock.advance(60)
    before_reset_ms = int(clock() * 1000)
    status, body = follow(since=str(before_reset_ms))
    assert status == 200  # the first epoch: nothing was restored, any kept time is fine
    clock.advance(60)
    feed.start_epoch()
    assert_reset_by_a_restore(*follow(since=str(before_reset_ms)))
    clock.advance(1)
    status, body = follow(since=str(int(clock() * 1000)))
    assert status == 200 and body["changes"] == []
    assert decode_change_cursor(body["cursor"]) == (feed.epoch().id, 1)
    write()
    assert len(follow(cursor=body["cursor"])[1]["changes"]) == 1


def test_the_reset_feed_command_starts_a_new_epoch(app, feed, follow, now_cursor, write, db):
    write()
    before = now_cursor()
    result = CliRunner().invoke(cli, ["reset-feed"], obj={"app": app})
    assert result.exit_code == 0, result.output
    epoch = feed.epoch()
    assert f"new change feed epoch {epoch.id}" in result.output
    assert decode_change_cursor(before).epoch != epoch.id
    assert_reset_by_a_restore(*follow(cursor=before))
    assert follow(cursor=now_cursor())[0] == 200
    assert db.change_feed.count_documents({}) == 1


def test_since_is_refused_up_to_the_millisecond_the_epoch_began(feed, follow, write, clock):
    write()
    clock.advance(60)
    started = feed.start_epoch()
    assert_reset_by_a_restore(*follow(since=str(started.started_ms - 1)))
    assert follow(since=str(started.started_ms))[0] == 200

"""`satchel-stack admin backup` / `restore` without a running stack (tests-e2e/test_backup.py
runs them against real stacks under load)."""
import hashlib
import json
import os
import shutil
import socket
import sqlite3
import threading
from pathlib import Path

import pytest

from satchel_devstack import backup as backup_module
from satchel_devstack.backup import BackupError, backup, restore, snapshot_database
from satchel_devstack.cli import run as cli_run
from satchel_devstack.stack import Stack, StackConfig, StackError

ROOT = Path(__file__).resolve().parents[2]
BLOB = b"some verified chunk"
BLOB_HASH = hashlib.sha256(BLOB).hexdigest()


def make_stack(var_dir: Path, **service_env) -> Stack:
    return Stack(StackConfig(root=ROOT, var_dir=var_dir, service_env=service_env))


def make_database(path: Path, rows: int = 3) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE t (batch INTEGER, n INTEGER)")
        db.executemany("INSERT INTO t VALUES (0, ?)", [(n,) for n in range(rows)])


@pytest.fixture
def var(tmp_path) -> Path:
    """A stopped stack's SATCHEL_VAR: databases, a key, the URL secret, a blob, in-flight bytes."""
    var = tmp_path / "var"
    for name in ("satchel_auth", "satchel_files", "admin"):
        make_database(var / "mongo" / f"{name}.db")
    (var / "keys").mkdir()
    (var / "keys" / "k1.pem").write_text("old key")
    (var / "keys" / "k2.pem").write_text("new key")
    os.utime(var / "keys" / "k1.pem", (1_000_000, 1_000_000))  # k2 is the newer: it signs
    (var / "secrets").mkdir(mode=0o700)
    (var / "secrets" / "blob_url_secret").write_text("s" * 64)
    blob = var / "data" / "files" / BLOB_HASH[:2] / BLOB_HASH
    blob.parent.mkdir(parents=True)
    blob.write_bytes(BLOB)
    for in_flight in ("data/files/tmp/upload-x", "data/staging/" + "a" * 32):
        (var / in_flight).parent.mkdir(parents=True, exist_ok=True)
        (var / in_flight).write_bytes(b"not a blob yet")
    return var


def test_a_snapshot_is_one_instant_of_a_database_being_written(tmp_path):
    source = tmp_path / "live.db"
    make_database(source, rows=0)
    stop = threading.Event()

    committed = threading.Event()

    def writer():  # every transaction adds a pair of rows
        with sqlite3.connect(source, timeout=30) as db:
            batch = 0
            while not stop.is_set() and batch < 50_000:
                batch += 1
                with db:
                    db.executemany("INSERT INTO t VALUES (?, ?)", [(batch, 0), (batch, 1)])
                committed.set()

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    counts = []
    try:
        assert committed.wait(30), "the writer never committed"
        # snapshots until two differ (the writer went on between them); bounded, not timed
        for attempt in range(200):
            target = tmp_path / f"snapshot-{attempt}.db"
            snapshot_database(source, target)
            with sqlite3.connect(target) as db:
                assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
                counts.append(db.execute("SELECT COUNT(*) FROM t").fetchone()[0])
            assert not Path(f"{target}-wal").exists()
            target.unlink()
            if attempt >= 4 and len(set(counts)) > 1:
                break
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()
    assert all(count % 2 == 0 for count in counts), counts  # whole transactions only
    assert len(set(counts)) > 1, counts  # the writer went on between the snapshots


def test_a_backup_holds_databases_keys_secrets_and_blobs_but_no_bytes_in_flight(var, tmp_path):
    manifest = backup(make_stack(var), tmp_path / "backup")
    target = tmp_path / "backup"
    assert sorted(p.name for p in (target / "mongo").iterdir()) == [
        "admin.db", "satchel_auth.db", "satchel_files.db"]
    files, auth = (manifest["databases"][name]["snapshot_between"]
                   for name in ("satchel_files", "satchel_auth"))
    assert files[1] <= auth[0]  # the owners of the snapshot's files are in the auth snapshot
    for key in ("k1.pem", "k2.pem"):  # the same newest key signs after a restore
        assert (target / "keys" / key).stat().st_mtime == (var / "keys" / key).stat().st_mtime
    assert (target / "secrets" / "blob_url_secret").read_text() == "s" * 64
    assert (target / "data" / "files" / BLOB_HASH[:2] / BLOB_HASH).read_bytes() == BLOB
    assert not (target / "data" / "files" / "tmp").exists()
    assert not (target / "data" / "staging").exists()
    assert (manifest["blobs"], manifest["blob_bytes"]) == (1, len(BLOB))
    assert json.loads((target / "MANIFEST.json").read_text()) == manifest
    assert target.stat().st_mode & 0o077 == 0  # keys and secrets inside


def test_a_blob_gc_removes_during_the_copy_is_skipped(var, tmp_path, monkeypatch):
    copy2 = shutil.copy2

    def vanishing(source, target):
        if Path(source).name == BLOB_HASH:
            raise FileNotFoundError(source)
        return copy2(source, target)

    monkeypatch.setattr(backup_module.shutil, "copy2", vanishing)
    assert backup(make_stack(var), tmp_path / "backup")["blobs"] == 0


def test_a_backup_slower_than_the_grace_period_is_not_complete(var, tmp_path, monkeypatch):
    clock = iter([0.0, 3600.0])
    monkeypatch.setattr(backup_module.time, "monotonic", lambda: next(clock))
    with pytest.raises(BackupError, match="not less than GC_GRACE_SECONDS"):
        backup(make_stack(var), tmp_path / "backup")
    assert not (tmp_path / "backup" / "MANIFEST.json").exists()


@pytest.mark.parametrize("service_env, message", [
    ({"STORAGE_BACKEND": "s3", "S3_BUCKET": "b"}, "STORAGE_BACKEND=s3"),
    ({"GC_GRACE_SECONDS": "1"}, "GC_GRACE_SECONDS must be at least 60"),
])
def test_a_backup_needs_the_local_backend_and_valid_settings(var, tmp_path, service_env, message):
    with pytest.raises(BackupError, match=message):
        backup(make_stack(var, **service_env), tmp_path / "backup")


def test_a_backup_of_a_var_without_databases_fails_and_writes_nothing(tmp_path):
    with pytest.raises(BackupError, match="no databases under .*: is SATCHEL_VAR right"):
        backup(make_stack(tmp_path / "var"), tmp_path / "backup")
    assert not (tmp_path / "var").exists() and not (tmp_path / "backup").exists()


def test_a_backup_needs_the_file_database(var, tmp_path):
    (var / "mongo" / "satchel_files.db").unlink()
    with pytest.raises(BackupError, match="no satchel_files.db under"):
        backup(make_stack(var), tmp_path / "backup")


def test_a_restore_refuses_a_var_that_holds_a_satchel_and_changes_nothing(var, tmp_path):
    backup(make_stack(var), tmp_path / "backup")
    before = sorted(str(p) for p in var.rglob("*"))
    with pytest.raises(BackupError, match="already holds a Satchel"):
        restore(make_stack(var), tmp_path / "backup")
    assert sorted(str(p) for p in var.rglob("*")) == before


@pytest.mark.parametrize("manifest, message", [
    (None, "not a complete backup"), ('{"format": 99}', "unknown backup format 99")])
def test_a_restore_needs_a_complete_backup_of_a_known_format(tmp_path, manifest, message):
    source = tmp_path / "backup"
    source.mkdir()
    if manifest is not None:
        (source / "MANIFEST.json").write_text(manifest)
    with pytest.raises(BackupError, match=message):
        restore(make_stack(tmp_path / "var"), source)
    assert not (tmp_path / "var").exists()


@pytest.fixture
def restore_commands(monkeypatch):
    """`restore` with nx-27017 not started: the file-service commands it runs, in order; each
    exits with the status `statuses` gives for its name (0 by default)."""
    ran, statuses = [], {}

    def run_file_admin(stack, *arguments):
        ran.append(list(arguments))
        return statuses.get(arguments[0], 0)

    monkeypatch.setattr(Stack, "check_ports", lambda stack: None)
    monkeypatch.setattr(Stack, "start_database", lambda stack: None)
    monkeypatch.setattr(Stack, "run_file_admin", run_file_admin)
    return ran, statuses


def test_a_restore_ends_the_requests_in_flight_and_starts_a_new_epoch_before_fsck(
        var, tmp_path, restore_commands):
    ran, _ = restore_commands
    backup(make_stack(var), tmp_path / "backup")
    assert restore(make_stack(tmp_path / "restored"), tmp_path / "backup") == 0
    assert ran == [["end-intents"], ["reset-feed"], ["fsck", "--repair"]]
    assert not (tmp_path / "restored" / "RESTORING").exists()


def test_a_restore_whose_feed_reset_fails_is_not_complete(var, tmp_path, restore_commands):
    ran, statuses = restore_commands
    statuses["reset-feed"] = 1
    backup(make_stack(var), tmp_path / "backup")
    with pytest.raises(BackupError, match="could not start a new change feed epoch"):
        restore(make_stack(tmp_path / "restored"), tmp_path / "backup")
    assert ran == [["end-intents"], ["reset-feed"]]
    # the state left behind is marked: `make run` will not start it, nor will anything else
    assert (tmp_path / "restored" / "RESTORING").exists()
    assert cli_run(make_stack(tmp_path / "restored").config) == 1
    with pytest.raises(StackError, match="a restore into .* did not finish"):
        make_stack(tmp_path / "restored").start()


def test_a_restore_that_cannot_end_the_requests_in_flight_stops_there(var, tmp_path,
                                                                       restore_commands):
    ran, statuses = restore_commands
    statuses["end-intents"] = 1
    backup(make_stack(var), tmp_path / "backup")
    with pytest.raises(BackupError, match="could not end the requests in flight"):
        restore(make_stack(tmp_path / "restored"), tmp_path / "backup")
    assert ran == [["end-intents"]]
    assert (tmp_path / "restored" / "RESTORING").exists()


def test_a_restore_returns_fsck_s_status_and_always_stops_what_it_started(
        var, tmp_path, restore_commands, monkeypatch):
    ran, statuses = restore_commands
    stopped = []
    monkeypatch.setattr(Stack, "stop", lambda stack, **kwargs: stopped.append(True))
    statuses["fsck"] = 1
    backup(make_stack(var), tmp_path / "backup")
    assert restore(make_stack(tmp_path / "restored"), tmp_path / "backup") == 1
    assert ran[-1] == ["fsck", "--repair"] and stopped == [True]
    statuses["end-intents"] = 1
    with pytest.raises(BackupError):
        restore(make_stack(tmp_path / "again"), tmp_path / "backup")
    assert stopped == [True, True]  # also when the restore fails half-way


def test_a_restore_refuses_a_var_that_holds_only_blobs(var, tmp_path):
    backup(make_stack(var), tmp_path / "backup")
    target = tmp_path / "blobs-only"
    blob = target / "data" / "files" / BLOB_HASH[:2] / BLOB_HASH
    blob.parent.mkdir(parents=True)
    blob.write_bytes(BLOB)
    with pytest.raises(BackupError, match="already holds a Satchel"):
        restore(make_stack(target), tmp_path / "backup")


def test_a_restore_refuses_while_anything_holds_the_stacks_ports_and_copies_nothing(
        var, tmp_path):
    """A running stack (or anything on its ports) would serve the old state meanwhile."""
    backup(make_stack(var), tmp_path / "backup")
    with socket.socket() as running:
        running.bind(("127.0.0.1", 0))
        running.listen()
        port = running.getsockname()[1]
        target = Stack(StackConfig(root=ROOT, var_dir=tmp_path / "restored", gateway_port=port))
        with pytest.raises(StackError, match=f"port {port} is in use; set GATEWAY_PORT"):
            restore(target, tmp_path / "backup")
    assert not (tmp_path / "restored").exists() or not any((tmp_path / "restored").iterdir())

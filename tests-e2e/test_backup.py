"""Backup and restore of the `make run` stack, as docs/operations.md describes them.

Two users write files continuously while `satchel-stack admin backup` runs; after it, backed-up
files are deleted and gc removes their bytes from the live stack. The backup is restored into a
new SATCHEL_VAR and started on other ports: every file of the backup's database snapshot
downloads byte for byte, nothing newer is there, passwords and refresh tokens behave as
documented, and fsck finds nothing to repair. A change cursor (or `since`) from after the backup
gets 410 `reset` after the restore, also once the restored feed's new changes pass its number.
"""
import json
import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest
import requests

from satchel_devstack.stack import Stack
from satchel_files.schemas import decode_change_cursor, encode_change_cursor
from satchel_e2e import CHUNK_SIZE, PASSWORD, ROOT, cli_env, sha256, stack_config

pytestmark = pytest.mark.skipif(bool(os.environ.get("BASE_URL")), reason="starts its own stacks")

TIMEOUT = 30
WORKLOAD_STEPS = 400  # a bound; the workload is stopped long before


def admin(config, *arguments, timeout=120):
    """`satchel-stack admin ...` for the stack `config` describes (what `make backup` runs)."""
    return subprocess.run([sys.executable, "-m", "satchel_devstack.cli", "admin", "--root",
                           str(ROOT), *arguments], env=cli_env(config), capture_output=True,
                          text=True, timeout=timeout)


def fsck(config) -> dict:
    result = admin(config, "fsck", "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


class User:
    """One account, through the gateway of whichever stack `base_url` names."""

    def __init__(self, base_url, email=None):
        self.base_url = base_url
        self.email = email or f"backup-{uuid.uuid4().hex[:12]}@example.test"
        self.headers = {}

    def call(self, method, path, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT)
        kwargs.setdefault("headers", self.headers)
        return requests.request(method, self.base_url + path, **kwargs)

    def register(self):
        response = self.call("POST", "/api/v1/auth/register",
                             json={"email": self.email, "password": PASSWORD})
        assert response.status_code == 201, response.text
        return self.login()

    def login(self):
        response = self.call("POST", "/api/v1/auth/login",
                             json={"email": self.email, "password": PASSWORD})
        assert response.status_code == 200, response.text
        tokens = response.json()
        self.headers = {"Authorization": f"Bearer {tokens['token']}"}
        return tokens

    def refresh(self, refresh_token):
        return self.call("POST", "/api/v1/auth/refresh", json={"refresh_token": refresh_token})

    def upload(self, data, filename="file.bin"):
        """Multipart; the user_file_id."""
        response = self.call("POST", "/api/v1/files/upload",
                             files=[("files", (filename, data, "application/octet-stream"))])
        assert response.status_code == 201, response.text
        return response.json()[0]["user_file_id"]

    def chunked(self, data, filename="chunked.bin", send=None):
        """The chunked flow (register, PUT, PATCH) for the chunks in `send` (default: all)."""
        pieces = [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]
        registered = self.call("POST", "/api/v1/files", json={
            "filename": filename, "size_bytes": len(data), "hash": sha256(data),
            "mime_type": "application/octet-stream",
            "chunks": [{"index": i, "hash": sha256(p), "size_bytes": len(p)}
                       for i, p in enumerate(pieces)]})
        assert registered.status_code == 201, registered.text
        body = registered.json()
        return self.send_chunks(body["user_file_id"], body["chunks"], pieces, send)

    def send_chunks(self, user_file_id, chunks, pieces, send=None):
        todo = [c for c in chunks if c.get("upload_url") and (send is None or c["index"] in send)]
        for chunk in todo:
            put = requests.put(chunk["upload_url"], data=pieces[chunk["index"]], timeout=TIMEOUT)
            assert put.status_code in (200, 201, 204), put.text
        if todo:
            reported = self.call("PATCH", f"/api/v1/files/{user_file_id}", json={
                "chunks": [{"index": c["index"], "status": "uploaded"} for c in todo]})
            assert reported.status_code == 200, reported.text
            assert all(c["status"] == "verified" for c in reported.json()["chunks"]
                       if c["index"] in {t["index"] for t in todo}), reported.text
        return user_file_id

    def delete(self, user_file_id):
        assert self.call("DELETE", f"/api/v1/files/{user_file_id}").status_code == 204

    def listed(self):
        ids, url = [], f"{self.base_url}/api/v1/files?limit=1000"
        for _ in range(100):
            response = requests.get(url, headers=self.headers, timeout=TIMEOUT)
            assert response.status_code == 200, response.text
            ids += [entry["user_file_id"] for entry in response.json()]
            url = response.links.get("next", {}).get("url")
            if url is None:
                return ids
        raise AssertionError("the listing did not end")

    def content(self, user_file_id):
        response = self.call("GET", f"/api/v1/files/{user_file_id}/content")
        assert response.status_code == 200, (user_file_id, response.text)
        return response.content


class Workload(threading.Thread):
    """Uploads (multipart and chunked) and deletes one user's files until stopped; records
    when each request was sent and answered, to place it before or after the snapshot."""

    def __init__(self, user, contents):
        super().__init__(daemon=True)
        self.user, self.contents = user, contents
        self.created, self.deleted = {}, {}  # id -> (sent, answered)
        self.stopping, self.error = threading.Event(), None

    def run(self):
        rng, live = random.Random(), []
        try:
            for step in range(WORKLOAD_STEPS):
                if self.stopping.is_set():
                    return
                data = rng.randbytes(rng.randint(1, 3 * CHUNK_SIZE))
                sent = time.time()
                if step % 3 == 2:
                    user_file_id = self.user.chunked(data)
                else:
                    user_file_id = self.user.upload(data)
                self.created[user_file_id] = (sent, time.time())
                self.contents[user_file_id] = data
                live.append(user_file_id)
                if len(live) > 5 or step % 4 == 3:
                    victim = live.pop(0)
                    sent = time.time()
                    self.user.delete(victim)
                    self.deleted[victim] = (sent, time.time())
        except BaseException as exc:  # noqa: BLE001 - re-raised by the test
            self.error = exc

    def in_snapshot(self, window):
        """(ids surely in a snapshot taken within `window`, ids surely not in it)."""
        start, end = window
        surely, surely_not = set(), set()
        for user_file_id, (sent, answered) in self.created.items():
            deleted = self.deleted.get(user_file_id)
            if sent > end or (deleted and deleted[1] < start):
                surely_not.add(user_file_id)
            elif answered < start and (deleted is None or deleted[0] > end):
                surely.add(user_file_id)
        return surely, surely_not


def blob_paths(var_dir, data):
    return [var_dir / "data" / "files" / h[:2] / h
            for h in (sha256(data[i:i + CHUNK_SIZE]) for i in range(0, len(data), CHUNK_SIZE))]


def test_a_backup_taken_under_load_restores_every_file_of_its_snapshot(tmp_path):
    started = time.monotonic()
    config = stack_config(tmp_path / "var")
    live = Stack(config)
    live.start()
    contents = {}  # user_file_id -> bytes, for every file ever uploaded
    try:
        # before the backup: files by both upload paths, sessions in several states
        alice, bob = User(config.base_url), User(config.base_url)
        alice.register()
        unused = alice.login()["refresh_token"]
        rotated_after_backup = alice.login()["refresh_token"]
        logged_out = alice.login()["refresh_token"]
        assert alice.call("POST", "/api/v1/auth/logout",
                          json={"refresh_token": logged_out}).status_code == 204
        alice_access = alice.login()
        shared = os.urandom(CHUNK_SIZE + 100)
        big, movie, partial = (os.urandom(n * CHUNK_SIZE + 7) for n in (4, 3, 3))
        report = b"quarterly numbers\n" * 100
        report_id, big_id, shared_id = (alice.upload(data, name) for data, name in (
            (report, "report.txt"), (big, "big.bin"), (shared, "shared.bin")))
        contents.update({report_id: report, big_id: big, shared_id: shared})
        bob.register()
        movie_id = bob.chunked(movie, "movie.bin")
        contents[movie_id] = movie
        contents[bob.upload(shared, "same-as-alice.bin")] = shared
        partial_id = bob.chunked(partial, "partial.bin", send={0, 1})  # in progress

        # the backup, while two users keep uploading and deleting
        workloads = [Workload(User(config.base_url), contents) for _ in range(2)]
        for workload in workloads:
            workload.user.register()
            workload.start()
        deadline = time.monotonic() + 20
        while min(len(w.created) for w in workloads) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        backup_dir = tmp_path / "backup"
        result = admin(config, "backup", str(backup_dir))
        time.sleep(0.3)  # and on a little after it
        for workload in workloads:
            workload.stopping.set()
            workload.join(timeout=TIMEOUT)
            assert not workload.is_alive(), "a workload did not stop"
            assert workload.error is None, workload.error
        assert result.returncode == 0, result.stdout + result.stderr
        manifest = json.loads((backup_dir / "MANIFEST.json").read_text())
        window = manifest["databases"]["satchel_files"]["snapshot_between"]
        assert all(len(w.created) > 4 for w in workloads), "the workload barely ran"

        # after the backup: new files, deletes of backed-up ones, gc takes their bytes
        alice.delete(big_id)
        alice.delete(shared_id)  # bob still has the same bytes
        bob.delete(movie_id)
        after_id = alice.upload(os.urandom(2 * CHUNK_SIZE), "after.bin")
        newer = alice.refresh(rotated_after_backup)
        assert newer.status_code == 200
        after_cursor = alice.call("GET", "/api/v1/changes/latest").json()["cursor"]
        after_backup_ms = int(time.time() * 1000)
        late = User(config.base_url)
        late.register()
        gc = admin(config, "gc", "--grace-seconds", "0")
        assert gc.returncode == 0, gc.stderr
        for data in (big, movie):
            for path in blob_paths(config.var_dir, data):
                assert not path.exists(), f"gc left {path}"
                assert (backup_dir / path.relative_to(config.var_dir)).is_file()
    finally:
        live.stop()

    # a restore never overwrites a Satchel
    refused = admin(config, "restore", str(backup_dir))
    assert refused.returncode == 1 and "already holds a Satchel" in refused.stderr

    restored_config = stack_config(tmp_path / "restored")
    result = admin(restored_config, "restore", str(backup_dir))
    assert result.returncode == 0, result.stdout + result.stderr
    print(result.stdout)
    restored = Stack(restored_config)
    restored.start()
    try:
        base = restored_config.base_url
        for user in (alice, bob, late, *(w.user for w in workloads)):
            user.base_url = base

        # passwords and sessions as of the snapshot (docs/operations.md)
        assert late.call("POST", "/api/v1/auth/login",
                         json={"email": late.email, "password": PASSWORD}).status_code == 401
        assert alice.call("GET", "/api/v1/files",  # access tokens: the same keys verify them
                          headers={"Authorization": f"Bearer {alice_access['token']}"}
                          ).status_code == 200
        assert alice.refresh(unused).status_code == 200
        assert alice.refresh(rotated_after_backup).status_code == 200  # its use was after
        assert alice.refresh(newer.json()["refresh_token"]).status_code == 401
        assert alice.refresh(logged_out).status_code == 401
        for user in (alice, bob, *(w.user for w in workloads)):
            user.login()
        gone = alice.call("GET", f"/api/v1/changes?cursor={after_cursor}")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "reset"

        # every file of the snapshot, byte for byte; nothing newer
        assert {report_id, big_id, shared_id} <= set(alice.listed())
        assert movie_id in bob.listed()
        assert after_id not in alice.listed()
        for workload in workloads:
            surely, surely_not = workload.in_snapshot(window)
            listed = set(workload.user.listed())
            assert surely <= listed, sorted(surely - listed)
            assert not surely_not & listed, sorted(surely_not & listed)
            assert surely, "no workload file was certainly in the snapshot"
            print(f"workload: {len(workload.created)} uploads, {len(workload.deleted)} deletes; "
                  f"{len(surely)} surely in the snapshot, {len(surely_not)} surely not, "
                  f"{len(listed - surely)} others restored")
        users = (alice, bob, *(w.user for w in workloads))

        def assert_every_file_downloads():
            for user in users:
                for user_file_id in user.listed():
                    assert sha256(user.content(user_file_id)) == sha256(contents[user_file_id])

        assert_every_file_downloads()

        # the upload in progress at the backup finishes
        state = bob.call("GET", f"/api/v1/files/{partial_id}").json()
        assert state["status"] == "uploading"
        pieces = [partial[i:i + CHUNK_SIZE] for i in range(0, len(partial), CHUNK_SIZE)]
        bob.send_chunks(partial_id, state["chunks"], pieces)
        assert bob.content(partial_id) == partial
        contents[partial_id] = partial

        # restore already repaired: fsck finds nothing; gc then leaves only what is referenced
        report = fsck(restored_config)
        assert report["clean"] and report["problems"] == [], report
        gc = admin(restored_config, "gc", "--grace-seconds", "0")
        assert gc.returncode == 0, gc.stderr
        report = fsck(restored_config)
        assert report["clean"] and report["problems"] == [], report
        assert report["checked"]["stored_blobs"] == report["checked"]["blobs"], report
        assert_every_file_downloads()

        # the restored feed numbers on from the backup's last change: once alice's new changes
        # pass the number of her cursor from after the backup, it still gets 410, never a page
        # that skips the changes numbered between
        restarted, after = (decode_change_cursor(cursor) for cursor in (
            alice.call("GET", "/api/v1/changes/latest").json()["cursor"], after_cursor))
        assert restarted.epoch != after.epoch and restarted.seq < after.seq
        count = after.seq + 2 - restarted.seq
        for n in range(count):
            data = f"uploaded after the restore {n}".encode()
            contents[alice.upload(data, f"new-{n}.txt")] = data
        latest = alice.call("GET", "/api/v1/changes/latest").json()["cursor"]
        assert decode_change_cursor(latest) == (restarted.epoch, after.seq + 2)
        gone = alice.call("GET", f"/api/v1/changes?cursor={after_cursor}")
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "reset", gone.text
        undone = alice.call("GET", f"/api/v1/changes?since={after_backup_ms}")
        assert undone.status_code == 410 and undone.json()["error"]["code"] == "reset"
        followed = alice.call("GET", "/api/v1/changes", params={
            "cursor": encode_change_cursor(restarted), "limit": 1000}).json()
        assert len(followed["changes"]) == count and followed["cursor"] == latest
    finally:
        restored.stop()
    print(f"backup under load, restore and checks: {time.monotonic() - started:.1f} s")


def test_a_backup_is_refused_into_a_directory_that_is_not_empty(tmp_path):
    config = stack_config(tmp_path / "var")
    (tmp_path / "backup").mkdir()
    (tmp_path / "backup" / "something").write_text("mine")
    result = admin(config, "backup", str(tmp_path / "backup"))
    assert result.returncode == 1 and "not empty" in result.stderr
    assert (tmp_path / "backup" / "something").read_text() == "mine"


def test_a_restore_needs_a_complete_backup(tmp_path):
    (tmp_path / "partial").mkdir()  # a backup that stopped half-way has no MANIFEST.json
    result = admin(stack_config(tmp_path / "var"), "restore", str(tmp_path / "partial"))
    assert result.returncode == 1 and "not a complete backup" in result.stderr
    assert not (tmp_path / "var" / "mongo").exists()


"""Many users, the same bytes, uploads racing deletes and gc: against a real MongoDB wire server
(nx-27017; mongomock's updates are not atomic across threads)."""
import hashlib
from collections import Counter
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import jwt
import pytest

from satchel_files import create_app
from satchel_files.services.upload_digest import stored_digest
from satchel_shared.mongo import connect_mongo
from satchel_shared.tokens import StaticKeySet

from files_testing import CHUNK, KID

NX = shutil.which("nx-27017") or str(Path(sys.executable).parent / "nx-27017")
USERS = 8


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def nx_mongo(tmp_path):
    if not os.path.exists(NX):
        pytest.skip("nx-27017 is not installed")
    port = _free_port()
    process = subprocess.Popen(
        [NX, "--db", str(tmp_path / "nx.db"), "-p", str(port), "--pid-file", str(tmp_path / "nx.pid"),
         "--log-file", str(tmp_path / "nx.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = connect_mongo(f"mongodb://127.0.0.1:{port}", app_name="satchel-test", timeout_ms=2000)
    deadline = time.monotonic() + 20
    while True:
        try:
            client.admin.command("ping")
            break
        except Exception:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                pytest.skip("nx-27017 did not start")
            time.sleep(0.1)
    yield client
    client.close()
    process.terminate()
    process.wait(10)


@pytest.fixture
def nx_app(config, signing_key, nx_mongo):
    jwk = jwt.algorithms.OKPAlgorithm.to_jwk(signing_key.public_key(), as_dict=True)
    key_set = StaticKeySet({KID: jwt.PyJWK({**jwk, "kid": KID, "alg": "EdDSA"})})
    return create_app(config, mongo=nx_mongo, key_set=key_set)


def test_users_uploading_and_deleting_the_same_bytes_while_gc_runs(nx_app, token_for):
    app = nx_app
    shared = os.urandom(CHUNK * 2 + 100)
    churn = os.urandom(CHUNK + 1)  # uploaded and deleted by everyone, so it keeps hitting 0
    errors, stop, removed = [], threading.Event(), Counter()
    maintenance = app.extensions["satchel.maintenance"]

    def user(index):
        client, headers = app.test_client(), token_for(f"user-{index}")
        try:
            for round_ in range(4):
                data = churn if round_ % 2 else shared
                response = client.post("/api/v1/files/upload", headers=headers,
                                       data={"files": (_io(data), "shared.bin")},
                                       content_type="multipart/form-data")
                assert response.status_code == 201, response.get_json()
                user_file_id = response.get_json()[0]["user_file_id"]
                assert client.delete(f"/api/v1/files/{user_file_id}", headers=headers).status_code == 204
            response = client.post("/api/v1/files/upload", headers=headers,
                                   data={"files": [(_io(shared), "keep.bin"),
                                                   (_io(churn), "churn.bin"),
                                                   (_io(f"own {index}".encode()), "own.txt")]},
                                   content_type="multipart/form-data")
            assert response.status_code == 201, response.get_json()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    def collector():
        while not stop.is_set():
            removed.update(maintenance.gc(grace_seconds=0).removed)

    threads = [threading.Thread(target=user, args=(i,)) for i in range(USERS)]
    gc_thread = threading.Thread(target=collector)
    gc_thread.start()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    stop.set()
    gc_thread.join(60)
    assert not errors, errors
    print("gc removed during the race:", dict(removed))

    db = app.extensions["satchel.mongo"][app.config["SATCHEL"].mongo_db]
    shared_object = db.file_objects.find_one({"hash": hashlib.sha256(shared).hexdigest()})
    churn_object = db.file_objects.find_one({"hash": hashlib.sha256(churn).hexdigest()})
    assert shared_object["ref_count"] == USERS and churn_object["ref_count"] == USERS
    assert db.file_objects.count_documents({}) == USERS + 2
    for chunk in shared_object["chunks"]:
        assert db.blobs.find_one({"_id": chunk})["ref_count"] == 1
    assert db.ref_intents.count_documents({}) == 0
    report = maintenance.fsck()
    assert report.problems == [], report.as_dict()
    client = app.test_client()
    for index in range(USERS):
        headers = token_for(f"user-{index}")
        for entry in client.get("/api/v1/files", headers=headers).get_json():
            content = client.get(f"/api/v1/files/{entry['user_file_id']}/content", headers=headers)
            assert content.status_code == 200
            assert content.data in (shared, churn, f"own {index}".encode())


def _io(data):
    import io
    return io.BytesIO(data)


def test_the_whole_api_works_on_nx_27017(nx_app, token_for):
    """nx-27017 stores datetimes written by $set as strings and rejects indexes naming _id:
    versions, timestamps, pages and cursors must survive it."""
    client, headers = nx_app.test_client(), token_for("alice")
    ids = []
    for index in range(3):
        response = client.post("/api/v1/files/upload", headers=headers,
                               data={"files": (_io(f"file {index}".encode()), f"{index}.txt")},
                               content_type="multipart/form-data")
        assert response.status_code == 201
        ids.append(response.get_json()[0]["user_file_id"])
        time.sleep(0.005)  # distinct created_at; equal ones are ordered by id
    page = client.get("/api/v1/files?limit=2", headers=headers)
    link = page.headers["Link"]
    rest = client.get(link[1:link.index(">")], headers=headers).get_json()
    assert [e["user_file_id"] for e in page.get_json() + rest] == ids[::-1]

    updated = client.put(f"/api/v1/files/{ids[0]}", headers=headers,
                         data={"file": (_io(b"new"), "x.txt"), "filename": "renamed.txt"},
                         content_type="multipart/form-data")
    assert updated.status_code == 200, updated.get_json()
    meta = client.get(f"/api/v1/files/{ids[0]}", headers=headers).get_json()
    assert meta["version"] == 2 and meta["filename"] == "renamed.txt"
    assert meta["updated_at"] >= meta["created_at"]
    assert client.get(f"/api/v1/files/{ids[0]}/content", headers=headers).data == b"new"
    assert client.delete(f"/api/v1/files/{ids[1]}", headers=headers).status_code == 204
    maintenance = nx_app.extensions["satchel.maintenance"]
    assert maintenance.gc(grace_seconds=0).removed["blobs"] == 2  # old content of 0, and 1
    assert maintenance.fsck().problems == []


def registered_and_staged(app, headers, data):
    """A chunked upload of `data` registered, every chunk staged as its PUT would: the POST's
    answer."""
    pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
    body = app.test_client().post("/api/v1/files", headers=headers, json={
        "filename": "a.bin", "size_bytes": len(data),
        "hash": hashlib.sha256(data).hexdigest(), "mime_type": "application/octet-stream",
        "chunks": [{"index": i, "hash": hashlib.sha256(p).hexdigest(), "size_bytes": len(p)}
                   for i, p in enumerate(pieces)]}).get_json()
    store = app.extensions["satchel.blob_store"]
    for entry in body["chunks"]:
        path = store.staging_path(entry["upload_url"].split("?")[0].rsplit("/", 1)[1])
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pieces[entry["index"]])
    return body


def test_chunk_reports_racing_in_any_order_give_the_right_file(nx_app, token_for):
    """PATCHes of different chunks of one upload at once, in random order: the running
    whole-file digest may lose races, never the right answer."""
    client, headers = nx_app.test_client(), token_for("alice")
    db = nx_app.extensions["satchel.mongo"][nx_app.config["SATCHEL"].mongo_db]
    rng = random.Random(27017)
    for round_ in range(4):
        data = os.urandom(12 * CHUNK + round_)
        pieces = [data[i:i + CHUNK] for i in range(0, len(data), CHUNK)]
        body = registered_and_staged(nx_app, headers, data)
        order = list(range(len(pieces)))
        rng.shuffle(order)
        if round_ == 0:  # in order, one at a time: nx-27017 keeps the digest as written
            order.sort()
        states, errors = [], []

        def report(indexes):
            try:
                for index in indexes:
                    response = nx_app.test_client().patch(
                        f"/api/v1/files/{body['user_file_id']}", headers=headers,
                        json={"chunks": [{"index": index, "status": "uploaded"}]})
                    assert response.status_code == 200, response.get_json()
                    states.append(response.get_json()["status"])
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        if round_ == 0:
            report(order[:-1])
            upload = db.user_files.find_one({"_id": body["user_file_id"]})
            assert stored_digest(upload)[1] == len(pieces) - 1
            order = order[-1:]
        threads = [threading.Thread(target=report, args=(order[i::4],)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert "failed" not in states and "available" in states
        content = client.get(f"/api/v1/files/{body['user_file_id']}/content", headers=headers)
        assert content.data == data
    assert db.ref_intents.count_documents({}) == 0
    assert nx_app.extensions["satchel.maintenance"].fsck().problems == []


def test_patches_at_once_share_the_process_s_checking_threads(nx_app, token_for, monkeypatch):
    """Two users' PATCHes of 8 chunks each at once never run more than _VERIFIERS checks
    together (one per PATCH: 8)."""
    from satchel_files.services import uploads as uploads_module
    store = nx_app.extensions["satchel.blob_store"]
    running, most, lock = [0], [0], threading.Lock()
    real_promote = store.promote_staging

    def slow_promote(*args, **kwargs):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            time.sleep(0.05)  # long enough for the other PATCH's checks to overlap
            return real_promote(*args, **kwargs)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(store, "promote_staging", slow_promote)
    registered = [(user, registered_and_staged(nx_app, token_for(user),
                                               os.urandom(8 * CHUNK))["user_file_id"])
                  for user in ("alice", "bob")]
    answers = []

    def report(user, user_file_id):
        answers.append(nx_app.test_client().patch(
            f"/api/v1/files/{user_file_id}", headers=token_for(user),
            json={"chunks": [{"index": i, "status": "uploaded"} for i in range(8)]}))

    threads = [threading.Thread(target=report, args=entry) for entry in registered]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [a.status_code for a in answers] == [200, 200]
    assert all(a.get_json()["status"] == "available" for a in answers)
    assert most[0] == uploads_module._VERIFIERS

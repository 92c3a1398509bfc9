"""Chunked uploads end to end: real PUTs to pre-signed URLs, through the gateway (local backend)
and straight to an S3 endpoint (moto in server mode; it checks neither signatures nor expiry,
so those are proven on the local backend here and by the unit tests of the URL parameters)."""
import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

import boto3
import pytest
import requests

from satchel_devstack.stack import HOST, Stack, free_port
from satchel_files.storage.signed_urls import SignedBlobUrls

from satchel_e2e import CHUNK_SIZE, PASSWORD, sha256, stack_config

BUCKET = "satchel-e2e"
TIMEOUT = 30


# --- stacks -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "wb")
    process = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", HOST,
                                "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    endpoint = f"http://{HOST}:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex((HOST, port)) == 0:
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto_server did not start")
            time.sleep(0.1)
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)
        yield endpoint
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def s3_stack(moto_endpoint, tmp_path_factory):
    if os.environ.get("BASE_URL"):
        pytest.skip("the S3 stack is started by the tests themselves")
    config = stack_config(tmp_path_factory.mktemp("s3stack") / "var")
    config.service_env.update({"STORAGE_BACKEND": "s3", "S3_ENDPOINT_URL": moto_endpoint,
                               "S3_BUCKET": BUCKET, "S3_REGION": "us-east-1",
                               "AWS_ACCESS_KEY_ID": "testing",
                               "AWS_SECRET_ACCESS_KEY": "testing"})
    stack = Stack(config)
    stack.start()
    yield stack
    stack.stop()


class Backend:
    """One stack as a chunked-upload client sees it."""

    def __init__(self, name, base_url, stack):
        self.name, self.base_url, self.stack = name, base_url, stack
        self.puts = 0

    def call(self, method, path, **kwargs):
        kwargs.setdefault("timeout", TIMEOUT)
        return requests.request(method, self.base_url + path, **kwargs)

    def new_user(self):
        email = f"chunked-{uuid.uuid4().hex[:12]}@example.test"
        assert self.call("POST", "/api/v1/auth/register",
                         json={"email": email, "password": PASSWORD}).status_code == 201
        token = self.call("POST", "/api/v1/auth/login",
                          json={"email": email, "password": PASSWORD}).json()["token"]
        return {"Authorization": f"Bearer {token}"}

    def register(self, headers, data, filename="chunked.bin", **overrides):
        body = {**declare(data, filename), **overrides}
        return self.call("POST", "/api/v1/files", headers=headers, json=body)

    def put(self, chunk, data, **kwargs):
        self.puts += 1
        return requests.put(chunk["upload_url"], data=data, timeout=TIMEOUT, **kwargs)

    def report(self, headers, user_file_id, indexes):
        return self.call("PATCH", f"/api/v1/files/{user_file_id}", headers=headers,
                         json={"chunks": [{"index": i, "status": "uploaded"} for i in indexes]})

    def get(self, headers, user_file_id):
        return self.call("GET", f"/api/v1/files/{user_file_id}", headers=headers)

    def upload(self, headers, data, filename="chunked.bin"):
        """The whole flow: register, PUT what is asked for, report it; the final state."""
        registered = self.register(headers, data, filename)
        assert registered.status_code == 201, registered.text
        body = registered.json()
        pending = [c for c in body["chunks"] if c["status"] != "verified"]
        for chunk in pending:
            assert self.put(chunk, pieces(data)[chunk["index"]]).status_code in (200, 201, 204)
        if not pending:
            return body
        reported = self.report(headers, body["user_file_id"], [c["index"] for c in pending])
        assert reported.status_code == 200, reported.text
        return reported.json()

    def fsck(self):
        result = subprocess.run([sys.executable, "-m", "satchel_files.cli", "fsck", "--json"],
                                env={**self.stack.service_env(), "MONGO_DB": "satchel_files"},
                                capture_output=True, text=True, timeout=120)
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)


@pytest.fixture(params=["local", "s3"])
def backend(request, base_url, stack):
    if request.param == "local":
        return Backend("local", base_url, stack)
    s3 = request.getfixturevalue("s3_stack")
    return Backend("s3", s3.config.base_url, s3)


@pytest.fixture
def local(base_url, stack):
    if stack is None:
        pytest.skip("needs the stack's URL secret and data directory")
    return Backend("local", base_url, stack)


def pieces(data):
    return [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def declare(data, filename="chunked.bin"):
    return {"filename": filename, "size_bytes": len(data), "hash": sha256(data),
            "mime_type": "application/octet-stream",
            "chunks": [{"index": i, "hash": sha256(p), "size_bytes": len(p)}
                       for i, p in enumerate(pieces(data))]}


def download(url):
    response = requests.get(url, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    return response.content


# --- happy paths ----------------------------------------------------------------------------

@pytest.mark.parametrize("size", [1000, 3 * CHUNK_SIZE + 17])
def test_chunks_put_to_presigned_urls_become_an_available_file(backend, size):
    headers = backend.new_user()
    data = os.urandom(size)
    registered = backend.register(headers, data)
    assert registered.status_code == 201, registered.text
    body = registered.json()
    assert body["status"] == "uploading" and body["chunk_size"] == CHUNK_SIZE
    assert all(c["status"] == "pending" and c["upload_url"] and c["upload_expires_at"]
               for c in body["chunks"])
    direct_to_s3 = backend.name == "s3"  # S3 URLs go to the bucket, local ones to the gateway
    assert all(("/blobs/staging/" in c["upload_url"]) != direct_to_s3 for c in body["chunks"])
    for chunk in body["chunks"]:
        response = backend.put(chunk, pieces(data)[chunk["index"]])
        assert response.status_code in (200, 201, 204), response.text
    done = backend.report(headers, body["user_file_id"], [c["index"] for c in body["chunks"]])
    assert done.status_code == 200 and done.json()["status"] == "available", done.text

    detail = backend.get(headers, body["user_file_id"]).json()
    assert detail["status"] == "available" and detail["hash"] == sha256(data)
    assert b"".join(download(c["download_url"]) for c in detail["chunks"]) == data
    assert download(detail["download_url"]) == data
    listed = backend.call("GET", "/api/v1/files", headers=headers).json()
    assert [f["user_file_id"] for f in listed] == [body["user_file_id"]]


def test_multipart_and_chunked_uploads_of_the_same_bytes_share_a_file_object(backend):
    data = os.urandom(2 * CHUNK_SIZE + 5)
    multipart = requests.post(f"{backend.base_url}/api/v1/files/upload",
                              headers=backend.new_user(), timeout=TIMEOUT,
                              files=[("files", ("m.bin", data, "application/octet-stream"))])
    assert multipart.status_code == 201, multipart.text
    chunked = backend.upload(backend.new_user(), data)
    assert chunked["file_object_id"] == multipart.json()[0]["file_object_id"]
    assert chunked["ref_count"] == 2


def test_a_second_upload_by_the_same_user_sends_no_chunks(backend):
    headers = backend.new_user()
    data = os.urandom(3 * CHUNK_SIZE)
    first = backend.upload(headers, data)
    puts = backend.puts
    again = backend.upload(headers, data, "again.bin")
    assert backend.puts == puts
    assert again["status"] == "available" and again["file_object_id"] == first["file_object_id"]

    changed = bytearray(data)
    changed[CHUNK_SIZE + 1] ^= 1
    registered = backend.register(headers, bytes(changed)).json()
    assert [c["status"] for c in registered["chunks"]] == ["verified", "pending", "verified"]


def test_another_users_hash_must_be_uploaded_and_the_answer_looks_like_an_unknown_hash(backend):
    data = os.urandom(2 * CHUNK_SIZE)
    backend.upload(backend.new_user(), data)
    headers = backend.new_user()
    known = backend.register(headers, data)
    unknown = backend.register(headers, os.urandom(2 * CHUNK_SIZE))
    assert known.status_code == unknown.status_code == 201

    def shape(body):
        return (sorted(body), body["status"],
                [(sorted(c), c["status"], c["size_bytes"]) for c in body["chunks"]])
    assert shape(known.json()) == shape(unknown.json())
    done = backend.report(headers, known.json()["user_file_id"], [])  # nothing reported yet
    assert done.status_code in (400, 422)
    for chunk in known.json()["chunks"]:
        backend.put(chunk, pieces(data)[chunk["index"]])
    finished = backend.report(headers, known.json()["user_file_id"], [0, 1]).json()
    assert finished["status"] == "available" and finished["ref_count"] == 2


# --- failures, retries, resume, abort ---------------------------------------------------------

def test_wrong_bytes_fail_with_a_fresh_url_and_the_right_bytes_then_verify(backend):
    headers = backend.new_user()
    data = os.urandom(2 * CHUNK_SIZE)
    body = backend.register(headers, data).json()
    backend.put(body["chunks"][0], os.urandom(CHUNK_SIZE))
    backend.put(body["chunks"][1], pieces(data)[1])
    result = backend.report(headers, body["user_file_id"], [0, 1]).json()
    assert [c["status"] for c in result["chunks"]] == ["failed", "verified"]
    retry = result["chunks"][0]
    assert retry["reason"] and urlsplit(retry["upload_url"]).path != \
        urlsplit(body["chunks"][0]["upload_url"]).path
    backend.put(retry, pieces(data)[0])
    assert backend.report(headers, body["user_file_id"], [0]).json()["status"] == "available"


def test_patch_is_idempotent(backend):
    headers = backend.new_user()
    data = os.urandom(2 * CHUNK_SIZE)
    body = backend.register(headers, data).json()
    backend.put(body["chunks"][0], pieces(data)[0])
    first = backend.report(headers, body["user_file_id"], [0]).json()
    second = backend.report(headers, body["user_file_id"], [0]).json()
    assert first["chunks"] == second["chunks"] or \
        [c["status"] for c in first["chunks"]] == [c["status"] for c in second["chunks"]]
    backend.put(body["chunks"][1], pieces(data)[1])
    done = backend.report(headers, body["user_file_id"], [0, 1]).json()
    again = backend.report(headers, body["user_file_id"], [0, 1]).json()
    assert done["status"] == again["status"] == "available"
    assert done["file_object_id"] == again["file_object_id"]


def test_get_resumes_an_upload_with_fresh_urls_for_what_is_missing(backend):
    headers = backend.new_user()
    data = os.urandom(3 * CHUNK_SIZE)
    body = backend.register(headers, data).json()
    backend.put(body["chunks"][1], pieces(data)[1])
    backend.report(headers, body["user_file_id"], [1])
    resumed = backend.get(headers, body["user_file_id"]).json()
    assert resumed["status"] == "uploading"
    assert [bool(c.get("upload_url")) for c in resumed["chunks"]] == [True, False, True]
    assert [f["user_file_id"] for f in backend.call("GET", "/api/v1/files",
                                                    headers=headers).json()] == []
    for index in (0, 2):
        backend.put(resumed["chunks"][index], pieces(data)[index])
    assert backend.report(headers, body["user_file_id"], [0, 2]).json()["status"] == "available"


def test_chunks_reported_one_at_a_time_in_any_order_complete_the_right_file(backend):
    headers = backend.new_user()
    data = os.urandom(4 * CHUNK_SIZE + 3)
    body = backend.register(headers, data).json()
    for chunk in body["chunks"]:
        backend.put(chunk, pieces(data)[chunk["index"]])
    states = [backend.report(headers, body["user_file_id"], [index]).json()["status"]
              for index in (3, 1, 0, 4, 2)]
    assert states == ["uploading"] * 4 + ["available"]
    detail = backend.get(headers, body["user_file_id"]).json()
    assert detail["hash"] == sha256(data) and download(detail["download_url"]) == data


def test_one_patch_of_many_chunks_verifies_each_on_its_own(backend):
    """Checked several at a time on the server: each chunk gets its own outcome."""
    headers = backend.new_user()
    data = os.urandom(9 * CHUNK_SIZE + 1)
    body = backend.register(headers, data).json()
    for chunk in body["chunks"]:
        if chunk["index"] != 7:  # never sent
            wrong = chunk["index"] == 2
            content = os.urandom(CHUNK_SIZE) if wrong else pieces(data)[chunk["index"]]
            assert backend.put(chunk, content).status_code in (200, 201, 204)
    result = backend.report(headers, body["user_file_id"], list(range(10))).json()
    statuses = [c["status"] for c in result["chunks"]]
    assert statuses == ["verified"] * 2 + ["failed"] + ["verified"] * 4 + ["failed"] + \
        ["verified"] * 2, result
    retries = [result["chunks"][2], result["chunks"][7]]
    for chunk in retries:
        assert backend.put(chunk, pieces(data)[chunk["index"]]).status_code in (200, 201, 204)
    done = backend.report(headers, body["user_file_id"], [2, 7]).json()
    assert done["status"] == "available" and done["hash"] == sha256(data)
    assert download(done["download_url"]) == data


def test_delete_aborts_an_upload(backend):
    headers = backend.new_user()
    data = os.urandom(2 * CHUNK_SIZE)
    body = backend.register(headers, data).json()
    backend.put(body["chunks"][0], pieces(data)[0])
    backend.report(headers, body["user_file_id"], [0])
    backend.put(body["chunks"][1], pieces(data)[1])
    assert backend.call("DELETE", f"/api/v1/files/{body['user_file_id']}",
                        headers=headers).status_code == 204
    assert backend.get(headers, body["user_file_id"]).status_code == 404


# --- the gateway's checks (local backend) -------------------------------------------------------

def _staged(local):
    return sorted(p.name for p in local.stack.path("data", "staging").glob("*"))


def test_forged_altered_expired_or_moved_urls_are_403_and_store_nothing(local):
    headers = local.new_user()
    data = os.urandom(CHUNK_SIZE)
    body = local.register(headers, data).json()
    url = urlsplit(body["chunks"][0]["upload_url"])
    query = dict(parse_qsl(url.query))
    key = url.path.rsplit("/", 1)[1]
    secret = local.stack.service_env()["BLOB_URL_SECRET"].encode()
    expired = SignedBlobUrls(local.base_url, secret, clock=lambda: time.time() - 3600)
    before = _staged(local)
    attempts = {
        "forged": f"{local.base_url}{url.path}?{urlencode({**query, 'signature': '0' * 64})}",
        "altered": f"{local.base_url}{url.path}?{urlencode({**query, 'expires': str(int(query['expires']) + 60)})}",
        "expired": expired.presign_put_staging(key, size_bytes=len(data), expires_seconds=60),
        "other path": f"{local.base_url}/blobs/staging/{'A' * 32}?{url.query}",
        "unsigned": f"{local.base_url}{url.path}",
    }
    for what, attempt in attempts.items():
        response = requests.put(attempt, data=data, timeout=TIMEOUT)
        assert response.status_code == 403, (what, response.status_code, response.text)
        assert response.json()["error"]["code"] == "forbidden"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert _staged(local) == before
    result = local.report(headers, body["user_file_id"], [0]).json()
    assert result["chunks"][0]["status"] == "failed"


def test_a_put_of_another_size_than_signed_is_refused(local):
    headers = local.new_user()
    data = os.urandom(CHUNK_SIZE)
    body = local.register(headers, data).json()
    chunk = body["chunks"][0]
    assert local.put(chunk, data[:-1]).status_code == 403
    assert local.put(chunk, data + b"x").status_code == 403
    assert requests.put(chunk["upload_url"], data=iter([data]), timeout=TIMEOUT).status_code \
        in (403, 411)  # chunked transfer encoding: no Content-Length to check
    assert _staged(local) == [] or urlsplit(chunk["upload_url"]).path.rsplit("/", 1)[1] \
        not in _staged(local)
    assert local.put(chunk, data).status_code in (201, 204)
    assert local.report(headers, body["user_file_id"], [0]).json()["status"] == "available"


def test_only_put_reaches_the_staging_area(local):
    headers = local.new_user()
    body = local.register(headers, os.urandom(100)).json()
    url = body["chunks"][0]["upload_url"]
    for method in ("GET", "DELETE", "POST"):
        assert requests.request(method, url, timeout=TIMEOUT).status_code == 403


def test_verified_bytes_are_not_overwritten_by_a_still_valid_url(local):
    headers = local.new_user()
    data = os.urandom(2 * CHUNK_SIZE)
    body = local.register(headers, data).json()
    for chunk in body["chunks"]:
        local.put(chunk, pieces(data)[chunk["index"]])
    done = local.report(headers, body["user_file_id"], [0, 1]).json()
    assert local.put(body["chunks"][0], os.urandom(CHUNK_SIZE)).status_code in (201, 204)
    detail = local.get(headers, done["user_file_id"]).json()
    assert download(detail["download_url"]) == data


# --- last: every reference accounted for ------------------------------------------------------

def test_zz_fsck_is_clean_after_all_of_the_above(backend):
    if backend.stack is None:
        pytest.skip("needs the stack's database")
    report = backend.fsck()
    assert report["clean"] is True and report["problems"] == [], report


def test_racing_registrations_by_one_user_never_take_it_over_quota(local):
    """Uploads in progress count toward the quota by their declared size; registrations that
    race are admitted one at a time, so only as many as fit get a 201."""
    from satchel_e2e import MAX_UPLOAD, USER_QUOTA
    headers = local.new_user()
    size = MAX_UPLOAD - 1000
    fits = USER_QUOTA // size
    racers = fits + 5
    declared = [os.urandom(size) for _ in range(racers)]
    barrier = threading.Barrier(racers, timeout=30)  # a racer that died breaks it, no hang
    statuses = []

    def race(data):
        barrier.wait()
        statuses.append(local.register(headers, data).status_code)

    threads = [threading.Thread(target=race, args=(data,), daemon=True) for data in declared]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a racer hung"
    assert sorted(statuses) == [201] * fits + [413] * (racers - fits)


def test_a_get_of_an_upload_in_progress_pushes_back_its_expiry_in_the_database(backend):
    """What is stored, read with pymongo: nx-27017 answered "modified" to a `$set` on
    `user_files` and kept the old value, so a resumed upload still expired on time."""
    from pymongo import MongoClient
    headers = backend.new_user()
    body = backend.register(headers, os.urandom(CHUNK_SIZE + 1)).json()
    with MongoClient(f"mongodb://{HOST}:{backend.stack.config.mongo_port}") as client:
        uploads = client["satchel_files"]["user_files"]

        def stored_expiry():
            return uploads.find_one({"_id": body["user_file_id"]})["upload_expires_ms"]

        registered = stored_expiry()
        time.sleep(0.05)
        resumed = backend.get(headers, body["user_file_id"])
        assert resumed.status_code == 200
        assert stored_expiry() >= registered + 50
        assert resumed.json()["upload_expires_at"] > body["upload_expires_at"]

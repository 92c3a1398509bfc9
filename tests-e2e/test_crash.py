"""Crash safety against real processes: what DESIGN.md and services/refcounts.py promise.

Each test starts its own small stack, sends many requests at once and SIGKILLs the file service
(gunicorn's master and workers: its process group) or nx-27017 a seeded moment after a seeded
number of acknowledgements, while a request of the kind the round aims at (an upload, a replace,
a delete, a chunk's PUT, a PATCH, the final PATCH) is on its way. It starts what it killed again
on the same state and checks what a client may rely on:
  - every upload, replace and delete acknowledged (2xx) before the kill holds: the file is listed
    and its bytes have the right SHA-256 (or, deleted, it stays deleted);
  - unacknowledged work happened whole or not at all: never a half file, never a listed file
    whose content is missing, never an unexpected 4xx/5xx;
  - `satchel-stack admin fsck` (read-only) finds no reference to a missing blob or file object,
    only counts too high; after `fsck --repair` and `gc` the stack is clean and the blob store
    holds exactly the bytes that the files and uploads in progress need;
  - a chunked upload the crash interrupted resumes (GET gives fresh URLs) and completes.

Dead requests' leftovers are only collected once GC_GRACE_SECONDS (at least 60 s) have passed,
and neither the host's clock nor a minute of waiting is available here: the repair and gc run
as the file service's own admin commands in a process whose clock is past the grace period
(create_app's `clock`, the seam the unit tests use). The stack is idle by then, so that is what
an operator running them a minute later sees.
"""
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
import requests
from pymongo import MongoClient

from satchel_devstack.stack import HOST, Stack
from satchel_e2e import CHUNK_SIZE, PASSWORD, ROOT, cli_env, sha256, stack_config

pytestmark = pytest.mark.skipif(bool(os.environ.get("BASE_URL")),
                                reason="kills and restarts its own stack's processes")

SEED = 27017
GRACE_SECONDS = 60  # GC_GRACE_SECONDS' smallest value
TIMEOUT = 30
# What a request cut by the crash may answer: the gateway's 502 (file service gone, also when
# it cannot ask it to check a staging PUT's signature), the service's 503 (database gone).
CUT_OFF = {502, 503, 504}
# fsck problems a crash may leave before repair: counts too HIGH and dead requests' leftovers.
LEFTOVERS = {"stale_intent", "stuck_deleting_file_object", "stuck_deleting_blob", "orphan_blob",
             "stale_listing_entry", "unreferenced_blob_without_timestamp",
             "unreferenced_file_object"}
_ADMIN_LATER = """
import sys, time
from satchel_files import create_app
from satchel_files.cli import cli
from satchel_files.config import Config
from satchel_shared.config import load_config
ahead = float(sys.argv[1])
cli.main(sys.argv[2:], obj={"app": create_app(load_config(Config),
                                                clock=lambda: time.time() + ahead)})
"""


# --- the stack and its processes ---------------------------------------------------------------

@pytest.fixture
def crash_stack(tmp_path):
    config = stack_config(tmp_path / "var", auth_workers=1)
    config.service_env["GC_GRACE_SECONDS"] = str(GRACE_SECONDS)
    stack = Stack(config)
    stack.start()
    yield stack
    stack.stop()


def _process(stack, name):
    return next(p for p in stack.processes if p.name == name)


def kill(stack, name):
    """SIGKILL `name` and everything in its process group (gunicorn: master and workers)."""
    process = _process(stack, name)
    os.killpg(process.popen.pid, signal.SIGKILL)
    process.popen.wait(timeout=10)


def restart(stack, name):
    """Start `name` again as the devstack started it; wait until the file service is ready."""
    _process(stack, name).start()
    deadline = time.monotonic() + 30
    ready = f"http://{HOST}:{stack.config.file_port}/readyz"
    while True:
        try:
            if requests.get(ready, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        assert time.monotonic() < deadline, f"{name} did not come back"
        time.sleep(0.05)


def admin(stack, *arguments, ahead_seconds=None) -> subprocess.CompletedProcess:
    """`satchel-stack admin ...` against the stack; with `ahead_seconds`, the same command in a
    process whose clock is that far ahead."""
    if ahead_seconds is None:
        env = cli_env(stack.config)
        command = [sys.executable, "-m", "satchel_devstack.cli", "admin", "--root", str(ROOT)]
    else:
        env = stack.service_env()
        command = [sys.executable, "-c", _ADMIN_LATER, str(ahead_seconds)]
    result = subprocess.run(command + list(arguments), env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode in (0, 1), result.stderr
    return result


def fsck(stack, *options, ahead_seconds=None) -> dict:
    result = admin(stack, "fsck", "--json", *options, ahead_seconds=ahead_seconds)
    report = json.loads(result.stdout)
    assert (result.returncode == 0) == report["clean"], result.stdout
    return report


def assert_no_dangling_reference(report: dict) -> None:
    """Read-only fsck after a crash: leftovers and counts too high only."""
    bad = [p for p in report["problems"] if p["kind"] not in LEFTOVERS
           and not (p["kind"].endswith("_ref_count") and "over-counted" in p["detail"])]
    assert not bad, bad


# --- requests in flight ------------------------------------------------------------------------

class Flight:
    """Every request the storm sends, by kind ("upload", "replace", "delete", "register", "put",
    "patch", "final patch"): how many are on their way, how many were acknowledged (the crash
    is due after a given number), and any answer a crash does not explain."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self._lock = threading.Lock()
        self.in_flight: Counter[str] = Counter()
        self.acks = 0
        self.acks_due = 0
        self.due = threading.Event()
        self.unexplained: list[str] = []

    def arm(self, acks: int) -> None:
        self.acks_due, self.acks = acks, 0
        self.due.clear()

    def send(self, kind, method, path_or_url, *, cut_off=CUT_OFF, **kwargs):
        """The response if it is a 2xx (acknowledged), else None."""
        url = path_or_url if "://" in path_or_url else self.base_url + path_or_url
        with self._lock:
            self.in_flight[kind] += 1
        try:
            response = requests.request(method, url, timeout=TIMEOUT, **kwargs)
        except requests.RequestException:
            return None
        finally:
            with self._lock:
                self.in_flight[kind] -= 1
        if not 200 <= response.status_code < 300:
            if response.status_code not in cut_off:
                self.unexplained.append(f"{kind} {url}: {response.status_code} {response.text}")
            return None
        with self._lock:
            self.acks += 1
            if self.acks >= self.acks_due:
                self.due.set()
        return response


def storm(flight: Flight, tasks, rng: random.Random, crash, *, acks: tuple[int, int],
          during: str) -> None:
    """Run `tasks` at once; `crash()` a seeded moment after a seeded number of acknowledgements
    (within `acks`, well below what the tasks would get), once a request of kind `during` is
    on its way (waiting 5 s at most). Every task stops at its first unacknowledged request."""
    flight.arm(rng.randint(*acks))
    pause = rng.uniform(0, 0.05)
    with ThreadPoolExecutor(len(tasks)) as pool:
        futures = [pool.submit(task) for task in tasks]
        assert flight.due.wait(timeout=60), "the storm was never acknowledged"
        time.sleep(pause)
        deadline = time.monotonic() + 5
        while not flight.in_flight[during] and time.monotonic() < deadline:
            time.sleep(0.001)
        struck = +flight.in_flight
        crash()
        for future in futures:
            future.result(timeout=120)
    assert not flight.unexplained, flight.unexplained
    assert struck[during], f"no {during} was on its way when the crash struck: {struck}"


# --- what a client may expect of each file -----------------------------------------------------

PRESENT, ABSENT, EITHER, UPLOADING = "present", "absent", "either", "uploading"


@dataclass
class Entry:
    """One file name of one user. `state`: PRESENT (listed, content one of `versions`), ABSENT,
    EITHER (not acknowledged), UPLOADING (a chunked upload acknowledged as registered: `verified`
    are the chunks acknowledged as verified)."""

    headers: dict
    filename: str
    versions: list[bytes]
    state: str
    user_file_id: str | None = None
    verified: set[int] = field(default_factory=set)


class Client:
    def __init__(self, base_url: str):
        self.base_url = base_url

    def call(self, method, path, **kwargs):
        return requests.request(method, self.base_url + path, timeout=TIMEOUT, **kwargs)

    def new_user(self) -> dict:
        email = f"crash-{random.getrandbits(64):016x}@example.test"
        credentials = {"email": email, "password": PASSWORD}
        assert self.call("POST", "/api/v1/auth/register", json=credentials).status_code == 201
        token = self.call("POST", "/api/v1/auth/login", json=credentials).json()["token"]
        return {"Authorization": f"Bearer {token}"}

    def listed(self, headers) -> dict[str, dict]:
        response = self.call("GET", "/api/v1/files?limit=1000", headers=headers)
        assert response.status_code == 200, response.text
        assert "Link" not in response.headers
        return {item["filename"]: item for item in response.json()}

    def content(self, headers, user_file_id) -> bytes:
        detail = self.call("GET", f"/api/v1/files/{user_file_id}", headers=headers)
        assert detail.status_code == 200, detail.text
        body = self.call("GET", f"/api/v1/files/{user_file_id}/content", headers=headers)
        assert body.status_code == 200, body.text
        assert sha256(body.content) == detail.json()["hash"], "bytes do not match their hash"
        return body.content

    def settle(self, entries: list[Entry]) -> None:
        """Check every entry against the stack and record what it turned out to be."""
        listings = {}
        for entry in entries:
            key = entry.headers["Authorization"]
            if key not in listings:
                listings[key] = self.listed(entry.headers)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda entry: self._settle(entry, listings[
                entry.headers["Authorization"]].pop(entry.filename, None)), entries))
        unexpected = [name for listing in listings.values() for name in listing]
        assert not unexpected, f"files nobody uploaded: {unexpected}"

    def _settle(self, entry: Entry, listed: dict | None) -> None:
        name = entry.filename
        if entry.state == UPLOADING:
            detail = self.call("GET", f"/api/v1/files/{entry.user_file_id}", headers=entry.headers)
            assert detail.status_code == 200, f"{name}: registered upload lost: {detail.text}"
            body = detail.json()
            if body["status"] != "available":
                assert body["status"] == "uploading" and listed is None, (name, body["status"])
                verified = {c["index"] for c in body["chunks"] if c["status"] == "verified"}
                assert entry.verified <= verified, f"{name}: acknowledged chunks lost"
                return
            assert listed is not None, f"{name}: available but not listed"
        if entry.state == PRESENT:
            assert listed is not None, f"{name}: acknowledged file missing from the list"
        if entry.state == ABSENT:
            assert listed is None, f"{name}: acknowledged delete undone"
            if entry.user_file_id:
                gone = self.call("GET", f"/api/v1/files/{entry.user_file_id}",
                                 headers=entry.headers)
                assert gone.status_code == 404, f"{name}: deleted file still there"
        if listed is None:
            entry.state = ABSENT
            return
        if entry.user_file_id:
            assert listed["user_file_id"] == entry.user_file_id, name
        content = self.content(entry.headers, listed["user_file_id"])
        assert content in entry.versions, \
            f"{name}: {len(content)} bytes, none of the versions sent {sorted(map(len, entry.versions))}"
        entry.versions, entry.state, entry.user_file_id = [content], PRESENT, listed["user_file_id"]


# --- the operations a storm is made of: steps, each True if acknowledged ---------------------

def make_content(rng: random.Random, pool: list[bytes], size: int) -> bytes:
    """`size` bytes: whole chunks drawn from `pool` (shared blobs across files), then a unique
    tail (a distinct file object)."""
    whole, tail = divmod(size, CHUNK_SIZE)
    return b"".join(rng.choice(pool) for _ in range(whole)) + rng.randbytes(tail)


def new_file(rng, pool, headers, filename, model: list[Entry]) -> Entry:
    """Mostly multi-chunk content of its own; now and then the very bytes of another file."""
    earlier = [e.versions[0] for e in model if e.state == PRESENT]
    if earlier and rng.random() < 0.25:
        data = rng.choice(earlier)
    else:
        data = make_content(rng, pool, rng.randint(1, 3) * CHUNK_SIZE + rng.randint(1, 4000))
    entry = Entry(headers, filename, [data], EITHER)
    model.append(entry)
    return entry


def sequence(*steps):
    """One client doing `steps` in turn, until one is not acknowledged."""
    def task():
        all(step() for step in steps)
    return task


def upload(flight: Flight, entries: list[Entry]):
    """One multipart request with every file of `entries` (one owner)."""
    def step():
        parts = [("files", (e.filename, e.versions[0], "application/octet-stream"))
                 for e in entries]
        response = flight.send("upload", "POST", "/api/v1/files/upload",
                               headers=entries[0].headers, files=parts)
        for entry, item in zip(entries, response.json() if response is not None else ()):
            entry.state, entry.user_file_id = PRESENT, item["user_file_id"]
        return response is not None
    return step


def replace(flight: Flight, entry: Entry, data: bytes):
    """New content for an available file; the old and new versions are both fine until it is
    acknowledged (same size: no quota reservation, which a crash may leave held, to wait for)."""
    def step():
        entry.versions.append(data)  # from when it is sent, not before
        response = flight.send("replace", "PUT", f"/api/v1/files/{entry.user_file_id}",
                               headers=entry.headers, files=[("file", (entry.filename, data))])
        if response is not None:
            entry.versions = [data]
        return response is not None
    return step


def delete(flight: Flight, entry: Entry):
    def step():
        entry.state = EITHER  # from when it is sent: a delete never sent leaves it PRESENT
        response = flight.send("delete", "DELETE", f"/api/v1/files/{entry.user_file_id}",
                               headers=entry.headers)
        if response is not None:
            entry.state = ABSENT
        return response is not None
    return step


def pieces(data: bytes) -> list[bytes]:
    return [data[i:i + CHUNK_SIZE] for i in range(0, len(data), CHUNK_SIZE)]


def chunked_upload(flight: Flight, entry: Entry):
    """Register, PUT the first half of the chunks, PATCH them, PUT the rest, PATCH (final)."""
    def step():
        data = entry.versions[0]
        chunks = pieces(data)
        declared = {"filename": entry.filename, "size_bytes": len(data), "hash": sha256(data),
                    "chunks": [{"index": i, "hash": sha256(c), "size_bytes": len(c)}
                               for i, c in enumerate(chunks)]}
        registered = flight.send("register", "POST", "/api/v1/files", headers=entry.headers,
                                 json=declared)
        if registered is None:
            return False
        body = registered.json()
        entry.state, entry.user_file_id = UPLOADING, body["user_file_id"]
        urls = {c["index"]: c.get("upload_url") for c in body["chunks"]}
        half = len(chunks) // 2
        for kind, batch in (("patch", range(half)), ("final patch", range(half, len(chunks)))):
            for index in batch:
                if urls[index] and flight.send("put", "PUT", urls[index], data=chunks[index],
                                               cut_off=CUT_OFF) is None:
                    return False
            reported = flight.send(
                kind, "PATCH", f"/api/v1/files/{entry.user_file_id}", headers=entry.headers,
                json={"chunks": [{"index": i, "status": "uploaded"} for i in batch]})
            if reported is None:
                return False
            body = reported.json()
            entry.verified = {c["index"] for c in body["chunks"] if c["status"] == "verified"}
        assert body["status"] == "available", body
        entry.state = PRESENT
        return True
    return step


def resume(client: Client, entry: Entry) -> None:
    """Finish an interrupted chunked upload as a client would: GET, PUT what is missing, PATCH."""
    path = f"/api/v1/files/{entry.user_file_id}"
    body = client.call("GET", path, headers=entry.headers).json()
    assert body["status"] == "uploading", body
    chunks = pieces(entry.versions[0])
    missing = [c for c in body["chunks"] if c["status"] != "verified"]
    for chunk in missing:  # fresh URLs for exactly what is missing
        put = requests.put(chunk["upload_url"], data=chunks[chunk["index"]], timeout=TIMEOUT)
        assert put.status_code in (200, 201, 204), put.text
    indexes = [c["index"] for c in missing] or [0]  # all verified: any report completes it
    done = client.call("PATCH", path, headers=entry.headers,
                       json={"chunks": [{"index": i, "status": "uploaded"} for i in indexes]})
    assert done.status_code == 200 and done.json()["status"] == "available", done.text
    entry.state = PRESENT


# --- after the crashes -------------------------------------------------------------------------

def repair_and_collect(stack) -> dict:
    """fsck --repair and gc past the grace period; then fsck is clean, today and then, and the
    store holds exactly the needed bytes. Returns the repair's report."""
    ahead = GRACE_SECONDS + 5
    repaired = fsck(stack, "--repair", ahead_seconds=ahead)
    assert repaired["clean"], [p for p in repaired["problems"] if not p["fixed"]]
    collected = admin(stack, "gc", "--grace-seconds", "0", ahead_seconds=ahead)
    assert collected.returncode == 0, collected.stderr
    for report in (fsck(stack, ahead_seconds=ahead), fsck(stack)):
        assert report["clean"] and not report["problems"], report
    assert_store_holds_exactly_what_is_needed(stack)
    return repaired


def assert_store_holds_exactly_what_is_needed(stack) -> None:
    """Blobs on disk = blob documents = chunks of the file objects files point at and of the
    uploads in progress; no file object without a file, no intent, no temp or stray staging."""
    client = MongoClient(f"mongodb://{HOST}:{stack.config.mongo_port}", tz_aware=True)
    try:
        db = client["satchel_files"]
        used = {doc["file_object_id"] for doc in db.user_files.find({"status": "available"})}
        needed, live_keys = set(), set()
        for file_object in db.file_objects.find():
            assert file_object["_id"] in used, f"file object kept for no file: {file_object['_id']}"
            assert file_object["state"] == "live"
            needed.update(file_object["chunks"])
        for upload in db.user_files.find({"status": {"$in": ["uploading", "failed"]}}):
            needed.update(c["hash"] for c in upload["chunks"] if c["status"] == "verified")
            live_keys.update(c["upload_key"] for c in upload["chunks"] if c["upload_key"])
        blobs = {doc["_id"]: doc for doc in db.blobs.find()}
        assert db.ref_intents.count_documents({}) == 0
    finally:
        client.close()
    assert set(blobs) == needed, "blob documents differ from what files and uploads use"
    assert all(doc["ref_count"] > 0 and doc["state"] == "present" for doc in blobs.values())
    files = stack.path("data", "files")
    on_disk = {path.name for path in files.glob("??/*")}
    assert on_disk == needed, f"orphan blobs {sorted(on_disk - needed)[:3]}, " \
                              f"missing {sorted(needed - on_disk)[:3]}"
    assert not list(files.glob("tmp/*")), "temp files left"
    staged = {path.name for path in stack.path("data", "staging").glob("*")}
    assert staged <= live_keys, "staging objects of no upload in progress"


# --- the tests ---------------------------------------------------------------------------------

def test_file_service_killed_mid_upload_replace_and_delete_loses_nothing_acknowledged(
        crash_stack):
    stack, rng = crash_stack, random.Random(SEED)
    client, flight = Client(stack.config.base_url), Flight(stack.config.base_url)
    pool = [rng.randbytes(CHUNK_SIZE) for _ in range(4)]
    model: list[Entry] = []
    for round_, during in enumerate(("replace", "delete", "upload")):
        owner = client.new_user()
        for i in range(12):  # acknowledged before the storm: what it replaces and deletes
            assert upload(flight, [new_file(rng, pool, owner, f"r{round_}-base-{i}.bin", model)])()
        targets = rng.sample([e for e in model if e.state == PRESENT], 12)
        tasks = []
        for task, target in enumerate(targets):  # each client: uploads, one replace or delete
            headers = client.new_user()
            steps = [upload(flight, [new_file(rng, pool, headers, f"r{round_}-t{task}-{n}-{k}.bin",
                                              model) for k in range(rng.randint(1, 2))])
                     for n in range(4)]
            steps.insert(rng.randint(1, 3), replace(
                flight, target, make_content(rng, pool, len(target.versions[0])))
                if task % 2 else delete(flight, target))
            tasks.append(sequence(*steps))
        storm(flight, tasks, rng, lambda: kill(stack, "file-service"), acks=(2, 10),
              during=during)
        restart(stack, "file-service")
        client.settle(model)
        assert_no_dangling_reference(fsck(stack))
    repaired = repair_and_collect(stack)
    assert any(p["kind"] == "stale_intent" for p in repaired["problems"]), \
        "no kill struck a request holding references"
    client.settle(model)  # gc removed nothing a file needs


def test_file_service_killed_mid_chunked_upload_then_the_upload_resumes(crash_stack):
    stack, rng = crash_stack, random.Random(SEED + 1)
    client, flight = Client(stack.config.base_url), Flight(stack.config.base_url)
    pool = [rng.randbytes(CHUNK_SIZE) for _ in range(4)]
    model: list[Entry] = []
    after_gc: list[Entry] = []
    for round_, during in enumerate(("put", "patch", "final patch")):
        tasks = []
        for task in range(8):
            headers = client.new_user()
            entries = [Entry(headers, f"r{round_}-t{task}-{n}.bin", [make_content(
                rng, pool, rng.randint(2, 4) * CHUNK_SIZE + rng.randint(1, 4000))], ABSENT)
                for n in range(2)]  # ABSENT until registered: never listed before
            model.extend(entries)
            tasks.append(sequence(*(chunked_upload(flight, entry) for entry in entries)))
        storm(flight, tasks, rng, lambda: kill(stack, "file-service"), acks=(8, 40),
              during=during)
        restart(stack, "file-service")
        client.settle(model)
        assert_no_dangling_reference(fsck(stack))
        interrupted = [e for e in model if e.state == UPLOADING and e not in after_gc]
        assert interrupted, "no registered upload was interrupted"
        for entry in interrupted[::2]:
            resume(client, entry)
        after_gc.extend(interrupted[1::2])  # these wait until after repair and gc
    repair_and_collect(stack)
    for entry in after_gc:
        resume(client, entry)
    client.settle(model)
    assert fsck(stack)["problems"] == []


def test_database_killed_mid_upload_loses_nothing_acknowledged(crash_stack):
    stack, rng = crash_stack, random.Random(SEED + 2)
    client, flight = Client(stack.config.base_url), Flight(stack.config.base_url)
    pool = [rng.randbytes(CHUNK_SIZE) for _ in range(4)]
    model: list[Entry] = []

    def crash():
        kill(stack, "mongo")
        time.sleep(rng.uniform(0.2, 1.5))  # requests meanwhile wait for it or get a 503
        restart(stack, "mongo")

    for round_, during in enumerate(("upload", "final patch")):
        owner = client.new_user()
        for i in range(4):
            assert upload(flight, [new_file(rng, pool, owner, f"r{round_}-base-{i}.bin", model)])()
        targets = rng.sample([e for e in model if e.state == PRESENT], 4)
        tasks = []
        for task, target in enumerate(targets):
            headers = client.new_user()
            steps = [upload(flight, [new_file(rng, pool, headers, f"r{round_}-t{task}-{n}.bin",
                                              model)]) for n in range(5)]
            steps.insert(rng.randint(1, 4), replace(
                flight, target, make_content(rng, pool, len(target.versions[0])))
                if task % 2 else delete(flight, target))
            tasks.append(sequence(*steps))
        for task in range(3):
            headers = client.new_user()
            chunked = [Entry(headers, f"r{round_}-chunked-{task}-{n}.bin",
                             [make_content(rng, pool, 3 * CHUNK_SIZE + 100)], ABSENT)
                       for n in range(2)]
            model.extend(chunked)
            tasks.append(sequence(*(chunked_upload(flight, entry) for entry in chunked)))
        storm(flight, tasks, rng, crash, acks=(3, 12), during=during)
        client.settle(model)
        assert_no_dangling_reference(fsck(stack))
        for entry in [e for e in model if e.state == UPLOADING]:
            resume(client, entry)
    repair_and_collect(stack)
    client.settle(model)

"""The change feed through the gateway, on the real stack (nx-27017, gunicorn gthread x2, nginx).

The proof of the feed's guarantee: many writers upload, rename, replace and delete at once while
a reader follows the cursor with long-polls; what the reader rebuilt from the feed (fetching
GET /api/v1/files/{id} for every changed id, as seed 000 says) equals GET /api/v1/files.
"""
import os
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from satchel_e2e import upload

WRITERS_PER_USER = 8
OPS_PER_WRITER = 30


def _session(base_url, headers):
    session = requests.Session()
    session.headers.update(headers)
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=64)
    session.mount("http://", adapter)
    session.base = base_url
    return session


def _get(session, path, **params):
    return session.get(session.base + path, params=params, timeout=90)


def _latest(session):
    response = _get(session, "/api/v1/changes/latest")
    assert response.status_code == 200, response.text
    return response.json()["cursor"]


def _list_all(session):
    files, url = {}, session.base + "/api/v1/files?limit=50"
    while url:
        response = session.get(url, timeout=30)
        assert response.status_code == 200, response.text
        for item in response.json():
            files[item["user_file_id"]] = (item["filename"], item["file_object_id"],
                                           item["size_bytes"])
        url = response.links.get("next", {}).get("url")
        if url and url.startswith("/"):
            url = session.base + url
    return files


class Writer:
    """Random uploads, renames, replacements and deletes on a pool of files shared by the
    writers of one user (so they also race each other on the same files)."""

    def __init__(self, session, pool, lock, rng):
        self.session, self.pool, self.lock, self.rng = session, pool, lock, rng
        self.done: list[tuple[str, str]] = []  # (file_id, op) of every acknowledged change

    def run(self, count):
        for n in range(count):
            with self.lock:
                target = self.rng.choice(self.pool) if self.pool else None
            roll = self.rng.random()
            if target is None or roll < 0.35:
                self._upload(n)
            elif roll < 0.6:
                self._put(target, "renamed",
                          files={"filename": (None, f"r{n}-{self.rng.random():.6f}.txt")})
            elif roll < 0.8:
                body = os.urandom(self.rng.randint(1, 2048))
                self._put(target, "updated", files={"file": ("x.bin", body)})
            else:
                response = self.session.delete(f"{self.session.base}/api/v1/files/{target}",
                                               timeout=30)
                assert response.status_code in (204, 404, 409), response.text
                if response.status_code == 204:
                    self.done.append((target, "deleted"))
                if response.status_code in (204, 404):
                    with self.lock:
                        if target in self.pool:
                            self.pool.remove(target)

    def _upload(self, n):
        body = os.urandom(self.rng.randint(1, 2048))
        response = upload(_Uploader(self.session), {},
                          (f"u{n}-{self.rng.random():.6f}.bin", body))
        assert response.status_code == 201, response.text
        file_id = response.json()[0]["user_file_id"]
        self.done.append((file_id, "created"))
        with self.lock:
            self.pool.append(file_id)

    def _put(self, target, op, **kwargs):
        response = self.session.put(f"{self.session.base}/api/v1/files/{target}", timeout=30,
                                    **kwargs)
        assert response.status_code in (200, 404, 409), response.text
        if response.status_code == 200:
            self.done.append((target, op))


class _Uploader:
    """satchel_e2e.upload wants api.post(path, ...): adapt a session to it."""

    def __init__(self, session):
        self.session = session

    def post(self, path, **kwargs):
        return self.session.post(self.session.base + path, timeout=30, **kwargs)


class Reader:
    """Follows the cursor with long-polls and keeps file_id -> (filename, file_object_id,
    size_bytes), fetching each changed file (404: gone)."""

    def __init__(self, session, cursor):
        self.session, self.cursor = session, cursor
        self.state: dict[str, tuple] = {}
        self.seen: list[tuple[str, str]] = []
        self.pages = 0

    def follow_until(self, writers_done: threading.Event):
        while True:
            caught_up = writers_done.is_set()
            page = self.read_page(wait=2)
            if caught_up and not page["changes"] and not page["has_more"]:
                return  # every write had finished before this page was read, and it was empty

    def read_page(self, wait):
        response = _get(self.session, "/api/v1/changes", cursor=self.cursor, limit=37, wait=wait)
        assert response.status_code == 200, response.text
        page = response.json()
        self.pages += 1
        self.seen += [(change["file_id"], change["op"]) for change in page["changes"]]
        assert page["file_ids"] == list(dict.fromkeys(c["file_id"] for c in page["changes"]))
        for file_id in page["file_ids"]:
            detail = _get(self.session, f"/api/v1/files/{file_id}")
            if detail.status_code == 404:
                self.state.pop(file_id, None)
            else:
                assert detail.status_code == 200, detail.text
                body = detail.json()
                self.state[file_id] = (body["filename"], body["file_object_id"],
                                       body["size_bytes"])
        self.cursor = page["cursor"]
        return page


def test_a_reader_following_the_cursor_rebuilds_the_truth_under_concurrent_writers(
        base_url, new_user, login):
    users = []
    for _ in range(2):
        email, password = new_user()
        headers = {"Authorization": f"Bearer {login(email, password)['token']}"}
        users.append(_session(base_url, headers))
    readers = [Reader(session, _latest(session)) for session in users]
    writers_done = threading.Event()
    rng = random.Random(5)
    writers = []
    for session in users:
        pool, lock = [], threading.Lock()
        writers += [(Writer(session, pool, lock, random.Random(rng.random())), session)
                    for _ in range(WRITERS_PER_USER)]

    started = time.monotonic()
    with ThreadPoolExecutor(len(writers) + len(readers)) as pool:
        reading = [pool.submit(reader.follow_until, writers_done) for reader in readers]
        writing = [pool.submit(writer.run, OPS_PER_WRITER) for writer, _ in writers]
        try:
            for future in writing:
                future.result()
        finally:
            writers_done.set()
        for future in reading:
            future.result(timeout=120)
    elapsed = time.monotonic() - started

    for index, (session, reader) in enumerate(zip(users, readers)):
        acknowledged = Counter(op for writer, owner in writers if owner is session
                               for op in writer.done)
        seen = Counter(reader.seen)
        missing = acknowledged - seen
        assert not missing, f"user {index}: acknowledged changes the feed never showed: {missing}"
        for file_id in {file_id for file_id, _ in reader.seen}:
            ops = [op for seen_id, op in reader.seen if seen_id == file_id]
            assert ops[0] == "created", (file_id, ops)       # in order per file
            assert "deleted" not in ops[:-1], (file_id, ops)
        assert reader.state == _list_all(session), f"user {index}: rebuilt state differs"
        assert sum(acknowledged.values()) > WRITERS_PER_USER * OPS_PER_WRITER * 0.8
    print(f"{sum(len(w.done) for w, _ in writers)} changes by {len(writers)} writers, "
          f"{sum(r.pages for r in readers)} pages read, {elapsed:.1f}s")


def _user_session(base_url, new_user, login):
    email, password = new_user()
    return _session(base_url, {"Authorization": f"Bearer {login(email, password)['token']}"})


def test_a_long_poll_answers_soon_after_a_change_well_before_its_wait_ends(
        base_url, new_user, login):
    wait = 20
    session = _user_session(base_url, new_user, login)
    cursor = _latest(session)
    answer = {}

    def poll():
        response = _get(session, "/api/v1/changes", cursor=cursor, wait=wait)
        answer["at"] = time.monotonic()
        answer["body"] = response.json()

    poller = threading.Thread(target=poll)
    poller.start()
    time.sleep(1.5)
    assert poller.is_alive() and not answer, "the long-poll answered before any change"
    response = _Uploader(session).post("/api/v1/files/upload",
                                       files=[("files", ("a.txt", b"hello"))])
    assert response.status_code == 201
    uploaded_at = time.monotonic()
    poller.join(wait + 5)
    assert not poller.is_alive()
    assert [c["file_id"] for c in answer["body"]["changes"]] == [
        response.json()[0]["user_file_id"]]
    # Woken by the change, not released by its wait running out (normally well under a
    # second; the bound is loose so that a loaded machine does not make it flake).
    assert answer["at"] - uploaded_at < wait / 2


def test_a_long_poll_times_out_with_no_changes_and_the_same_cursor(base_url, new_user, login):
    session = _user_session(base_url, new_user, login)
    cursor = _latest(session)
    began = time.monotonic()
    response = _get(session, "/api/v1/changes", cursor=cursor, wait=1.5)
    assert response.status_code == 200
    assert response.json() == {"changes": [], "file_ids": [], "cursor": cursor, "has_more": False}
    assert 1.4 <= time.monotonic() - began < 4


def test_held_long_polls_do_not_starve_other_requests(base_url, stack, new_user, login):
    """More long-polls than the file service has threads, and a listing still answers at once."""
    if stack is None:
        pytest.skip("needs to know the stack's worker settings")
    threads = stack.config.file_workers * stack.config.file_threads
    holders = threads + 16
    session = _user_session(base_url, new_user, login)
    cursor = _latest(session)
    wait = 20
    with ThreadPoolExecutor(holders) as pool:
        polls = [pool.submit(_get, session, "/api/v1/changes", cursor=cursor, wait=wait)
                 for _ in range(holders)]
        time.sleep(1.5)  # let them all arrive and settle in
        timings = []
        for _ in range(5):
            began = time.monotonic()
            listing = _get(session, "/api/v1/files")
            timings.append(time.monotonic() - began)
            assert listing.status_code == 200
        done_while_listing = [future.done() for future in polls]
        answers = [future.result() for future in polls]
    assert all(answer.status_code == 200 for answer in answers)
    refused = [answer for answer in answers if answer.headers.get("Retry-After") == "1"]
    assert refused, "every long-poll was held: the cap did not apply"
    held = [index for index, answer in enumerate(answers)
            if answer.headers.get("Retry-After") != "1"]
    assert held, "no long-poll was held"
    assert len(held) <= stack.config.file_workers * (stack.config.file_threads - 8)
    # The listings answered while the held long-polls were still held (not after their wait
    # released the threads), and well before that wait could have run out.
    assert not any(done_while_listing[index] for index in held), timings
    assert sum(timings) < wait / 2, timings


def test_bad_and_stale_cursors_through_the_gateway(base_url, new_user, login):
    session = _user_session(base_url, new_user, login)
    response = _get(session, "/api/v1/changes", cursor="not-a-cursor")
    assert response.status_code == 400 and response.json()["error"]["code"] == "validation_error"
    response = _get(session, "/api/v1/changes", since="2001-01-01T00:00:00Z")
    assert response.status_code == 410 and response.json()["error"]["code"] == "reset"

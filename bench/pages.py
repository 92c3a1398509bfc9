"""Page cost vs account size: a page of /changes and of /files for 100,000 files vs 1,000.

Seeding 100,000 files through the API would take longer than the rest of the bench, so the
documents are written straight into the stack's MongoDB with pymongo, in the repositories' own
shape (`change_document`; `listing_document`, the list's entry of each file; user files as
services/files.py writes them) — the output says so.
"""
from __future__ import annotations

import secrets
import statistics
import time
import uuid
from datetime import datetime, timezone

import requests
from pymongo import MongoClient

from satchel_files.repositories.changes import COMMITTED, change_document
from satchel_files.repositories.listing import listing_document_for
from satchel_files.repositories.user_files import AVAILABLE
from satchel_files.schemas import encode_change_cursor, encode_cursor

from .context import TIMEOUT, BenchContext, check_status, log
from .registry import Row, benchmark

ACCOUNTS = (1_000, 100_000)
PAGE = 100
RUNS = 15
MAX_RATIO = 1.5
_BATCH = 5_000
_SEEDED_NOTE = ("accounts seeded directly with pymongo in the repositories' document shape "
                "(not through the API)")


def _register(ctx: BenchContext) -> tuple[dict, str]:
    email = f"bench-pages-{secrets.token_hex(6)}@example.com"
    password = f"bench {secrets.token_urlsafe(12)} pages"
    with requests.Session() as session:
        check_status(session.post(f"{ctx.base_url}/api/v1/auth/register",
                                  json={"email": email, "password": password}, timeout=TIMEOUT),
                     201, what="register")
        response = session.post(f"{ctx.base_url}/api/v1/auth/login",
                                json={"email": email, "password": password}, timeout=TIMEOUT)
        check_status(response, 200, what="login")
        headers = {"Authorization": f"Bearer {response.json()['token']}"}
        me = session.get(f"{ctx.base_url}/api/v1/auth/me", headers=headers, timeout=TIMEOUT)
        check_status(me, 200, what="me")
        return headers, me.json()["id"]


def _seed(ctx: BenchContext) -> dict[int, dict]:
    client = MongoClient(f"mongodb://127.0.0.1:{ctx.stack.config.mongo_port}", tz_aware=True)
    database = client["satchel_files"]
    now = datetime.now(timezone.utc)
    now_ms = int(now.timestamp() * 1000)
    file_object = {"_id": str(uuid.uuid4()), "hash": secrets.token_hex(32), "size_bytes": 0,
                   "mime_type": "application/octet-stream", "chunk_size": 8 << 20, "chunks": [],
                   "ref_count": sum(ACCOUNTS), "rev": 1, "state": "live",
                   "deleting_since_ms": None, "created_at": now}
    database["file_objects"].insert_one(file_object)
    accounts = {}
    for count in ACCOUNTS:
        headers, owner_id = _register(ctx)
        started = time.perf_counter()
        middle = None
        for start in range(0, count, _BATCH):
            files, changes, listing = [], [], []
            for index in range(start, min(start + _BATCH, count)):
                created_ms = now_ms - (count - index) * 10
                created_at = datetime.fromtimestamp(created_ms / 1000, tz=timezone.utc)
                user_file = {
                    "_id": str(uuid.uuid4()), "owner_id": owner_id, "filename": f"f{index}.bin",
                    "file_object_id": file_object["_id"], "hash": file_object["hash"],
                    "size_bytes": 0, "mime_type": file_object["mime_type"], "status": AVAILABLE,
                    "version": 1, "created_at": created_at, "created_ms": created_ms,
                    "updated_at": created_at}
                files.append(user_file)
                listing.append(listing_document_for(user_file))
                changes.append(change_document(owner_id, index + 1, user_file["_id"], "created",
                                               COMMITTED, created_ms, user_file))
                if index == count // 2:
                    middle = user_file
            database["file_listing"].insert_many(listing, ordered=False)  # before, as the API
            database["user_files"].insert_many(files, ordered=False)
            database["changes"].insert_many(changes, ordered=False)
        seconds = time.perf_counter() - started
        log(f"seeded {count:,} files, list entries and changes with pymongo in {seconds:.1f}s")
        accounts[count] = {"headers": headers, "middle": middle, "seed_seconds": seconds}
    client.close()
    return accounts


def _time_page(ctx: BenchContext, headers: dict, path: str, params: dict) -> float:
    """Median milliseconds of RUNS requests (after two warm-ups) for one page."""
    times = []
    with requests.Session() as session:
        for run in range(RUNS + 2):
            started = time.perf_counter()
            response = session.get(f"{ctx.base_url}{path}", params=params, headers=headers,
                                   timeout=TIMEOUT)
            seconds = time.perf_counter() - started
            check_status(response, 200, what=f"GET {path}")
            body = response.json()
            items = body["changes"] if isinstance(body, dict) else body
            if len(items) != PAGE:
                raise RuntimeError(f"GET {path} returned {len(items)} items, expected {PAGE}")
            if run >= 2:
                times.append(seconds * 1000)
    return statistics.median(times)


def _page_row(ctx: BenchContext, name: str, path: str, params_for) -> list[Row]:
    accounts = ctx.once("seeded accounts", lambda: _seed(ctx))
    small, large = ACCOUNTS
    millis = {count: _time_page(ctx, accounts[count]["headers"], path,
                                params_for(accounts[count], count)) for count in ACCOUNTS}
    ratio = millis[large] / millis[small]
    return [Row(name=name, unit="ms", satchel=millis[large], machine=millis[small],
                machine_label=f"same page, {small:,}-file account", ratio=ratio,
                target=f"<= {MAX_RATIO:.2f}x", result="PASS" if ratio <= MAX_RATIO else "MISS",
                notes=[f"a {PAGE}-item page from the middle of the account, median of {RUNS}: "
                       f"{millis[large]:.1f} ms at {large:,} files vs {millis[small]:.1f} ms "
                       f"at {small:,}", _SEEDED_NOTE],
                details={"ms": millis, "seed_seconds": {count: accounts[count]["seed_seconds"]
                                                        for count in ACCOUNTS}})]


@benchmark("changes_page", "a page of GET /api/v1/changes: 100,000-file account vs 1,000")
def bench_changes_page(ctx: BenchContext):
    return _page_row(ctx, "changes_page", "/api/v1/changes", lambda account, count: {
        "cursor": encode_change_cursor(count // 2), "limit": PAGE})


@benchmark("files_page", "a page of GET /api/v1/files: 100,000-file account vs 1,000")
def bench_files_page(ctx: BenchContext):
    return _page_row(ctx, "files_page", "/api/v1/files", lambda account, count: {
        "cursor": encode_cursor(account["middle"]["created_ms"], account["middle"]["_id"]),
        "limit": PAGE})

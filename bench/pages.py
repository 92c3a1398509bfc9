"""Page cost vs account size: a page of /changes and of /files at a 100,000-file account vs a
1,000-file account timed while it was the only one. So both kinds of growth count: with the
account, and with the deployment (a query that scans every user's documents; comparing two
accounts of one deployment would hide that, and did: /changes scanned all changes on nx-27017).

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
from satchel_files.repositories.usage import UsageRepository
from satchel_files.repositories.user_files import AVAILABLE
from satchel_files.change_cursor import ChangeCursor
from satchel_files.schemas import encode_change_cursor, encode_cursor

from .context import TIMEOUT, BenchContext, check_status, log, register_user
from .registry import Row, benchmark

ACCOUNTS = (1_000, 100_000)
PAGE = 100
RUNS = 15
MAX_RATIO = 1.5
_BATCH = 5_000
# The pages timed, with their query for an account of `count` files.
PAGES = {
    "changes_page": ("/api/v1/changes", lambda account, count: {
        "cursor": encode_change_cursor(ChangeCursor(None, count // 2)), "limit": PAGE}),
    "files_page": ("/api/v1/files", lambda account, count: {
        "cursor": encode_cursor(account["middle"]["created_ms"], account["middle"]["_id"]),
        "limit": PAGE}),
}
_SEEDED_NOTE = ("accounts seeded directly with pymongo in the repositories' document shape "
                "(not through the API)")


def _seed(ctx: BenchContext) -> dict:
    """Seed the small account, time its pages while it is alone, then seed the large one."""
    client = MongoClient(f"mongodb://127.0.0.1:{ctx.stack.config.mongo_port}", tz_aware=True)
    database = client["satchel_files"]
    now = datetime.now(timezone.utc)
    file_object = {"_id": str(uuid.uuid4()), "hash": secrets.token_hex(32), "size_bytes": 0,
                   "mime_type": "application/octet-stream", "chunk_size": 8 << 20, "chunks": [],
                   "ref_count": sum(ACCOUNTS), "rev": 1, "state": "live",
                   "deleting_since_ms": None, "created_at": now}
    database["file_objects"].insert_one(file_object)
    small, large = ACCOUNTS
    accounts = {small: _seed_account(ctx, database, file_object, small, now)}
    alone = {name: _time_page(ctx, accounts[small]["headers"], path, params(accounts[small], small))
             for name, (path, params) in PAGES.items()}
    accounts[large] = _seed_account(ctx, database, file_object, large, now)
    client.close()
    return {"accounts": accounts, "alone_ms": alone}


def _seed_account(ctx: BenchContext, database, file_object: dict, count: int,
                  now: datetime) -> dict:
    headers, owner_id = register_user(ctx.base_url, "pages")
    now_ms = int(now.timestamp() * 1000)
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
    # the usage count the API keeps (services/quota.py): the seeded files take 0 bytes
    UsageRepository(database).create(owner_id, 0, now_ms)
    seconds = time.perf_counter() - started
    log(f"seeded {count:,} files, list entries and changes with pymongo in {seconds:.1f}s")
    return {"headers": headers, "middle": middle, "seed_seconds": seconds}


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


def _seeded(ctx: BenchContext) -> dict:
    return ctx.once("seeded accounts", lambda: _seed(ctx))


def seeded_accounts(ctx: BenchContext) -> dict[int, dict]:
    """The two seeded accounts, by file count: {"headers", "middle", "seed_seconds"}."""
    return _seeded(ctx)["accounts"]


def _page_row(ctx: BenchContext, name: str) -> list[Row]:
    seeded = _seeded(ctx)
    accounts, alone_ms = seeded["accounts"], seeded["alone_ms"][name]
    path, params_for = PAGES[name]
    small, large = ACCOUNTS
    millis = {count: _time_page(ctx, accounts[count]["headers"], path,
                                params_for(accounts[count], count)) for count in ACCOUNTS}
    ratio = millis[large] / alone_ms
    return [Row(name=name, unit="ms", satchel=millis[large], machine=alone_ms,
                machine_label=f"same page, {small:,}-file account alone", ratio=ratio,
                target=f"<= {MAX_RATIO:.2f}x", result="PASS" if ratio <= MAX_RATIO else "MISS",
                notes=[f"a {PAGE}-item page from the middle of the account, median of {RUNS}: "
                       f"{millis[large]:.1f} ms at {large:,} files (beside the {small:,}-file "
                       f"account) vs {alone_ms:.1f} ms for the {small:,}-file account while it "
                       f"was the only one; {millis[small]:.1f} ms for it once the large one "
                       f"existed (what the deployment's size costs a small account)",
                       _SEEDED_NOTE],
                details={"ms": millis, "alone_ms": alone_ms,
                         "seed_seconds": {count: accounts[count]["seed_seconds"]
                                          for count in ACCOUNTS}})]


@benchmark("changes_page", "a page of GET /api/v1/changes: 100,000-file account vs 1,000 alone")
def bench_changes_page(ctx: BenchContext):
    return _page_row(ctx, "changes_page")


@benchmark("files_page", "a page of GET /api/v1/files: 100,000-file account vs 1,000 alone")
def bench_files_page(ctx: BenchContext):
    return _page_row(ctx, "files_page")

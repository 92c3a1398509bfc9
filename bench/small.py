"""Many small files, the way a sync client's first sync sends a folder: 4 KiB files, one per
multipart POST /api/v1/files/upload, 4 requests at a time on keep-alive connections, through
the gateway; beside raw nginx PUTs of the same files sent the same way. Then the same uploads
into the 100,000-file account the page benchmarks seed, against the 1,000-file one: what a
user's account size costs each upload (the quota decision reads the user's usage).
"""
from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from .context import TIMEOUT, BenchContext, check_status, log, register_user
from .pages import ACCOUNTS, seeded_accounts
from .registry import Row, benchmark, info_row

FILE_BYTES = 4096
FILES = 400
PARALLEL = 4
MAX_ACCOUNT_RATIO = 1.5


def _contents(count: int) -> list[bytes]:
    return [os.urandom(FILE_BYTES) for _ in range(count)]


def _files_per_second(contents: list[bytes], send) -> float:
    """Send every file with PARALLEL threads, each on its own keep-alive session."""
    local = threading.local()

    def one(item: tuple[int, bytes]) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        send(local.session, *item)

    started = time.perf_counter()
    with ThreadPoolExecutor(PARALLEL) as pool:
        list(pool.map(one, enumerate(contents)))
    return len(contents) / (time.perf_counter() - started)


def _raw_put(ctx: BenchContext, contents: list[bytes]) -> float:
    raw = ctx.raw
    run = os.urandom(4).hex()

    def send(session: requests.Session, index: int, data: bytes) -> None:
        response = session.put(f"{raw.base_url}/put/small-{run}-{index}.bin", data=data,
                               timeout=TIMEOUT)
        check_status(response, 201, 204, what="raw nginx PUT of a small file")

    rate = _files_per_second(contents, send)
    for index in range(len(contents)):
        (raw.www / "put" / f"small-{run}-{index}.bin").unlink()
    return rate


def _satchel_upload(ctx: BenchContext, headers: dict, contents: list[bytes]) -> float:
    def send(session: requests.Session, index: int, data: bytes) -> None:
        response = session.post(f"{ctx.base_url}/api/v1/files/upload", headers=headers,
                                files={"files": (f"small-{index}.bin", data,
                                                 "application/octet-stream")},
                                timeout=TIMEOUT)
        check_status(response, 201, what="small-file upload")

    return _files_per_second(contents, send)


@benchmark("small_files", "4 KiB files, one upload each, 4 at a time, vs raw nginx PUTs of them")
def bench_small_files(ctx: BenchContext):
    ctx.stack
    contents = _contents(FILES)
    headers, _ = register_user(ctx.base_url, "small")
    _satchel_upload(ctx, headers, _contents(20))  # warm connections and code paths
    raw = _raw_put(ctx, contents)
    satchel = _satchel_upload(ctx, headers, contents)
    log(f"small files: Satchel {satchel:.0f}/s, raw nginx PUT {raw:.0f}/s")
    return [info_row(
        "small_files", "files/s", satchel, raw, "raw nginx PUT",
        notes=[f"{FILES} files of {FILE_BYTES} bytes, {PARALLEL} at a time on keep-alive "
               f"connections; Satchel stores each durably (fsync), hashes it, deduplicates it "
               f"and records it (about 17 MongoDB round trips), the raw PUT writes it to the "
               f"page cache"],
        details={"files": FILES, "file_bytes": FILE_BYTES, "parallel": PARALLEL})]


@benchmark("small_files_account", "small-file uploads into a 100,000-file account vs a 1,000-file one")
def bench_small_files_account(ctx: BenchContext):
    accounts = seeded_accounts(ctx)
    small, large = ACCOUNTS
    rates = {}
    for count in (small, large, small, large):  # interleaved; each its best of two
        rate = _satchel_upload(ctx, accounts[count]["headers"], _contents(FILES // 2))
        rates[count] = max(rates.get(count, 0.0), rate)
    ratio = rates[small] / rates[large]  # > 1: the large account is slower
    return [Row(name="small_files_account", unit="files/s", satchel=rates[large],
                machine=rates[small], machine_label=f"same uploads, {small:,}-file account",
                ratio=ratio, target=f"<= {MAX_ACCOUNT_RATIO:.2f}x (time per file)",
                result="PASS" if ratio <= MAX_ACCOUNT_RATIO else "MISS",
                notes=[f"{FILES // 2} files of {FILE_BYTES} bytes per pass, {PARALLEL} at a "
                       f"time, best of 2 interleaved passes: {rates[large]:.0f}/s at "
                       f"{large:,} files vs {rates[small]:.0f}/s at {small:,}; ratio = time "
                       f"per file, large account over small"],
                details={"files_per_second": rates})]

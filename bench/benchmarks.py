"""The benchmarks. Each returns rows; shared steps (the 1 GiB upload) run once via ctx.once()."""
from __future__ import annotations

import hashlib
import statistics
import time

import requests

from .context import TIMEOUT, BenchContext, UploadOutcome, check_status, log, settle
from .payload import MIB, Payload, StreamingBody, file_sha256, generate, multipart_body
from .registry import BenchError, benchmark, info_row, limit_row, throughput_row
from .rss import CpuMeter, RssSampler, memory_kib, single_worker

BEST_OF = 2            # sha256 runs (the best one counts)
DOWNLOAD_PASSES = 5    # download and raw GET passes, taking turns; the median of each counts
RAW_BEST_OF = 3        # raw nginx PUT runs: the machine limit is the best of these; the
                       # first write into fresh page cache is often 2x slower than later ones
RSS_LIMIT_MIB = 64
UPLOAD_MIN_RATIO = 0.5
DOWNLOAD_MIN_RATIO = 0.7
HASH_PIECE = 8 * MIB


# --- transfers --------------------------------------------------------------------------------
def _send(method: str, url: str, body, headers: dict | None, what: str) -> tuple[requests.Response, float]:
    with requests.Session() as session:
        started = time.perf_counter()
        try:
            response = session.request(method, url, data=body, headers=headers or {},
                                        timeout=TIMEOUT)
        except requests.RequestException as exc:
            raise BenchError(f"{what}: {type(exc).__name__}: {exc}") from None
        return response, time.perf_counter() - started


def _download(url: str, headers: dict | None, *, hash_it: bool, what: str) -> dict:
    """GET url streaming in 1 MiB pieces (discarded); optionally sha256 them on the way."""
    digest = hashlib.sha256() if hash_it else None
    size = 0
    with requests.Session() as session:
        started = time.perf_counter()
        try:
            with session.get(url, headers=headers or {}, stream=True, timeout=TIMEOUT) as response:
                check_status(response, 200, what=what)
                for chunk in response.iter_content(chunk_size=MIB):
                    size += len(chunk)
                    if digest is not None:
                        digest.update(chunk)
                history = [f"{r.status_code} -> {r.headers.get('Location', '?')}"
                           for r in response.history]
                final_url = response.url
        except requests.RequestException as exc:
            raise BenchError(f"{what}: {type(exc).__name__}: {exc}") from None
        seconds = time.perf_counter() - started
    return {"seconds": seconds, "size": size, "sha256": digest.hexdigest() if digest else None,
            "redirects": history, "final_url": final_url}


def _mib_s(size: int, seconds: float) -> float:
    return size / MIB / seconds


# --- machine limits ---------------------------------------------------------------------------
def raw_put(ctx: BenchContext) -> dict:
    """PUT the payload to the bench nginx, best of RAW_BEST_OF; the first copy is hash-checked."""
    payload, raw = ctx.payload, ctx.raw
    times, cpu = [], []
    for attempt in range(RAW_BEST_OF):
        name = f"put-{attempt}.bin"
        target = raw.www / "put" / name
        settle(payload.size)
        with CpuMeter({"nginx": raw.popen.pid}) as meter:
            response, seconds = _send("PUT", f"{raw.base_url}/put/{name}",
                                      StreamingBody(payload.path, payload.size), None,
                                      "raw nginx PUT")
        cpu.append(meter.used)
        check_status(response, 201, 204, what="raw nginx PUT")
        if target.stat().st_size != payload.size:
            raise BenchError(f"raw nginx PUT wrote {target.stat().st_size} bytes, "
                             f"expected {payload.size}")
        if attempt == 0 and file_sha256(target)[0] != payload.sha256:
            raise BenchError("raw nginx PUT wrote different bytes")
        target.unlink()  # drops its dirty pages without writing them back
        times.append(seconds)
        log(f"raw nginx PUT {payload.mib:g} MiB: {seconds:.2f}s ({_mib_s(payload.size, seconds):.0f} MiB/s)")
    return {"seconds": times, "mib_per_s": _mib_s(payload.size, min(times)),
            "cpu": cpu[times.index(min(times))]}


def raw_get_once(ctx: BenchContext) -> tuple[float, dict]:
    """One raw nginx GET of the payload: (seconds, CPU used)."""
    payload, raw = ctx.payload, ctx.raw
    with CpuMeter({"nginx": raw.popen.pid}) as meter:
        result = _download(f"{raw.base_url}/get/{payload.path.name}", None, hash_it=False,
                           what="raw nginx GET")
    if result["size"] != payload.size:
        raise BenchError(f"raw nginx GET returned {result['size']} bytes, expected {payload.size}")
    log(f"raw nginx GET {payload.mib:g} MiB: {result['seconds']:.2f}s "
        f"({_mib_s(payload.size, result['seconds']):.0f} MiB/s)")
    return result["seconds"], meter.used


def sha256_ceiling(ctx: BenchContext) -> dict:
    """hashlib.sha256 over the payload in 8 MiB pieces, timing only update() (reads excluded)."""
    payload = ctx.payload
    buffer = bytearray(HASH_PIECE)
    view = memoryview(buffer)
    times = []
    for _ in range(BEST_OF):
        digest = hashlib.sha256()
        hashing = 0.0
        with open(payload.path, "rb", buffering=0) as handle:
            while n := handle.readinto(buffer):
                started = time.perf_counter()
                digest.update(view[:n])
                hashing += time.perf_counter() - started
        if digest.hexdigest() != payload.sha256:
            raise BenchError("sha256 of the payload changed between runs")
        times.append(hashing)
    return {"seconds": times, "mib_per_s": _mib_s(payload.size, min(times))}


# --- Satchel ----------------------------------------------------------------------------------
def _check_upload_response(response: requests.Response, payload: Payload) -> dict:
    check_status(response, 200, 201, what="upload")
    try:
        body = response.json()
    except ValueError:
        raise BenchError(f"upload answered non-JSON: {response.text[:300]!r}") from None
    if not isinstance(body, list) or len(body) != 1:
        raise BenchError(f"upload should answer a one-element list, got {str(body)[:300]}")
    entry = body[0]
    if entry.get("hash") != payload.sha256:
        raise BenchError(f"upload hash {entry.get('hash')} != sent bytes' sha256 {payload.sha256}")
    if entry.get("size_bytes") != payload.size:
        raise BenchError(f"upload size_bytes {entry.get('size_bytes')} != {payload.size}")
    if not entry.get("user_file_id"):
        raise BenchError(f"upload answer lacks user_file_id: {entry}")
    return entry


def satchel_upload(ctx: BenchContext) -> UploadOutcome:
    payload = ctx.payload
    headers = ctx.auth_headers()
    url = f"{ctx.base_url}/api/v1/files/upload"
    master = ctx.process_pid("file-service")
    worker = single_worker(master)

    # Warm-up: a small upload of other bytes, so imports, connections and caches the upload
    # path creates on first use are not counted as growth (and a missing route fails fast).
    warm = generate(ctx.workdir / "warmup" / "warmup.bin", MIB + 12345)
    body, content_type = multipart_body(warm)
    response, _ = _send("POST", url, body, {**headers, "Content-Type": content_type},
                        "warm-up upload")
    _check_upload_response(response, warm)

    settle(payload.size)
    time.sleep(0.2)
    before = memory_kib(worker)
    body, content_type = multipart_body(payload)
    log(f"uploading {payload.mib:g} MiB through the gateway (worker pid {worker})")
    with CpuMeter(ctx.stack_pids()) as meter, RssSampler(worker) as sampler:
        response, seconds = _send("POST", url, body, {**headers, "Content-Type": content_type},
                                  "upload")
    after = memory_kib(worker)
    if sampler.error:
        raise BenchError(f"RSS sampler: {sampler.error}")
    entry = _check_upload_response(response, payload)
    if single_worker(master) != worker:
        raise BenchError("the file-service worker was replaced during the upload")
    log(f"Satchel upload {payload.mib:g} MiB: {seconds:.2f}s ({_mib_s(payload.size, seconds):.0f} MiB/s)")
    return UploadOutcome(
        user_file_id=entry["user_file_id"], seconds=seconds,
        mib_per_s=_mib_s(payload.size, seconds), response=entry,
        rss_before_kib=before["VmRSS"], rss_peak_kib=max(sampler.peak_kib, after["VmRSS"]),
        rss_after_kib=after["VmRSS"], hwm_before_kib=before.get("VmHWM", 0),
        hwm_after_kib=after.get("VmHWM", 0), samples=len(sampler.samples), worker_pid=worker, cpu=meter.used,
        extra={"request_bytes": len(body)})


def upload_outcome(ctx: BenchContext) -> UploadOutcome:
    return ctx.once("satchel upload", lambda: satchel_upload(ctx))


# --- the registered benchmarks -------------------------------------------------------------------
def _cpu_note(used: dict) -> str:
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in used.items() if seconds >= 0.01)


@benchmark("upload", "multipart upload through the gateway vs raw nginx PUT to disk")
def bench_upload(ctx: BenchContext):
    ctx.stack  # both measurements with the same processes idling around them
    machine = ctx.once("raw PUT", lambda: raw_put(ctx))
    up = upload_outcome(ctx)
    return [throughput_row(
        "upload", up.mib_per_s, machine["mib_per_s"], "raw nginx PUT", UPLOAD_MIN_RATIO,
        notes=[f"{ctx.payload.mib:g} MiB in {up.seconds:.2f}s (one run; a second upload of the "
               f"same bytes would be a dedup hit); raw PUT best of {RAW_BEST_OF}: "
               + ", ".join(f"{s:.2f}s" for s in machine["seconds"]),
               f"CPU during Satchel upload: {_cpu_note(up.cpu)}",
               f"CPU during raw PUT: {_cpu_note(machine['cpu'])}"],
        details={"satchel_seconds": up.seconds, "raw_put_seconds": machine["seconds"],
                 "request_bytes": up.extra["request_bytes"], "response": up.response,
                 "cpu_seconds_satchel": up.cpu, "cpu_seconds_raw": machine["cpu"]})]


@benchmark("upload_rss", "file-service worker RSS growth during the upload (FILE_WORKERS=1)")
def bench_upload_rss(ctx: BenchContext):
    up = upload_outcome(ctx)
    growth = (up.rss_peak_kib - up.rss_before_kib) / 1024
    return [limit_row(
        "upload_rss", growth, "MiB", RSS_LIMIT_MIB,
        notes=[f"worker {up.worker_pid}: VmRSS {up.rss_before_kib / 1024:.0f} -> peak "
               f"{up.rss_peak_kib / 1024:.0f} MiB ({up.samples} samples, 50 ms), after "
               f"{up.rss_after_kib / 1024:.0f}; VmHWM {up.hwm_before_kib / 1024:.0f} -> "
               f"{up.hwm_after_kib / 1024:.0f} MiB"],
        details={"worker_pid": up.worker_pid, "rss_before_kib": up.rss_before_kib,
                 "rss_peak_kib": up.rss_peak_kib, "rss_after_kib": up.rss_after_kib,
                 "hwm_before_kib": up.hwm_before_kib, "hwm_after_kib": up.hwm_after_kib,
                 "samples": up.samples})]


@benchmark("download", "GET /api/v1/files/{id}/content through the gateway vs raw nginx GET")
def bench_download(ctx: BenchContext):
    payload = ctx.payload
    up = upload_outcome(ctx)
    headers = ctx.auth_headers()
    url = f"{ctx.base_url}/api/v1/files/{up.user_file_id}/content"
    # Pass 1 (untimed) checks every byte; pass 2 is timed without hashing, like the raw GET,
    # so the client's sha256 does not steal one of the two cores from the server.
    check = _download(url, headers, hash_it=True, what="download (verification pass)")
    if check["size"] != payload.size or check["sha256"] != payload.sha256:
        raise BenchError(f"download returned {check['size']} bytes with sha256 "
                         f"{check['sha256']}, expected {payload.size} / {payload.sha256}")
    # Satchel and raw nginx take turns, DOWNLOAD_PASSES each, so both meet the same moods of
    # this machine. A 1 GiB sendfile over loopback takes 0.08 s or 0.2-0.37 s here, at random:
    # the best of a few passes compares luck, so the median of each side is compared.
    times, cpu, raw_times, raw_cpu = [], [], [], []
    for _ in range(DOWNLOAD_PASSES):
        with CpuMeter(ctx.stack_pids()) as meter:
            timed = _download(url, headers, hash_it=False, what="download")
        if timed["size"] != payload.size:
            raise BenchError(f"timed download returned {timed['size']} bytes, "
                             f"expected {payload.size}")
        times.append(timed["seconds"])
        cpu.append(meter.used)
        log(f"Satchel download {payload.mib:g} MiB: {timed['seconds']:.2f}s "
            f"({_mib_s(payload.size, timed['seconds']):.0f} MiB/s)")
        raw_seconds, raw_used = raw_get_once(ctx)
        raw_times.append(raw_seconds)
        raw_cpu.append(raw_used)
    typical, raw_typical = statistics.median_high(times), statistics.median_high(raw_times)
    notes = [f"{payload.mib:g} MiB, median of {DOWNLOAD_PASSES} timed passes without hashing, "
             "taking turns with the raw GET: "
             + ", ".join(f"{s:.2f}s" for s in times)
             + f" (an untimed pass, {check['seconds']:.2f}s, verified the sha256); raw GET: "
             + ", ".join(f"{s:.2f}s" for s in raw_times)
             + f"; best against best: {min(raw_times) / min(times):.2f}x",
             f"CPU during Satchel download (median pass): "
             f"{_cpu_note(cpu[times.index(typical)])}",
             f"CPU during raw GET (median pass): "
             f"{_cpu_note(raw_cpu[raw_times.index(raw_typical)])}"]
    if check["redirects"]:
        notes.append("redirects: " + "; ".join(check["redirects"]))
    return [throughput_row(
        "download", _mib_s(payload.size, typical), _mib_s(payload.size, raw_typical),
        "raw nginx GET", DOWNLOAD_MIN_RATIO, notes=notes,
        details={"satchel_seconds": times, "verify_seconds": check["seconds"],
                 "raw_get_seconds": raw_times, "redirects": check["redirects"],
                 "cpu_seconds_satchel": cpu, "cpu_seconds_raw": raw_cpu})]


@benchmark("sha256", "hashlib.sha256 ceiling (8 MiB pieces, this process) next to upload MiB/s")
def bench_sha256(ctx: BenchContext):
    machine = ctx.once("sha256", lambda: sha256_ceiling(ctx))
    upload = None
    status = ctx.memo.get("satchel upload")
    if status and status[0] == "ok":
        upload = status[1].mib_per_s
    return [info_row(
        "sha256", "MiB/s", upload, machine["mib_per_s"], "hashlib.sha256",
        notes=[("satchel = upload MiB/s; " if upload is not None else "upload not run; ")
               + f"sha256 best of {BEST_OF}: "
               + ", ".join(f"{s:.2f}s" for s in machine["seconds"]) + " (update() time only)"],
        details={"sha256_seconds": machine["seconds"]})]

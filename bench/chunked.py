"""Chunked uploads: POST the chunk list, PUT chunks to pre-signed URLs (4 at a time) through the
gateway (local backend), PATCH each one as it lands, until the file is available.

Client-side chunk hashing happens before the clock starts (a sync client hashes while it scans
for changes); everything the server does, whole-file verification included, is timed.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests

from .benchmarks import raw_put, sha256_ceiling
from .context import TIMEOUT, BenchContext, check_status, log, register_user, settle_disk
from .payload import MIB, Payload, generate
from .registry import BenchError, Row, benchmark, limit_row, throughput_row
from .rss import CpuMeter

PARALLEL_PUTS = 4
CHUNKED_MIN_RATIO = 0.8
REUPLOAD_MAX_RATIO = 0.05
ONE_CHANGED_MIB = 256


@dataclass
class ChunkedOutcome:
    seconds: float
    puts: int
    user_file_id: str
    file_object_id: str
    cpu: dict


class ChunkedClient:
    """A bench user doing chunked uploads against the stack."""

    def __init__(self, ctx: BenchContext):
        self.ctx = ctx
        self.base_url = ctx.base_url
        self.headers, _ = register_user(self.base_url, "chunked")
        self.chunk_size = requests.get(f"{self.base_url}/api/v1/config",
                                       timeout=TIMEOUT).json()["chunk_size_bytes"]
        self._local = threading.local()

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def declare(self, payload: Payload) -> dict:
        chunks = []
        with open(payload.path, "rb") as handle:
            index = 0
            while piece := handle.read(self.chunk_size):
                chunks.append({"index": index, "hash": hashlib.sha256(piece).hexdigest(),
                               "size_bytes": len(piece)})
                index += 1
        return {"filename": payload.path.name, "size_bytes": payload.size,
                "hash": payload.sha256, "mime_type": "application/octet-stream", "chunks": chunks}

    def upload(self, payload: Payload, declared: dict) -> ChunkedOutcome:
        puts = 0
        lock = threading.Lock()
        final: list[dict] = []
        settle_disk()
        with CpuMeter(self.ctx.stack_pids()) as meter:
            started = time.perf_counter()
            response = self._session().post(f"{self.base_url}/api/v1/files", json=declared,
                                            headers=self.headers, timeout=TIMEOUT)
            check_status(response, 201, what="register chunked upload")
            body = response.json()
            pending = [c for c in body["chunks"] if c["status"] != "verified"]
            fd = os.open(payload.path, os.O_RDONLY)

            def send(chunk: dict) -> None:
                nonlocal puts
                data = os.pread(fd, chunk["size_bytes"], chunk["index"] * self.chunk_size)
                session = self._session()
                put = session.put(chunk["upload_url"], data=data, timeout=TIMEOUT)
                check_status(put, 200, 201, 204, what=f"PUT chunk {chunk['index']}")
                with lock:
                    puts += 1
                report = session.patch(f"{self.base_url}/api/v1/files/{body['user_file_id']}",
                                       json={"chunks": [{"index": chunk["index"],
                                                         "status": "uploaded"}]},
                                       headers=self.headers, timeout=TIMEOUT)
                check_status(report, 200, what=f"PATCH chunk {chunk['index']}")
                state = report.json()
                if state["status"] == "available":
                    final.append(state)
                elif state["chunks"][chunk["index"]]["status"] != "verified":
                    raise BenchError(f"chunk {chunk['index']} not verified: "
                                     f"{state['chunks'][chunk['index']]}")

            try:
                with ThreadPoolExecutor(PARALLEL_PUTS) as pool:
                    list(pool.map(send, pending))
            finally:
                os.close(fd)
            state = body if not pending else (final[0] if final else None)
            while state is None or state["status"] != "available":  # PATCH until available
                if state is not None and state["status"] == "failed":
                    raise BenchError(f"upload failed: {state.get('failure')}")
                time.sleep(0.01)
                state = self._session().get(f"{self.base_url}/api/v1/files/{body['user_file_id']}",
                                            headers=self.headers, timeout=TIMEOUT).json()
            seconds = time.perf_counter() - started
        if state.get("hash") != payload.sha256 or state.get("size_bytes") != payload.size:
            raise BenchError(f"chunked upload answered {state.get('hash')}, {state.get('size_bytes')}")
        return ChunkedOutcome(seconds, puts, body["user_file_id"], state["file_object_id"],
                              meter.used)


def _first_upload(ctx: BenchContext) -> tuple[ChunkedClient, dict, ChunkedOutcome]:
    def run():
        client = ChunkedClient(ctx)
        declared = client.declare(ctx.payload)
        log(f"chunked upload of {ctx.payload.mib:g} MiB in {len(declared['chunks'])} chunks, "
            f"{PARALLEL_PUTS} PUTs at a time")
        outcome = client.upload(ctx.payload, declared)
        log(f"chunked upload: {outcome.seconds:.2f}s, {outcome.puts} PUTs")
        return client, declared, outcome
    return ctx.once("chunked upload", run)


def _cpu(used: dict) -> str:
    return ", ".join(f"{name} {seconds:.2f}s" for name, seconds in used.items() if seconds >= 0.01)


def ceiling(machine: dict, sha256: dict, outcome: ChunkedOutcome) -> dict:
    """The best this machine allows, from figures of the same run: the chunked path does at
    least the raw PUT's work (nginx receiving, the client sending: its CPU seconds) plus the
    two SHA-256 passes over every byte the issue requires (each chunk's, the whole file's:
    hashlib's time), spread perfectly over every core with nothing else. Satchel's overhead is
    the CPU it used beyond that."""
    cores = len(os.sched_getaffinity(0))
    best = machine["seconds"].index(min(machine["seconds"]))
    raw_cpu = sum(machine["cpu"].values())
    hashing = 2 * min(sha256["seconds"])
    floor = (raw_cpu + hashing) / cores
    return {"cores": cores, "raw_cpu_seconds": raw_cpu, "hash_seconds": hashing,
            "floor_seconds": floor, "ratio": machine["seconds"][best] / floor,
            "overhead_cpu_seconds": sum(outcome.cpu.values()) - raw_cpu - hashing}


@benchmark("chunked_upload", "chunked upload (4 parallel PUTs via the gateway, verified) vs raw nginx PUT")
def bench_chunked_upload(ctx: BenchContext):
    ctx.stack
    machine = ctx.once("raw PUT", lambda: raw_put(ctx))
    sha256 = ctx.once("sha256", lambda: sha256_ceiling(ctx))
    _, declared, outcome = _first_upload(ctx)
    mib_s = ctx.payload.size / MIB / outcome.seconds
    best = ceiling(machine, sha256, outcome)
    return [throughput_row(
        "chunked_upload", mib_s, machine["mib_per_s"], "raw nginx PUT", CHUNKED_MIN_RATIO,
        notes=[f"{ctx.payload.mib:g} MiB in {len(declared['chunks'])} chunks: {outcome.seconds:.2f}s "
               f"(POST, {outcome.puts} PUTs {PARALLEL_PUTS} at a time, a PATCH after each, "
               f"whole-file SHA-256 on the server); raw PUT best of: "
               + ", ".join(f"{s:.2f}s" for s in machine["seconds"]),
               f"CPU during the chunked upload: {_cpu(outcome.cpu)}",
               f"ceiling here: the raw PUT's CPU ({best['raw_cpu_seconds']:.2f}s) + two SHA-256 "
               f"passes ({best['hash_seconds']:.2f}s) on {best['cores']} cores take at least "
               f"{best['floor_seconds']:.2f}s = {best['ratio']:.2f}x with zero overhead; "
               f"Satchel's overhead in this run: {best['overhead_cpu_seconds']:.2f} CPU-s"],
        details={"seconds": outcome.seconds, "puts": outcome.puts,
                 "chunks": len(declared["chunks"]), "cpu_seconds": outcome.cpu,
                 "ceiling": best})]


@benchmark("chunked_reupload", "the same user uploading the same bytes again: no chunk sent")
def bench_chunked_reupload(ctx: BenchContext):
    client, declared, first = _first_upload(ctx)
    again = client.upload(ctx.payload, declared)
    ratio = again.seconds / first.seconds
    passed = ratio <= REUPLOAD_MAX_RATIO and again.puts == 0
    return [Row(name="chunked_reupload", unit="s", satchel=again.seconds, machine=first.seconds,
                machine_label="first chunked upload", ratio=ratio,
                target=f"<= {REUPLOAD_MAX_RATIO:.2f}x, 0 PUTs", result="PASS" if passed else "MISS",
                notes=[f"{again.puts} PUTs; {again.seconds * 1000:.0f} ms vs {first.seconds:.2f}s; "
                       f"same file object: {again.file_object_id == first.file_object_id}"],
                details={"seconds": again.seconds, "puts": again.puts})]


@benchmark("chunked_one_changed", "one chunk changed in the middle of a 256 MiB file: one PUT")
def bench_chunked_one_changed(ctx: BenchContext):
    ctx.stack
    client = ChunkedClient(ctx)
    size = min(ONE_CHANGED_MIB * MIB, ctx.size_bytes)
    base = generate(ctx.workdir / "one-changed" / "v1.bin", size)
    first = client.upload(base, client.declare(base))
    changed_path = Path(ctx.workdir / "one-changed" / "v2.bin")
    data = bytearray(base.path.read_bytes())
    middle = (size // client.chunk_size // 2) * client.chunk_size + 12345
    data[middle] ^= 0xFF
    changed_path.write_bytes(data)
    changed = Payload(changed_path, size, hashlib.sha256(data).hexdigest())
    del data
    second = client.upload(changed, client.declare(changed))
    return [limit_row(
        "chunked_one_changed", second.puts, "PUTs", 1,
        notes=[f"{size // MIB} MiB: first upload {first.puts} PUTs in {first.seconds:.2f}s; "
               f"with one byte changed at offset {middle}: {second.puts} PUT(s) in "
               f"{second.seconds:.2f}s (whole-file SHA-256 included)"],
        details={"first_seconds": first.seconds, "first_puts": first.puts,
                 "second_seconds": second.seconds, "second_puts": second.puts})]

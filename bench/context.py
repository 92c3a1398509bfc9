"""Resources shared by the benchmarks, each created on first use and torn down by close()."""
from __future__ import annotations

import mmap
import os
import secrets
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from satchel_devstack.stack import Stack, StackConfig, free_port

from .machine import mem_available_bytes
from .payload import MIB, Payload, generate
from .rawnginx import RawNginx
from .registry import BenchError

BENCH_TOKEN_TTL_SECONDS = 12 * 3600  # access tokens of the bench stack: longer than any run
TIMEOUT = (10, 600)  # (connect, per-read) seconds for every bench request


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


WARM_MAX_BYTES = 4 << 30  # settle() never touches more than this, nor a quarter of MemAvailable


def settle(size_bytes: int, timeout_seconds: float = 30) -> None:
    """Before a timed transfer of `size_bytes`, raw or through Satchel alike:
    - sync(2), so earlier dirty pages are not written back during it;
    - touch twice that much new memory (at most WARM_MAX_BYTES or a quarter of what is
      available) and free it. This VM's balloon driver hands memory that
      stays free for a couple of seconds back to the host, which then charges 0.5-1 s per GiB
      when it is next touched (1 GiB: 0.8 s at once, 1.3 s after 3 s, 2.0 s after 6 s); a
      transfer that starts right after this finds memory as warm as any other, instead of as
      warm as whatever ran before it left it."""
    worker = threading.Thread(target=os.sync, daemon=True)
    worker.start()
    worker.join(timeout_seconds)
    available = mem_available_bytes()
    warm_bytes = min(2 * size_bytes, WARM_MAX_BYTES,
                     WARM_MAX_BYTES if available is None else available // 4) // MIB * MIB
    if not warm_bytes:
        return
    warm = mmap.mmap(-1, warm_bytes)
    try:
        zeros = bytes(MIB)
        for offset in range(0, len(warm) - MIB + 1, MIB):  # bounded by the size
            warm[offset:offset + MIB] = zeros
    finally:
        warm.close()


def check_status(response: requests.Response, *expected: int, what: str) -> None:
    if response.status_code not in expected:
        raise BenchError(f"{what}: HTTP {response.status_code} (expected "
                         f"{'/'.join(map(str, expected))}): {response.text[:500]!r}")


def new_credentials(base_url: str, label: str) -> tuple[str, str]:
    """Register a new user: (email, password)."""
    email = f"bench-{label}-{secrets.token_hex(6)}@example.com"
    password = f"bench {secrets.token_urlsafe(12)} {label}"
    check_status(requests.post(f"{base_url}/api/v1/auth/register",
                               json={"email": email, "password": password}, timeout=TIMEOUT),
                 201, what="register")
    return email, password


def login(base_url: str, email: str, password: str) -> dict[str, str]:
    """Bearer headers for the user."""
    response = requests.post(f"{base_url}/api/v1/auth/login",
                             json={"email": email, "password": password}, timeout=TIMEOUT)
    check_status(response, 200, what="login")
    return {"Authorization": f"Bearer {response.json()['token']}"}


def register_user(base_url: str, label: str) -> tuple[dict[str, str], str]:
    """A new user: (bearer headers, user id)."""
    headers = login(base_url, *new_credentials(base_url, label))
    me = requests.get(f"{base_url}/api/v1/auth/me", headers=headers, timeout=TIMEOUT)
    check_status(me, 200, what="me")
    return headers, me.json()["id"]


@dataclass
class UploadOutcome:
    user_file_id: str
    seconds: float
    mib_per_s: float
    response: dict
    rss_before_kib: int
    rss_peak_kib: int
    hwm_before_kib: int
    hwm_after_kib: int
    rss_after_kib: int
    samples: int
    worker_pid: int
    cpu: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)


class BenchContext:
    def __init__(self, root: Path, workdir: Path, size_bytes: int):
        self.root = root
        self.workdir = workdir
        self.size_bytes = size_bytes
        self.results: dict[str, list] = {}   # benchmark name -> rows, for later benchmarks to read
        self.memo: dict[str, object] = {}    # cached outcomes (or the exception they raised)
        self._payload: Payload | None = None
        self._raw: RawNginx | None = None
        self._stack: Stack | None = None
        self._token: dict[str, str] | None = None
        self._stack_error: str | None = None

    # --- payload ----------------------------------------------------------------------------
    @property
    def payload(self) -> Payload:
        if self._payload is None:
            # Inside the raw nginx's GET root, so the raw download serves this very file.
            path = self.workdir / "raw" / "www" / "get" / f"payload-{self.size_bytes // MIB}MiB.bin"
            log(f"generating {self.size_bytes / MIB:g} MiB of random payload at {path}")
            started = time.perf_counter()
            self._payload = generate(path, self.size_bytes)
            log(f"payload ready in {time.perf_counter() - started:.1f}s "
                f"(sha256 {self._payload.sha256[:16]}...)")
        return self._payload

    # --- the bench's own nginx ----------------------------------------------------------------
    @property
    def raw(self) -> RawNginx:
        if self._raw is None:
            raw = RawNginx(self.workdir / "raw")
            raw.start()
            self._raw = raw
            log(f"raw nginx up at {raw.base_url}")
        return self._raw

    # --- the Satchel stack --------------------------------------------------------------------
    @property
    def stack(self) -> Stack:
        if self._stack_error is not None:
            raise BenchError(f"the stack failed to start: {self._stack_error}")
        if self._stack is None:
            limit = max(4 << 30, 2 * self.size_bytes)
            config = StackConfig(
                root=self.root, var_dir=self.workdir / "stack" / "var",
                gateway_port=free_port(), auth_port=free_port(), file_port=free_port(),
                mongo_port=free_port(), file_workers=1, client_max_body_size="0",
                service_env={"BCRYPT_ROUNDS": "4", "MAX_UPLOAD_BYTES": str(limit),
                             "USER_QUOTA_BYTES": str(2 * limit),
                             # every bench user's token outlives the whole run
                             "ACCESS_TOKEN_TTL_SECONDS": str(BENCH_TOKEN_TTL_SECONDS)},
            )
            log(f"starting the Satchel stack (FILE_WORKERS=1) at {config.base_url}")
            stack = Stack(config)
            started = time.perf_counter()
            try:
                stack.start()  # stops what it started if it fails
            except Exception as exc:
                self._stack_error = f"{type(exc).__name__}: {exc}"
                raise BenchError(f"the stack failed to start: {self._stack_error}") from exc
            except BaseException:
                stack.stop()
                raise
            self._stack = stack
            log(f"stack ready in {time.perf_counter() - started:.1f}s")
        return self._stack

    @property
    def base_url(self) -> str:
        return self.stack.config.base_url

    def process_pid(self, name: str) -> int:
        for process in self.stack.processes:
            if process.name == name and process.popen is not None:
                return process.popen.pid
        raise BenchError(f"no {name} process in the stack")

    def auth_headers(self) -> dict[str, str]:
        """A bearer token for the bench user (registered on first use)."""
        if self._token is None:
            self._token = login(self.base_url, *new_credentials(self.base_url, "upload"))
        return self._token

    def stack_pids(self) -> dict[str, int]:
        """The stack's top-level processes (gunicorn masters, nginx master, nx-27017) by name."""
        return {p.name: p.popen.pid for p in self.stack.processes if p.popen is not None}

    def stack_log_tail(self, name: str, lines: int = 15) -> str:
        if self._stack is None:
            return ""
        for process in self._stack.processes:
            if process.name == name:
                return process.log_tail(lines)
        return ""

    # --- memoised steps shared by several benchmarks ------------------------------------------
    def once(self, key: str, fn):
        """Run fn() once per invocation; later calls return its value or fail with its error."""
        if key in self.memo:
            status, value = self.memo[key]
            if status == "error":
                raise BenchError(f"needs the {key} step, which failed: {value}")
            return value
        try:
            value = fn()
        except BenchError as exc:
            self.memo[key] = ("error", exc)
            raise
        self.memo[key] = ("ok", value)
        return value

    def close(self, keep: bool) -> None:
        if self._stack is not None:
            log("stopping the Satchel stack")
            self._stack.stop()
        if self._raw is not None:
            self._raw.stop()
        if keep:
            log(f"kept {self.workdir}")


"""Start, watch and stop the processes of one Satchel stack.

Order: nx-27017 (MongoDB wire protocol on SQLite) -> auth-service -> file-service (both under
gunicorn) -> nginx. Each is waited for (port open / readiness endpoint) before the next starts;
stopping goes in reverse, SIGTERM first and SIGKILL for anything still alive after a deadline.
All state lives under `var_dir`, so a restart finds its users, keys and files again.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from satchel_shared.config import load_config, setting
from satchel_shared.serve import Serving

from .template import render

HOST = "127.0.0.1"


class StackError(RuntimeError):
    pass


@dataclass(frozen=True)
class StackConfig(Serving):
    """The devstack's settings, read by `from_env` the way the services read theirs. The
    services' ports, workers and threads are the declarations `python -m satchel_shared.serve`
    reads too (satchel_shared.serve.Serving), which starts them here as in the images."""

    root: Path
    var_dir: Path
    gateway_port: int = setting("GATEWAY_PORT", 8080, help="the only port clients need")
    mongo_port: int = setting("MONGO_PORT", 27017, help="nx-27017's port")
    auth_rate_limit: str = setting("AUTH_RATE_LIMIT", "60r/m",
                                   help="gateway limit on register/login/refresh per address")
    auth_rate_burst: int = setting("AUTH_RATE_BURST", 20)
    cors_origin_regex: str = setting("CORS_ORIGIN_REGEX", "^$")
    client_max_body_size: str = setting("CLIENT_MAX_BODY_SIZE", "2g")
    service_env: dict[str, str] = field(default_factory=dict)
    python: str = sys.executable

    @classmethod
    def from_env(cls, root: Path, environ=None) -> "StackConfig":
        """Raises ConfigError naming every bad variable."""
        environ = os.environ if environ is None else environ
        var_dir = Path(environ.get("SATCHEL_VAR") or root / "var").resolve()
        return load_config(cls, environ, root=root.resolve(), var_dir=var_dir)

    @property
    def ports(self) -> dict[str, int]:
        """Each port by the variable that sets it."""
        return {"GATEWAY_PORT": self.gateway_port, **super().ports, "MONGO_PORT": self.mongo_port}

    def problems(self) -> list[str]:
        problems = super().problems()  # every port of `ports` included
        if not re.fullmatch(r"[1-9][0-9]*r/[sm]", self.auth_rate_limit):  # nginx's own syntax
            problems.append(f"AUTH_RATE_LIMIT must be requests per second or minute, like "
                            f"60r/m, got {self.auth_rate_limit!r}")
        if self.auth_rate_burst < 0:
            problems.append(f"AUTH_RATE_BURST must not be negative, got {self.auth_rate_burst}")
        return problems

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.gateway_port}"


@dataclass
class _Process:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    popen: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(
                self.argv, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def is_running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


# nginx modules the optional multi-chunk download location needs (gateway/satchel-concat.conf.
# template); Debian packages libnginx-mod-http-echo and libnginx-mod-http-headers-more-filter.
CONCAT_MODULES = (Path("/usr/lib/nginx/modules/ngx_http_echo_module.so"),
                  Path("/usr/lib/nginx/modules/ngx_http_headers_more_filter_module.so"))
CONCAT_LOCATION = "/_satchel_concat"


def has_concat_modules() -> bool:
    return all(module.is_file() for module in CONCAT_MODULES)


def find_nginx() -> str:
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    nginx = shutil.which("nginx", path=path)
    if nginx is None:
        raise StackError("nginx is not installed (Debian: apt-get install nginx; `make run` "
                         "does this when run as root)")
    return nginx


def _port_is_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


class Stack:
    def __init__(self, config: StackConfig):
        self.config = config
        self.processes: list[_Process] = []

    # --- paths and environment ---------------------------------------------------------------
    def path(self, *parts: str) -> Path:
        return self.config.var_dir.joinpath(*parts)

    def _secret(self, name: str) -> str:
        """A random secret created on first start and kept under var/secrets/."""
        secret_file = self.path("secrets", name)
        if not secret_file.exists():
            secret_file.parent.mkdir(parents=True, exist_ok=True)
            secret_file.parent.chmod(0o700)
            descriptor = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return secret_file.read_text().strip()

    def service_env(self) -> dict[str, str]:
        c = self.config
        env = dict(os.environ)
        env.update(c.service_env)
        env.update({
            "MONGO_URI": f"mongodb://{HOST}:{c.mongo_port}",
            "JWT_KEYS_DIR": str(self.path("keys")),
            "JWKS_URL": f"http://{HOST}:{c.auth_port}/api/v1/auth/jwks.json",
            "TRUSTED_PROXY_COUNT": "1",
            "DATA_DIR": str(self.path("data")),
            "PUBLIC_BASE_URL": c.base_url,
            # satchel_shared.serve reads these; the file service caps its long-polls below
            # FILE_THREADS
            "AUTH_PORT": str(c.auth_port), "FILE_PORT": str(c.file_port),
            "AUTH_WORKERS": str(c.auth_workers), "FILE_WORKERS": str(c.file_workers),
            "FILE_THREADS": str(c.file_threads),
        })
        if has_concat_modules():  # nginx sends multi-chunk files itself (render_gateway_config)
            env.setdefault("ACCEL_CONCAT_LOCATION", CONCAT_LOCATION)
        if "BLOB_URL_SECRET" not in env:  # one of our own, kept under var/ (made once)
            env["BLOB_URL_SECRET"] = self._secret("blob_url_secret")
        return env

    def gateway_values(self) -> dict[str, str]:
        c = self.config
        user = ""
        if os.geteuid() == 0:  # the master starts as root; keep workers able to use var/
            user = "user root;"
        return {
            "GATEWAY_PORT": f"{HOST}:{c.gateway_port}",
            "AUTH_UPSTREAM": f"{HOST}:{c.auth_port}",
            "FILE_UPSTREAM": f"{HOST}:{c.file_port}",
            "CORS_ORIGIN_REGEX": c.cors_origin_regex,
            "CLIENT_MAX_BODY_SIZE": c.client_max_body_size,
            "AUTH_RATE_LIMIT": c.auth_rate_limit,
            "AUTH_RATE_BURST": str(c.auth_rate_burst),
            "BLOB_ROOT": str(self.path("data")),
            "NGINX_RUN_DIR": str(self.path("run", "nginx")),
            "NGINX_USER_DIRECTIVE": user,
            "NGINX_LOAD_MODULES": "".join(f"load_module {module};\n" for module in CONCAT_MODULES)
                                  if has_concat_modules() else "",
        }

    def render_gateway_config(self) -> Path:
        values = self.gateway_values()
        run_dir = Path(values["NGINX_RUN_DIR"])
        run_dir.mkdir(parents=True, exist_ok=True)
        gateway = self.config.root / "gateway"
        (run_dir / "satchel.conf").write_text(
            render((gateway / "satchel.conf.template").read_text(), values))
        extra = run_dir / "satchel.d"  # satchel.conf includes satchel.d/*.conf
        extra.mkdir(exist_ok=True)
        concat = extra / "concat.conf"
        if has_concat_modules():
            concat.write_text(render((gateway / "satchel-concat.conf.template").read_text(), values))
        else:
            concat.unlink(missing_ok=True)
        main_conf = run_dir / "nginx.conf"
        main_conf.write_text(render((gateway / "nginx.conf.template").read_text(), values))
        return main_conf

    # --- lifecycle ---------------------------------------------------------------------------
    def check_ports(self) -> None:
        for name, port in self.config.ports.items():
            if not _port_is_free(port):
                raise StackError(f"port {port} is in use; set {name} to a free port")

    @property
    def restoring_marker(self) -> Path:
        """Present from the start of a restore (backup.py) until it finished (feed reset,
        counts repaired): nothing starts a stack whose restore was cut short."""
        return self.path("RESTORING")

    def prepare(self) -> None:
        c = self.config
        if self.restoring_marker.exists():
            raise StackError(f"a restore into {c.var_dir} did not finish (its change feed and "
                             f"counts are not reset yet); move it away and run `make restore` "
                             f"again")
        self.check_ports()
        for directory in ("mongo", "keys", "data", "log", "run"):
            self.path(directory).mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [c.python, "-m", "satchel_auth.keys", "generate", "--dir", str(self.path("keys"))],
            check=True, env=self.service_env(), stdout=subprocess.DEVNULL,
        )

    def start(self, *, timeout_seconds: float = 60) -> None:
        self.prepare()
        c = self.config
        env = self.service_env()
        try:
            self.start_database(timeout_seconds=timeout_seconds)
            auth = self._spawn("auth-service", self._serve("auth-service"), env)
            self._wait_for_http(auth, f"http://{HOST}:{c.auth_port}/readyz", timeout_seconds)
            files = self._spawn("file-service", self._serve("file-service"), env)
            self._wait_for_http(files, f"http://{HOST}:{c.file_port}/readyz", timeout_seconds)
            conf = self.render_gateway_config()
            gateway = self._spawn("gateway", [
                find_nginx(), "-p", str(conf.parent), "-c", str(conf), "-e", "stderr"], env)
            self._wait_for_http(gateway, f"{c.base_url}/healthz", timeout_seconds)
            self._wait_for_http(gateway, f"{c.base_url}/.well-known/jwks.json", timeout_seconds)
        except BaseException:
            self.stop()
            raise

    def run_file_admin(self, *arguments: str) -> int:
        """The file service's admin CLI (satchel_files.cli: fsck, gc, reset-feed, end-intents)
        against this stack's database and blobs; its exit status."""
        return subprocess.run([self.config.python, "-m", "satchel_files.cli", *arguments],
                              env=self.service_env()).returncode

    def start_database(self, *, timeout_seconds: float = 60) -> None:
        """nx-27017 alone (after prepare()): the first step of start(), and what a restore needs."""
        c = self.config
        mongo = self._spawn("mongo", [
            c.python, "-m", "satchel_devstack.mongo_server", "--data-dir",
            str(self.path("mongo")), "--host", HOST, "--port", str(c.mongo_port),
            "--log-file", str(self.path("log", "mongo-nx.log")),
            "--pid-file", str(self.path("run", "mongo.pid")),
        ], self.service_env())
        self._wait_for_port(mongo, c.mongo_port, timeout_seconds)

    def _serve(self, service: str) -> list[str]:
        """The images' gunicorn (satchel_shared.serve), on loopback, stopping fast."""
        return [self.config.python, "-m", "satchel_shared.serve", "--host", HOST, service,
                "--graceful-timeout", "3", "--timeout", "120"]

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> _Process:
        process = _Process(name, argv, env, self.path("log", f"{name}.log"))
        process.start()
        self.processes.append(process)
        return process

    def _died(self, process: _Process) -> StackError:
        return StackError(f"{process.name} exited with status {process.popen.returncode}; "
                          f"last lines of {process.log_path}:\n{process.log_tail()}")

    def _wait_for_port(self, process: _Process, port: int, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if not process.is_running():
                raise self._died(process)
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((HOST, port)) == 0:
                    return
            time.sleep(0.1)
        raise StackError(f"{process.name} did not open port {port} in {timeout_seconds:.0f}s")

    def _wait_for_http(self, process: _Process, url: str, timeout_seconds: float) -> None:
        deadline = time.monotonic() + timeout_seconds
        last = "no answer"
        while time.monotonic() < deadline:
            if not process.is_running():
                raise self._died(process)
            try:
                response = requests.get(url, timeout=2)
                if response.status_code == 200:
                    return
                last = f"HTTP {response.status_code}"
            except requests.RequestException as exc:
                last = type(exc).__name__
            time.sleep(0.2)
        raise StackError(f"{process.name} not ready at {url} after {timeout_seconds:.0f}s "
                         f"({last}); log tail:\n{process.log_tail()}")

    def dead_process(self) -> _Process | None:
        return next((p for p in self.processes if not p.is_running()), None)

    def stop(self, *, timeout_seconds: float = 8) -> None:
        """SIGTERM everything (newest first), then SIGKILL what is left at the deadline."""
        for process in reversed(self.processes):
            if process.is_running():
                try:
                    os.killpg(process.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + timeout_seconds
        for process in reversed(self.processes):
            if process.popen is None:
                continue
            try:
                process.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(process.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                process.popen.wait()
        self.processes.clear()

"""The bench's own nginx: the machine's limit for moving bytes over loopback HTTP to/from disk.

PUT /put/<name> writes the body to a temp file under `client_body_temp_path` (same filesystem)
and renames it into place (http_dav_module); GET /get/<name> serves a file with sendfile.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from satchel_devstack.stack import HOST, find_nginx, free_port

from .registry import BenchError

CONF = """\
{user}
worker_processes auto;
pid {run}/nginx.pid;
error_log stderr warn;
daemon off;
events {{ worker_connections 64; }}
http {{
    sendfile on;
    tcp_nopush on;
    access_log off;
    keepalive_timeout 65;
    client_body_temp_path {body_tmp};
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    server {{
        listen {host}:{port};
        root {www};
        client_max_body_size 0;
        default_type application/octet-stream;
        location /put/ {{
            dav_methods PUT DELETE;
            create_full_put_path on;
            dav_access user:rw;
        }}
        location /get/ {{ }}
    }}
}}
"""


def nginx_version(nginx: str | None = None) -> str:
    try:
        out = subprocess.run([nginx or find_nginx(), "-v"], capture_output=True, text=True,
                             timeout=10)
        return (out.stderr or out.stdout).strip().removeprefix("nginx version: ").removeprefix("nginx/")
    except Exception as exc:  # noqa: BLE001 - a fact line, not a failure
        return f"unknown ({exc})"


class RawNginx:
    def __init__(self, base_dir: Path):
        self.base_dir = base_dir
        self.www = base_dir / "www"
        self.run_dir = base_dir / "run"
        self.body_tmp = base_dir / "body-tmp"
        self.port = free_port()
        self.popen: subprocess.Popen | None = None
        self.nginx = find_nginx()

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self, timeout_seconds: float = 20) -> None:
        configure = subprocess.run([self.nginx, "-V"], capture_output=True, text=True, timeout=10)
        if "http_dav_module" not in configure.stderr + configure.stdout:
            raise BenchError("this nginx lacks http_dav_module; the raw PUT baseline needs it")
        for directory in (self.www / "put", self.www / "get", self.run_dir, self.body_tmp):
            directory.mkdir(parents=True, exist_ok=True)
        if os.stat(self.body_tmp).st_dev != os.stat(self.www).st_dev:
            raise BenchError("client_body_temp_path and the PUT root are on different filesystems")
        conf = self.run_dir / "nginx.conf"
        conf.write_text(CONF.format(
            user="user root;" if os.geteuid() == 0 else "", run=self.run_dir,
            body_tmp=self.body_tmp, host=HOST, port=self.port, www=self.www))
        log = open(self.run_dir / "nginx.log", "ab")
        try:
            self.popen = subprocess.Popen(
                [self.nginx, "-p", str(self.run_dir), "-c", str(conf), "-e", "stderr"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise BenchError(f"bench nginx exited ({self.popen.returncode}): "
                                 f"{(self.run_dir / 'nginx.log').read_text(errors='replace')[-2000:]}")
            with socket.socket() as probe:
                probe.settimeout(0.5)
                if probe.connect_ex((HOST, self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise BenchError(f"bench nginx did not open port {self.port} in {timeout_seconds:.0f}s")

    def stop(self, timeout_seconds: float = 5) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout=timeout_seconds)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.popen.wait(timeout=timeout_seconds)
        self.popen = None

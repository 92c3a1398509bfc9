"""Run a Satchel service under gunicorn, with the options every way of running it shares.

    python -m satchel_shared.serve [--host HOST] [SERVICE] [more gunicorn options...]
    python -m satchel_shared.serve --check [SERVICE]      exit 0 if its /healthz answers
    python -m satchel_shared.serve --ready [SERVICE]      exit 0 if its /readyz answers

SERVICE is auth-service or file-service (default: $SATCHEL_SERVICE, which each image sets).
The images' entrypoint and healthcheck and the devstack all run this, so the gunicorn options
are written here once. It listens on HOST (default 0.0.0.0; the devstack: 127.0.0.1) at
AUTH_PORT / FILE_PORT with AUTH_WORKERS / FILE_WORKERS workers (class Serving).

The auth service runs sync workers (bcrypt is CPU work, one login at a time per worker). The
file service runs gthread workers, not gevent: uploads hash and store on helper threads
(services/ingest.py, the chunk checks of services/uploads.py) and hashing is CPU work that
would stall an event loop; long-polls of /changes sleep in their thread, so there are many
threads (FILE_THREADS), and the service holds at most FILE_THREADS - 8 long-polls per worker.
"""
from __future__ import annotations

import dataclasses
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence

from .config import ConfigError, FileThreads, load_config, setting

# Longer than the gateway's upstream keepalive_timeout (60 s, gateway/satchel.conf.template):
# otherwise a service closes a pooled connection just as nginx reuses it, and a POST gets 502
# (nginx cannot retry it). tests-infra checks the two stay in that order.
KEEP_ALIVE_SECONDS = 75
DEFAULT_HOST = "0.0.0.0"
HEALTH_TIMEOUT_SECONDS = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class Serving(FileThreads):
    """Where and how many: read by this module and by the devstack (which also connects the
    gateway to these ports), so that a variable means the same thing in both."""

    auth_port: int = setting("AUTH_PORT", 8081)
    file_port: int = setting("FILE_PORT", 8082)
    auth_workers: int = setting("AUTH_WORKERS", 2, help="gunicorn workers")
    file_workers: int = setting("FILE_WORKERS", 2, help="gunicorn workers")

    @property
    def ports(self) -> dict[str, int]:
        """Each port by the variable that sets it (a subclass adds its own)."""
        return {"AUTH_PORT": self.auth_port, "FILE_PORT": self.file_port}

    def problems(self) -> list[str]:
        problems = super().problems()
        for env, port in self.ports.items():
            if not 1 <= port <= 65535:
                problems.append(f"{env} must be between 1 and 65535, got {port}")
        for env, workers in (("AUTH_WORKERS", self.auth_workers),
                             ("FILE_WORKERS", self.file_workers)):
            if workers < 1:
                problems.append(f"{env} must be at least 1, got {workers}")
        return problems

    def port(self, service: str) -> int:
        return self.auth_port if service == "auth-service" else self.file_port


SERVICES = {"auth-service": "satchel_auth.wsgi:app", "file-service": "satchel_files.wsgi:app"}


def gunicorn_argv(service: str, serving: Serving, *, host: str = DEFAULT_HOST,
                  extra: Sequence[str] = ()) -> list[str]:
    """gunicorn's arguments for `service`; `extra` options go before the app."""
    if service == "auth-service":
        workers = ["--workers", str(serving.auth_workers), "--worker-class", "sync"]
    else:
        workers = ["--workers", str(serving.file_workers), "--worker-class", "gthread",
                   "--threads", str(serving.file_threads)]
    return ["--bind", f"{host}:{serving.port(service)}", *workers,
            "--keep-alive", str(KEEP_ALIVE_SECONDS), *extra, SERVICES[service]]


PROBES = {"--check": "/healthz", "--ready": "/readyz"}  # alive; able to serve (its database up)


def is_healthy(service: str, serving: Serving, path: str = "/healthz") -> bool:
    url = f"http://127.0.0.1:{serving.port(service)}{path}"
    try:
        with urllib.request.urlopen(url, timeout=HEALTH_TIMEOUT_SECONDS) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if environ is None else environ
    host, probe = DEFAULT_HOST, None
    while args and args[0] in ("--host", *PROBES):
        option = args.pop(0)
        if option in PROBES:
            probe = PROBES[option]
        elif args:
            host = args.pop(0)
        else:
            return _usage()
    service = args.pop(0) if args and args[0] in SERVICES else environ.get("SATCHEL_SERVICE")
    if service not in SERVICES:
        return _usage()
    try:
        serving = load_config(Serving, environ)
    except ConfigError as exc:
        print(f"{service}: {exc}", file=sys.stderr)
        return 2
    if probe is not None:
        return 0 if is_healthy(service, serving, probe) else 1
    argv = [sys.executable, "-m", "gunicorn", *gunicorn_argv(service, serving, host=host,
                                                             extra=args)]
    os.execvpe(argv[0], argv, dict(environ))
    return 1  # not reached: exec replaced this process


def _usage() -> int:
    print(f"usage: python -m satchel_shared.serve [--host HOST] [--check|--ready] "
          f"[{'|'.join(SERVICES)}] [gunicorn options]; or set SATCHEL_SERVICE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

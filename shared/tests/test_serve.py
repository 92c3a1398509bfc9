"""`python -m satchel_shared.serve`: the gunicorn both the images and the devstack run."""
import http.server
import socket
import sys
import threading

import pytest

from satchel_shared import serve
from satchel_shared.config import load_config
from satchel_shared.serve import KEEP_ALIVE_SECONDS, Serving, gunicorn_argv, main


def option(argv, name):
    return argv[argv.index(name) + 1]


@pytest.fixture
def execs(monkeypatch):
    """What main() would exec, instead of exec'ing it."""
    calls = []
    monkeypatch.setattr(serve.os, "execvpe", lambda file, argv, env: calls.append((argv, env)))
    return calls


def test_each_service_gets_its_port_workers_and_worker_class():
    serving = load_config(Serving, {"AUTH_PORT": "9001", "AUTH_WORKERS": "3",
                                    "FILE_PORT": "9002", "FILE_WORKERS": "4",
                                    "FILE_THREADS": "12"})
    auth = gunicorn_argv("auth-service", serving, host="127.0.0.1")
    assert option(auth, "--bind") == "127.0.0.1:9001" and option(auth, "--workers") == "3"
    assert option(auth, "--worker-class") == "sync" and "--threads" not in auth
    files = gunicorn_argv("file-service", serving)
    assert option(files, "--bind") == "0.0.0.0:9002" and option(files, "--workers") == "4"
    assert option(files, "--worker-class") == "gthread" and option(files, "--threads") == "12"
    for argv, app in ((auth, "satchel_auth.wsgi:app"), (files, "satchel_files.wsgi:app")):
        assert option(argv, "--keep-alive") == str(KEEP_ALIVE_SECONDS) and argv[-1] == app


def test_main_execs_gunicorn_with_extra_options_before_the_app(execs):
    environ = {"SATCHEL_SERVICE": "file-service", "FILE_PORT": "9002"}
    assert main(["--host", "127.0.0.1", "--timeout", "120"], environ) == 1  # exec "returned"
    [(argv, env)] = execs
    assert argv[:3] == [sys.executable, "-m", "gunicorn"] and env == environ
    assert option(argv, "--bind") == "127.0.0.1:9002"
    assert argv[-3:] == ["--timeout", "120", "satchel_files.wsgi:app"]


def test_a_service_named_on_the_command_line_wins_over_the_environment(execs):
    main(["auth-service"], {"SATCHEL_SERVICE": "file-service"})
    assert execs[0][0][-1] == "satchel_auth.wsgi:app"


@pytest.mark.parametrize("argv, environ", [
    ([], {}), (["mail-service"], {}), ([], {"SATCHEL_SERVICE": "nope"}), (["--host"], {}),
])
def test_no_known_service_is_a_usage_error(execs, capsys, argv, environ):
    assert main(argv, environ) == 2 and execs == []
    assert "usage: python -m satchel_shared.serve" in capsys.readouterr().err


@pytest.mark.parametrize("environ, message", [  # FILE_THREADS: test_config (FileThreads)
    ({"AUTH_PORT": "0"}, "AUTH_PORT must be between 1 and 65535, got 0"),
    ({"FILE_WORKERS": "0"}, "FILE_WORKERS must be at least 1, got 0"),
    ({"AUTH_WORKERS": "two"}, "AUTH_WORKERS: expected a whole number, got 'two'"),
])
def test_a_bad_setting_is_refused_naming_its_variable(execs, capsys, environ, message):
    assert main(["file-service"], environ) == 2 and execs == []
    assert message in capsys.readouterr().err


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    ready_status = 200

    def do_GET(self):  # noqa: N802 - the http.server API
        self.send_response({"/healthz": self.status, "/readyz": self.ready_status}.get(
            self.path, 404))
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def health_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_check_exits_0_only_while_healthz_answers_200(health_server, monkeypatch, execs):
    environ = {"SATCHEL_SERVICE": "auth-service", "AUTH_PORT": str(health_server.server_port)}
    assert main(["--check"], environ) == 0
    monkeypatch.setattr(_Health, "status", 503)
    assert main(["--check"], environ) == 1
    assert main(["--check"], {**environ, "AUTH_PORT": str(free_port())}) == 1  # nobody there
    assert execs == []


def test_ready_exits_0_only_while_readyz_answers_200(health_server, monkeypatch, execs):
    """compose's depends_on waits on it: alive is not enough, the database must be up."""
    environ = {"SATCHEL_SERVICE": "file-service", "FILE_PORT": str(health_server.server_port)}
    assert main(["--ready"], environ) == 0
    monkeypatch.setattr(_Health, "ready_status", 503)
    assert main(["--check"], environ) == 0 and main(["--ready"], environ) == 1
    assert execs == []

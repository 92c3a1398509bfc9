"""`satchel-stack run` (what `make run` starts): comes up, stops cleanly, keeps state."""
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
import requests

from satchel_e2e import PASSWORD, ROOT, stack_config
from satchel_devstack.stack import Stack


def _cli_env(config):
    return dict(os.environ, SATCHEL_VAR=str(config.var_dir), GATEWAY_PORT=str(config.gateway_port),
                AUTH_PORT=str(config.auth_port), FILE_PORT=str(config.file_port),
                MONGO_PORT=str(config.mongo_port), BCRYPT_ROUNDS="4", AUTH_WORKERS="2",
                FILE_WORKERS="2")


def _start_cli(config):
    env = _cli_env(config)
    process = subprocess.Popen([sys.executable, "-m", "satchel_devstack.cli", "run", "--root",
                                str(ROOT)], env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 90
    lines = []
    for line in process.stdout:
        lines.append(line)
        if "Press Ctrl-C to stop." in line:
            return process, "".join(lines)
        if time.monotonic() > deadline:
            break
    process.kill()
    pytest.fail("stack did not come up:\n" + "".join(lines))


def _stop_cli(process, sig=signal.SIGTERM) -> float:
    started = time.monotonic()
    process.send_signal(sig)
    process.wait(timeout=30)
    return time.monotonic() - started


def _port_open(port):
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.skipif(bool(os.environ.get("BASE_URL")), reason="starts its own stack")
def test_stack_stops_within_seconds_and_keeps_users_across_restarts(tmp_path):
    config = stack_config(tmp_path / "var")
    base = config.base_url
    email = f"persist-{uuid.uuid4().hex[:8]}@example.test"

    process, banner = _start_cli(config)
    assert base in banner
    assert requests.post(f"{base}/api/v1/auth/register",
                         json={"email": email, "password": PASSWORD}, timeout=30).status_code == 201
    elapsed = _stop_cli(process, signal.SIGINT)
    assert process.returncode == 0
    assert elapsed < 10, f"took {elapsed:.1f}s to stop"
    for port in (config.gateway_port, config.auth_port, config.file_port, config.mongo_port):
        assert not _port_open(port), f"port {port} still open after stop"

    process, _ = _start_cli(config)
    try:
        login = requests.post(f"{base}/api/v1/auth/login",
                              json={"email": email, "password": PASSWORD}, timeout=30)
        assert login.status_code == 200
        token = login.json()["token"]
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{base}/api/v1/files", timeout=30, headers=headers).json() == []
        uploaded = requests.post(f"{base}/api/v1/files/upload", headers=headers, timeout=30,
                                 files=[("files", ("a.txt", b"hello", "text/plain"))])
        assert uploaded.status_code == 201

        # `make fsck` = `satchel-stack admin fsck`: the running stack's database and blobs
        fsck = subprocess.run([sys.executable, "-m", "satchel_devstack.cli", "admin", "--root",
                               str(ROOT), "fsck", "--json"], env=_cli_env(config),
                              capture_output=True, text=True, timeout=120)
        assert fsck.returncode == 0, fsck.stderr
        report = json.loads(fsck.stdout)
        assert report["clean"] and report["checked"].get("blobs") == 1
    finally:
        _stop_cli(process)


@pytest.mark.skipif(bool(os.environ.get("BASE_URL")), reason="starts its own stack")
def test_gateway_answers_json_502_when_the_file_service_is_down(tmp_path):
    stack = Stack(stack_config(tmp_path / "var"))
    stack.start()
    try:
        file_service = next(p for p in stack.processes if p.name == "file-service")
        os.killpg(file_service.popen.pid, signal.SIGKILL)
        file_service.popen.wait()
        response = requests.get(f"{stack.config.base_url}/api/v1/files", timeout=30)
        assert response.status_code == 502
        assert response.json()["error"]["code"] == "bad_gateway"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        # pre-signed blob URLs, whose signature the file service checks (auth_request): the
        # same JSON 502, not nginx's HTML 500
        blob = "ab" + "0" * 62
        for method, path in (("PUT", "/blobs/staging/" + "a" * 32), ("GET", f"/blobs/files/ab/{blob}")):
            cut = requests.request(method, f"{stack.config.base_url}{path}?expires=9999999999"
                                   f"&signature=x", data=b"x" if method == "PUT" else None,
                                   timeout=30)
            assert cut.status_code == 502, (method, cut.status_code, cut.text[:200])
            assert cut.json()["error"]["code"] == "bad_gateway"
        # the auth service, behind the same gateway, is unaffected
        assert requests.get(f"{stack.config.base_url}/api/v1/auth/jwks.json",
                            timeout=30).status_code == 200
    finally:
        stack.stop()


def test_port_already_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        config = stack_config(tmp_path / "var", gateway_port=squatter.getsockname()[1])
        with pytest.raises(Exception, match="GATEWAY_PORT"):
            Stack(config).start()


def test_a_staging_put_the_gateway_cannot_write_is_a_json_500_not_a_retry(tmp_path):
    """nginx's own 500 (here: the staging directory is not a directory) is not the file service
    being down: JSON internal_error, not the 502 that tells clients to retry."""
    stack = Stack(stack_config(tmp_path / "var"))
    stack.start()
    try:
        base = stack.config.base_url
        email = f"disk-{uuid.uuid4().hex[:8]}@example.test"
        assert requests.post(f"{base}/api/v1/auth/register", timeout=30,
                             json={"email": email, "password": PASSWORD}).status_code == 201
        token = requests.post(f"{base}/api/v1/auth/login", timeout=30,
                              json={"email": email, "password": PASSWORD}).json()["token"]
        data = os.urandom(1000)
        body = {"filename": "x.bin", "size_bytes": len(data), "mime_type": "application/octet-stream",
                "hash": hashlib.sha256(data).hexdigest(),
                "chunks": [{"index": 0, "hash": hashlib.sha256(data).hexdigest(),
                            "size_bytes": len(data)}]}
        registered = requests.post(f"{base}/api/v1/files", json=body, timeout=30,
                                   headers={"Authorization": f"Bearer {token}"})
        assert registered.status_code == 201, registered.text
        staging = stack.path("data", "staging")
        if staging.exists():
            staging.rmdir()
        staging.write_bytes(b"not a directory")
        put = requests.put(registered.json()["chunks"][0]["upload_url"], data=data, timeout=30)
        assert put.status_code == 500, put.text[:200]
        assert put.json()["error"]["code"] == "internal_error"
    finally:
        stack.stop()

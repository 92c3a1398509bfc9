"""End-to-end tests: a real stack (nx-27017, gunicorn x2 per service, nginx) on free ports.

Set BASE_URL to test an already running stack instead (tests that need the signing key or
control of the processes are skipped then).
"""
import os
import uuid
from pathlib import Path

import pytest
import requests

from satchel_devstack.stack import Stack, StackConfig, free_port

ROOT = Path(__file__).resolve().parents[1]
ALLOWED_ORIGIN = "https://app.example.test"
PASSWORD = "correct-horse-battery-9"
CHUNK_SIZE = 64 * 1024
MAX_UPLOAD = 1024 * 1024
USER_QUOTA = 3 * 1024 * 1024


def stack_config(var_dir: Path, **overrides) -> StackConfig:
    values = dict(
        root=ROOT, var_dir=var_dir,
        gateway_port=free_port(), auth_port=free_port(), file_port=free_port(),
        mongo_port=free_port(), auth_workers=2, file_workers=2,
        auth_rate_limit="3000r/m", auth_rate_burst=100,
        cors_origin_regex=r"^https://app\.example\.test$",
        service_env={"BCRYPT_ROUNDS": "4", "LOGIN_MAX_FAILURES": "5",
                     "LOGIN_MAX_FAILURES_PER_IP": "1000",
                     # small limits, so multi-chunk files and the 413s cost little
                     "CHUNK_SIZE_BYTES": str(CHUNK_SIZE), "MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
                     "USER_QUOTA_BYTES": str(USER_QUOTA)},
    )
    values.update(overrides)
    return StackConfig(**values)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    if os.environ.get("BASE_URL"):
        yield None
        return
    stack = Stack(stack_config(tmp_path_factory.mktemp("stack") / "var"))
    stack.start()
    yield stack
    stack.stop()


@pytest.fixture(scope="session")
def base_url(stack):
    return os.environ.get("BASE_URL") or stack.config.base_url


@pytest.fixture
def api(base_url):
    """requests with the gateway's address baked in: api.get("/api/v1/files", ...)."""
    class Api:
        def __getattr__(self, method):
            def call(path, **kwargs):
                kwargs.setdefault("timeout", 30)
                return requests.request(method.upper(), base_url + path, **kwargs)
            return call
    return Api()


@pytest.fixture
def new_user(api):
    """Registers a fresh user; returns (email, password)."""
    def make(password=PASSWORD):
        email = f"e2e-{uuid.uuid4().hex[:12]}@example.test"
        response = api.post("/api/v1/auth/register", json={"email": email, "password": password})
        assert response.status_code == 201, response.text
        return email, password
    return make


@pytest.fixture
def login(api):
    def do(email, password=PASSWORD):
        response = api.post("/api/v1/auth/login", json={"email": email, "password": password})
        assert response.status_code == 200, response.text
        return response.json()
    return do


@pytest.fixture
def user(new_user, login):
    email, password = new_user()
    tokens = login(email, password)
    return {"email": email, "tokens": tokens,
            "headers": {"Authorization": f"Bearer {tokens['token']}"}}

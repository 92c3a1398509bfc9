"""End-to-end tests: a real stack (nx-27017, gunicorn x2 per service, nginx) on free ports.

Set BASE_URL to test an already running stack instead (tests that need the signing key or
control of the processes are skipped then).
"""
import os
import uuid

import pytest
import requests

from satchel_devstack.stack import Stack

from satchel_e2e import PASSWORD, stack_config


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

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import mongomock
import pytest

from satchel_auth import create_app
from satchel_auth.config import AuthConfig
from satchel_auth.keys import generate_key
from satchel_shared.config import load_config

PASSWORD = "correct horse battery staple"


class FakeClock:
    """Aware UTC time that moves only when a test says so."""

    def __init__(self):
        self.now = datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="session")
def keys_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("jwt-keys")
    generate_key(directory)
    return directory


@pytest.fixture
def make_config(keys_dir):
    def make(**environ: str) -> AuthConfig:
        """A config from these environment variables, on top of the test defaults."""
        return load_config(AuthConfig, {"JWT_KEYS_DIR": str(keys_dir), "BCRYPT_ROUNDS": "4", **environ})

    return make


@pytest.fixture
def config(make_config):
    return make_config()


@pytest.fixture
def mongo():
    return mongomock.MongoClient(tz_aware=True)


@pytest.fixture
def clock():
    return FakeClock()


@pytest.fixture
def app(config, mongo, clock):
    app = create_app(config, mongo=mongo, clock=clock)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


class AuthActions:
    password = PASSWORD

    def __init__(self, client):
        self.client = client

    def register(self, email="alice@example.com", password=PASSWORD):
        return self.client.post("/api/v1/auth/register", json={"email": email, "password": password})

    def login(self, email="alice@example.com", password=PASSWORD, address="10.0.0.1"):
        return self.client.post("/api/v1/auth/login", json={"email": email, "password": password},
                                environ_base={"REMOTE_ADDR": address})

    def session(self, email="alice@example.com", password=PASSWORD) -> dict:
        """Register and log in; the login body (token, refresh_token, ...)."""
        assert self.register(email, password).status_code == 201
        response = self.login(email, password)
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    def me(self, token: str):
        return self.client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


@pytest.fixture
def auth(client):
    return AuthActions(client)


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The response is the shared JSON envelope with this status; returns its `error`."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json
    error = response.get_json()["error"]
    assert set(error) >= {"code", "message", "request_id"}
    if code is not None:
        assert error["code"] == code
    return error


@pytest.fixture
def expect_error():
    return assert_error

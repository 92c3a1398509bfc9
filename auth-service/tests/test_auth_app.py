from __future__ import annotations

import logging

from pymongo.errors import ServerSelectionTimeoutError

from satchel_auth import create_app


def test_healthz_answers(client):
    assert client.get("/healthz").get_json() == {"status": "ok"}


def test_readyz_reports_mongo(client):
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.get_json()["checks"] == {"mongo": "ok"}


def test_openapi_spec_lists_the_auth_routes(client):
    spec = client.get("/api/v1/auth/openapi.json").get_json()
    assert {"/api/v1/auth/register", "/api/v1/auth/login", "/api/v1/auth/refresh", "/api/v1/auth/logout",
            "/api/v1/auth/me", "/api/v1/auth/jwks.json"} <= set(spec["paths"])
    assert "password" not in spec["components"]["schemas"]["TokenPair"]["properties"]


def test_unknown_route_and_wrong_method_get_the_envelope(client, expect_error):
    expect_error(client.get("/api/v1/auth/nope"), 404, "not_found")
    response = client.get("/api/v1/auth/login")
    expect_error(response, 405, "method_not_allowed")
    assert "POST" in response.headers["Allow"]


def test_every_response_carries_a_request_id(client):
    response = client.post("/api/v1/auth/login", json={}, headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"
    assert response.get_json()["error"]["request_id"] == "abc-123"


def test_passwords_are_never_logged(auth, caplog):
    secret = "a-very-secret-password-42"
    with caplog.at_level(logging.DEBUG):
        auth.register("log@example.com", secret)
        auth.login("log@example.com", secret)
        auth.login("log@example.com", secret + "x")
    assert caplog.records
    assert all(secret not in str(vars(record)) for record in caplog.records)


class _Unreachable:
    """A MongoDB client (and its databases and collections) whose server never answers."""

    def __getitem__(self, name):
        return self

    def __getattr__(self, name):
        def fail(*args, **kwargs):
            raise ServerSelectionTimeoutError("no servers available")
        return fail if not name.startswith("__") else super().__getattribute__(name)

    @property
    def admin(self):
        return self


def test_a_database_outage_is_503_not_500_and_health_still_answers(config, expect_error):
    app = create_app(config, mongo=_Unreachable())
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503
    expect_error(client.post("/api/v1/auth/login", json={"email": "a@example.com", "password": "x"}),
                 503, "service_unavailable")


def test_the_jwks_is_served_while_the_database_is_down(config):
    """Other services verify tokens with it; it comes from the key files, not from MongoDB."""
    client = create_app(config, mongo=_Unreachable()).test_client()
    response = client.get("/api/v1/auth/jwks.json")
    assert response.status_code == 200
    assert response.get_json()["keys"]


def test_losing_the_database_after_start_up_is_503(app, client, expect_error):
    app.extensions["satchel_auth"].accounts.users.users = _Unreachable()
    response = client.post("/api/v1/auth/register", json={"email": "a@example.com",
                                                           "password": "long enough pass"})
    expect_error(response, 503, "service_unavailable")
    assert response.headers["Retry-After"] == "5"


def test_an_oversized_body_is_413_before_any_parsing(client, expect_error):
    body = '{"email": "a@example.com", "password": "' + "x" * 100_000 + '"}'
    response = client.post("/api/v1/auth/register", data=body, content_type="application/json")
    expect_error(response, 413, "payload_too_large")

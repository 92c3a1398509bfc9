"""What the nginx gateway itself promises: routing, request ids, headers, JSON errors, limits."""
import http.client
import json
from urllib.parse import urlsplit

import pytest

from satchel_e2e import ALLOWED_ORIGIN

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def _assert_security_headers(response):
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


@pytest.mark.parametrize("path, status", [
    ("/healthz", 200),
    ("/api/v1/auth/jwks.json", 200),
    ("/api/v1/files", 401),
    ("/no/such/route", 404),
    ("/api/v1/no-such-thing", 404),
])
def test_every_response_has_security_headers_and_a_request_id(api, path, status):
    response = api.get(path)
    assert response.status_code == status
    _assert_security_headers(response)
    assert response.headers["X-Request-ID"]


@pytest.mark.parametrize("path", ["/no/such/route", "/api/v1/auth/nope", "/api/v1/nope"])
def test_unknown_routes_are_json_404s_carrying_the_request_id(api, path):
    response = api.get(path, headers={"X-Request-ID": "trace-404"})
    assert response.status_code == 404
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.json()["error"]["code"] == "not_found"
    assert response.headers["X-Request-ID"] == "trace-404"


def test_request_id_is_passed_through_to_the_service_and_back(api, stack):
    response = api.get("/api/v1/files", headers={"X-Request-ID": "trace-abc-123"})
    assert response.headers["X-Request-ID"] == "trace-abc-123"
    assert response.json()["error"]["request_id"] == "trace-abc-123"
    if stack is not None:  # and both the gateway and the service logged it
        file_log = stack.path("log", "file-service.log").read_text()
        assert '"request_id": "trace-abc-123"' in file_log


def test_request_id_is_generated_when_absent_or_malformed(api):
    first = api.get("/api/v1/files").headers["X-Request-ID"]
    second = api.get("/api/v1/files", headers={"X-Request-ID": "bad id with spaces"})
    assert first and second.headers["X-Request-ID"] not in ("", "bad id with spaces")
    assert first != second.headers["X-Request-ID"]


def test_response_has_exactly_one_request_id_header(base_url):
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    connection.request("GET", "/api/v1/files", headers={"X-Request-ID": "once"})
    response = connection.getresponse()
    assert [v for k, v in response.getheaders() if k.lower() == "x-request-id"] == ["once"]
    connection.close()


def test_oversized_auth_body_is_a_json_413(api):
    response = api.post("/api/v1/auth/register", data=b"x" * (2 * 1024 * 1024),
                        headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"
    _assert_security_headers(response)


def test_cors_preflight_for_an_allowed_origin(api):
    response = api.options("/api/v1/files", headers={
        "Origin": ALLOWED_ORIGIN, "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization"})
    assert response.status_code == 204
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    assert "GET" in response.headers["Access-Control-Allow-Methods"]


def test_cors_headers_are_withheld_from_other_origins(api):
    preflight = api.options("/api/v1/files", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in preflight.headers
    simple = api.get("/api/v1/files", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in simple.headers


def test_cors_headers_on_actual_responses_for_an_allowed_origin(api):
    response = api.get("/api/v1/files", headers={"Origin": ALLOWED_ORIGIN})
    assert response.headers["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "X-Request-ID" in response.headers["Access-Control-Expose-Headers"]


def test_openapi_documents_are_reachable_through_the_gateway(api):
    auth = api.get("/api/v1/auth/openapi.json").json()
    files = api.get("/api/v1/openapi.json").json()
    assert "/api/v1/auth/register" in auth["paths"] and "/api/v1/auth/login" in auth["paths"]
    assert "/api/v1/files" in files["paths"]


def test_gateway_rate_limits_login_per_client_address(base_url, stack):
    """From a loopback address of its own, a burst of logins gets 429s with Retry-After."""
    if stack is None:
        pytest.skip("needs to know the stack's configured burst")
    parts = urlsplit(base_url)
    body = json.dumps({"email": "not-an-email"})  # the service answers 400 and counts nothing
    statuses, limited = [], None
    for _ in range(stack.config.auth_rate_burst * 3):
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10,
                                                source_address=("127.0.0.77", 0))
        connection.request("POST", "/api/v1/auth/login", body=body,
                           headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        payload = response.read()
        statuses.append(response.status)
        if response.status == 429 and limited is None:
            limited = (dict(response.getheaders()), json.loads(payload))
        connection.close()
    assert set(statuses) == {400, 429}
    headers, payload = limited
    assert headers["Retry-After"] == "1"
    assert payload["error"]["code"] == "too_many_requests"


@pytest.mark.parametrize("path", ["/internal/blobs/verify", "/_satchel_blobs/ab/" + "ab" * 32,
                                  "/_satchel_verify_blob_url"])
def test_internal_routes_are_not_reachable_from_outside(api, path):
    response = api.get(path, headers={"X-Original-Method": "GET", "X-Original-URI": "/blobs/x"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"

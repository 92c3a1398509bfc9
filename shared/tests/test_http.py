"""The pieces every service request goes through: auth decorator, error envelope, request id."""
import pytest

from .conftest import Signer


def test_request_without_token_gets_401_envelope(client):
    response = client.get("/whoami")
    assert response.status_code == 401
    error = response.get_json()["error"]
    assert error["code"] == "unauthorized"
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert "Bearer" in response.headers["WWW-Authenticate"]


def test_request_with_valid_token_sees_its_user(client, signer):
    response = client.get("/whoami", headers={"Authorization": f"Bearer {signer.token(sub='u-9')}"})
    assert response.status_code == 200
    assert response.get_json() == {"user_id": "u-9"}


@pytest.mark.parametrize("make_header", [
    lambda s: f"Bearer {s.token(token_use='refresh')}",
    lambda s: f"Bearer {Signer(kid=s.kid).token()}",
    lambda s: f"Basic {s.token()}",
    lambda s: "Bearer not-a-jwt",
])
def test_bad_tokens_get_401_envelope(client, signer, make_header):
    response = client.get("/whoami", headers={"Authorization": make_header(signer)})
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "unauthorized"


def test_unexpected_exception_is_a_generic_500_without_internals(client):
    response = client.get("/boom")
    assert response.status_code == 500
    body = response.get_json()
    assert body["error"]["code"] == "internal_error"
    assert "secret internals" not in response.get_data(as_text=True)


def test_unknown_route_is_a_json_404(client):
    response = client.get("/nowhere")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"


def test_wrong_method_is_a_json_405_with_allow(client):
    response = client.post("/whoami")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]
    assert response.get_json()["error"]["code"] == "method_not_allowed"


def test_well_formed_request_id_is_kept(client):
    response = client.get("/nowhere", headers={"X-Request-ID": "abc-123"})
    assert response.headers["X-Request-ID"] == "abc-123"


@pytest.mark.parametrize("bad", ["has space", "x" * 200, "semi;colon", "\u00e9"])
def test_malformed_request_id_is_replaced(client, bad):
    response = client.get("/nowhere", headers={"X-Request-ID": bad})
    assert response.headers["X-Request-ID"] != bad
    assert len(response.headers["X-Request-ID"]) == 32
